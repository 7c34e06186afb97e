"""The pexpect transport, for CLIs (or modes) that need a terminal: expect / respond rules from
configs/clis.yaml, completion by a pattern or by the caller, then a clean exit of the session."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pexpect

from bridge.agents.base import AgentEvent, Command, ErrorKind, EventKind, Invocation, Outcome
from bridge.process import ProcessResult, ProcessSpec, child_env, kill_group
from bridge.redact import Redactor

POLL = 0.1
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[@-Z\\-_]|\r")


@dataclass(frozen=True)
class Rule:
    expect: str  # a regular expression
    respond: str  # sent as is ("\r" for Enter)


@dataclass(frozen=True)
class SessionSpec:
    argv: tuple[str, ...]
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)
    rules: tuple[Rule, ...] = ()
    done: str | None = None  # a pattern that means the work is finished
    exit_text: str | None = None  # what to type to leave the CLI (e.g. "/exit\r")
    log: Path | None = None
    timeout: float | None = None
    idle_timeout: float | None = None
    grace: float = 3.0
    run_id: str = ""
    stage: str = ""


@dataclass(frozen=True)
class SessionResult:
    process: ProcessResult
    transcript: str  # the terminal output, escape sequences removed
    done: bool  # the done pattern matched or the caller's should_stop fired
    answered: tuple[str, ...] = ()  # the rules that fired, by pattern


def rules_from(cli: dict[str, Any]) -> tuple[tuple[Rule, ...], str | None, str | None]:
    conf = cli.get("interactive") or {}
    rules = tuple(Rule(str(r["expect"]), str(r.get("respond", ""))) for r in conf.get("rules") or [])
    return rules, conf.get("done"), conf.get("exit")


class _Log:
    """pexpect's logfile_read: keeps the transcript, marks activity, writes redacted text."""

    def __init__(self, fh: IO[str] | None, redact: Redactor, on_text: Callable[[str], None] | None) -> None:
        self.fh, self.redact, self.on_text = fh, redact, on_text
        self.parts: list[str] = []
        self.last = time.monotonic()

    def write(self, text: str) -> None:
        self.last = time.monotonic()
        self.parts.append(text)
        if self.fh is not None:
            self.fh.write(self.redact(text))
            self.fh.flush()
        if self.on_text is not None:
            self.on_text(text)

    def flush(self) -> None:
        pass


def run_session(spec: SessionSpec, on_text: Callable[[str], None] | None = None, *,
                should_stop: Callable[[], str | None] | None = None,
                cancel: threading.Event | None = None,
                on_spawn: Callable[[int, int], None] | None = None) -> SessionResult:
    """Drive one terminal session to its end (blocking: call it in a thread from async code)."""
    env = child_env(ProcessSpec(argv=spec.argv, cwd=spec.cwd, env=spec.env, run_id=spec.run_id,
                                stage=spec.stage))
    env.setdefault("TERM", "xterm-256color")
    redact = Redactor.for_env(env)
    fh = None
    if spec.log is not None:
        spec.log.parent.mkdir(parents=True, exist_ok=True)
        fh = open(spec.log, "a", encoding="utf-8")  # noqa: SIM115 - closed below
    log = _Log(fh, redact, on_text)
    start = time.monotonic()
    child = pexpect.spawn(spec.argv[0], list(spec.argv[1:]), cwd=str(spec.cwd), env=env,
                          encoding="utf-8", codec_errors="replace", dimensions=(50, 200), echo=False)
    child.logfile_read = log
    if on_spawn is not None:
        on_spawn(child.pid, child.pid)  # pexpect makes the child a session leader
    patterns = [r.expect for r in spec.rules] + ([spec.done] if spec.done else [])
    compiled = child.compile_pattern_list([*patterns, pexpect.TIMEOUT, pexpect.EOF])
    ended_by, reason, done, answered = "exit", "", False, []
    try:
        while True:
            idx = child.expect_list(compiled, timeout=POLL)
            if idx < len(spec.rules):
                child.send(spec.rules[idx].respond)
                answered.append(spec.rules[idx].expect)
                continue
            if spec.done and idx == len(spec.rules):
                done, ended_by, reason = True, "stopped", "done pattern seen"
                break
            if idx == len(patterns) + 1:  # EOF: the CLI exited by itself
                break
            now = time.monotonic()
            if cancel is not None and cancel.is_set():
                ended_by, reason = "cancelled", "cancelled"
            elif spec.timeout is not None and now - start > spec.timeout:
                ended_by, reason = "timeout", f"no result after {spec.timeout:g}s (timeout)"
            elif spec.idle_timeout is not None and now - log.last > spec.idle_timeout:
                ended_by, reason = "idle_timeout", f"no output for {spec.idle_timeout:g}s (idle timeout)"
            elif should_stop is not None and (why := should_stop()):
                done, ended_by, reason = True, "stopped", why
            else:
                continue
            break
        _leave(child, spec, polite=done)
    finally:
        if child.isalive():
            child.kill(signal.SIGKILL)
        kill_group(child.pid, spec.run_id, spec.stage, grace=0.0)
        child.close(force=True)
        if fh is not None:
            fh.close()
    status = child.exitstatus
    sig = child.signalstatus
    proc = ProcessResult(pid=child.pid, exit_code=status, signal=sig, duration=time.monotonic() - start,
                         ended_by=ended_by, stop_reason=reason)
    return SessionResult(proc, ANSI.sub("", "".join(log.parts)), done, tuple(answered))


