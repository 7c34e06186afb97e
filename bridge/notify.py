"""Telling people a run ended: webhook / command notifications and the Markdown run summary.

Webhook URLs and command arguments may say `${NAME}`: the environment variable's value, put in at
send time only (so a secret webhook URL lives in the environment, not in the playbook), and masked
in every failure message bridge keeps.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.error
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from bridge import __version__
from bridge.figures import money, reported, tokens
from bridge.playbook import Notify
from bridge.redact import Redactor
from bridge.workspace import atomic_write_text

WEBHOOK_TIMEOUT = 10.0
COMMAND_TIMEOUT = 60.0


@dataclass(frozen=True)
class StageSummary:
    """One stage (or matrix item) as it ended. Paths in `reports` are relative to the shared folder."""

    id: str
    status: str
    attempts: int = 1
    duration: float = 0.0
    cost_usd: float | None = None
    tokens: int | None = None
    reports: tuple[str, ...] = ()
    branch: str | None = None
    worktree: str | None = None  # absolute path of the stage's worktree, if it had one
    branch_note: str | None = None  # what became of the branch (merged, resolved by ..., conflict ...)
    error: str | None = None
    note: str | None = None  # one line on how it ended: why it failed or was skipped, a loop round's verdict


@dataclass(frozen=True)
class RunSummary:
    """A whole run as it ended; the runner builds one and hands it to notify / write_run_summary."""

    run_id: str
    playbook: str
    status: str  # success | failure | cancelled
    started_at: float
    ended_at: float
    stages: tuple[StageSummary, ...] = ()
    cost_usd: float | None = None
    tokens: int | None = None
    shared_dir: str | None = None  # absolute path of the run's shared folder
    errors: tuple[str, ...] = ()
    landing: str | None = None  # what happened to the user's branch (worktree stages), if anything
    resumed_at: float | None = None  # when the latest `bridge resume` of the run started
    loops: tuple[str, ...] = ()  # per loop stage, how each round ended ("fix: round 1 until not met; ...")
    notify_failures: tuple[str, ...] = ()  # notifications that did not arrive (redacted)

    @property
    def duration(self) -> float:
        return max(self.ended_at - self.started_at, 0.0)


@dataclass(frozen=True)
class NotifyFailure:
    """A notification that did not arrive; the run's result stands regardless."""

    target: str
    error: str

    def __str__(self) -> str:
        return f"{self.target}: {self.error}"


def wants(entry: Notify, status: str) -> bool:
    """Whether a notify entry fires for a run status (anything but success counts as failure)."""
    return ("success" if status == "success" else "failure") in entry.on


def payload(summary: RunSummary, summary_path: Path | None = None) -> dict[str, Any]:
    """The JSON body of a notification."""
    return {
        "run_id": summary.run_id,
        "playbook": summary.playbook,
        "status": summary.status,
        "started_at": _iso_json(summary.started_at),
        "ended_at": _iso_json(summary.ended_at),
        "duration_s": round(summary.duration, 3),
        "cost_usd": reported(summary.cost_usd),  # null: no CLI reported it (shown as "-")
        "tokens": reported(summary.tokens),
        "stages": [
            {"id": s.id, "status": s.status, "attempts": s.attempts, "duration_s": round(s.duration, 3),
             "cost_usd": reported(s.cost_usd), "tokens": reported(s.tokens), "error": s.error, "note": s.note}
            for s in summary.stages
        ],
        "errors": list(summary.errors),
        "landing": summary.landing,
        "summary_path": str(summary_path) if summary_path else None,
    }


def notify(notifies: list[Notify], summary: RunSummary, *, summary_path: Path | None = None,
           timeout: float = WEBHOOK_TIMEOUT, cwd: Path | None = None) -> list[NotifyFailure]:
    """Send every matching notification; failures are returned (redacted), never raised.

    `cwd` is the project folder: commands run there, and a relative program (`./scripts/n.sh`) is
    found there, whatever the caller's current folder.
    """
    body = payload(summary, summary_path)
    env = command_env(summary, summary_path)
    failures: list[NotifyFailure] = []
    for entry in notifies:
        if not wants(entry, summary.status):
            continue
        if entry.webhook:
            url = entry.webhook
            failures += _attempt(f"webhook {url}", env, lambda put: post_webhook(put(url), body, timeout))
        if entry.command:
            argv = list(entry.command)
            failures += _attempt(f"command {argv[0]}", env,
                                 lambda put: run_command(program([put(a) for a in argv], cwd), body, env, cwd))
    return failures


