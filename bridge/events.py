"""The events a run emits, as frozen values. The runner emits them; ui.py renders them."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Callable, Union


class Status(str, Enum):
    """Where a stage (or matrix item, or loop iteration) stands."""

    PENDING = "pending"
    WAITING = "waiting"  # rate limited, sleeping until a reset time
    RUNNING = "running"
    SUCCESS = "success"
    FAILURE = "failure"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def done(self) -> bool:
        return self in (Status.SUCCESS, Status.FAILURE, Status.SKIPPED, Status.CANCELLED)


def _now() -> float:
    return time.time()


@dataclass(frozen=True)
class RunStarted:
    run_id: str
    playbook: str
    run_dir: str
    units: tuple[str, ...]  # every unit key known up front (matrix items included)
    resumed: bool = False
    warnings: tuple[str, ...] = ()  # bridge.caveats.playbook_warnings (none in rehearsals)
    t: float = field(default_factory=_now)


@dataclass(frozen=True)
class UnitStarted:
    """An attempt of one unit (a stage, a matrix item, a loop iteration's stage) began."""

    key: str
    stage_id: str
    agent: str
    attempt: int  # every run of the agent counts, each has its own folder (attempt-<n>)
    iteration: int | None = None
    matrix: dict[str, Any] = field(default_factory=dict)
    after_wait: bool = False  # the previous attempt met a usage limit (not a failure: no retry used)
    t: float = field(default_factory=_now)


@dataclass(frozen=True)
class UnitActivity:
    """What the running agent is doing now: its last tool call or message line."""

    key: str
    kind: str
    text: str
    tokens: int = 0
    cost_usd: float = 0.0
    t: float = field(default_factory=_now)


@dataclass(frozen=True)
class UnitWaiting:
    """Rate limited: sleeping until `until` (epoch seconds); not counted as an attempt."""

    key: str
    until: float
    reason: str
    t: float = field(default_factory=_now)


@dataclass(frozen=True)
class UnitRetrying:
    key: str
    attempt: int  # the attempt that failed
    delay: float
    reason: str
    t: float = field(default_factory=_now)


@dataclass(frozen=True)
class UnitFinished:
    key: str
    stage_id: str
    status: Status
    reason: str = ""
    error: str | None = None  # an ErrorKind value
    attempts: int = 0
    duration: float = 0.0
    tokens: int = 0
    cost_usd: float = 0.0
    reused: bool = False  # succeeded in an earlier session of this run (resume), or in `reused_from`
    reused_from: str = ""  # the earlier run whose result --only / --from reused
    t: float = field(default_factory=_now)


@dataclass(frozen=True)
class LoopIteration:
    """An iteration of a loop has ended, and with it maybe the loop."""

    stage_id: str
    iteration: int
    done: bool  # the loop ends after this iteration (how: `status`)
    # the loop's status after it: running (until not met, it goes on), success (until held), failure
    # (a member failed, or max_iterations reached without until holding) or cancelled
    status: str = ""
    reason: str = ""
    t: float = field(default_factory=_now)


@dataclass(frozen=True)
class TasksUpdated:
    """The shared task list changed (read after a unit ended, or at the start)."""

    done: int
    total: int
    after: str = ""  # the unit key whose end prompted the read ("" at the start)
    t: float = field(default_factory=_now)

    @property
    def open(self) -> int:
        return self.total - self.done


@dataclass(frozen=True)
class GitNote:
    """Worktree news: the run's base, a merge, a conflict, the landing on the user's branch."""

    # base | dirty | merged | conflict | resolving | resolved | unresolved | kept | landed | not_landed
    kind: str
    message: str
    key: str = ""  # the unit (worktree) it is about, if any
    branch: str = ""
    files: tuple[str, ...] = ()
    t: float = field(default_factory=_now)


@dataclass(frozen=True)
class RunCancelling:
    reason: str
    force: bool = False
    t: float = field(default_factory=_now)


@dataclass(frozen=True)
class RunWarning:
    """Something about the run a person should know that changes nothing of its result (a
    notification that did not arrive, say)."""

    message: str
    t: float = field(default_factory=_now)


@dataclass(frozen=True)
class RunFinished:
    run_id: str
    status: Status
    reason: str
    duration: float
    tokens: int
    cost_usd: float
    summary_path: str | None = None
    resumable: bool = False
    t: float = field(default_factory=_now)


Event = Union[RunStarted, UnitStarted, UnitActivity, UnitWaiting, UnitRetrying, UnitFinished,
              LoopIteration, TasksUpdated, GitNote, RunCancelling, RunWarning, RunFinished]
Emit = Callable[[Event], None]


def event_name(event: Event) -> str:
    """'unit_started' for UnitStarted: the `event` field of the JSON form."""
    name = type(event).__name__
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


def to_dict(event: Event) -> dict[str, Any]:
    """A JSON-ready dict with an `event` name first."""
    data = asdict(event)
    for key, value in data.items():
        if isinstance(value, Enum):
            data[key] = value.value
    return {"event": event_name(event), **data}
