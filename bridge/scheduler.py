"""The long-lived scheduler: fires playbook schedules, one locked run per playbook at a time."""

from __future__ import annotations

import signal
import threading
import time
from collections import deque
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

from bridge.cron import (MAX_CATCH_UP, MISFIRE_GRACE, catch_up, fires_between, jitter_offset,
                         next_fires, validate_schedules, zone)
from bridge.playbook import Playbook, Schedule
from bridge.playbook_folder import load_playbook, playbook_files, project_dir_for
from bridge.scheduled_run import (STOP_SIGNALS, LockHeld, RunHandle, RunRequest, playbook_lock, start_child,
                                  write_holder)
from bridge.workspace import new_run_id

# next_fires and friends live in bridge.cron, the folder helpers in bridge.playbook_folder; imported here so
# `bridge.scheduler.next_fires` and `bridge.scheduler.load_playbook` work.
__all__ = ["Scheduler", "SchedulerEvent", "FireLedger", "load_playbook", "playbook_files",
           "project_dir_for", "next_fires", "as_datetime"]


# ---- the loop -----------------------------------------------------------------------------

class FireLedger(Protocol):
    def record_fire(self, playbook: str, scheduled_for: float, fired_at: float, action: str,
                    run_id: str | None, detail: str = "") -> None: ...

    def last_fire(self, playbook: str) -> float | None: ...

    def run(self, run_id: str) -> Any: ...  # the run's row (status, reason), None when there is none


@dataclass(frozen=True)
class SchedulerEvent:
    """Something the scheduler wants a person to know: kind is loaded | broken | removed |
    started | skipped | queued | missed | failed | stopping | ended | shutdown."""

    kind: str
    playbook: str
    message: str
    t: float = 0.0


@dataclass
class _Entry:
    path: Path
    stamp: tuple[int, int]
    playbook: Playbook | None
    error: str | None
    cursors: dict[str, float] = field(default_factory=dict)  # schedule key -> last handled fire
    fresh: bool = True  # first load in this process: cursors start from the ledger


@dataclass(frozen=True)
class _Fire:
    path: Path
    vars: dict[str, Any]
    scheduled_for: float
    note: str = ""
    backlog: bool = False  # a missed fire replayed by catch_up: all (later fires queue behind the backlog)
    catch_up: bool = False  # a missed fire run late: the next fire due waits for it, whatever the overlap


@dataclass
class _Active:
    handle: RunHandle
    locks: ExitStack
    fire: _Fire
    run_id: str = ""
    stop_since: float | None = None
    stop_stage: int = 0  # 1 SIGINT sent, 2 SIGTERM sent, 3 SIGKILL sent