_VAR = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)\}")


ERROR_CAP = 400  # characters of a failed notification's error kept (after masking)


def expand(text: str, env: Mapping[str, str], used: list[str] | None = None) -> str:
    """`${NAME}` -> the value of NAME in `env` (appended to `used`); `$${NAME}` -> a literal `${NAME}`
    (for a shell). An unset NAME raises ValueError: a notification never goes to half a URL."""
    def one(match: re.Match[str]) -> str:
        escaped, name = match.groups()
        if escaped:
            return "${" + name + "}"
        if name not in env:
            raise ValueError(f"${{{name}}} is not set in bridge's environment")
        if used is not None:
            used.append(env[name])
        return env[name]

    return _VAR.sub(one, text)


def program(argv: list[str], cwd: Path | None) -> list[str]:
    """A relative program path (`./scripts/n.sh`, `scripts/n.sh`) is the project's, not the caller's cwd's."""
    if cwd is not None and argv and os.sep in argv[0] and not os.path.isabs(argv[0]):
        return [str(cwd / argv[0]), *argv[1:]]
    return argv


def post_webhook(url: str, body: dict[str, Any], timeout: float = WEBHOOK_TIMEOUT) -> None:
    """POST the JSON body; raises OSError / ValueError when it does not arrive."""
    if not url.startswith(("http://", "https://")):
        raise ValueError("only http:// and https:// webhooks are supported")
    import urllib.request  # http.client, email, ssl: only when a webhook is posted

    request = urllib.request.Request(
        url, data=json.dumps(body).encode("utf-8"), method="POST",
        headers={"Content-Type": "application/json", "User-Agent": f"bridge/{__version__}"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (scheme checked)
        response.read()


def command_env(summary: RunSummary, summary_path: Path | None = None) -> dict[str, str]:
    """The environment of a notify command: bridge's own, plus BRIDGE_RUN_*."""
    return {
        **os.environ,
        "BRIDGE_RUN_ID": summary.run_id,
        "BRIDGE_RUN_PLAYBOOK": summary.playbook,
        "BRIDGE_RUN_STATUS": summary.status,
        "BRIDGE_RUN_DURATION": f"{summary.duration:.3f}",
        "BRIDGE_RUN_COST_USD": "" if not summary.cost_usd else f"{summary.cost_usd:.4f}",
        "BRIDGE_RUN_SUMMARY": str(summary_path) if summary_path else "",
    }


def run_command(argv: list[str], body: dict[str, Any], env: dict[str, str], cwd: Path | None = None,
                timeout: float = COMMAND_TIMEOUT) -> None:
    """Run argv (never a shell) with the JSON on stdin and BRIDGE_RUN_* in its environment."""
    done = subprocess.run(argv, input=json.dumps(body).encode("utf-8"), env=env, timeout=timeout, cwd=cwd,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    if done.returncode != 0:
        tail = done.stderr.decode("utf-8", "replace").strip()  # cut only once masked (_attempt)
        raise RuntimeError(f"exited with code {done.returncode}" + (f": {tail}" if tail else ""))


def _attempt(target: str, env: dict[str, str], send: Callable[[Callable[[str], str]], None]) -> list[NotifyFailure]:
    """Send once; `send` expands `${NAME}`s through the function it is given, which remembers their values
    so the error text (a command's stderr, say) never carries them."""
    used: list[str] = []
    try:
        send(lambda text: expand(text, env, used))
    except urllib.error.HTTPError as exc:
        error = f"HTTP {exc.code} {exc.reason}"
    except urllib.error.URLError as exc:
        error = f"unreachable: {exc.reason}"
    except subprocess.TimeoutExpired as exc:
        error = f"timed out after {exc.timeout:g} s"
    except (RuntimeError, ValueError) as exc:
        error = str(exc)
    except Exception as exc:  # a notification must never break the run that triggered it
        error = f"{type(exc).__name__}: {exc}"
    else:
        return []
    # a value named by ${NAME} is masked whatever its length, and as it may be printed: stripped, escaped
    named = {form for v in used for form in (v, v.strip(), v.encode("unicode_escape").decode("ascii"))
             if len(form) >= 3}
    redact = Redactor.for_env(env, extra=used)
    masked = Redactor(named, min_length=3)
    error = masked(redact(error))
    if len(error) > ERROR_CAP:
        error = error[:ERROR_CAP // 3] + " ... " + error[-(ERROR_CAP * 2 // 3):]
    return [NotifyFailure(masked(redact(target)), error)]


# ---- the Markdown summary -------------------------------------------------------------------

def write_run_summary(path: Path, summary: RunSummary) -> Path:
    """Write the Markdown summary of a run to `path` atomically; returns the path."""
    return atomic_write_text(Path(path), render_summary(summary, Path(path).parent))


def render_summary(summary: RunSummary, base: Path) -> str:
    """The Markdown text; links are relative to `base`, the folder the file will live in."""
    icon = {"success": "✅", "failure": "❌", "cancelled": "⏹"}.get(summary.status, "•")
    lines = [
        f"# {summary.playbook}: {summary.status}",
        "",
        f"Run `{summary.run_id}` {icon} **{summary.status}**",
        "",
        "| | |",
        "|---|---|",
        f"| Started | {_iso(summary.started_at)} |",
        *([f"| Resumed | {_iso(summary.resumed_at)} |"] if summary.resumed_at else []),
        f"| Ended | {_iso(summary.ended_at)} |",
        f"| Duration | {duration_text(summary.duration)} |",
        f"| Cost | {money(summary.cost_usd)} |",
        f"| Tokens | {tokens(summary.tokens)} |",
        "",
        "## Stages",
        "",
        "| Stage | Status | Attempts | Duration | Cost | Note |",
        "|---|---|---|---|---|---|",
    ]
    for s in summary.stages:
        lines.append(f"| {_cell(s.id)} | {_cell(s.status)} | {s.attempts} | {duration_text(s.duration)} "
                     f"| {money(s.cost_usd)} | {_cell(s.note or '')} |")
    reports: dict[str, list[str]] = {}  # a loop's rounds share one file: list it once, naming each round
    for s in summary.stages:
        for rel in s.reports:
            reports.setdefault(rel, []).append(s.id)
    if reports:
        lines += ["", "## Reports", ""]
        for rel, ids in reports.items():
            last = " (as the last of them left it; each round's verdict is in its Note)" if len(ids) > 1 else ""
            lines.append(f"- {', '.join(ids)}: [{rel}]({_link(summary.shared_dir, rel, base)}){last}")
    if summary.loops:
        lines += ["", "## Loops", ""]
        lines += [f"- {line}" for line in summary.loops]
    branches = [s for s in summary.stages if s.branch]
    if branches:
        lines += ["", "## Branches", ""]
        for s in branches:
            where = f" ([worktree]({_rel(Path(s.worktree), base)}))" if s.worktree else ""
            note = f" — {s.branch_note}" if s.branch_note else ""
            lines.append(f"- {s.id}: `{s.branch}`{where}{note}")
    if summary.landing:
        lines += ["", "## Landing", "", summary.landing]
    errors = [*summary.errors, *(f"{s.id}: {s.error}" for s in summary.stages if s.error)]
    if errors:
        lines += ["", "## Errors", ""]
        lines += [f"- {e}" for e in errors]
    if summary.notify_failures:
        lines += ["", "## Notifications", ""]
        lines += [f"- warning: {f}" for f in summary.notify_failures]
    return "\n".join(lines) + "\n"


def duration_text(seconds: float) -> str:
    """12.3s, 4m 05s, 1h 02m."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    if m < 60:
        return f"{m}m {s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m"


def _link(shared_dir: str | None, rel: str, base: Path) -> str:
    target = Path(shared_dir) / rel if shared_dir else base / "shared" / rel
    return _rel(target, base)


def _rel(target: Path, base: Path) -> str:
    return os.path.relpath(target, base).replace(os.sep, "/").replace(" ", "%20")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso_json(ts: float) -> str:
    """ISO 8601 with its offset, as programs parse it: 2026-11-21T19:04:08+00:00."""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")
