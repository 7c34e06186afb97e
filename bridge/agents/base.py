"""The values every adapter speaks: what goes in (Invocation), what comes out (events, Outcome)."""

from __future__ import annotations

from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class Command:
    """A ready-to-spawn argv (never a shell string), its extra env, and files to write first."""

    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    files: dict[Path, str] = field(default_factory=dict)
    interactive: bool = False


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
