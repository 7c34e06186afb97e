"""One scheduled run: the per-playbook file lock (and who holds it) and the child `bridge run` in its own group."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

from bridge.errors import BridgeError


class LockHeld(BridgeError):
    """Another scheduler (or an OS-scheduled run) is running this playbook right now."""


def lock_path(project_dir: Path, name: str, suffix: str = "") -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    return project_dir / ".bridge" / "locks" / f"schedule-{safe}{suffix}.lock"


def _open_lock(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)  # a new project has no .bridge/locks yet
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextmanager
def playbook_lock(project_dir: Path, name: str) -> Iterator[int]:
    """Hold the playbook's flock for the block; yields the fd (a child may inherit it)."""
    path = lock_path(project_dir, name)
    fd = _open_lock(path)
    try:
        if not _try_lock(fd):
            raise LockHeld(f"playbook {name!r} is already running elsewhere ({path} is locked)")
        os.ftruncate(fd, 0)  # the previous holder's pid is no one's to stop now
        yield fd
    finally:
        os.close(fd)


def write_holder(fd: int, pid: int) -> None:
    """Write the pid of the process running under the lock into the lock file (what `cancel` stops)."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{pid}\n".encode(), 0)


def read_holder(project_dir: Path, name: str) -> int | None:
    """The pid written by the lock's current holder, if any."""
    try:
        text = lock_path(project_dir, name).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)


def stop_process(pid: int, sig: int) -> None:
    """Signal a run: its whole group when it leads one (a scheduler's child), else the process."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@contextmanager
def fire_lock(project_dir: Path, name: str, overlap: str, *, stop_grace: float = 10.0, poll: float = 0.2,
              note: Callable[[str], None] = lambda text: None) -> Iterator[int]:
    """The playbook lock for one fire started by the OS scheduler (cron, systemd), under `overlap`:

    - skip: LockHeld at once while another run holds it;
    - queue: wait for the lock; at most one fire waits (a second one raises LockHeld);
    - cancel: stop the holder (the pid in the lock file) with SIGINT, then SIGTERM and SIGKILL
      `stop_grace` apart, and take the lock when it lets go; at most one fire waits, as with queue.

    Yields the fd, the lock held; the caller writes its own pid with write_holder.
    """
    path = lock_path(project_dir, name)
    fd = _open_lock(path)
    try:
        if not _try_lock(fd):
            if overlap == "skip":
                raise LockHeld(f"the previous run of {name!r} is still going ({path} is locked); overlap: skip")
            with _waiting_slot(project_dir, name, overlap):
                if overlap == "cancel":
                    _stop_holder(fd, project_dir, name, stop_grace, poll, note)
                else:
                    note(f"the previous run of {name!r} is still going; waiting for it (overlap: queue)")
                    fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)  # the previous holder's pid is no one's to stop now
        yield fd
    finally:
        os.close(fd)


@contextmanager
def _waiting_slot(project_dir: Path, name: str, overlap: str) -> Iterator[None]:
    """The one place for a fire waiting on a busy playbook (a second lock file beside the first)."""
    fd = _open_lock(lock_path(project_dir, name, ".waiting"))
    try:
        if not _try_lock(fd):
            raise LockHeld(f"another fire of {name!r} is already waiting for the running one; overlap: {overlap}")
        yield
    finally:
        os.close(fd)


def _stop_holder(fd: int, project_dir: Path, name: str, grace: float, poll: float,
                 note: Callable[[str], None]) -> None:
    pid = read_holder(project_dir, name)
    if pid is None:  # a holder that never said who it is (an older bridge): wait for it
        note(f"the previous run of {name!r} holds the lock and its pid is unknown; waiting for it (overlap: cancel)")
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    for sig in STOP_SIGNALS:
        note(f"stopping the previous run of {name!r} (pid {pid}): {sig.name} (overlap: cancel)")
        stop_process(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if _try_lock(fd):
                return
            time.sleep(poll)
    fcntl.flock(fd, fcntl.LOCK_EX)  # killed, yet something it started still holds the lock: wait


@dataclass(frozen=True)
class RunRequest:
    """What the scheduler asks a run starter for: one run of one playbook."""

    playbook: str
    path: Path
    vars: dict[str, Any]
    project_dir: Path
    scheduled_for: float
    lock_fd: int | None = None
    rehearse: bool = False  # `bridge schedule run --rehearse`: the child runs with --rehearse
    run_id: str | None = None  # the child's `--run-id`: the scheduler records it with the fire


class RunHandle(Protocol):
    pid: int

    def poll(self) -> int | None: ...

    def send_signal(self, sig: int) -> None: ...


def var_args(vars: dict[str, Any]) -> list[str]:
    """--var key=value for each schedule variable (non-strings as JSON)."""
    out: list[str] = []
    for key, value in vars.items():
        out += ["--var", f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
    return out


def run_argv(path: Path, vars: dict[str, Any], rehearse: bool = False, run_id: str | None = None) -> list[str]:
    """`python -m bridge run PLAYBOOK --var k=v ... [--rehearse] [--run-id ID]` for one scheduled fire."""
    argv = [sys.executable, "-m", "bridge", "run", str(path), *var_args(vars)]
    argv += ["--rehearse"] if rehearse else []
    return [*argv, "--run-id", run_id] if run_id else argv


class ChildRun:
    """A run in its own process group (its own session), so signals reach all of it."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.log = log

    def poll(self) -> int | None:
        return self.proc.poll()

    def send_signal(self, sig: int) -> None:
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def start_child(request: RunRequest, argv: list[str] | None = None) -> ChildRun:
    """Start `bridge run` for a request; output goes to .bridge/logs/schedule/<name>-<time>.log."""
    when = time.strftime("%Y%m%dT%H%M%S", time.gmtime(request.scheduled_for))
    log = request.project_dir / ".bridge" / "logs" / "schedule" / f"{request.playbook}-{when}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "BRIDGE_SCHEDULED_FOR": str(request.scheduled_for)}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv or run_argv(request.path, request.vars, request.rehearse, request.run_id),
            cwd=request.project_dir, env=env,
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
            # The child inherits the lock: it stays held even if this scheduler dies first.
            pass_fds=() if request.lock_fd is None else (request.lock_fd,),
        )
    return ChildRun(proc, log)
