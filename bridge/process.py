"""The only module that spawns agent processes: argv tuples, own process group, staged stop.

What a process leaves behind is found and stopped by bridge.proctable."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from bridge.errors import AgentNotFound
from bridge.proctable import kill_group, signal_group
from bridge.redact import Redactor, argv_secrets

POLL = 0.1
DRAIN = 1.0  # after the leader exits, how long its pipes may stay open before the group is stopped
MAX_LINE = 64 * 1024 * 1024
TAIL = 8192

INSTALL_HINTS = {
    "codex": "npm install -g @openai/codex",
    "claude": "npm install -g @anthropic-ai/claude-code",
    "gemini": "npm install -g @google/gemini-cli",
    "aider": "python -m pip install aider-install && aider-install",
}


@dataclass(frozen=True)
class ProcessSpec:
    """One process to run: argv (no shell), extra env over os.environ, logs and limits."""

    argv: tuple[str, ...]
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)
    stdout_log: Path | None = None
    stderr_log: Path | None = None
    timeout: float | None = None
    idle_timeout: float | None = None
    grace: float = 5.0
    run_id: str = ""
    stage: str = ""
    stdin_file: Path | None = None  # default /dev/null: Codex hangs forever on an open pipe
    inherit_env: bool = True


@dataclass(frozen=True)
class ProcessResult:
    pid: int
    exit_code: int | None  # None when killed by a signal
    signal: int | None
    duration: float
    ended_by: str  # exit | timeout | idle_timeout | cancelled | stopped
    stop_reason: str = ""
    stderr_tail: str = ""
    leftovers: int = 0  # processes of the group still found (and killed) after the leader ended
    stopping_at: float | None = None  # time.monotonic() when bridge began to stop it (None: it exited)


CLI_PATH_VAR = "BRIDGE_CLI_PATH"


def cli_install_dir() -> Path:
    """Where `bridge demo --yes` installs the pinned CLIs: $XDG_CACHE_HOME/bridge/clis (~/.cache/bridge/clis)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bridge" / "clis"


def cli_dirs() -> list[str]:
    """The folders searched for agent CLIs after PATH: $BRIDGE_CLI_PATH (a PATH-style list; empty:
    none) when set, else bridge's own CLI folder, cli_install_dir()/node_modules/.bin."""
    if CLI_PATH_VAR in os.environ:
        return [d for d in os.environ[CLI_PATH_VAR].split(os.pathsep) if d]
    return [str(cli_install_dir() / "node_modules" / ".bin")]


def cli_search_path(extra_path: str | os.PathLike[str] | None = None) -> str:
    """Where an agent CLI is looked up, in order: extra_path, PATH, then cli_dirs()."""
    parts = [str(extra_path)] if extra_path else []
    parts += [os.environ.get("PATH", os.defpath), *cli_dirs()]
    return os.pathsep.join(parts)


def find_cli(binary: str, extra_path: str | os.PathLike[str] | None = None) -> str | None:
    """Absolute path of an agent CLI on the search path (cli_search_path), or None."""
    return shutil.which(binary, path=cli_search_path(extra_path))


def which(binary: str, extra_path: str | os.PathLike[str] | None = None) -> str:
    """Absolute path of `binary` (cli_search_path: extra_path, PATH, bridge's CLI folder), or
    AgentNotFound with how to install it."""
    if os.sep in binary:
        if os.access(binary, os.X_OK) and Path(binary).is_file():
            return str(Path(binary).resolve())
        raise AgentNotFound(f"{binary} does not exist or is not executable.")
    found = find_cli(binary, extra_path)
    if found is None:
        hint = INSTALL_HINTS.get(binary, f"install {binary} and make sure it is on PATH")
        dirs = os.pathsep.join(cli_dirs())
        where = (f"on PATH nor in {dirs}" if dirs
                 else f"on PATH (${CLI_PATH_VAR} is empty: no other folder searched)")
        raise AgentNotFound(f"the agent CLI {binary!r} is not {where}. Install it: {hint}"
                            " (or run `bridge doctor` to check every CLI).")
    return found


def child_env(spec: ProcessSpec) -> dict[str, str]:
    env = dict(os.environ) if spec.inherit_env else {}
    env.update(spec.env)
    env["BRIDGE_RUN_ID"] = spec.run_id
    env["BRIDGE_STAGE"] = spec.stage
    return env


