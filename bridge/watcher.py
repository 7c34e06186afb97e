"""watchdog -> "this stage attempt's outputs are complete and valid" notifications for the runner.

Completion rules (docs/shared-folder.md): a file renamed into place counts at once; a file written
in place counts once it has been quiet for `settle` seconds. Either way it must also pass
`outputs.check_output` (regular file inside the folder, non-empty, valid JSON per schema).

Callbacks run on a watcher thread (watchdog's, or the settle/poll timer thread; on the caller's thread
for an explicit `poll()`). The asyncio runner hops back to its loop with
`loop.call_soon_threadsafe(...)`; a callback must never block.
"""

from __future__ import annotations

import math
import os
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from bridge.errors import BridgeError
from bridge.playbook import OutputSpec
from bridge.outputs import OutputCheck, check_outputs, resolve_output

DEFAULT_SETTLE = 0.3
DEFAULT_POLL_INTERVAL = 1.0
# Opened / closed-without-write events are left out on purpose: checking an output reads it, and
# those reads would otherwise wake the watcher again.
_EVENTS = [FileCreatedEvent, DirCreatedEvent, FileModifiedEvent, FileMovedEvent, DirMovedEvent,
           FileDeletedEvent, DirDeletedEvent, FileClosedEvent]

Callback = Callable[[str, list[OutputCheck]], None]
Signature = tuple[int, int, int]  # inode, size, mtime_ns


@dataclass
class _File:
    """What the watcher knows about one output path (mutable; guarded by the watcher's lock)."""

    path: str
    spec: OutputSpec
    baseline: Signature | None  # what was there at registration: stale until it changes
    sig: Signature | None
    stable_since: float
    last_event: float = -math.inf
    renamed_sig: Signature | None = None  # the file as it was renamed into place


@dataclass
class _Group:
    key: str
    files: list[_File]
    callback: Callback
    fired: bool = False
    due: float | None = None


@dataclass(frozen=True)
class _Fire:
    callback: Callback
    key: str
    checks: list[OutputCheck] = field(default_factory=list)


