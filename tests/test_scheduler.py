"""Scheduler: cron arithmetic across DST, jitter, catch-up, overlap, locks, reload, shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bridge.commands import schedule_export, schedule_list
from bridge.cron import (ScheduleError, catch_up, cron_expression, fires_between, jitter_offset,
                         next_fires, validate_schedules)
from bridge.playbook import Schedule
from bridge.scheduled_run import LockHeld, RunRequest, playbook_lock, run_argv
from bridge.scheduler import Scheduler, SchedulerEvent

UTC = timezone.utc
REPO = Path(__file__).resolve().parent.parent


def ts(*args: int, tz: str = "UTC") -> float:
    return datetime(*args, tzinfo=ZoneInfo(tz)).timestamp()


# ---- fakes ----------------------------------------------------------------------------------

class FakeLedger:
    def __init__(self, last: dict[str, float] | None = None) -> None:
        self.rows: list[tuple[str, float, float, str, str | None, str]] = []
        self.last = dict(last or {})

    def record_fire(self, playbook: str, scheduled_for: float, fired_at: float, action: str,
                    run_id: str | None, detail: str = "") -> None:
        self.rows.append((playbook, scheduled_for, fired_at, action, run_id, detail))
        self.last[playbook] = max(self.last.get(playbook, scheduled_for), scheduled_for)

    def last_fire(self, playbook: str) -> float | None:
        return self.last.get(playbook)

    def run(self, run_id: str) -> None:
        return None

    def actions(self, playbook: str | None = None) -> list[tuple[float, str]]:
        return [(r[1], r[3]) for r in self.rows if playbook is None or r[0] == playbook]


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeRun:
    _next_pid = 1000

    def __init__(self, request: RunRequest) -> None:
        FakeRun._next_pid += 1
        self.pid = FakeRun._next_pid
        self.request = request
        self.code: int | None = None
        self.signals: list[int] = []

    def poll(self) -> int | None:
        return self.code

    def send_signal(self, sig: int) -> None:
        self.signals.append(sig)


class Starter:
    def __init__(self) -> None:
        self.runs: list[FakeRun] = []

    def __call__(self, request: RunRequest) -> FakeRun:
        run = FakeRun(request)
        self.runs.append(run)
        return run


def playbook_yaml(name: str, *schedules: str) -> str:
    lines = ["version: 1", f"name: {name}", "vars: {x: '0', v: old, target: dev}", "agents: {a: {cli: claude}}",
             "stages: {s: {agent: a, prompt: hi}}", "schedule:"]
    lines += [f"  - {s}" for s in schedules]
    return "\n".join(lines) + "\n"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / ".bridge").mkdir()
    (tmp_path / "playbooks").mkdir()
    return tmp_path


def make(project: Path, clock: FakeClock, ledger: FakeLedger | None = None,
         starter: Starter | None = None, events: list[SchedulerEvent] | None = None,
         **kw: float) -> Scheduler:
    return Scheduler(project / "playbooks", project, ledger if ledger is not None else FakeLedger(),
                     start_run=starter if starter is not None else Starter(), clock=clock,
                     on_event=(events.append if events is not None else lambda e: None), **kw)


def write(project: Path, file: str, text: str) -> Path:
    path = project / "playbooks" / file
    path.write_text(text)
    # mtime resolution can be coarse; make each write visibly newer
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    return path


# ---- cron arithmetic ------------------------------------------------------------------------

def test_next_fires_across_spring_forward_in_berlin() -> None:
    s = Schedule(cron="30 2 * * *", timezone="Europe/Berlin")
    fires = next_fires(s, datetime(2024, 3, 29, 12, tzinfo=UTC), 4)
    assert [f.isoformat() for f in fires] == [
        "2024-03-30T02:30:00+01:00",
        "2024-03-31T03:00:00+02:00",  # 02:30 does not exist that night: fires when the clock jumps
        "2024-04-01T02:30:00+02:00",
        "2024-04-02T02:30:00+02:00",
    ]


def test_next_fires_across_fall_back_in_berlin_fires_once() -> None:
    s = Schedule(cron="30 2 * * *", timezone="Europe/Berlin")
    fires = next_fires(s, datetime(2024, 10, 26, 12, tzinfo=UTC), 2)
    assert [f.isoformat() for f in fires] == ["2024-10-27T02:30:00+02:00", "2024-10-28T02:30:00+01:00"]


def test_next_fires_new_york_keeps_wall_clock_time_across_dst() -> None:
    s = Schedule(cron="0 9 * * 1-5", timezone="America/New_York")
    fires = next_fires(s, datetime(2024, 3, 8, 15, tzinfo=UTC), 2)  # Fri 10:00 EST
    assert [f.isoformat() for f in fires] == ["2024-03-11T09:00:00-04:00", "2024-03-12T09:00:00-04:00"]
    # 09:00 local is 14:00 UTC before the switch and 13:00 UTC after
    before = next_fires(s, datetime(2024, 3, 7, 0, tzinfo=UTC), 1)[0]
    assert before.astimezone(UTC).hour == 14 and fires[0].astimezone(UTC).hour == 13


def test_aliases_map_to_five_fields() -> None:
    assert cron_expression("@daily") == "0 0 * * *"
    assert cron_expression("@hourly") == "0 * * * *"
    assert cron_expression("@weekly") == "0 0 * * 0"
    assert cron_expression("@monthly") == "0 0 1 * *"
    assert cron_expression("@yearly") == "0 0 1 1 *"
    fires = next_fires(Schedule(cron="@weekly"), datetime(2024, 1, 1, tzinfo=UTC), 2)  # a Monday
    assert [f.date().isoformat() for f in fires] == ["2024-01-07", "2024-01-14"]


@pytest.mark.parametrize("cron", ["* * * *", "0 0 * * * *", "61 * * * *", "@fortnightly"])
def test_bad_cron_is_a_schedule_error(cron: str) -> None:
    with pytest.raises(ScheduleError):
        cron_expression(cron)


def test_unknown_timezone_is_a_schedule_error() -> None:
    with pytest.raises(ScheduleError, match="Mars/Olympus"):
        next_fires(Schedule(cron="@daily", timezone="Mars/Olympus"), datetime.now(UTC), 1)


def test_fires_between_matches_forward_walk_across_dst() -> None:
    s = Schedule(cron="30 * * * *", timezone="Europe/Berlin")
    start = ts(2024, 10, 26, 22, 0)
    forward = [f.timestamp() for f in next_fires(s, datetime.fromtimestamp(start, UTC), 10)]
    got, truncated = fires_between(s, start, forward[-1])
    assert got == forward and not truncated
    newest, truncated = fires_between(s, start, forward[-1], limit=3)
    assert newest == forward[-3:] and truncated


def test_jitter_is_deterministic_per_playbook_and_bounded() -> None:
    s = Schedule(cron="@hourly", jitter="10m")
    a1, a2, b = jitter_offset("nightly", s), jitter_offset("nightly", s), jitter_offset("weekly", s)
    assert a1 == a2 and 0 <= a1 < 600 and 0 <= b < 600 and a1 != b
    assert jitter_offset("nightly", Schedule(cron="@hourly")) == 0.0


def test_catch_up_policies() -> None:
    missed = [1.0, 2.0, 3.0]
    assert catch_up("none", missed) == ([], missed)
    assert catch_up("last", missed) == ([3.0], [1.0, 2.0])
    assert catch_up("all", missed) == (missed, [])
    assert catch_up("last", missed, due_now=True) == ([], missed)  # the fire due now runs for them
    assert catch_up("all", missed, due_now=True) == (missed, [])


def test_undeclared_schedule_vars_are_a_schedule_error(project: Path) -> None:
    import yaml

    from bridge.errors import PlaybookError
    from bridge.playbook import Playbook
    from bridge.scheduler import load_playbook

    path = write(project, "a.yaml", playbook_yaml("a", "{cron: '@daily', vars: {nope: 1}}"))
    with pytest.raises(PlaybookError, match="schedule\\[0\\].vars.nope"):  # the loader says where
        load_playbook(path)
    with pytest.raises(ScheduleError, match="nope not declared"):  # and the scheduler's own check, too
        validate_schedules(Playbook.model_validate(yaml.safe_load(path.read_text())))


def test_run_argv_passes_vars() -> None:
    argv = run_argv(Path("/p/x.yaml"), {"target": "main", "n": 3})
    assert argv == [sys.executable, "-m", "bridge", "run", "/p/x.yaml", "--var", "target=main", "--var", "n=3"]


# ---- the loop: firing on time, catch-up -----------------------------------------------------

def test_fires_on_time_and_records_in_ledger(project: Path) -> None:
    write(project, "a.yaml", playbook_yaml("a", "{cron: '0 * * * *', vars: {x: '1'}}"))
    clock, ledger, starter = FakeClock(ts(2024, 5, 1, 9, 59, 30)), FakeLedger(), Starter()
    sched = make(project, clock, ledger, starter)
    assert sched.tick() <= 30
    assert starter.runs == []
    clock.now = ts(2024, 5, 1, 10, 0, 0, 200000)
    sched.tick()
    assert len(starter.runs) == 1
    req = starter.runs[0].request
    assert req.playbook == "a" and req.vars == {"x": "1"} and req.project_dir == project
    assert req.scheduled_for == ts(2024, 5, 1, 10, 0)
    assert ledger.rows[0][:4] == ("a", ts(2024, 5, 1, 10, 0), clock.now, "started")
    assert req.run_id and ledger.rows[0][4] == req.run_id  # the scheduler chose the run's id and recorded it
    clock.now += 5
    sched.tick()
    assert len(starter.runs) == 1  # one fire, one run


def test_jitter_delays_the_fire(project: Path) -> None:
    write(project, "a.yaml", playbook_yaml("a", "{cron: '0 * * * *', jitter: 30m}"))
    offset = jitter_offset("a", Schedule(cron="0 * * * *", jitter="30m"))
    clock, starter = FakeClock(ts(2024, 5, 1, 9, 59)), Starter()
    sched = make(project, clock, starter=starter)
    sched.tick()
    clock.now = ts(2024, 5, 1, 10, 0) + offset - 1
    sched.tick()
    assert starter.runs == []
    clock.now += 1.5
    sched.tick()
    assert len(starter.runs) == 1 and starter.runs[0].request.scheduled_for == ts(2024, 5, 1, 10, 0)


@pytest.mark.parametrize("policy, started, missed", [
    ("none", [], [ts(2024, 5, 1, 12)]),
    ("last", [ts(2024, 5, 1, 12)], [ts(2024, 5, 1, 11)]),
    ("all", [ts(2024, 5, 1, h) for h in (10, 11, 12)], []),
])
def test_catch_up_from_last_recorded_fire(project: Path, policy: str, started: list[float],
                                          missed: list[float]) -> None:
    write(project, "a.yaml", playbook_yaml("a", f"{{cron: '0 * * * *', catch_up: {policy}}}"))
    ledger = FakeLedger(last={"a": ts(2024, 5, 1, 9)})  # down since the 09:00 fire
    clock, starter = FakeClock(ts(2024, 5, 1, 12, 30)), Starter()
    sched = make(project, clock, ledger, starter)
    sched.tick()
    for _ in range(5):  # catch_up: all replays one after another
        for run in starter.runs:
            run.code = 0
        clock.now += 1
        sched.tick()
    assert [r.request.scheduled_for for r in starter.runs] == started
    assert [t for t, a in ledger.actions() if a == "missed"] == missed
    assert [t for t, a in ledger.actions() if a == "started"] == started


@pytest.mark.parametrize("overlap", ["skip", "cancel"])
def test_catch_up_all_queues_the_fire_due_now_behind_the_missed_ones(project: Path, overlap: str) -> None:
    """Back at 10:00:05 after 07:00: 08:00 and 09:00 are replayed, and the 10:00 fire — due now — is
    neither skipped nor does it cancel them: one backlog, in order, whatever the overlap policy."""
    write(project, "a.yaml", playbook_yaml("a", f"{{cron: '0 * * * *', catch_up: all, overlap: {overlap}}}"))
    ledger = FakeLedger(last={"a": ts(2024, 5, 1, 7)})
    clock, starter = FakeClock(ts(2024, 5, 1, 10, 0, 5)), Starter()
    sched = make(project, clock, ledger, starter)
    sched.tick()
    assert [(t, a) for t, a in ledger.actions()] == [
        (ts(2024, 5, 1, 8), "started"), (ts(2024, 5, 1, 9), "queued"), (ts(2024, 5, 1, 10), "queued")]
    assert "behind the missed fires" in ledger.rows[-1][5]
    for _ in range(4):
        for run in starter.runs:
            if run.request.scheduled_for < ts(2024, 5, 1, 10):  # the 10:00 run is still going at 11:00
                run.code = 0
        clock.now += 1
        sched.tick()
    assert [r.request.scheduled_for for r in starter.runs] == [ts(2024, 5, 1, h) for h in (8, 9, 10)]
    assert all(r.signals == [] for r in starter.runs)
    assert "skipped" not in {a for _, a in ledger.actions()}
    clock.now = ts(2024, 5, 1, 11, 0, 1)  # the backlog is done: the overlap policy applies again
    sched.tick()
    assert ledger.actions()[-1] == (ts(2024, 5, 1, 11), "skipped" if overlap == "skip" else "queued")
    assert starter.runs[-1].signals == ([] if overlap == "skip" else [signal.SIGINT])


def test_catch_up_last_and_the_fire_due_now_are_one_run(project: Path) -> None:
    write(project, "a.yaml", playbook_yaml("a", "{cron: '0 * * * *', catch_up: last}"))
    ledger = FakeLedger(last={"a": ts(2024, 5, 1, 7)})
    clock, starter = FakeClock(ts(2024, 5, 1, 10, 0, 5)), Starter()
    make(project, clock, ledger, starter).tick()
    assert [r.request.scheduled_for for r in starter.runs] == [ts(2024, 5, 1, 10)]  # the current fire runs
    assert ledger.actions() == [(ts(2024, 5, 1, 9), "missed"), (ts(2024, 5, 1, 10), "started")]
    missed, started = ledger.rows[0][5], ledger.rows[1][5]
    assert "2 fire(s) missed" in missed and "the fire due now runs for them" in missed
    assert "also for 2 missed fire(s); catch_up: last" in started


def test_the_next_fire_waits_for_a_catch_up_still_running(project: Path) -> None:
    """Back at 10:30 after 07:00 with catch_up: last: the 09:00 fire runs late, and is still running at
    11:00; the 11:00 fire waits for it (once), where overlap: skip would have lost it."""
    write(project, "a.yaml", playbook_yaml("a", "{cron: '0 * * * *', catch_up: last}"))
    ledger = FakeLedger(last={"a": ts(2024, 5, 1, 7)})
    clock, starter = FakeClock(ts(2024, 5, 1, 10, 30)), Starter()
    sched = make(project, clock, ledger, starter)
    sched.tick()
    assert [r.request.scheduled_for for r in starter.runs] == [ts(2024, 5, 1, 10)]
    clock.now = ts(2024, 5, 1, 11, 0, 1)
    sched.tick()
    assert ledger.actions()[-1] == (ts(2024, 5, 1, 11), "queued")
    assert "behind the catch-up" in ledger.rows[-1][5]
    starter.runs[0].code = 0
    clock.now += 1
    sched.tick()
    assert [r.request.scheduled_for for r in starter.runs] == [ts(2024, 5, 1, 10), ts(2024, 5, 1, 11)]
    clock.now = ts(2024, 5, 1, 12, 0, 1)  # no catch-up running any more: overlap: skip applies
    sched.tick()
    assert ledger.actions()[-1] == (ts(2024, 5, 1, 12), "skipped")


def test_no_catch_up_without_a_recorded_fire(project: Path) -> None:
    write(project, "a.yaml", playbook_yaml("a", "{cron: '0 * * * *', catch_up: all}"))
    clock, ledger, starter = FakeClock(ts(2024, 5, 1, 12, 30)), FakeLedger(), Starter()
    make(project, clock, ledger, starter).tick()
    assert starter.runs == [] and ledger.rows == []


def test_missed_fires_after_suspend_follow_catch_up(project: Path) -> None:
    write(project, "a.yaml", playbook_yaml("a", "{cron: '*/10 * * * *', catch_up: last}"))
    clock, ledger, starter = FakeClock(ts(2024, 5, 1, 9, 55)), FakeLedger(), Starter()
    sched = make(project, clock, ledger, starter)
    sched.tick()
    clock.now = ts(2024, 5, 1, 11, 5)  # the machine slept for 70 minutes
    sched.tick()
    assert [r.request.scheduled_for for r in starter.runs] == [ts(2024, 5, 1, 11, 0)]
    assert ("missed" in {a for _, a in ledger.actions()})


# ---- overlap ---------------------------------------------------------------------------------

def overlap_setup(project: Path, policy: str) -> tuple[Scheduler, FakeClock, FakeLedger, Starter]:
    write(project, "a.yaml", playbook_yaml("a", f"{{cron: '* * * * *', overlap: {policy}}}"))
    clock, ledger, starter = FakeClock(ts(2024, 5, 1, 10, 0, 30)), FakeLedger(), Starter()
    sched = make(project, clock, ledger, starter, stop_grace=5)
    sched.tick()
    clock.now = ts(2024, 5, 1, 10, 1, 0)
    sched.tick()
    assert len(starter.runs) == 1
    return sched, clock, ledger, starter


def test_overlap_skip_records_skipped_fire(project: Path) -> None:
    sched, clock, ledger, starter = overlap_setup(project, "skip")
    clock.now = ts(2024, 5, 1, 10, 2, 0)
    sched.tick()
    assert len(starter.runs) == 1
    assert ledger.actions()[-1] == (ts(2024, 5, 1, 10, 2), "skipped")
    starter.runs[0].code = 0
    clock.now = ts(2024, 5, 1, 10, 3, 0)
    sched.tick()
    assert len(starter.runs) == 2  # the next fire after the run ended starts normally


def test_overlap_queue_runs_after_current_at_most_one(project: Path) -> None:
    sched, clock, ledger, starter = overlap_setup(project, "queue")
    for minute in (2, 3):
        clock.now = ts(2024, 5, 1, 10, minute, 0)
        sched.tick()
    assert len(starter.runs) == 1
    assert ledger.actions()[-2:] == [(ts(2024, 5, 1, 10, 2), "queued"), (ts(2024, 5, 1, 10, 3), "skipped")]
    starter.runs[0].code = 0
    clock.now += 1
    sched.tick()
    assert len(starter.runs) == 2 and starter.runs[1].request.scheduled_for == ts(2024, 5, 1, 10, 2)
    assert ledger.actions()[-1] == (ts(2024, 5, 1, 10, 2), "started")


def test_overlap_cancel_stops_current_in_stages_then_starts_new(project: Path) -> None:
    sched, clock, ledger, starter = overlap_setup(project, "cancel")
    first = starter.runs[0]
    clock.now = ts(2024, 5, 1, 10, 2, 0)
    sched.tick()
    assert first.signals == [signal.SIGINT] and len(starter.runs) == 1
    clock.now += 5
    sched.tick()
    assert first.signals == [signal.SIGINT, signal.SIGTERM]
    clock.now += 5
    sched.tick()
    assert first.signals == [signal.SIGINT, signal.SIGTERM, signal.SIGKILL]
    first.code = -9
    clock.now += 1
    sched.tick()
    assert len(starter.runs) == 2 and starter.runs[1].request.scheduled_for == ts(2024, 5, 1, 10, 2)
    assert ledger.actions()[-2:] == [(ts(2024, 5, 1, 10, 2), "queued"), (ts(2024, 5, 1, 10, 2), "started")]


def test_overlap_cancel_stops_early_if_run_exits_on_sigint(project: Path) -> None:
    sched, clock, _, starter = overlap_setup(project, "cancel")
    clock.now = ts(2024, 5, 1, 10, 2, 0)
    sched.tick()
    starter.runs[0].code = 130
    clock.now += 1
    sched.tick()
    assert starter.runs[0].signals == [signal.SIGINT] and len(starter.runs) == 2


# ---- broken / edited playbooks, locks --------------------------------------------------------

def test_broken_playbook_reported_once_and_others_keep_firing(project: Path) -> None:
    write(project, "good.yaml", playbook_yaml("good", "{cron: '* * * * *'}"))
    write(project, "bad.yaml", "version: 1\nname: bad\nstages: [\n")
    write(project, "badcron.yaml", playbook_yaml("badcron", "{cron: '99 * * * *'}"))
    events: list[SchedulerEvent] = []
    clock, starter = FakeClock(ts(2024, 5, 1, 10, 0, 30)), Starter()
    sched = make(project, clock, starter=starter, events=events)
    sched.tick()
    for minute in (1, 2, 3):
        clock.now = ts(2024, 5, 1, 10, minute, 0)
        sched.tick()
        for run in starter.runs:
            run.code = 0
    broken = [e for e in events if e.kind == "broken"]
    assert sorted(e.playbook for e in broken) == ["bad.yaml", "badcron.yaml"]
    assert "99 * * * *" in next(e.message for e in broken if e.playbook == "badcron.yaml")
    assert [r.request.playbook for r in starter.runs] == ["good"] * 3
    write(project, "bad.yaml", "version: 1\nname: bad\nstages: {}\n")  # edited, still broken
    clock.now += 1
    sched.tick()
    assert len([e for e in events if e.kind == "broken"]) == 3


def test_edited_playbook_is_reloaded(project: Path) -> None:
    path = write(project, "a.yaml", playbook_yaml("a", "{cron: '0 * * * *'}"))
    events: list[SchedulerEvent] = []
    clock, starter = FakeClock(ts(2024, 5, 1, 10, 0, 30)), Starter()
    sched = make(project, clock, starter=starter, events=events)
    sched.tick()
    write(project, "a.yaml", playbook_yaml("a", "{cron: '*/5 * * * *', vars: {v: new}}"))
    clock.now = ts(2024, 5, 1, 10, 5, 0)
    sched.tick()
    assert any(e.kind == "loaded" and "reloaded" in e.message for e in events)
    assert len(starter.runs) == 1 and starter.runs[0].request.vars == {"v": "new"}
    assert starter.runs[0].request.path == path


def test_lock_prevents_two_schedulers_running_the_same_playbook(project: Path) -> None:
    write(project, "a.yaml", playbook_yaml("a", "{cron: '* * * * *'}"))
    clock, ledger = FakeClock(ts(2024, 5, 1, 10, 0, 30)), FakeLedger()
    s1, s2 = Starter(), Starter()
    one, two = make(project, clock, ledger, s1), make(project, clock, ledger, s2)
    one.tick(), two.tick()
    clock.now = ts(2024, 5, 1, 10, 1, 0)
    one.tick(), two.tick()
    assert len(s1.runs) == 1 and s2.runs == []
    assert ledger.actions()[-1] == (ts(2024, 5, 1, 10, 1), "skipped")
    assert "locked" in ledger.rows[-1][5]
    s1.runs[0].code = 0
    one.tick()  # reaps the run, releasing the lock
    clock.now = ts(2024, 5, 1, 10, 2, 0)
    two.tick()
    assert len(s2.runs) == 1


def test_playbook_lock_is_exclusive_and_released(project: Path) -> None:
    with playbook_lock(project, "x"):
        with pytest.raises(LockHeld):
            with playbook_lock(project, "x"):
                pass
    with playbook_lock(project, "x"):
        pass


def test_shutdown_drains_then_stops_runs(project: Path) -> None:
    write(project, "a.yaml", playbook_yaml("a", "{cron: '* * * * *'}"))
    clock, starter = FakeClock(ts(2024, 5, 1, 10, 0, 30)), Starter()
    events: list[SchedulerEvent] = []
    sched = make(project, clock, starter=starter, events=events, shutdown_grace=20, stop_grace=5)
    sched.tick()
    clock.now = ts(2024, 5, 1, 10, 1, 0)
    sched.tick()
    run = starter.runs[0]
    waits: list[float] = []

    def wait(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 1:
            sched.request_stop()  # as SIGTERM would, while the loop sleeps
        clock.now += max(seconds, 1.0)
        if run.signals == [signal.SIGINT]:
            run.code = 130

    sched.run_forever(wait)
    assert run.signals == [signal.SIGINT]
    assert 19 <= clock.now - ts(2024, 5, 1, 10, 1, 0) <= 25  # waited the grace, then stopped it
    stopping = [e for e in events if e.kind == "stopping"]
    # said at once, before the wait: never silent for the grace period
    assert stopping[0].message.startswith("stopping: waiting up to 20s for 1 running run (a); ")
    assert stopping[0].t < ts(2024, 5, 1, 10, 1, 5)
    assert "SIGINT" in stopping[1].message and events[-1].kind == "shutdown"


# ---- the real subprocess path ----------------------------------------------------------------

SCRIPT = """
import sys, time
from pathlib import Path
from bridge.scheduled_run import start_child
from bridge.scheduler import Scheduler