class Scheduler:
    """Fires the schedules of every playbook in a folder; one run per playbook at a time."""

    def __init__(self, folder: Path, project_dir: Path, ledger: FireLedger, *,
                 start_run: Callable[[RunRequest], RunHandle] = start_child,
                 clock: Callable[[], float] = time.time,
                 on_event: Callable[[SchedulerEvent], None] = lambda e: None,
                 poll_interval: float = 1.0, stop_grace: float = 10.0,
                 shutdown_grace: float = 30.0, rehearse: bool = False) -> None:
        self.folder, self.project_dir, self.ledger = folder, project_dir, ledger
        self.rehearse = rehearse  # every run against the scripted local model (bridge run --rehearse)
        self._start_run, self._clock, self._emit_to = start_run, clock, on_event
        self.poll_interval, self.stop_grace, self.shutdown_grace = poll_interval, stop_grace, shutdown_grace
        self._entries: dict[Path, _Entry] = {}
        self._active: dict[str, _Active] = {}
        self._queued: dict[str, deque[_Fire]] = {}
        self._wake = threading.Event()
        self._last_tick: float | None = None
        self.stopping = False
        self._force = False

    # -- public ---------------------------------------------------------------------------
    def tick(self) -> float:
        """Reload, reap, fire what is due; returns seconds until the next tick is needed."""
        now = self._clock()
        self._reload(now)
        self._reap(now)
        if self.stopping:
            return self.poll_interval
        for entry in list(self._entries.values()):
            if entry.playbook is not None:
                self._due(entry, now)
        for name, queue in self._queued.items():
            if queue and name not in self._active:
                self._start(name, queue.popleft(), now)
        self._last_tick = now
        return self._next_wake(now)

    def run_forever(self, wait: Callable[[float], Any] | None = None) -> None:
        """Tick until request_stop(), then drain: let runs finish for shutdown_grace, then stop them."""
        wait = wait or self._wake.wait
        while not self.stopping:
            wait(self.tick())
        self._drain(wait)

    def request_stop(self) -> None:
        """First call: stop firing and drain. Second call: stop running runs right away."""
        self._force = self.stopping
        self.stopping = True
        self._wake.set()

    @contextmanager
    def handle_signals(self) -> Iterator[None]:
        """SIGTERM / SIGINT ask the loop to stop while the block runs; old handlers restored after."""
        previous = {s: signal.signal(s, lambda *_: self.request_stop()) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    @property
    def active(self) -> dict[str, int]:
        """Running playbooks -> pid."""
        return {name: act.handle.pid for name, act in self._active.items()}

    # -- loading --------------------------------------------------------------------------
    def _reload(self, now: float) -> None:
        try:
            paths = playbook_files(self.folder)
        except OSError as exc:
            paths = []
            self._emit("broken", str(self.folder), f"cannot list playbooks: {exc}", now)
        for gone in set(self._entries) - set(paths):
            entry = self._entries.pop(gone)
            self._emit("removed", entry.playbook.name if entry.playbook else gone.name,
                       f"{gone} removed; no longer scheduled", now)
        for path in paths:
            try:
                st = path.stat()
            except OSError:
                continue
            stamp = (st.st_mtime_ns, st.st_size)
            old = self._entries.get(path)
            if old is not None and old.stamp == stamp:
                continue
            playbook, error = self._load(path)
            entry = _Entry(path, stamp, playbook, error)
            if old is not None:
                entry.cursors, entry.fresh = old.cursors, old.fresh
            self._entries[path] = entry
            if error is not None:
                self._emit("broken", path.name, error, now)
            else:
                assert playbook is not None
                n = len(playbook.schedule)
                verb = "reloaded" if old is not None else "loaded"
                self._emit("loaded", playbook.name, f"{verb} {path.name}: {n} schedule(s)", now)

    def _load(self, path: Path) -> tuple[Playbook | None, str | None]:
        try:
            playbook = load_playbook(path)
            validate_schedules(playbook)
        except Exception as exc:  # any broken file is reported and skipped, never fatal
            return None, f"{path}: {exc}"
        for other in self._entries.values():
            if other.path != path and other.playbook is not None and other.playbook.name == playbook.name:
                return None, f"{path}: playbook name {playbook.name!r} is already used by {other.path.name}"
        return playbook, None

    # -- firing ---------------------------------------------------------------------------
    def _due(self, entry: _Entry, now: float) -> None:
        assert entry.playbook is not None
        name = entry.playbook.name
        for schedule in entry.playbook.schedule:
            key = schedule.model_dump_json()
            jitter = jitter_offset(name, schedule)
            cursor = entry.cursors.get(key)
            if cursor is None:
                last = self.ledger.last_fire(name) if entry.fresh else None
                # Otherwise start from the previous tick: a schedule added by an edit since then
                # still gets a fire that fell in between.
                since = self._last_tick if self._last_tick is not None else now
                cursor = last if last is not None else since - jitter
            fires, truncated = fires_between(schedule, cursor, now - jitter)
            entry.cursors[key] = fires[-1] if fires else cursor
            late = [f for f in fires if now - (f + jitter) > MISFIRE_GRACE]
            on_time = fires[len(late):]
            covered = self._catch_up(name, entry.path, schedule, late, truncated, bool(on_time), now)
            for fire in on_time:
                note = f"also for {covered} missed fire(s); catch_up: last" if covered else ""
                self._fire(name, _Fire(entry.path, schedule.vars, fire, note), schedule.overlap, now)
        entry.fresh = False

    def _catch_up(self, name: str, path: Path, schedule: Schedule, late: list[float],
                  truncated: bool, due_now: bool, now: float) -> int:
        """Run or record the missed fires; returns how many a fire due now stands for (catch_up: last).

        The fire due now is never lost to its own catch-up: under `last` it IS the catch-up (one run
        for the missed fires and the current one); under `all` it queues behind the missed fires.
        """
        if not late:
            return 0
        run, dropped = catch_up(schedule.catch_up, late, due_now)
        covered = len(dropped) if schedule.catch_up == "last" and due_now else 0
        if dropped:
            more = "more than " if truncated else ""
            then = "; the fire due now runs for them" if covered else ""
            detail = (f"{more}{len(dropped)} fire(s) missed while the scheduler was not running "
                      f"({_iso(dropped[0])} .. {_iso(dropped[-1])}); catch_up: {schedule.catch_up}{then}")
            self._record(name, dropped[-1], now, "missed", detail)
        elif truncated:
            self._emit("missed", name, f"more than {MAX_CATCH_UP} fires missed; "
                       f"replaying the latest {MAX_CATCH_UP}", now)
        for i, fire in enumerate(run, 1):
            backlog = schedule.catch_up == "all"  # replayed in order, one after another, whatever the overlap
            self._fire(name, _Fire(path, schedule.vars, fire, f"catch-up {i}/{len(run)}", backlog, True),
                       "queue-all" if backlog else schedule.overlap, now)
        return covered

    def _fire(self, name: str, fire: _Fire, overlap: str, now: float) -> None:
        queue = self._queued.setdefault(name, deque())
        active = self._active.get(name)
        if active is None and not queue:
            self._start(name, fire, now)
            return
        running = f"previous run (pid {active.handle.pid}) still running" if active else "a run is queued"
        if not fire.backlog and ((active is not None and active.fire.backlog) or any(f.backlog for f in queue)):
            # missed fires being replayed (catch_up: all) and this one are one backlog: it waits its turn
            queue.append(fire)
            left = sum(f.backlog for f in queue)
            self._record(name, fire.scheduled_for, now, "queued",
                         f"behind the missed fires being caught up ({left} still queued); catch_up: all", fire)
            return
        if overlap == "skip" and not queue and active is not None and active.fire.catch_up and not fire.catch_up:
            # the fire due now is never lost to a catch-up still running: it waits for it, once
            queue.append(fire)
            self._record(name, fire.scheduled_for, now, "queued", "behind the catch-up of missed fires, "
                         "which is still running (a fire due is never lost to its own catch-up)", fire)
        elif overlap == "skip":
            self._record(name, fire.scheduled_for, now, "skipped", f"{running}; overlap: skip", fire)
        elif overlap == "queue" and queue:
            self._record(name, fire.scheduled_for, now, "skipped", "a run is already queued; overlap: queue", fire)
        elif overlap in ("queue", "queue-all"):
            queue.append(fire)
            self._record(name, fire.scheduled_for, now, "queued", f"{running}; overlap: queue", fire)
        else:  # cancel: the newest fire wins; anything queued before it is dropped
            for old in list(queue):
                self._record(name, old.scheduled_for, now, "skipped", "superseded by a newer fire; overlap: cancel")
            queue.clear()
            queue.append(fire)
            self._record(name, fire.scheduled_for, now, "queued", "stopping the previous run; overlap: cancel", fire)
            if active is not None and active.stop_since is None:
                self._begin_stop(name, active, now)

    def _start(self, name: str, fire: _Fire, now: float) -> None:
        locks = ExitStack()
        run_id = new_run_id()  # chosen here, so the fire's row names the run it started
        try:
            fd = locks.enter_context(playbook_lock(self.project_dir, name))
            handle = self._start_run(RunRequest(name, fire.path, dict(fire.vars), self.project_dir,
                                                fire.scheduled_for, fd, self.rehearse, run_id))
        except LockHeld as exc:
            locks.close()
            self._record(name, fire.scheduled_for, now, "skipped", str(exc), fire)
            return
        except Exception as exc:  # a run that cannot start must not stop the scheduler
            locks.close()
            self._record(name, fire.scheduled_for, now, "failed", f"could not start the run: {exc}", fire)
            return
        with suppress(OSError):
            write_holder(fd, handle.pid)  # whom an OS-scheduled fire with overlap: cancel stops
        self._active[name] = _Active(handle, locks, fire, run_id)
        self._record(name, fire.scheduled_for, now, "started", f"run {run_id}, pid {handle.pid}", fire, run_id)

    # -- running runs ---------------------------------------------------------------------
    def _reap(self, now: float) -> None:
        for name, act in list(self._active.items()):
            code = act.handle.poll()
            if code is None:
                if act.stop_since is not None:
                    self._escalate(name, act, now)
                continue
            act.locks.close()
            del self._active[name]
            self._emit("ended", name, f"run {act.run_id} (pid {act.handle.pid}) ended with exit code {code}"
                       f"{self._why(act) if code else ''}", now)

    def _why(self, act: _Active) -> str:
        """': <status>: <reason>' in one line: the ledger's, else the last line of the run's log."""
        try:
            row = self.ledger.run(act.run_id) if act.run_id else None
        except Exception:  # a busy or broken ledger must not stop the scheduler
            row = None
        if row is not None and row.reason:
            return f": {row.status}: {_one_line(row.reason)}"
        log = getattr(act.handle, "log", None)
        try:
            lines = [ln for ln in Path(log).read_text(errors="replace").splitlines() if ln.strip()] if log else []
        except OSError:
            lines = []
        return f": {_one_line(lines[-1])} (see {log})" if lines else ""

    def _begin_stop(self, name: str, act: _Active, now: float) -> None:
        act.stop_since, act.stop_stage = now, 1
        act.handle.send_signal(signal.SIGINT)
        self._emit("stopping", name, f"stopping run (pid {act.handle.pid}): SIGINT", now)

    def _escalate(self, name: str, act: _Active, now: float) -> None:
        assert act.stop_since is not None
        due = min(int((now - act.stop_since) // self.stop_grace) + 1, len(STOP_SIGNALS))
        while act.stop_stage < due:
            sig = STOP_SIGNALS[act.stop_stage]
            act.stop_stage += 1
            act.handle.send_signal(sig)
            self._emit("stopping", name, f"run (pid {act.handle.pid}) still running: {sig.name}", now)

    def _drain(self, wait: Callable[[float], Any]) -> None:
        now = self._clock()
        for name, queue in self._queued.items():
            for fire in queue:
                self._record(name, fire.scheduled_for, now, "skipped", "the scheduler shut down", fire)
            queue.clear()
        deadline = now + self.shutdown_grace
        if self._active:
            n = len(self._active)
            then = ("stopping them now" if self._force else
                    "then they are stopped (SIGINT, SIGTERM, SIGKILL); a second Ctrl-C or SIGTERM stops them now")
            self._emit("stopping", "", f"stopping: waiting up to {self.shutdown_grace:g}s for {n} running "
                       f"run{'s' if n > 1 else ''} ({', '.join(self._active)}); {then}", now)
        else:
            self._emit("stopping", "", "stopping: no run is going", now)
        self._wake.clear()
        while True:
            now = self._clock()
            self._reap(now)
            if not self._active:
                break
            if self._force or now >= deadline:
                for name, act in self._active.items():
                    if act.stop_since is None:
                        self._begin_stop(name, act, now)
            self._wake.clear()
            left = deadline - now
            wait(min(self.poll_interval, left) if left > 0 else self.poll_interval)
        self._emit("shutdown", "", "scheduler stopped", self._clock())

    # -- helpers --------------------------------------------------------------------------
    def _next_wake(self, now: float) -> float:
        soonest = self.poll_interval
        for entry in self._entries.values():
            if entry.playbook is None:
                continue
            for schedule in entry.playbook.schedule:
                nxt = next_fires(schedule, datetime.fromtimestamp(now, timezone.utc), 1)
                if nxt:
                    soonest = min(soonest, nxt[0].timestamp() + jitter_offset(entry.playbook.name, schedule) - now)
        return max(soonest, 0.0)

    def _record(self, name: str, scheduled_for: float, now: float, action: str, detail: str,
                fire: _Fire | None = None, run_id: str | None = None) -> None:
        if fire is not None and fire.note:
            detail = f"{detail} ({fire.note})"
        self.ledger.record_fire(name, scheduled_for, now, action, run_id, detail)
        self._emit(action, name, f"fire for {_iso(scheduled_for)}: {action}: {detail}", now)

    def _emit(self, kind: str, playbook: str, message: str, now: float) -> None:
        self._emit_to(SchedulerEvent(kind, playbook, message, now))


def _one_line(text: str, limit: int = 240) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[:limit - 1] + "…"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def as_datetime(ts: float, tz: str) -> datetime:
    """Epoch seconds -> an aware datetime in the named timezone."""
    return datetime.fromtimestamp(ts, zone(tz))

