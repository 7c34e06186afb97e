"""One stage attempt end to end: build the command, run it supervised, parse it, decide the outcome."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

from bridge import agents
from bridge.agents.base import AgentEvent, Command, ErrorKind, EventKind, Invocation, Outcome
from bridge.agents.codex import LAST_MESSAGE
from bridge.errors import AgentNotFound, BridgeError
from bridge.process import ProcessResult, ProcessSpec, supervise, which
from bridge.redact import Redactor, argv_secrets
from bridge.session_record import following, open_record

EXIT_GRACE = 3.0  # CLIs have been seen to hang after their result event: stop them after this
STDOUT, STDERR, PROMPT, ARGV = "stdout.jsonl", "stderr.log", "prompt.md", "argv.json"


class StopKind(str, Enum):
    """Why bridge ended an agent that had not exited by itself."""

    OUTPUTS_COMPLETE = "outputs_complete"  # the caller's completion test held: the work is done
    AFTER_RESULT = "after_result"  # the CLI sent its result (or done pattern), then did not exit
    REQUESTED = "requested"  # the caller's should_stop (budget, fail_fast, a run being cancelled)
    CANCELLED = "cancelled"  # the cancel event (a forced stop)
    TIMEOUT = "timeout"
    IDLE_TIMEOUT = "idle_timeout"


@dataclass(frozen=True)
class Stop:
    kind: StopKind
    reason: str


@dataclass(frozen=True)
class AttemptResult:
    outcome: Outcome
    process: ProcessResult | None  # None when nothing was started (e.g. the CLI is not installed)
    argv: tuple[str, ...]
    stdout_path: Path
    stderr_path: Path
    stop: Stop | None = None  # set when bridge ended the agent; None when it exited by itself
    # what masks this attempt's secrets in everything written of it (files, ledger): see `redactor`
    redact: Redactor = field(default_factory=Redactor.for_env)


def write_private(path: Path, text: str) -> None:
    """Write atomically (temp name, then os.replace), readable only by the user."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def resolve_binary(cmd: Command) -> Command:
    """The command with argv[0] made absolute (the command's own PATH searched first)."""
    path = which(cmd.argv[0], cmd.env.get("PATH"))
    return replace(cmd, argv=(path, *cmd.argv[1:]))


def redactor(cmd: Command, inv: Invocation) -> Redactor:
    """An attempt's secrets: secret-looking values of os.environ and of the agent's env (the CLI
    definition's, the profile's, the stage's, a rehearsal's), and values of secret-looking flags in
    its argv (`args: [--api-key, ...]`)."""
    return Redactor.for_env(cmd.env, inv.env, extra=argv_secrets(cmd.argv))


def record(cmd: Command, inv: Invocation, stage_dir: Path, redact: Redactor) -> None:
    """prompt.md and argv.json for the record, secrets masked."""
    write_private(stage_dir / PROMPT, redact(inv.prompt))
    data = {"argv": list(cmd.argv), "cwd": str(cmd.cwd or inv.cwd), "env": cmd.env,
            "stdin": str(cmd.stdin) if cmd.stdin else None, "interactive": cmd.interactive}
    write_private(stage_dir / ARGV, redact(json.dumps(data, indent=2)))


def stop_of(proc: ProcessResult, asked: Stop | None) -> Stop | None:
    """What ended the process, if bridge did; `asked` is the stop run_attempt's own test requested."""
    kinds = {"cancelled": StopKind.CANCELLED, "timeout": StopKind.TIMEOUT, "idle_timeout": StopKind.IDLE_TIMEOUT}
    if proc.ended_by in kinds:
        return Stop(kinds[proc.ended_by], proc.stop_reason or proc.ended_by)
    if proc.ended_by != "stopped":
        return None
    if asked is not None and asked.reason == proc.stop_reason:
        return asked
    return Stop(StopKind.AFTER_RESULT, proc.stop_reason)  # e.g. an interactive CLI's done pattern


