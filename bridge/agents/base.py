"""The values every adapter speaks: what goes in (Invocation), what comes out (events, Outcome)."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import Enum
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class Invocation:
    """Everything an adapter needs to build one CLI call for one stage attempt."""

    prompt: str
    cwd: Path
    shared_dir: Path
    extra_dirs: tuple[Path, ...] = ()
    output_schema: dict[str, Any] | None = None
    resume_session: str | None = None
    stage_dir: Path | None = None  # where bridge keeps this attempt's files (prompt, schema, logs)
    env: dict[str, str] = field(default_factory=dict)  # the stage's `env:` (over the profile's)


@dataclass(frozen=True)
class Command:
    """A ready-to-spawn argv (never a shell string), its extra env, and files to write first."""

    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    files: dict[Path, str] = field(default_factory=dict)
    interactive: bool = False
    stdin: Path | None = None  # a file fed as stdin (very long prompts); None means /dev/null
    cwd: Path | None = None
    inherit_env: bool = True  # False: `env` is the whole environment (a rehearsal's, isolated)


class EventKind(str, Enum):
    SESSION = "session"  # session / thread id known
    MESSAGE = "message"  # assistant text
    TOOL = "tool"  # a tool call (name, input)
    COMMAND = "command"  # a shell command run by the agent
    FILE_CHANGE = "file_change"
    USAGE = "usage"
    ERROR = "error"
    RESULT = "result"  # the terminal event


@dataclass(frozen=True)
class AgentEvent:
    kind: EventKind
    text: str = ""
    data: dict[str, Any] = field(default_factory=dict)


class ErrorKind(str, Enum):
    AUTH = "auth"
    RATE_LIMIT = "rate_limit"  # usage / rate limit; Outcome.reset_at says when to retry
    API = "api"
    MAX_TURNS = "max_turns"
    PERMISSION_DENIED = "permission_denied"
    MALFORMED = "malformed"  # garbage on stdout
    INCOMPLETE = "incomplete"  # exited without a terminal event
    TIMEOUT = "timeout"
    IDLE_TIMEOUT = "idle_timeout"
    CANCELLED = "cancelled"
    CRASHED = "crashed"  # non-zero exit / signal with no better explanation
    NOT_FOUND = "not_found"
    OUTPUTS = "outputs"  # declared outputs missing or invalid
    BUDGET = "budget"
    CONFIG = "config"  # the command could not be built (e.g. a prompt too long for an argv item)


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class Outcome:
    """What one CLI call amounted to, as parsed from its event stream."""

    success: bool
    error: ErrorKind | None = None
    reason: str = ""
    session_id: str | None = None
    final_message: str = ""
    usage: Usage = Usage()
    cost_usd: float | None = None
    reset_at: float | None = None  # epoch seconds, for rate limits
    permission_denials: tuple[str, ...] = ()
    structured_output: Any = None
    num_turns: int | None = None


class Parser(Protocol):
    """Turns stdout lines into events as they arrive; `finish` decides the Outcome."""

    def feed(self, line: str) -> list[AgentEvent]: ...

    @property
    def terminal(self) -> bool: ...  # a terminal event has been seen

    def finish(self, exit_code: int | None, stderr_tail: str = "") -> Outcome: ...


# ------------------------------------------------------------------ shared parsing helpers

MAX_ARG = 100 * 1024  # one argv item must stay under Linux's MAX_ARG_STRLEN (128 KiB)

_AUTH = re.compile(r"\b(401|403)\b|unauthori[sz]ed|authenticat|invalid[ _-]?(api[ _-]?)?key|api key not valid"
                   r"|not logged in|please (run )?.*login|permission_denied.*key|credential", re.I)
_RATE = re.compile(r"\b429\b|rate[ _-]?limit|usage[ _-]?limit|quota|too many requests|resource[ _]exhausted"
                   r"|usage_limit_reached|hit your (usage )?limit|\blimit reached\b", re.I)
_SECONDS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hr": 3600,
            "hour": 3600, "ms": 0.001, "d": 86400, "day": 86400}


def classify_error(text: str, status: int | None = None) -> ErrorKind:
    """An API error message (and HTTP status, when known) -> AUTH, RATE_LIMIT or API."""
    if status in (401, 403):
        return ErrorKind.AUTH
    if status == 429:
        return ErrorKind.RATE_LIMIT
    if _RATE.search(text or ""):
        return ErrorKind.RATE_LIMIT
    if _AUTH.search(text or ""):
        return ErrorKind.AUTH
    return ErrorKind.API


def parse_reset(text: str, now: float | None = None) -> float | None:
    """Epoch seconds at which a rate limit lifts, from hints like `retry-after: 30`, `try again in
    2 hours`, `try again in 4 days 20 hours 9 minutes`, `resets_in_seconds: 90`, `resets_at:
    1700000000`, `usage limit reached|1700000000`, `retry in 37.5s`, `try again at 3:05 PM`,
    `resets 3pm`, `try again at Nov 24th, 2026 3:04 PM`. A clock time a few minutes past means now
    (CLIs print it to the minute); one further past means that time tomorrow."""
    if not text:
        return None
    now = time.time() if now is None else now
    m = re.search(r"(?:resets?_?at\W{0,4}|limit reached\|)(\d{9,11})\b", text, re.I)
    if m:
        return float(m.group(1))
    m = re.search(r"(?:resets?_in_seconds|retry[-_ ]after(?:_seconds)?)\W{0,4}(\d+(?:\.\d+)?)", text, re.I)
    if m:
        return now + float(m.group(1))
    m = re.search(r"retryDelay\W{0,4}(\d+(?:\.\d+)?)s", text)
    if m:
        return now + float(m.group(1))
    m = re.search(r"(?:try again|retry|resets?)\s+in\s+(?:about\s+)?((?:\d+(?:\.\d+)?\s*"
                  r"(?:ms|s|sec|second|m|min|minute|h|hr|hour|d|day)s?\b[\s,]*(?:and\s+)?)+)", text, re.I)
    if m:
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*(ms|sec|second|min|minute|hr|hour|day|s|m|h|d)", m.group(1), re.I)
        return now + sum(float(n) * _SECONDS[u.lower()] for n, u in parts)
    m = re.search(r"(?:try again|resets?|retry)\s+(?:at|after)\s+(\d{4}-\d\d-\d\d[T ][\d:.]+(?:Z|[+-]\d\d:?\d\d)?)",
                  text, re.I)
    if m:
        try:
            dt = datetime.fromisoformat(m.group(1).replace("Z", "+00:00"))
        except ValueError:
            return None
        return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()
    m = re.search(r"(?:try again|resets?|retry)\s+(?:at|after)\s+([A-Z][a-z]{2})[a-z]*\.?\s+(\d{1,2})(?:st|nd|rd|th)?,?"
                  r"\s+(\d{4}),?\s+(\d{1,2})(?::(\d\d))?\s*([ap]\.?m\.?)?", text, re.I)
    if m:
        try:
            day = datetime.strptime(f"{m.group(1)} {m.group(2)} {m.group(3)}", "%b %d %Y")
        except ValueError:
            return None
        hour = _hour(int(m.group(4)), m.group(6))
        return day.replace(hour=hour, minute=int(m.group(5) or 0)).astimezone().timestamp()
    m = re.search(r"(?:try again|resets?|retry)\s+(?:(?:at|after)\s+)?(\d{1,2})(?::(\d\d))?\s*([ap]\.?m\.?)?(?!\w)",
                  text, re.I)
    if m and (m.group(2) or m.group(3)):  # "resets 3pm", "try again at 6:14 PM"
        hour, minute = _hour(int(m.group(1)), m.group(3)), int(m.group(2) or 0)
        local = datetime.fromtimestamp(now).astimezone()
        at = local.replace(hour=hour, minute=minute, second=0, microsecond=0).timestamp()
        if at <= now - 600:
            at = (datetime.fromtimestamp(at).astimezone() + timedelta(days=1)).timestamp()
        return max(at, now)
    return None


def _hour(hour: int, meridiem: str | None) -> int:
    if meridiem:
        return hour % 12 + (12 if meridiem.lower().startswith("p") else 0)
    return hour


# "[STARTUP] ..." and "[2026-11-21T18:00:00Z] WARN ..." are noise; '[{"a"' and '[1, 2' are broken JSON
_JSONISH = re.compile(r'^(\{|\[\s*([\[{"\]]|-?\d+(\.\d+)?([eE][+-]?\d+)?\s*[,\]]))')


class StreamParser:
    """The common half of a JSONL parser: line splitting, noise, malformed lines, the ending.

    Subclasses implement `handle(obj) -> list[AgentEvent]` and set the fields below."""

    def __init__(self) -> None:
        self.session_id: str | None = None
        self.final_message = ""
        self.usage = Usage()
        self.cost_usd: float | None = None
        self.num_turns: int | None = None
        self.structured_output: Any = None
        self.permission_denials: tuple[str, ...] = ()
        self.error: ErrorKind | None = None  # set by a terminal failure (or a fatal error event)
        self.error_text = ""
        self.reset_at: float | None = None
        self.success: bool | None = None  # None until the terminal event
        self.malformed = ""  # the first broken JSON line, if any
        self.noise: list[str] = []  # non-JSON lines (warnings some CLIs print), tolerated
        self.events = 0

    @property
    def terminal(self) -> bool:
        return self.success is not None

    def feed(self, line: str) -> list[AgentEvent]:
        text = line.strip()
        if not text:
            return []
        try:
            obj = json.loads(text)
        except ValueError:
            if _JSONISH.match(text):  # a JSON line cut short or corrupted: the stream cannot be trusted
                self.malformed = self.malformed or f"unparseable JSON line: {text[:200]}"
            else:
                self.noise.append(text[:500])
            return []
        if not isinstance(obj, dict):
            self.noise.append(text[:500])
            return []
        self.events += 1
        try:
            return self.handle(obj)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            self.malformed = self.malformed or f"unexpected event shape ({exc!r}): {text[:200]}"
            return []

    def handle(self, obj: dict[str, Any]) -> list[AgentEvent]:  # pragma: no cover - abstract
        raise NotImplementedError

    def fail(self, kind: ErrorKind, text: str) -> None:
        """Record a terminal failure (first one wins for the kind; the text accumulates)."""
        self.success = False
        if self.error is None or self.error in (ErrorKind.API, ErrorKind.CRASHED):
            self.error = kind
        self.error_text = text if not self.error_text else f"{self.error_text}; {text}"
        if kind is ErrorKind.RATE_LIMIT and self.reset_at is None:
            self.reset_at = parse_reset(text)

    def finish(self, exit_code: int | None, stderr_tail: str = "") -> Outcome:
        common = dict(session_id=self.session_id, final_message=self.final_message, usage=self.usage,
                      cost_usd=self.cost_usd, num_turns=self.num_turns,
                      structured_output=self.structured_output, permission_denials=self.permission_denials)
        if self.malformed:
            return Outcome(False, ErrorKind.MALFORMED, self.malformed, **common)
        if self.success:
            return Outcome(True, **common)
        if self.success is False:
            reset = self.reset_at
            if self.error is ErrorKind.RATE_LIMIT and reset is None:
                reset = parse_reset(stderr_tail)
            return Outcome(False, self.error or ErrorKind.API, self.error_text, reset_at=reset, **common)
        tail = stderr_tail.strip()
        last = tail.splitlines()[-1][:300] if tail else ""
        if self.events == 0 and self.noise:
            return Outcome(False, ErrorKind.MALFORMED,
                           f"no JSON events on stdout; it began with: {self.noise[0][:200]}", **common)
        kind = classify_error(tail) if tail else ErrorKind.API
        if kind in (ErrorKind.AUTH, ErrorKind.RATE_LIMIT):
            return Outcome(False, kind, last, reset_at=parse_reset(tail), **common)
        if exit_code == 0:
            return Outcome(False, ErrorKind.INCOMPLETE, "exited 0 without a result event", **common)
        code = "was killed by a signal" if exit_code is None else f"exited {exit_code}"
        why = f"{code} without a result event" + (f": {last}" if last else "")
        return Outcome(False, ErrorKind.CRASHED, why, **common)


def dig(obj: Any, path: str, default: Any = None) -> Any:
    """obj['a']['b'][0] for path 'a.b.0'; default when any step is missing."""
    cur = obj
    for part in path.split(".") if path else []:
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.lstrip("-").isdigit() and -len(cur) <= int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return default
    return cur


def as_int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


# ------------------------------------------------------------------ shared argv helpers

def folders(inv: Invocation) -> list[Path]:
    """The shared folder first, then the stage's extra folders, without duplicates."""
    out: list[Path] = []
    for p in (inv.shared_dir, *inv.extra_dirs):
        if p not in out:
            out.append(p)
    return out


