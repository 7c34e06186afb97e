"""`bridge watch`: run a playbook whenever files matching a glob appear or change in a folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from bridge.errors import BridgeError
from bridge.loader import load_playbook, parse_vars
from bridge.playbook_folder import project_dir_for
from bridge.triggers import Trigger, TriggerQueue, check_glob, glob_regex, matches
from bridge.workspace import BRIDGE_DIR, exclude_from_git, new_run_id

GRACE_INT = 10.0  # the child is a `bridge run`: give it time to stop its own agents cleanly
GRACE_TERM = 5.0
_EVENTS = [FileCreatedEvent, FileModifiedEvent, FileMovedEvent, FileClosedEvent]


def child_argv(playbook: Path, triggers: Sequence[Path], project: Path, var: list[str], run_id: str) -> list[str]:
    """The `bridge run` started for one trigger — every file of its burst as a `--trigger`, the last
    changed last — with the run id chosen here (tests swap this for a recorder script)."""
    argv = [sys.executable, "-m", "bridge", "run", str(playbook)]
    for path in triggers:
        argv += ["--trigger", str(path)]
    argv += ["--dir", str(project), "--run-id", run_id]
    for item in var:
        argv += ["--var", item]
    return argv


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class WatchLoop:
    """Feeds file events to a TriggerQueue and runs one child at a time until `stop` is set."""

    def __init__(self, folder: Path, pattern: str, triggers: TriggerQueue,
                 argv_for: Callable[[Sequence[Path], str], list[str]], *, cwd: Path | None = None,
                 out: Callable[[str], None] | None = None,
                 grace: tuple[float, float] = (GRACE_INT, GRACE_TERM)) -> None:
        self.folder = folder
        self.pattern = pattern
        self._glob = glob_regex(pattern)
        self.triggers = triggers
        self.argv_for = argv_for
        self.cwd = cwd
        self.out = out if out is not None else say
        self.grace = grace
        self.hurry = threading.Event()  # a second Ctrl-C: skip the grace periods
        self.runs = 0
        self._cond = threading.Condition()

    def notice(self, path: str) -> None:
        """Called from watchdog's thread for each created / changed / renamed-in file."""
        try:
            rel = Path(path).relative_to(self.folder).as_posix()
        except ValueError:
            return
        if matches(self._glob, rel):
            with self._cond:
                self.triggers.notice(self.folder / rel, time.monotonic())
                self._cond.notify_all()

    def run(self, stop: threading.Event, ready: threading.Event | None = None) -> None:
        child: tuple[subprocess.Popen[bytes], Trigger, float] | None = None
        with _observing(self.folder, self.notice) as observer_note:
            if observer_note:
                self.out(observer_note)
            self.out(f"watching {self.folder} for {self.pattern!r}; Ctrl-C to stop")
            if ready is not None:
                ready.set()
            try:
                while not stop.is_set():
                    with self._cond:
                        now = time.monotonic()
                        for trigger, replaced in self.triggers.due(now):
                            self._report_trigger(trigger, replaced, busy=child is not None)
                        deadline = self.triggers.next_deadline()
                    if child is not None and child[0].poll() is not None:
                        proc, trigger, started = child
                        self.out(f"run #{trigger.seq} ended: exit {proc.returncode} "
                                 f"after {time.monotonic() - started:.1f}s")
                        child = None
                    if child is None:
                        child = self._start_next()
                    wait = 0.05 if deadline is None else min(max(deadline - time.monotonic(), 0.0), 0.05)
                    with self._cond:
                        self._cond.wait(timeout=wait)
            finally:
                if child is not None:
                    self.out(f"stopping run #{child[1].seq} (pid {child[0].pid})")
                    stop_child(child[0], self.grace, self.hurry)
                    self.out(f"run #{child[1].seq} stopped: exit {child[0].returncode}")

    def _report_trigger(self, trigger: Trigger, absorbed: Trigger | None, busy: bool) -> None:
        rel = trigger.path.relative_to(self.folder).as_posix()
        n = len(trigger.paths)
        more = f" and {n - 1} more file{'s' * (n != 2)}" if n > 1 else ""
        if absorbed is not None:
            self.out(f"trigger #{trigger.seq}: {rel}{more} (joins pending #{absorbed.seq}; a run is in progress: "
                     f"the next run gets all {n} files)")
        elif busy:
            self.out(f"trigger #{trigger.seq}: {rel}{more} (queued; a run is in progress)")
        else:
            self.out(f"trigger #{trigger.seq}: {rel}{more}")

    def _start_next(self) -> tuple[subprocess.Popen[bytes], Trigger, float] | None:
        while (trigger := self.triggers.pop()) is not None:
            there = [p for p in trigger.paths if p.is_file()]
            gone = [p for p in trigger.paths if p not in there]
            if not there:
                self.out(f"trigger #{trigger.seq} skipped: {', '.join(map(str, gone))} "
                         f"{'is' if len(gone) == 1 else 'are'} gone")
                continue
            if gone:
                self.out(f"trigger #{trigger.seq}: {', '.join(map(str, gone))} gone meanwhile, left out")
            run_id = new_run_id()  # chosen here, so the trigger's line names the run it started
            argv = self.argv_for(there, run_id)
            try:
                # Own session (and so process group): Ctrl-C in the terminal reaches only bridge
                # watch, which then stops the run on purpose, in order.
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, cwd=self.cwd, start_new_session=True)
            except OSError as exc:
                raise BridgeError(f"could not start {argv[0]}: {exc.strerror or exc}") from None
            self.runs += 1
            more = f" and {len(there) - 1} more" if len(there) > 1 else ""
            self.out(f"run #{trigger.seq} started (pid {proc.pid}, run {run_id}) for {there[-1]}{more}")
            return proc, trigger, time.monotonic()
        return None