def signal_name(number: int) -> str:
    """'SIGSEGV (11)' for 11."""
    try:
        return f"{signal.Signals(number).name} ({number})"
    except ValueError:
        return f"signal {number}"


def adjust(outcome: Outcome, stop: Stop | None, terminal: bool, late: bool = False) -> Outcome:
    """The parsed outcome corrected for how bridge ended the process (`terminal`: a result was seen;
    `late`: it came only after bridge began to stop the CLI — Claude Code answers SIGTERM with a
    "success" result, which says nothing about the work)."""
    if stop is None or stop.kind is StopKind.AFTER_RESULT:
        return outcome
    if stop.kind is StopKind.CANCELLED:
        return replace(outcome, success=False, error=ErrorKind.CANCELLED, reason="cancelled")
    if outcome.success and not late:  # its result came first: the work was done
        return outcome
    if late:
        terminal = False
    if stop.kind is StopKind.TIMEOUT:
        return replace(outcome, success=False, error=ErrorKind.TIMEOUT, reason=stop.reason)
    if stop.kind is StopKind.IDLE_TIMEOUT:
        return replace(outcome, success=False, error=ErrorKind.IDLE_TIMEOUT, reason=stop.reason)
    if terminal or outcome.error is ErrorKind.MALFORMED:  # the CLI's own failure says more
        return outcome
    if stop.kind is StopKind.OUTPUTS_COMPLETE:
        return replace(outcome, success=True, error=None, reason=f"stopped: {stop.reason}")
    return replace(outcome, success=False, error=ErrorKind.CANCELLED, reason=f"stopped: {stop.reason}")


