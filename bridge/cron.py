"""Cron arithmetic: aliases, validation, DST-correct fire times, jitter and catch-up choices."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from bridge.errors import BridgeError
from bridge.playbook import Playbook, Schedule

ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
MAX_CATCH_UP = 100  # catch_up: all replays at most this many missed fires
MISFIRE_GRACE = 60.0  # a fire handled later than this after its time counts as missed


class ScheduleError(BridgeError):
    """A schedule that cannot be evaluated: a bad cron expression or an unknown timezone."""


def cron_expression(cron: str) -> str:
    """The five-field expression for `cron` (aliases expanded); raises ScheduleError if invalid."""
    expr = ALIASES.get(cron.strip().lower(), cron.strip())
    if len(expr.split()) != 5:
        raise ScheduleError(f"cron {cron!r} needs five fields (minute hour day month weekday) "
                            f"or one of {', '.join(ALIASES)}")
    try:
        CronSim(expr, datetime(2000, 1, 1, tzinfo=timezone.utc))
    except CronSimError as exc:
        raise ScheduleError(f"cron {cron!r} is not valid: {exc}") from None
    return expr


def zone(name: str) -> ZoneInfo:
    """The IANA timezone `name`; raises ScheduleError naming it if unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"timezone {name!r} is unknown; use an IANA name like "
                            "'Europe/Berlin' or 'UTC'") from None


def next_fires(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    """The next `count` nominal fire times strictly after `after`, in the schedule's timezone."""
    tz = zone(schedule.timezone)
    if after.tzinfo is None:
        after = after.replace(tzinfo=timezone.utc)
    it = CronSim(cron_expression(schedule.cron), after.astimezone(tz))
    out: list[datetime] = []
    for fire in it:
        if len(out) >= count:
            break
        out.append(fire)
    return out


def fires_between(schedule: Schedule, start: float, end: float,
                  limit: int = MAX_CATCH_UP) -> tuple[list[float], bool]:
    """Nominal fires in (start, end] as epoch seconds, oldest first; the newest `limit` only.

    The flag says whether older fires were left out. Walks backwards from `end` so a long
    downtime under `* * * * *` costs `limit` steps, not one per missed minute.
    """
    if end <= start:
        return [], False
    tz = zone(schedule.timezone)
    # CronSim steps back one second before matching, so start one second past `end`.
    top = datetime.fromtimestamp(int(end) + 1, tz)
    out: list[float] = []
    for fire in CronSim(cron_expression(schedule.cron), top, reverse=True):
        ts = fire.timestamp()
        if ts <= start:
            return out[::-1], False
        if len(out) >= limit:
            return out[::-1], True
        out.append(ts)
    return out[::-1], False


def jitter_offset(name: str, schedule: Schedule) -> float:
    """A delay in [0, jitter) fixed by the playbook name and cron, so restarts don't reshuffle."""
    if schedule.jitter <= 0:
        return 0.0
    digest = hashlib.sha256(f"{name}\0{schedule.cron}".encode()).digest()
    return schedule.jitter * int.from_bytes(digest[:8], "big") / 2**64


def catch_up(policy: str, missed: list[float], due_now: bool = False) -> tuple[list[float], list[float]]:
    """Split missed fires into (to run, dropped) under catch_up none | last | all. Under `last`, a fire
    due now is the catch-up itself: every missed fire is dropped, and that one run stands for them."""
    if policy == "all":
        return list(missed), []
    if policy == "last" and missed and not due_now:
        return missed[-1:], missed[:-1]
    return [], list(missed)


def validate_schedules(playbook: Playbook) -> None:
    """Raise ScheduleError for the first schedule that cannot be evaluated or passes undeclared vars."""
    for i, s in enumerate(playbook.schedule):
        try:
            cron_expression(s.cron)
            zone(s.timezone)
        except ScheduleError as exc:
            raise ScheduleError(f"schedule[{i}]: {exc}") from None
        undeclared = sorted(set(s.vars) - set(playbook.vars))
        if undeclared:
            raise ScheduleError(f"schedule[{i}].vars: {', '.join(undeclared)} not declared under `vars:`; "
                                "`bridge run --var` only overrides declared variables")