def _leave(child: pexpect.spawn, spec: SessionSpec, polite: bool) -> None:
    """Type the CLI's exit command (when finished normally), then SIGTERM / SIGKILL the group."""
    if not child.isalive():
        return
    if polite and spec.exit_text:
        try:
            child.send(spec.exit_text)
            child.expect(pexpect.EOF, timeout=spec.grace)
        except (pexpect.TIMEOUT, OSError):
            pass
    if child.isalive():
        kill_group(child.pid, spec.run_id, spec.stage, grace=spec.grace)


async def run_interactive(spec: SessionSpec, on_text: Callable[[str], None] | None = None, *,
                          should_stop: Callable[[], str | None] | None = None,
                          cancel: asyncio.Event | None = None,
                          on_spawn: Callable[[int, int], None] | None = None) -> SessionResult:
    """run_session in a thread; the asyncio cancel event or task cancellation stop the session."""
    stop = threading.Event()
    loop = asyncio.get_running_loop()

    def text_cb(text: str) -> None:
        if on_text is not None:
            loop.call_soon_threadsafe(on_text, text)

    async def relay() -> None:
        if cancel is not None:
            await cancel.wait()
            stop.set()

    def spawned(pid: int, pgid: int) -> None:
        if on_spawn is not None:
            loop.call_soon_threadsafe(on_spawn, pid, pgid)

    relay_task = asyncio.ensure_future(relay())
    work = asyncio.ensure_future(asyncio.to_thread(run_session, spec, text_cb, should_stop=should_stop,
                                                   cancel=stop, on_spawn=spawned))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        stop.set()
        await asyncio.wait([work])  # the thread stops the session before we let go
        raise
    finally:
        relay_task.cancel()


async def run_interactive_attempt(profile: Any, cmd: Command, inv: Invocation, *, timeout: float | None,
                                  idle_timeout: float | None, on_event: Callable[[AgentEvent], None] | None,
                                  should_stop: Callable[[], str | None] | None, cancel: asyncio.Event | None,
                                  run_id: str, stage_key: str, grace: float, project: Path | None,
                                  out_path: Path, err_path: Path,
                                  on_spawn: Callable[[int, int], None] | None = None) -> Any:
    """The interactive half of bridge.attempt.run_attempt (same result type)."""
    from bridge.agents import resolve
    from bridge.attempt import AttemptResult

    _, cli = resolve(profile, project)
    rules, done, exit_text = rules_from(cli)
    from bridge.trust import trust_worktree

    # a fresh worktree is a folder the CLI never saw: answer its trust dialog in advance
    trust_worktree(cli.get("adapter", profile.cli), Path(cmd.cwd or inv.cwd), {**os.environ, **cmd.env})
    spec = SessionSpec(argv=cmd.argv, cwd=cmd.cwd or inv.cwd, env=cmd.env, rules=rules, done=done,
                       exit_text=exit_text, log=out_path, timeout=timeout, idle_timeout=idle_timeout,
                       grace=grace, run_id=run_id, stage=stage_key)
    err_path.touch()

    def on_text(text: str) -> None:
        if on_event is not None:
            on_event(AgentEvent(EventKind.MESSAGE, ANSI.sub("", text)))

    result = await run_interactive(spec, on_text, should_stop=should_stop, cancel=cancel, on_spawn=on_spawn)
    proc, text = result.process, result.transcript.strip()
    kinds = {"timeout": ErrorKind.TIMEOUT, "idle_timeout": ErrorKind.IDLE_TIMEOUT,
             "cancelled": ErrorKind.CANCELLED}
    if proc.ended_by in kinds:
        outcome = Outcome(False, kinds[proc.ended_by], proc.stop_reason, final_message=text)
    elif result.done or (done is None and proc.exit_code == 0):
        outcome = Outcome(True, reason=proc.stop_reason, final_message=text)
    elif proc.exit_code == 0:
        outcome = Outcome(False, ErrorKind.INCOMPLETE, "the session ended before its done pattern",
                          final_message=text)
    else:
        outcome = Outcome(False, ErrorKind.CRASHED, f"exited {proc.exit_code}", final_message=text)
    return AttemptResult(outcome, proc, cmd.argv, out_path, err_path)
