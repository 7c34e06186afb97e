"""What the runner schedules (units) and what comes back (results), as frozen values.

A unit is one agent run of one stage: the stage itself, one matrix item of it, or either of those
inside one iteration of a loop. Its `key` names it everywhere: the ledger, the run folder, the UI.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.agents.base import ErrorKind, Usage
from bridge.events import Status
from bridge.playbook import Stage


@dataclass(frozen=True)
class Unit:
    key: str
    stage_id: str
    stage: Stage
    matrix: dict[str, Any] = field(default_factory=dict)
    iteration: int | None = None  # loop iteration (1-based) when inside a loop
    loop_id: str | None = None
    conflict: Mapping[str, Any] | None = None  # a resolution unit's conflict (templates' `conflict`)


@dataclass(frozen=True)
class Prior:
    """What an earlier session of this run (or an earlier run, for --from) left for a unit."""

    status: str
    attempts: int = 0
    final_message: str = ""
    summary: str = ""
    session_id: str | None = None
    tokens: int = 0  # every attempt of the unit so far (all earlier sessions)
    cost_usd: float = 0.0
    stage_id: str = ""
    from_run: str = ""  # the earlier run it comes from (--only / --from); "" for this run's own


@dataclass(frozen=True)
class AttemptReport:
    """What one attempt of a unit amounted to, after output checks."""

    status: Status  # SUCCESS, FAILURE or CANCELLED
    error: ErrorKind | None = None
    reason: str = ""
    final_message: str = ""
    summary: str = ""
    session_id: str | None = None
    usage: Usage = Usage()
    cost_usd: float = 0.0
    reset_at: float | None = None
    handoff_bytes: int = 0
    duration: float = 0.0


@dataclass(frozen=True)
class UnitResult:
    unit: Unit
    status: Status
    error: ErrorKind | None = None
    reason: str = ""
    attempts: int = 0
    duration: float = 0.0
    final_message: str = ""
    summary: str = ""
    session_id: str | None = None
    tokens: int = 0
    cost_usd: float = 0.0
    reused: bool = False
    reused_from: str = ""  # the earlier run a reused result comes from; "" for this run's earlier session

    @property
    def key(self) -> str:
        return self.unit.key


@dataclass(frozen=True)
class StageResult:
    """A stage's overall result: its matrix items (or its single unit), or its loop iterations."""

    stage_id: str
    status: Status
    reason: str = ""
    units: tuple[UnitResult, ...] = ()
    iterations: int = 0  # loops only
    by_condition: bool = False  # skipped because its own `if` was false (or not selected)
    continue_on_error: bool = False

    @property
    def ok_for_dependents(self) -> bool:
        """May a stage that needs this one run (the default gate)?"""
        if self.status is Status.SUCCESS:
            return True
        if self.status is Status.SKIPPED:
            return self.by_condition
        return self.status is Status.FAILURE and self.continue_on_error

    @property
    def final_message(self) -> str:
        return "\n\n".join(u.final_message for u in self.units if u.final_message)

    @property
    def summary(self) -> str:
        return "\n\n".join(u.summary for u in self.units if u.summary)

    @property
    def cost_usd(self) -> float:
        return sum(u.cost_usd for u in self.units)

    @property
    def tokens(self) -> int:
        return sum(u.tokens for u in self.units)


@dataclass(frozen=True)
class RunResult:
    run_id: str
    status: Status
    reason: str
    stages: dict[str, StageResult]
    duration: float
    tokens: int
    cost_usd: float
    resumable: bool = False
    run_dir: Path | None = None


# The runner's hook for the merge step (bridge.mergeback): run resolution stage `resolver` as unit
# `key` for the conflict of `client`, and return how it ended.
Resolve = Callable[[str, str, Mapping[str, Any], Unit], Awaitable[UnitResult]]