def stop_child(proc: subprocess.Popen[bytes], grace: tuple[float, float], hurry: threading.Event) -> None:
    """SIGINT to the child's group, then SIGTERM, then SIGKILL; a second Ctrl-C skips ahead."""
    for sig, wait in ((signal.SIGINT, grace[0]), (signal.SIGTERM, grace[1]), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                _reap_group(proc.pid)
                return
            if hurry.is_set() and sig != signal.SIGKILL:
                hurry.clear()
                break
            time.sleep(0.02)
    proc.wait(timeout=5)


def _reap_group(pgid: int) -> None:
    """The run ended; anything it left behind in its group goes too."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class _Handler(FileSystemEventHandler):
    def __init__(self, notice: Callable[[str], None]) -> None:
        self._notice = notice

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        path = getattr(event, "dest_path", "") if isinstance(event, FileMovedEvent) else event.src_path
        if path:
            self._notice(os.fsdecode(path))


@contextmanager
def _observing(folder: Path, notice: Callable[[str], None]) -> Iterator[str | None]:
    """Watch `folder` recursively; fall back to polling where file events are unavailable."""
    note = None
    observer = Observer()
    try:
        observer.schedule(_Handler(notice), str(folder), recursive=True, event_filter=_EVENTS)
        observer.start()
    except OSError as exc:
        note = f"file events unavailable ({exc}); polling {folder} every second"
        observer = PollingObserver(timeout=1.0)
        observer.schedule(_Handler(notice), str(folder), recursive=True)
        observer.start()
    try:
        yield note
    finally:
        observer.stop()
        observer.join(timeout=5)


@contextmanager
def _signals_stop(stop: threading.Event, hurry: threading.Event) -> Iterator[None]:
    """Ctrl-C / SIGTERM set `stop` (a second one sets `hurry`) instead of raising mid-step."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        (hurry if stop.is_set() else stop).set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _places(directory: Path | None, watch_dir: Path | None, project: Path | None) -> tuple[Path, Path]:
    """(the project, the folder to watch). `--dir DIR` is the folder (default: the project's
    .bridge/inbox); the project is `--project`, else the nearest folder at or above DIR (or the current
    folder) holding .bridge or .git. The old form `--watch-dir D --dir PROJECT` still works."""
    if watch_dir is not None and directory is not None and project is None:
        project, directory = directory, None  # before, --dir named the project and --watch-dir the folder
    cwd = Path.cwd()
    folder = None if directory is None else (directory if directory.is_absolute() else cwd / directory)
    if folder is not None and not folder.is_dir():
        raise BridgeError(f"--dir {folder} is not a folder; give the folder to watch")
    if project is None:
        project = project_dir_for(folder or cwd)
    project = project.resolve()
    if not project.is_dir():
        raise BridgeError(f"project folder {project} does not exist")
    if folder is None and watch_dir is not None:
        folder = watch_dir if watch_dir.is_absolute() else project / watch_dir
        if not folder.is_dir():
            raise BridgeError(f"--watch-dir {folder} is not a folder")
    if folder is None:
        folder = project / BRIDGE_DIR / "inbox"
        folder.mkdir(parents=True, exist_ok=True)
        exclude_from_git(project)
    return project, folder.resolve()


def run(playbook: Path, on: str, watch_dir: Path | None, queue: bool, debounce: float, var: list[str],
        directory: Path | None, *, project: Path | None = None, stop: threading.Event | None = None,
        ready: threading.Event | None = None) -> int:
    """Watch until Ctrl-C / SIGTERM (or `stop`); `ready` is set once watching. Returns 130 (interrupted).

    Everything that would make every run fail is checked first: the playbook (validated with the
    --var values), the glob, --debounce.
    """
    if debounce < 0:
        raise BridgeError(f"--debounce must be 0 or more seconds, got {debounce}")
    check_glob(on)
    values = parse_vars(var)
    project, folder = _places(directory, watch_dir, project)
    book = Path(playbook)
    if not book.is_absolute() and not book.exists() and (project / book).exists():
        book = project / book
    if not book.is_file():
        raise BridgeError(f"playbook {playbook} not found")
    book = book.resolve()
    load_playbook(book, values, project=project)  # a broken playbook: every problem now, no watching

    loop = WatchLoop(folder, on, TriggerQueue(debounce, queue_all=queue),
                     lambda triggers, run_id: child_argv(book, triggers, project, var, run_id), cwd=project)
    mode = "queue every burst" if queue else "coalesce bursts"
    say(f"running {book} per trigger ({mode}, debounce {debounce:g}s after the last change), project {project}")
    stop = stop or threading.Event()
    with _signals_stop(stop, loop.hurry):
        loop.run(stop, ready)
    say(f"stopped watching after {loop.runs} run{'s' if loop.runs != 1 else ''}")
    return 130