# ---------------------------------------------------------------- supervision

class _Stream:
    """Reads one pipe, splits lines, logs them redacted, tracks the last activity."""

    def __init__(self, reader: asyncio.StreamReader, log: IO[str] | None, redact: Redactor,
                 on_line: Callable[[str], None] | None, touch: Callable[[], None]) -> None:
        self.reader, self.log, self.redact, self.on_line, self.touch = reader, log, redact, on_line, touch
        self.tail = ""

    def _emit(self, raw: bytes) -> None:
        line = raw.decode("utf-8", errors="replace").rstrip("\r")
        if self.log is not None:
            self.log.write(self.redact(line) + "\n")
            self.log.flush()
        self.tail = (self.tail + line + "\n")[-TAIL:]
        if self.on_line is not None:
            self.on_line(line)

    async def pump(self) -> None:
        buf = bytearray()  # the unfinished line: appended to in place, so a 100 MB line stays linear
        while True:
            chunk = await self.reader.read(65536)
            if not chunk:
                break
            self.touch()
            buf += chunk
            if b"\n" in chunk:
                *lines, rest = bytes(buf).split(b"\n")
                for line in lines:
                    self._emit(line)
                buf = bytearray(rest)
            if len(buf) > MAX_LINE:
                self._emit(bytes(buf))
                buf = bytearray()
        if buf:
            self._emit(bytes(buf))


def _open_log(path: Path | None) -> IO[str] | None:
    if path is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in supervise's finally


async def supervise(
    spec: ProcessSpec,
    on_line: Callable[[str], None],
    *,
    should_stop: Callable[[], str | None] | None = None,
    cancel: asyncio.Event | None = None,
    on_spawn: Callable[[int, int], None] | None = None,
) -> ProcessResult:
    """Run one agent process to its end; afterwards no process of its group is left running.

    `on_spawn(pid, pgid)` runs once the process exists. Cancelling the awaiting task stops the group
    too (then CancelledError propagates)."""
    env = child_env(spec)
    redact = Redactor.for_env(env, extra=argv_secrets(spec.argv))
    last = [time.monotonic()]
    start = last[0]

    def touch() -> None:
        last[0] = time.monotonic()

    out_log, err_log = _open_log(spec.stdout_log), _open_log(spec.stderr_log)
    stdin = open(spec.stdin_file, "rb") if spec.stdin_file else open(os.devnull, "rb")  # noqa: SIM115
    proc: asyncio.subprocess.Process | None = None
    ended_by, reason = "exit", ""
    stopping_at: float | None = None
    leftovers = 0
    pipes = _Pipes()
    try:
        # our own pipes, not asyncio's PIPE: with those, proc.wait() waits for the pipes to close too,
        # and a grandchild that keeps them open (a detached `setsid ... &`) would hold the stage
        proc = await asyncio.create_subprocess_exec(
            *spec.argv, stdin=stdin, stdout=pipes.child_end(), stderr=pipes.child_end(),
            cwd=str(spec.cwd), env=env, start_new_session=True,
        )
        stdin.close()
        pipes.spawned()
        if on_spawn is not None:
            on_spawn(proc.pid, proc.pid)  # start_new_session: the leader's pid is the group id
        out_reader, err_reader = await pipes.readers()
        out = _Stream(out_reader, out_log, redact, on_line, touch)
        err = _Stream(err_reader, err_log, redact, None, touch)
        pumps = [asyncio.ensure_future(out.pump()), asyncio.ensure_future(err.pump())]
        waiter = asyncio.ensure_future(proc.wait())
        exited_at: float | None = None
        while True:
            pending = [f for f in (waiter, *pumps) if not f.done()]  # a done one would spin the loop
            await asyncio.wait(pending, timeout=POLL, return_when=asyncio.FIRST_COMPLETED)
            now = time.monotonic()
            if waiter.done() and all(p.done() for p in pumps):
                break
            if waiter.done():
                exited_at = exited_at or now
                if now - exited_at > DRAIN:  # a grandchild keeps the pipes open
                    break
                continue
            if cancel is not None and cancel.is_set():
                ended_by, reason = "cancelled", "cancelled"
            elif spec.timeout is not None and now - start > spec.timeout:
                ended_by, reason = "timeout", f"no result after {spec.timeout:g}s (timeout)"
            elif spec.idle_timeout is not None and now - last[0] > spec.idle_timeout:
                ended_by, reason = "idle_timeout", f"no output for {spec.idle_timeout:g}s (idle timeout)"
            elif should_stop is not None and (why := should_stop()):
                ended_by, reason = "stopped", why
            else:
                continue
            stopping_at = now
            await _stop(proc.pid, waiter, spec.grace)
            break
        # the leader is gone: stop whatever of its group (or run/stage) remains, then drain the pipes
        leftovers = await asyncio.to_thread(kill_group, proc.pid, spec.run_id, spec.stage, 0.5)
        await asyncio.wait(pumps, timeout=DRAIN)  # a holder without the run marker is not waited for
        for p in pumps:
            p.cancel()
        await proc.wait()  # the leader only: it has exited already
        rc = proc.returncode
        assert rc is not None
        return ProcessResult(
            pid=proc.pid, exit_code=rc if rc >= 0 else None, signal=-rc if rc < 0 else None,
            duration=time.monotonic() - start, ended_by=ended_by, stop_reason=reason,
            stderr_tail=redact(err.tail), leftovers=leftovers, stopping_at=stopping_at,
        )
    except BaseException:
        if proc is not None:  # cancelled, interrupted or a bug: never leave the group behind
            if proc.returncode is None:
                signal_group(proc.pid, signal.SIGTERM)
            kill_group(proc.pid, spec.run_id, spec.stage, grace=min(spec.grace, 1.0))
        raise
    finally:
        stdin.close()
        pipes.close()
        for fh in (out_log, err_log):
            if fh is not None:
                fh.close()


