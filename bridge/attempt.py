"""One stage attempt end to end: build the command, run it supervised, parse it, decide the outcome."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bridge import agents
from bridge.agents.base import AgentEvent, Command, ErrorKind, Invocation, Outcome
from bridge.agents.codex import LAST_MESSAGE
from bridge.errors import AgentNotFound, BridgeError
from bridge.process import ProcessResult, ProcessSpec, supervise, which
from bridge.redact import Redactor

EXIT_GRACE = 3.0  # CLIs have been seen to hang after their result event: stop them after this
STDOUT, STDERR, PROMPT, ARGV = "stdout.jsonl", "stderr.log", "prompt.md", "argv.json"


@dataclass(frozen=True)
class AttemptResult:
    outcome: Outcome
    process: ProcessResult | None  # None when nothing was started (e.g. the CLI is not installed)
    argv: tuple[str, ...]
    stdout_path: Path
    stderr_path: Path


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


def record(cmd: Command, inv: Invocation, stage_dir: Path) -> None:
    """prompt.md and argv.json for the record, secrets masked."""
    redact = Redactor.for_env(cmd.env)
    write_private(stage_dir / PROMPT, redact(inv.prompt))
    data = {"argv": list(cmd.argv), "cwd": str(cmd.cwd or inv.cwd), "env": cmd.env,
            "stdin": str(cmd.stdin) if cmd.stdin else None, "interactive": cmd.interactive}
    write_private(stage_dir / ARGV, redact(json.dumps(data, indent=2)))


def adjust(outcome: Outcome, proc: ProcessResult, stopped_by_caller: bool) -> Outcome:
    """The parsed outcome corrected for how the process ended."""
    if outcome.success and proc.ended_by != "cancelled":
        return outcome
    if proc.ended_by == "timeout":
        return replace(outcome, success=False, error=ErrorKind.TIMEOUT, reason=proc.stop_reason)
    if proc.ended_by == "idle_timeout":
        return replace(outcome, success=False, error=ErrorKind.IDLE_TIMEOUT, reason=proc.stop_reason)
    if proc.ended_by == "cancelled":
        return replace(outcome, success=False, error=ErrorKind.CANCELLED, reason="cancelled")
    if proc.ended_by == "stopped" and stopped_by_caller and outcome.error is not ErrorKind.MALFORMED:
        # the caller saw what it waited for (e.g. every declared output complete)
        return replace(outcome, success=True, error=None, reason=f"stopped: {proc.stop_reason}")
    return outcome


async def run_attempt(
    profile: Any,
    inv: Invocation,
    *,
    timeout: float | None,
    idle_timeout: float | None,
    on_event: Callable[[AgentEvent], None] | None = None,
    should_stop: Callable[[], str | None] | None = None,
    cancel: asyncio.Event | None = None,
    wiring: Any = None,
    run_id: str,
    stage_key: str,
    grace: float = 5.0,
    exit_grace: float = EXIT_GRACE,
    project: Path | None = None,
) -> AttemptResult:
    """Run one attempt of a stage; never raises for agent failures (they are in the Outcome)."""
    if inv.stage_dir is None:
        raise BridgeError("run_attempt needs inv.stage_dir (the attempt's folder)")
    stage_dir = inv.stage_dir
    stage_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = stage_dir / STDOUT, stage_dir / STDERR
    cmd = agents.build_command(profile, inv, wiring, project)
    try:
        cmd = resolve_binary(cmd)
    except AgentNotFound as exc:
        record(cmd, inv, stage_dir)
        return AttemptResult(Outcome(False, ErrorKind.NOT_FOUND, str(exc)), None, cmd.argv, out_path, err_path)
    record(cmd, inv, stage_dir)
    for path, text in cmd.files.items():
        write_private(path, text)
    if cmd.interactive or getattr(profile, "interactive", False):
        from bridge.interactive import run_interactive_attempt

        return await run_interactive_attempt(
            profile, cmd, inv, timeout=timeout, idle_timeout=idle_timeout, on_event=on_event,
            should_stop=should_stop, cancel=cancel, run_id=run_id, stage_key=stage_key, grace=grace,
            project=project, out_path=out_path, err_path=err_path)

    parser = agents.new_parser(profile, project)
    terminal_at: list[float] = []

    def on_line(line: str) -> None:
        events = parser.feed(line)
        if parser.terminal and not terminal_at:
            terminal_at.append(time.monotonic())
        if on_event is not None:
            for event in events:
                on_event(event)

    caller_reason: list[str] = []

    def stop() -> str | None:
        if should_stop is not None and (why := should_stop()):
            caller_reason.append(why)
            return why
        if terminal_at and time.monotonic() - terminal_at[0] > exit_grace:
            return "terminal event seen; the CLI did not exit"
        return None

    spec = ProcessSpec(argv=cmd.argv, cwd=cmd.cwd or inv.cwd, env=cmd.env, stdout_log=out_path,
                       stderr_log=err_path, timeout=timeout, idle_timeout=idle_timeout, grace=grace,
                       run_id=run_id, stage=stage_key, stdin_file=cmd.stdin)
    try:
        proc = await supervise(spec, on_line, should_stop=stop, cancel=cancel)
    except (FileNotFoundError, PermissionError) as exc:  # vanished or not executable after `which`
        return AttemptResult(Outcome(False, ErrorKind.NOT_FOUND, f"cannot start {cmd.argv[0]}: {exc}"),
                             None, cmd.argv, out_path, err_path)
    outcome = parser.finish(proc.exit_code, proc.stderr_tail)
    if not outcome.final_message and (stage_dir / LAST_MESSAGE).is_file():
        outcome = replace(outcome, final_message=(stage_dir / LAST_MESSAGE).read_text().strip())
    outcome = adjust(outcome, proc, stopped_by_caller=bool(caller_reason) and not parser.terminal)
    return AttemptResult(outcome, proc, cmd.argv, out_path, err_path)
