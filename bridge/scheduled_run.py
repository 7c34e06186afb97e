"""One scheduled run: the per-playbook file lock and the child `bridge run` in its own group."""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol

from bridge.errors import BridgeError


class LockHeld(BridgeError):
    """Another scheduler (or an OS-scheduled run) is running this playbook right now."""


def lock_path(project_dir: Path, name: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    return project_dir / ".bridge" / "locks" / f"schedule-{safe}.lock"


@contextmanager
def playbook_lock(project_dir: Path, name: str) -> Iterator[int]:
    """Hold the playbook's flock for the block; yields the fd (a child may inherit it)."""
    path = lock_path(project_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeld(f"playbook {name!r} is already running elsewhere ({path} is locked)") from None
        yield fd
    finally:
        os.close(fd)


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