def policy_args(profile: Any, cli: dict[str, Any], shared: Path) -> list[str]:
    """The CLI's flags for the portable sandbox policy, or its native permission_mode override."""
    if profile.permission_mode and cli.get("permission_mode_flag"):
        return [cli["permission_mode_flag"], profile.permission_mode]
    items = (cli.get("sandbox") or {}).get(profile.sandbox)
    if items is None:
        from bridge.errors import BridgeError

        raise BridgeError(f"the CLI definition of {profile.cli!r} has no flags for sandbox "
                          f"{profile.sandbox!r}; add them under `sandbox:` in clis.yaml")
    return [str(a).replace("{shared}", str(shared)) for a in items]


def option(cli: dict[str, Any], key: str, value: Any) -> list[str]:
    """[flag, value] when both the CLI has the flag and there is a value."""
    flag = cli.get(key)
    return [flag, str(value)] if flag and value not in (None, "") else []


def full_prompt(profile: Any, inv: Invocation, cli: dict[str, Any]) -> str:
    """The prompt, with the profile's system prompt in front when the CLI has no flag for it."""
    if profile.system_prompt and not cli.get("system_prompt_flag"):
        return f"{profile.system_prompt}\n\n{inv.prompt}"
    return inv.prompt


def too_long(prompt: str) -> bool:
    return len(prompt.encode()) > MAX_ARG


