"""Telling people a run ended: webhook / command notifications and the Markdown run summary."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import urllib.error
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from bridge import __version__
from bridge.playbook import Notify
from bridge.workspace import atomic_write_text

log = logging.getLogger(__name__)

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
        "started_at": _iso(summary.started_at),
        "ended_at": _iso(summary.ended_at),
        "duration_s": round(summary.duration, 3),
        "cost_usd": summary.cost_usd,
        "tokens": summary.tokens,
        "stages": [
            {"id": s.id, "status": s.status, "attempts": s.attempts, "duration_s": round(s.duration, 3),
             "cost_usd": s.cost_usd, "error": s.error}
            for s in summary.stages
        ],
        "errors": list(summary.errors),
        "landing": summary.landing,
        "summary_path": str(summary_path) if summary_path else None,
    }


def notify(notifies: list[Notify], summary: RunSummary, *, summary_path: Path | None = None,
           timeout: float = WEBHOOK_TIMEOUT) -> list[NotifyFailure]:
    """Send every matching notification; failures are logged and returned, never raised."""
    body = payload(summary, summary_path)
    failures: list[NotifyFailure] = []
    for entry in notifies:
        if not wants(entry, summary.status):
            continue
        if entry.webhook:
            failures += _attempt(f"webhook {entry.webhook}", lambda: post_webhook(entry.webhook, body, timeout))
        if entry.command:
            argv = list(entry.command)
            failures += _attempt(f"command {argv[0]}", lambda: run_command(argv, body, summary, summary_path))
    return failures


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


def run_command(argv: list[str], body: dict[str, Any], summary: RunSummary,
                summary_path: Path | None = None, timeout: float = COMMAND_TIMEOUT) -> None:
    """Run argv (never a shell) with the JSON on stdin and BRIDGE_RUN_* in its environment."""
    env = {
        **os.environ,
        "BRIDGE_RUN_ID": summary.run_id,
        "BRIDGE_RUN_PLAYBOOK": summary.playbook,
        "BRIDGE_RUN_STATUS": summary.status,
        "BRIDGE_RUN_DURATION": f"{summary.duration:.3f}",
        "BRIDGE_RUN_COST_USD": "" if summary.cost_usd is None else f"{summary.cost_usd:.4f}",
        "BRIDGE_RUN_SUMMARY": str(summary_path) if summary_path else "",
    }
    done = subprocess.run(argv, input=json.dumps(body).encode("utf-8"), env=env, timeout=timeout,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    if done.returncode != 0:
        tail = done.stderr.decode("utf-8", "replace").strip()[-300:]
        raise RuntimeError(f"exited with code {done.returncode}" + (f": {tail}" if tail else ""))


def _attempt(target: str, send: Callable[[], None]) -> list[NotifyFailure]:
    try:
        send()
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
    log.warning("notification %s failed: %s", target, error)
    return [NotifyFailure(target, error)]


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
        f"| Ended | {_iso(summary.ended_at)} |",
        f"| Duration | {duration_text(summary.duration)} |",
        f"| Cost | {_cost(summary.cost_usd)} |",
        f"| Tokens | {_count(summary.tokens)} |",
        "",
        "## Stages",
        "",
        "| Stage | Status | Attempts | Duration | Cost |",
        "|---|---|---|---|---|",
    ]
    for s in summary.stages:
        lines.append(f"| {_cell(s.id)} | {_cell(s.status)} | {s.attempts} | {duration_text(s.duration)} "
                     f"| {_cost(s.cost_usd)} |")
    reports = [(s.id, rel) for s in summary.stages for rel in s.reports]
    if reports:
        lines += ["", "## Reports", ""]
        for sid, rel in reports:
            lines.append(f"- {sid}: [{rel}]({_link(summary.shared_dir, rel, base)})")
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


def _cost(value: float | None) -> str:
    return "—" if value is None else f"${value:.2f}"


def _count(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