def _signature(path: str) -> Signature | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class OutputWatcher:
    """Watch a shared folder; call back once per registered group when all its outputs are done."""

    def __init__(self, shared: Path, *, settle: float = DEFAULT_SETTLE,
                 poll_interval: float | None = DEFAULT_POLL_INTERVAL, use_inotify: bool = True) -> None:
        self.shared = Path(os.path.realpath(shared))
        self.settle = settle
        self.poll_interval = poll_interval
        self.degraded: str | None = None  # why events are unavailable (polling only), if they are
        self._use_inotify = use_inotify
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._groups: dict[str, _Group] = {}
        self._observer: Observer | None = None
        self._ticker: threading.Thread | None = None
        self._stopping = False
        self._dirs_pending: set[str] = set()  # probe files watch() made, until their events come through
        self._dirs_cond = threading.Condition()

    # -- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> OutputWatcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if not self.shared.is_dir():
            raise BridgeError(f"cannot watch {self.shared}: the shared folder does not exist")
        if self._use_inotify:
            observer = Observer()
            try:
                observer.schedule(_Handler(self), str(self.shared), recursive=True, event_filter=_EVENTS)
                observer.start()
                self._observer = observer
            except OSError as exc:  # e.g. inotify watch limit reached: fall back to polling
                self.degraded = f"file events unavailable ({exc}); polling instead"
                if self.poll_interval is None or self.poll_interval > 0.25:
                    self.poll_interval = 0.25
        self._ticker = threading.Thread(target=self._tick_loop, name="bridge-output-watcher", daemon=True)
        self._ticker.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._observer is not None:
            self._observer.stop()
            if self._observer is not threading.current_thread():  # stop() from inside a callback
                self._observer.join(timeout=5)
            self._observer = None
        if self._ticker is not None and self._ticker is not threading.current_thread():
            self._ticker.join(timeout=5)
        self._ticker = None

    # -- registration ------------------------------------------------------------------------------

    def watch(self, key: str, specs: Sequence[OutputSpec], callback: Callback, *,
              ignore_existing: bool = True) -> list[Path]:
        """Register a group (one stage attempt's outputs); returns the resolved paths.

        Register before the agent starts: the outputs' folders are created and watched first (a folder
        the agent makes itself can hide a fast rename from inotify), and with `ignore_existing` files
        already present (say, from an earlier attempt) only count once they change. A group without
        required outputs never fires.
        """
        paths = [str(resolve_output(self.shared, spec.path)) for spec in specs]
        self._make_watched_dirs([Path(p).parent for p in paths])
        now = time.monotonic()
        files = []
        for spec, path in zip(specs, paths):
            sig = _signature(path)
            files.append(_File(path, spec, sig if ignore_existing else None, sig, now))
        with self._wake:
            if key in self._groups:
                raise ValueError(f"outputs for {key!r} are already being watched")
            self._groups[key] = _Group(key, files, callback)
            fire = self._evaluate(self._groups[key], now)
        self._fire([fire])
        return [Path(f.path) for f in files]

    def _make_watched_dirs(self, folders: Sequence[Path]) -> None:
        # A folder the agent makes itself can hide a fast rename from inotify (the file is renamed
        # before watchdog adds the folder's watch), so make them first, one level at a time, and
        # wait for a probe file's event in each: only a real watch on the folder can report it.
        for folder in folders:
            missing = [d for d in (folder, *folder.parents) if self.shared in d.parents and not d.exists()]
            for d in reversed(missing):
                d.mkdir(exist_ok=True)
                if self._observer is not None:
                    self._probe(d)

    def _probe(self, folder: Path) -> None:
        probe = str(folder / f".bridge-probe-{os.getpid()}-{threading.get_ident()}")
        with self._dirs_cond:
            self._dirs_pending.add(probe)
        try:
            with open(probe, "x"):
                pass
            deadline = time.monotonic() + 2.0  # normally well under a millisecond
            with self._dirs_cond:
                while probe in self._dirs_pending and time.monotonic() < deadline:
                    self._dirs_cond.wait(timeout=max(deadline - time.monotonic(), 0.001))
        finally:
            with self._dirs_cond:
                self._dirs_pending.discard(probe)
            try:
                os.unlink(probe)
            except OSError:
                pass

    def unwatch(self, key: str) -> None:
        with self._wake:
            self._groups.pop(key, None)

    def poll(self) -> list[str]:
        """Re-check every group by stat (for filesystems where events go missing); return keys fired."""
        with self._wake:
            now = time.monotonic()
            fires = [self._evaluate(g, now) for g in list(self._groups.values())]
        return self._fire(fires)

    # -- internals ---------------------------------------------------------------------------------

    def _on_event(self, event: FileSystemEvent) -> None:
        now = time.monotonic()
        src = os.fsdecode(event.src_path)
        dest = os.fsdecode(getattr(event, "dest_path", "") or "")
        if isinstance(event, FileCreatedEvent) and src in self._dirs_pending:
            with self._dirs_cond:
                if src in self._dirs_pending:
                    self._dirs_pending.discard(src)
                    self._dirs_cond.notify_all()
        touched: dict[str, _Group] = {}
        with self._wake:
            for group in self._groups.values():
                for f in group.files:
                    if self._apply(event, f, src, dest, now):
                        touched[group.key] = group
            fires = [self._evaluate(g, now) for g in touched.values()]
        self._fire(fires)

    def _apply(self, event: FileSystemEvent, f: _File, src: str, dest: str, now: float) -> bool:
        """Update one file's state for an event; True when the event concerns it."""
        if event.is_directory:
            under = [p for p in (src, dest) if p and f.path.startswith(p.rstrip(os.sep) + os.sep)]
            if not under:
                return False
            if isinstance(event, DirMovedEvent) and dest and f.path.startswith(dest.rstrip(os.sep) + os.sep):
                f.renamed_sig, f.last_event = _signature(f.path), now
            else:
                f.renamed_sig, f.last_event = None, now
            return True
        if isinstance(event, FileMovedEvent) and dest == f.path:
            f.renamed_sig, f.last_event = _signature(f.path), now
            return True
        if f.path not in (src, dest):
            return False
        if isinstance(event, FileClosedEvent):  # closing changes nothing; just look again
            return True
        if isinstance(event, FileCreatedEvent) and f.renamed_sig is not None and f.renamed_sig == _signature(f.path):
            return True  # watchdog's rescan of a new folder re-reporting the file we saw renamed in
        f.renamed_sig, f.last_event = None, now
        return True

    def _evaluate(self, group: _Group, now: float) -> _Fire | None:
        """Decide (under the lock) whether a group is done; schedule a re-check if it is settling."""
        if group.fired:
            return None
        group.due = None
        wait_until = math.inf
        complete = any(f.spec.required for f in group.files)
        for f in group.files:
            sig = _signature(f.path)
            if sig != f.sig:
                f.sig, f.stable_since = sig, now
            if sig is None:
                complete = complete and not f.spec.required
                continue
            if f.baseline is not None and sig == f.baseline:  # stale, from before registration
                complete = complete and not f.spec.required
                continue
            if f.renamed_sig is not None and sig == f.renamed_sig:
                continue
            ready_at = max(f.stable_since, f.last_event) + self.settle
            if now < ready_at:
                complete = False
                wait_until = min(wait_until, ready_at)
        if wait_until < math.inf:
            group.due = wait_until
            self._wake.notify_all()
        if not complete:
            return None
        checks = check_outputs(self.shared, [f.spec for f in group.files])
        if not all(c.ok for c in checks):
            return None  # e.g. half-valid JSON: wait for the next change (or poll)
        group.fired = True
        return _Fire(group.callback, group.key, checks)

    def _fire(self, fires: Sequence[_Fire | None]) -> list[str]:
        done = []
        for fire in fires:
            if fire is not None:
                fire.callback(fire.key, fire.checks)
                done.append(fire.key)
        return done

    def _tick_loop(self) -> None:
        next_poll = time.monotonic() + self.poll_interval if self.poll_interval else math.inf
        while True:
            with self._wake:
                if self._stopping:
                    return
                now = time.monotonic()
                due = [g for g in self._groups.values() if g.due is not None and g.due <= now]
                if now >= next_poll:
                    due = list(self._groups.values())
                    next_poll = now + self.poll_interval if self.poll_interval else math.inf
                if not due:
                    soonest = min([next_poll, *(g.due for g in self._groups.values() if g.due is not None)])
                    self._wake.wait(timeout=min(max(soonest - now, 0.001), 3600.0))
                    continue
                fires = [self._evaluate(g, now) for g in due]
            self._fire(fires)


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: OutputWatcher) -> None:
        self._watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        self._watcher._on_event(event)