class Ledger:
    def record_fire(self, *a, **k): print("fire", a[3], flush=True)
    def last_fire(self, name): return None
    def run(self, run_id): return None

project = Path(sys.argv[1])
fake = str(project / "fake_run.py")
t0 = time.time()
fire = (int(t0) // 60 + 1) * 60
clock = lambda: fire - 0.3 + (time.time() - t0)  # the next minute's fire is 0.3 s away
sched = Scheduler(project / "playbooks", project, Ledger(), clock=clock, poll_interval=0.1,
                  start_run=lambda req: start_child(req, [sys.executable, fake]),
                  shutdown_grace=0.5, stop_grace=1.0)
with sched.handle_signals():
    sched.run_forever()
print("clean exit", flush=True)
"""

FAKE_RUN = """
import subprocess, sys, time, os
from pathlib import Path
child = subprocess.Popen(["sleep", "60"])
Path("pids.tmp").write_text(f"{os.getpid()} {child.pid}")
os.replace("pids.tmp", "pids")
time.sleep(60)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_sigterm_shuts_down_and_leaves_no_children(project: Path) -> None:
    write(project, "a.yaml", playbook_yaml("a", "{cron: '* * * * *'}"))
    (project / "fake_run.py").write_text(textwrap.dedent(FAKE_RUN))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(project)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pids_file = project / "pids"
    deadline = time.monotonic() + 20
    while not pids_file.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the scheduler never started the run"
        time.sleep(0.05)
    pids = [int(p) for p in pids_file.read_text().split()]
    assert all(alive(p) for p in pids)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "fire started" in out and "clean exit" in out
    deadline = time.monotonic() + 5
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in pids)
    assert list((project / ".bridge" / "logs" / "schedule").iterdir())