async def run_attempt(
    profile: Any,
    inv: Invocation,
    *,
    timeout: float | None,
    idle_timeout: float | None,
    on_event: Callable[[AgentEvent], None] | None = None,
    should_stop: Callable[[], str | None] | None = None,
    outputs_complete: Callable[[], bool] | None = None,
    on_spawn: Callable[[int, int], None] | None = None,
    cancel: asyncio.Event | None = None,
    wiring: Any = None,
    run_id: str,
    stage_key: str,
    grace: float = 5.0,
    exit_grace: float = EXIT_GRACE,
    project: Path | None = None,
) -> AttemptResult:
    """Run one attempt of a stage; never raises for agent failures (they are in the Outcome).

    `should_stop` returning a reason stops the agent as unfinished (StopKind.REQUESTED: budget,
    fail_fast...); `outputs_complete` returning True stops it as done. `on_spawn(pid, pgid)` is
    called as soon as the agent runs (so a crash of bridge can still find its group)."""
    if inv.stage_dir is None:
        raise BridgeError("run_attempt needs inv.stage_dir (the attempt's folder)")
    stage_dir = inv.stage_dir
    stage_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = stage_dir / STDOUT, stage_dir / STDERR
    try:
        cmd = agents.build_command(profile, inv, wiring, project)
    except (BridgeError, ValueError) as exc:  # e.g. a prompt too long for a `{{ prompt }}` argv item
        redact = Redactor.for_env(getattr(profile, "env", None), inv.env)
        write_private(stage_dir / PROMPT, redact(inv.prompt))
        return AttemptResult(Outcome(False, ErrorKind.CONFIG, str(exc)), None, (), out_path, err_path,
                             redact=redact)
    if getattr(profile, "interactive", False) and not cmd.interactive:  # a `command` CLI's TUI
        cmd = replace(cmd, interactive=True)
    redact = redactor(cmd, inv)
    try:
        cmd = resolve_binary(cmd)
    except AgentNotFound as exc:
        record(cmd, inv, stage_dir, redact)
        return AttemptResult(Outcome(False, ErrorKind.NOT_FOUND, str(exc)), None, cmd.argv, out_path, err_path,
                             redact=redact)
    record(cmd, inv, stage_dir, redact)
    for path, text in cmd.files.items():
        write_private(path, text)
    asked: list[Stop] = []
    terminal_at: list[float] = []

    def stop() -> str | None:
        if should_stop is not None and (why := should_stop()):
            asked.append(Stop(StopKind.REQUESTED, why))
        elif outputs_complete is not None and outputs_complete():
            asked.append(Stop(StopKind.OUTPUTS_COMPLETE, "outputs complete"))
        elif terminal_at and time.monotonic() - terminal_at[0] > exit_grace:
            asked.append(Stop(StopKind.AFTER_RESULT, "terminal event seen; the CLI did not exit"))
        else:
            return None
        return asked[-1].reason

    if cmd.interactive:
        from bridge.interactive import run_interactive_attempt

        res = await run_interactive_attempt(
            profile, cmd, inv, timeout=timeout, idle_timeout=idle_timeout, on_event=on_event,
            should_stop=stop, cancel=cancel, run_id=run_id, stage_key=stage_key, grace=grace,
            project=project, out_path=out_path, err_path=err_path, on_spawn=on_spawn,
            rehearsal=wiring is not None, work_done=lambda: bool(asked) and asked[-1].kind is not StopKind.REQUESTED)
        halt = stop_of(res.process, asked[-1] if asked else None)
        if halt is not None and halt.kind is StopKind.REQUESTED:  # a session counts any stop as done
            return replace(res, outcome=replace(res.outcome, success=False, error=ErrorKind.CANCELLED,
                                                reason=f"stopped: {halt.reason}"), stop=halt, redact=redact)
        return replace(res, stop=halt, redact=redact)

    parser = agents.new_parser(profile, project)
    session_file = open_record(profile, cmd, inv, project)  # running usage the stream reports only at the end

    def on_line(line: str) -> None:
        events = parser.feed(line)
        now = time.monotonic()
        if parser.terminal and not terminal_at:
            terminal_at.append(now)
        for event in events:
            if event.kind is EventKind.SESSION and event.text and session_file is not None:
                session_file.start(event.text)  # Codex: the record is named by the thread id
            if on_event is not None:
                on_event(event)

    def on_record(event: AgentEvent) -> None:
        if event.kind is EventKind.USAGE and on_event is not None and not parser.terminal:
            on_event(event)

    spec = ProcessSpec(argv=cmd.argv, cwd=cmd.cwd or inv.cwd, env=cmd.env, stdout_log=out_path,
                       stderr_log=err_path, timeout=timeout, idle_timeout=idle_timeout, grace=grace,
                       run_id=run_id, stage=stage_key, stdin_file=cmd.stdin, inherit_env=cmd.inherit_env)
    try:
        async with following(session_file, on_record):
            proc = await supervise(spec, on_line, should_stop=stop, cancel=cancel, on_spawn=on_spawn)
    except (FileNotFoundError, PermissionError) as exc:  # vanished or not executable after `which`
        return AttemptResult(Outcome(False, ErrorKind.NOT_FOUND, f"cannot start {cmd.argv[0]}: {exc}"),
                             None, cmd.argv, out_path, err_path, redact=redact)
    outcome = parser.finish(proc.exit_code, proc.stderr_tail)
    if proc.signal and "killed by a signal" in outcome.reason:  # which one
        outcome = replace(outcome, reason=outcome.reason.replace("a signal", signal_name(proc.signal)))
    if session_file is not None and not outcome.usage.total:  # stopped before its result: its usage so far
        outcome = replace(outcome, usage=session_file.parser.usage)
    if not outcome.final_message and (stage_dir / LAST_MESSAGE).is_file():
        outcome = replace(outcome, final_message=(stage_dir / LAST_MESSAGE).read_text().strip())
    halt = stop_of(proc, asked[-1] if asked else None)
    # its result came only once bridge began to stop it (a CLI answering SIGTERM)
    late = bool(terminal_at) and proc.stopping_at is not None and terminal_at[0] >= proc.stopping_at
    outcome = adjust(outcome, halt, terminal=parser.terminal, late=late)
    return AttemptResult(outcome, proc, cmd.argv, out_path, err_path, halt, redact)