def prompt_file(inv: Invocation, name: str = "prompt.stdin") -> Path:
    """Where a prompt too long for argv is written (inside the attempt's folder)."""
    if inv.stage_dir is None:
        from bridge.errors import BridgeError

        raise BridgeError(f"the prompt is {len(inv.prompt.encode()) // 1024} KiB, too long for a "
                          "command-line argument, and there is no stage folder to pass it through")
    return inv.stage_dir / name


def home_setting(cli: dict[str, Any], key: str, value: Any, env: dict[str, str],
                 files: dict[Path, str]) -> dict[Path, str]:
    """`files` with `value` set in the CLI's settings file under the HOME bridge writes it in.

    For a limit a CLI takes only from its settings (cli[key] = {file, key}: Gemini's max turns).
    Only when that file is among `files` (a rehearsal's isolated HOME): a user's own settings are
    never rewritten, so outside rehearsals the user's settings decide."""
    where = cli.get(key)
    if not where or value is None or "HOME" not in env:
        return files
    path = Path(env["HOME"]) / where["file"]
    if path not in files:
        return files
    settings = json.loads(files[path] or "{}")
    node = settings
    *parents, last = str(where["key"]).split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return {**files, path: json.dumps(settings, indent=2)}


def wiring_parts(wiring: Any) -> tuple[dict[str, str], list[str], dict[Path, str], str | None]:
    """env, extra argv, files and model of a rehearsal Wiring (duck-typed; None gives nothing)."""
    if wiring is None:
        return {}, [], {}, None
    argv = getattr(wiring, "argv", None)
    if argv is None:
        argv = getattr(wiring, "args", ())
    return (dict(getattr(wiring, "env", {}) or {}), list(argv or ()),
            {Path(k): v for k, v in (getattr(wiring, "files", {}) or {}).items()},
            getattr(wiring, "model", None) or None)