# ---- the real ledger ------------------------------------------------------------------------

def test_fires_are_recorded_in_the_real_ledger(project: Path) -> None:
    from bridge.ledger import Ledger

    write(project, "a.yaml", playbook_yaml("a", "{cron: '* * * * *'}"))
    clock, starter = FakeClock(ts(2024, 5, 1, 10, 0, 30)), Starter()
    with Ledger(project) as ledger:
        sched = make(project, clock, ledger, starter)
        sched.tick()
        for minute in (1, 2):
            clock.now = ts(2024, 5, 1, 10, minute, 0)
            sched.tick()
        rows = ledger.fires("a")
        assert [(r["scheduled_for"], r["action"]) for r in rows] == [
            (ts(2024, 5, 1, 10, 1), "started"), (ts(2024, 5, 1, 10, 2), "skipped")]
        assert ledger.last_fire("a") == ts(2024, 5, 1, 10, 2)
        starter.runs[0].code = 0
        clock.now += 10
        sched.tick()  # reaps the run and releases its lock
    # a restart picks up from the ledger: 10:03 was missed (catch_up: none), 10:04 is on time
    with Ledger(project) as ledger:
        clock.now = ts(2024, 5, 1, 10, 4, 30)
        make(project, clock, ledger, Starter()).tick()
        assert [(r["scheduled_for"], r["action"]) for r in ledger.fires("a")][-2:] == [
            (ts(2024, 5, 1, 10, 3), "missed"), (ts(2024, 5, 1, 10, 4), "started")]


