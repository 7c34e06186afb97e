"""One fire started by the OS scheduler (a crontab line, a systemd timer): `bridge schedule fire`.

What `bridge schedule run` does for one fire, without the long-lived scheduler: the playbook's lock
under the schedule's overlap policy (bridge.scheduled_run.fire_lock, the same lock file), a row in
the ledger's `schedule_fires`, then the run itself in this process. Never prints: notes go to a
callback, run events to `emit`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bridge.errors import BridgeError
from bridge.events import Emit
from bridge.playbook import Schedule
from bridge.unit import RunResult

YEAR = 366 * 24 * 3600.0  # the longest gap between two fires (@yearly)


@dataclass(frozen=True)
class Fire:
    """Which schedule fired, and for when (its latest nominal fire time at or before now)."""

    name: str
    schedule: Schedule
    number: int  # 1-based index into the playbook's `schedule:`
    scheduled_for: float


def which_fire(path: Path, number: int, now: float) -> Fire:
    """The playbook's schedule `number` and its latest fire time; BridgeError if there is none."""
    from bridge.cron import fires_between, validate_schedules
    from bridge.scheduler import load_playbook

    playbook = load_playbook(path)
    validate_schedules(playbook)
    if not 1 <= number <= len(playbook.schedule):
        have = f"has {len(playbook.schedule)}" if playbook.schedule else "has no `schedule:`"
        raise BridgeError(f"{path}: --schedule {number}: the playbook {have}; export the schedules again "
                          "with `bridge schedule export`")
    schedule = playbook.schedule[number - 1]
    fires, _ = fires_between(schedule, now - YEAR, now, limit=1)
    return Fire(playbook.name, schedule, number, fires[-1] if fires else now)


def fire(path: Path, project: Path, number: int, emit: Emit, *, note: Callable[[str], None] = lambda t: None,
         stop_grace: float = 10.0, now: float | None = None) -> RunResult | None:
    """Take the playbook's lock under the schedule's overlap policy, record the fire, run the playbook.

    None when the fire is skipped (the lock is busy under `overlap: skip`, or another fire already
    waits); the skip is recorded in the ledger and passed to `note`.
    """
    from bridge.launch import RunSpec, start_run
    from bridge.ledger import Ledger
    from bridge.loader import parse_vars
    from bridge.scheduled_run import LockHeld, fire_lock, var_args, write_holder
    from bridge.workspace import new_run_id

    project, path = project.resolve(), path.resolve()
    now = time.time() if now is None else now
    try:
        what = which_fire(path, number, now)
    except BridgeError as exc:  # a broken playbook: the fire is recorded, and the error raised on
        with Ledger(project) as ledger:
            ledger.record_fire(path.stem, now, time.time(), "failed", None,
                               f"{path}: the playbook could not be loaded: "
                               + "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())[:1000])
        raise
    overlap = what.schedule.overlap
    try:
        with fire_lock(project, what.name, overlap, stop_grace=stop_grace, note=note) as fd:
            write_holder(fd, os.getpid())
            run_id = new_run_id()
            with Ledger(project) as ledger:
                ledger.record_fire(what.name, what.scheduled_for, time.time(), "started", run_id,
                                   f"run {run_id}, pid {os.getpid()} (OS scheduler)")
            os.environ["BRIDGE_SCHEDULED_FOR"] = str(what.scheduled_for)  # as the scheduler's children get it
            vars = parse_vars(var_args(what.schedule.vars)[1::2])
            return start_run(RunSpec(playbook_path=path, project=project, vars=vars, run_id=run_id), emit)
    except LockHeld as exc:
        with Ledger(project) as ledger:
            ledger.record_fire(what.name, what.scheduled_for, time.time(), "skipped", None, str(exc))
        note(f"skipped: {exc}")
        return None