class _Pipes:
    """The child's stdout and stderr as plain OS pipes, read through asyncio read-pipe transports.

    The write ends go to the child and are closed here once it exists; the read ends are closed by
    `close()` even while some process of the agent's still holds the write ends."""

    def __init__(self) -> None:
        self._child: list[int] = []
        self._ours: list[int] = []
        self._transports: list[asyncio.BaseTransport] = []

    def child_end(self) -> int:
        read, write = os.pipe()  # both close-on-exec: the child gets the write end as its fd 1 or 2
        self._ours.append(read)
        self._child.append(write)
        return write

    def spawned(self) -> None:
        """The child has its copies: close ours, so EOF comes when every holder is gone."""
        for fd in self._child:
            os.close(fd)
        self._child = []

    async def readers(self) -> list[asyncio.StreamReader]:
        loop = asyncio.get_running_loop()
        readers = []
        while self._ours:
            reader = asyncio.StreamReader()
            transport, _ = await loop.connect_read_pipe(lambda r=reader: asyncio.StreamReaderProtocol(r),
                                                        os.fdopen(self._ours[0], "rb", buffering=0))
            self._ours.pop(0)  # the transport owns it now
            self._transports.append(transport)
            readers.append(reader)
        return readers

    def close(self) -> None:
        for transport in self._transports:
            transport.close()
        for fd in (*self._child, *self._ours):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._transports, self._child, self._ours = [], [], []


async def _stop(pgid: int, waiter: asyncio.Future, grace: float) -> None:
    """Staged stop of a group: SIGTERM, then SIGKILL after `grace` (Gemini ignores SIGTERM in tools)."""
    signal_group(pgid, signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.shield(waiter), timeout=grace)
    except asyncio.TimeoutError:
        signal_group(pgid, signal.SIGKILL)
        await waiter


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within this block SIGTERM to bridge raises KeyboardInterrupt, so agent groups get stopped."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_quick(argv: tuple[str, ...] | list[str], timeout: float = 10.0,
              env: dict[str, str] | None = None) -> tuple[int | None, str]:
    """Run a short command (e.g. `codex --version`): (exit code or None on timeout, stdout+stderr)."""
    import subprocess

    full_env = {**os.environ, **(env or {})}
    proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=full_env, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        code = None
        out = b""
    finally:
        kill_group(proc.pid, grace=0.0)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    return code, out.decode("utf-8", errors="replace")