# ---- export and list ------------------------------------------------------------------------


def test_on_calendar_translation() -> None:
    oc = schedule_export.on_calendar
    assert oc("30 2 * * 1-5", "Europe/Berlin") == "Mon,Tue,Wed,Thu,Fri *-*-* 02:30:00 Europe/Berlin"
    assert oc("*/15 * * * *", "UTC") == "*-*-* *:00/15:00 UTC"
    assert oc("@monthly", "UTC") == "*-*-01 00:00:00 UTC"
    assert oc("0 8-10 * jan,jul sun", "UTC") == "Sun *-01,07-* 08,09,10:00:00 UTC"
    with pytest.raises(schedule_export.Untranslatable, match="EITHER"):
        oc("0 9 1 * 1", "UTC")


@pytest.fixture
def agent_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "agent-bin"
    folder.mkdir()
    for cli in ("claude", "codex"):
        exe = folder / cli
        exe.write_text("#!/bin/sh\nexit 0\n")
        exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}/usr/bin{os.pathsep}/bin")
    return folder


def export_project(project: Path) -> None:
    write(project, "nightly.yaml", playbook_yaml(
        "nightly", "{cron: '30 2 * * 1-5', timezone: Europe/Berlin, vars: {target: main}}", "{cron: '@daily'}"))


def test_export_systemd(project: Path, agent_bin: Path, capsys: pytest.CaptureFixture[str]) -> None:
    export_project(project)
    assert schedule_export.run(directory=project / "playbooks", systemd=True) == 0
    out = capsys.readouterr().out
    assert "# --- bridge-nightly.service ---" in out and "# --- bridge-nightly-2.timer ---" in out
    assert "OnCalendar=Mon,Tue,Wed,Thu,Fri *-*-* 02:30:00 Europe/Berlin" in out
    assert "OnCalendar=*-*-* 00:00:00 UTC" in out
    assert f"WorkingDirectory={project}" in out
    path_line = next(line for line in out.splitlines() if line.startswith("Environment=PATH="))
    assert path_line.split("=", 2)[2].split(os.pathsep)[0] == str(agent_bin)
    exec_line = next(line for line in out.splitlines() if line.startswith("ExecStart="))
    exe = exec_line.split()[0].removeprefix("ExecStart=")
    assert os.path.isabs(exe)
    assert exec_line.endswith(f"schedule fire {project}/playbooks/nightly.yaml --schedule 1 --dir {project}")
    second = [line for line in out.splitlines() if line.startswith("ExecStart=")][1]
    assert second.endswith("--schedule 2 --dir " + str(project))  # the fire command takes its vars from it
    assert "Not found on PATH when exporting: gemini" in out


def test_export_systemd_names_crons_it_cannot_express(project: Path, agent_bin: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    write(project, "odd.yaml", playbook_yaml("odd", "{cron: '0 9 1 * 1'}"))
    assert schedule_export.run(directory=project / "playbooks", systemd=True) == 1
    captured = capsys.readouterr()
    assert "odd (0 9 1 * 1)" in captured.err and "--crontab" in captured.err
    assert "bridge-odd" not in captured.out


def test_export_crontab(project: Path, agent_bin: Path, monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        export_project(project)
        assert schedule_export.run(directory=project / "playbooks", crontab=True) == 0
    finally:
        monkeypatch.undo()
        time.tzset()
    lines = capsys.readouterr().out.splitlines()
    path_line = next(line for line in lines if line.startswith("PATH="))
    assert path_line.removeprefix("PATH=").split(os.pathsep)[0] == str(agent_bin)
    daily = next(line for line in lines if line.startswith("0 0 * * * "))
    berlin = next(line for line in lines if line.startswith("30 2 * * 1-5 "))
    assert lines.index("CRON_TZ=Europe/Berlin") < lines.index(berlin)
    assert lines.index(daily) < lines.index("CRON_TZ=Europe/Berlin")  # UTC lines need no CRON_TZ here
    assert f"cd {project} && " in berlin and f"mkdir -p {project}/.bridge/logs/schedule && " in berlin
    assert f" schedule fire {project}/playbooks/nightly.yaml --schedule 1 --dir {project} >> " in berlin
    assert "flock" not in berlin  # the lock is bridge's own (schedule fire), not flock(1)


def test_schedule_list_rows(project: Path) -> None:
    export_project(project)
    write(project, "broken.yaml", "version: 1\nname: broken\n")
    rows, broken = schedule_list.rows(project / "playbooks", 2, datetime(2024, 3, 29, 12, tzinfo=UTC))
    assert broken == 1
    assert rows[0][0] == "broken.yaml" and rows[0][-1].startswith("error:")
    assert rows[1][:5] == ["nightly", "30 2 * * 1-5", "Europe/Berlin", "skip", "none"]
    assert rows[1][-1].splitlines() == ["2024-04-01 02:30 CEST", "2024-04-02 02:30 CEST"]
    assert rows[2][-1].splitlines() == ["2024-03-30 00:00 UTC", "2024-03-31 00:00 UTC"]


def test_schedule_commands_take_the_project_with_dir(project: Path, tmp_path: Path, agent_bin: Path) -> None:
    """--dir picks the project as `bridge run --dir` does: DIR defaults to its playbooks/, and playbooks
    kept elsewhere still run in it."""
    export_project(project)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1", "COLUMNS": "200"}

    def bridge(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bridge", "schedule", *args], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=60)

    listed = bridge("list", "--dir", str(project))
    assert listed.returncode == 0 and "nightly" in listed.stdout, listed.stderr
    cron = bridge("export", "--crontab", "--dir", str(project))
    assert cron.returncode == 0, cron.stderr
    assert f"cd {project} && " in cron.stdout and f"--dir {project} >> " in cron.stdout
    (elsewhere / "pb").mkdir()
    (elsewhere / "pb" / "x.yaml").write_text(playbook_yaml("x", "{cron: '@daily'}"))
    cron = bridge("export", "--crontab", "pb", "--dir", str(project))
    assert f"cd {project} && " in cron.stdout and f"fire {elsewhere}/pb/x.yaml --schedule 1 --dir {project}" \
        in cron.stdout, cron.stdout + cron.stderr
    missing = bridge("list", "--dir", str(elsewhere))  # no playbooks/ there
    assert missing.returncode == 1 and f"{elsewhere}/playbooks is not a folder of playbooks" in missing.stderr
