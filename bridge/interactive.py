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
from typing import Any

import pexpect

from bridge.agents.base import AgentEvent, Command, ErrorKind, EventKind, Invocation, Outcome, Usage
from bridge.errors import BridgeError
from bridge.process import ProcessResult, ProcessSpec, child_env
from bridge.proctable import kill_group
from bridge.redact import Redactor, secret_values
from bridge.screen import COLS, ROWS, ScreenLog, last_message
from bridge.session_record import following, open_record

POLL = 0.1
ENTER_PAUSE = 0.2  # between typed text and its Enter (see _type)
EXIT_RETRY = 1.0  # how often an exit command not yet obeyed is submitted again (see _leave)
TITLE_SETTLE = 0.5  # how long a "ready" window title must stay to mean the turn ended


@dataclass(frozen=True)
class Rule:
    expect: str  # a regular expression, searched in the screen text (see screen_text)
    respond: str  # sent as is ("\r" for Enter)
    repeat: bool = False  # False: answered once per session (a repainted dialog is not answered twice)


@dataclass(frozen=True)
class ScreenError:
    expect: str  # a regular expression over the screen text: the session cannot go on
    message: str  # the failure's reason: what happened and what to do
    kind: str = "crashed"  # an ErrorKind value ("config": retrying will not help)


@dataclass(frozen=True)
class SessionSpec:
    argv: tuple[str, ...]
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)
    rules: tuple[Rule, ...] = ()
    errors: tuple[ScreenError, ...] = ()  # ends the session at once, whether the CLI exits or not
    done: str | None = None  # a pattern that means the work is finished
    # a window-title pattern the CLI shows while it waits for input: the turn ended when the title
    # comes back to it after another one (e.g. Gemini CLI: "◇ Ready", "✦ Working…", "◇ Ready")
    done_title: str | None = None
    exit_text: str | None = None  # what to type to leave the CLI (e.g. "/exit\r")
    session: str | None = None  # a pattern whose group 1 is the session id (e.g. printed on exit)
    log: Path | None = None
    timeout: float | None = None
    idle_timeout: float | None = None
    grace: float = 3.0
    exit_wait: float = 5.0  # how long a polite exit may take (a TUI saving its session is slow under load)
    run_id: str = ""
    stage: str = ""
    inherit_env: bool = True  # False: `env` is the whole environment (a rehearsal's)


@dataclass(frozen=True)
class SessionResult:
    process: ProcessResult
    transcript: str  # every row the terminal showed, each time it showed new text (ScreenLog.screen)
    done: bool  # the done pattern matched or the caller's should_stop fired
    answered: tuple[str, ...] = ()  # the rules that fired, by pattern
    session_id: str | None = None
    error: ScreenError | None = None  # the error the screen showed (process.ended_by == "error")
    screen: str = ""  # what the terminal showed when the turn ended (scrolled-off rows first)


def rules_from(cli: dict[str, Any]) -> tuple[tuple[Rule, ...], str | None, str | None]:
    conf = cli.get("interactive") or {}
    rules = tuple(Rule(str(r["expect"]), str(r.get("respond", "")), bool(r.get("repeat", False)))
                  for r in conf.get("rules") or [])
    return rules, conf.get("done"), conf.get("exit")


def errors_from(cli: dict[str, Any]) -> tuple[ScreenError, ...]:
    found = tuple(ScreenError(str(e["expect"]), str(e["message"]), str(e.get("kind", "crashed")))
                  for e in (cli.get("interactive") or {}).get("errors") or [])
    kinds = {k.value for k in ErrorKind}
    for e in found:
        if e.kind not in kinds:
            raise BridgeError(f"interactive error {e.expect!r}: kind {e.kind!r} is none of {', '.join(sorted(kinds))}; "
                              "fix it in the CLI's clis.yaml")
    return found


def run_session(spec: SessionSpec, on_text: Callable[[str], None] | None = None, *,
                should_stop: Callable[[], str | None] | None = None,
                cancel: threading.Event | None = None,
                on_spawn: Callable[[int, int], None] | None = None,
                work_done: Callable[[], bool] | None = None) -> SessionResult:
    """Drive one terminal session to its end (blocking: call it in a thread from async code).

    When `should_stop` gives a reason, `work_done` says whether the work is done (the session is
    left through the CLI's exit command) or not — a budget, a cancelled run: the CLI is stopped at
    once, since one in the middle of its turn may refuse the exit command and work on (Gemini CLI:
    "Slash commands cannot be queued")."""
    env = child_env(ProcessSpec(argv=spec.argv, cwd=spec.cwd, env=spec.env, run_id=spec.run_id,
                                stage=spec.stage, inherit_env=spec.inherit_env))
    env.setdefault("TERM", "xterm-256color")
    # a CLI may show the end of a key it asks about (Claude Code: its last 20 characters)
    redact = Redactor.for_env(env, extra=[v[-20:] for v in secret_values(env) if len(v) > 20])
    fh = None
    if spec.log is not None:
        spec.log.parent.mkdir(parents=True, exist_ok=True)
        fh = open(spec.log, "a", encoding="utf-8")  # noqa: SIM115 - closed below
    log = ScreenLog(fh, redact, on_text)
    start = time.monotonic()
    child = pexpect.spawn(spec.argv[0], list(spec.argv[1:]), cwd=str(spec.cwd), env=env,
                          encoding="utf-8", codec_errors="replace", dimensions=(ROWS, COLS), echo=False)
    child.logfile_read = log
    if on_spawn is not None:
        on_spawn(child.pid, child.pid)  # pexpect makes the child a session leader
    rules = [(rule, re.compile(rule.expect)) for rule in spec.rules]
    done_re = re.compile(spec.done) if spec.done else None
    title_re = re.compile(spec.done_title) if spec.done_title else None
    errors = [(e, re.compile(e.expect)) for e in spec.errors]
    checked = 0  # the screen text before this offset has no error, rule or done pattern in it
    ended_by, reason, done, answered, error = "exit", "", False, [], None
    seen = 0  # the screen text before this offset has been matched already
    polite = True  # leave through the exit command when done
    try:
        while True:
            try:
                child.read_nonblocking(65536, timeout=POLL)  # logfile_read (log) keeps what was read
            except pexpect.TIMEOUT:
                pass
            except pexpect.EOF:  # the CLI exited by itself
                break
            if error := _shown(log.screen, errors, checked):
                break
            # only what the last read added is searched (a long session's screen text grows for
            # hours), from a little before it: a row the read cut is drawn again whole, but a
            # pattern may span two rows
            seen, checked = max(seen, checked), max(0, len(log.screen) - 512)
            hit = _first_match(log.screen, seen, [(r, p) for r, p in rules
                                                  if r.repeat or r.expect not in answered])
            if hit is not None:
                rule, seen = hit
                checked = min(checked, seen)  # the rest of this read is still to be searched
                _type(child, rule.respond)
                answered.append(rule.expect)
                continue
            if done_re is not None and (m := done_re.search(log.screen, seen)):
                seen = m.end()
                done, ended_by, reason = True, "stopped", "done pattern seen"
                break
            if title_re is not None and log.back_to(title_re, TITLE_SETTLE):
                done, ended_by, reason = True, "stopped", f"ready again (window title: {log.titles[-1]})"
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
                polite = work_done is None or work_done()
            else:
                continue
            break
        at_end = log.term.text()  # before the exit command redraws it
        _leave(child, spec, polite=done and polite)
        if error is None and ended_by == "exit":  # what it showed before it exited
            error = _shown(log.screen, errors, 0)
        if error is not None:
            ended_by, reason = "error", error.message
    finally:
        if child.isalive():
            child.kill(signal.SIGKILL)
        kill_group(child.pid, spec.run_id, spec.stage, grace=0.0)
        child.close(force=True)
        log.close()
    status = child.exitstatus
    sig = child.signalstatus
    proc = ProcessResult(pid=child.pid, exit_code=status, signal=sig, duration=time.monotonic() - start,
                         ended_by=ended_by, stop_reason=reason)
    found = re.findall(spec.session, log.screen) if spec.session else []
    return SessionResult(proc, log.screen, done, tuple(answered), found[-1] if found else None, error,
                         at_end)


def _shown(screen: str, errors: list[tuple[ScreenError, re.Pattern[str]]], start: int) -> ScreenError | None:
    return next((e for e, pattern in errors if pattern.search(screen, start)), None)


def _first_match(screen: str, start: int, rules: list[tuple[Rule, re.Pattern[str]]]) -> tuple[Rule, int] | None:
    """The rule whose pattern appears first in screen[start:], and where its match ends."""
    best: tuple[int, Rule, int] | None = None
    for rule, pattern in rules:
        m = pattern.search(screen, start)
        if m is not None and (best is None or m.start() < best[0]):
            best = (m.start(), rule, m.end())
    return (best[1], best[2]) if best else None


def _type(child: pexpect.spawn, text: str) -> None:
    """Send `text`; a final Enter goes alone after a pause: Gemini CLI takes text and Enter in one
    read as a paste (a new line, not a submit) — "/quit\r" at once did not quit it."""
    if len(text) > 1 and text.endswith("\r"):
        child.send(text[:-1])
        time.sleep(ENTER_PAUSE)
        text = "\r"
    child.send(text)


def _leave(child: pexpect.spawn, spec: SessionSpec, polite: bool) -> None:
    """Type the CLI's exit command (when finished normally), then SIGTERM / SIGKILL the group."""
    if not child.isalive():
        return
    if polite and spec.exit_text:
        deadline = time.monotonic() + max(spec.exit_wait, spec.grace)
        try:
            _type(child, spec.exit_text)
            while (left := deadline - time.monotonic()) > 0:
                try:
                    child.expect(pexpect.EOF, timeout=min(EXIT_RETRY, left))
                    break
                except pexpect.TIMEOUT:
                    # a CLI still finishing its turn may refuse the command and keep it in its input
                    # (Gemini CLI: "Slash commands cannot be queued"): Enter submits it again
                    if spec.exit_text.endswith("\r"):
                        child.send("\r")
        except OSError:
            pass
    if child.isalive():
        kill_group(child.pid, spec.run_id, spec.stage, grace=spec.grace)


async def run_interactive(spec: SessionSpec, on_text: Callable[[str], None] | None = None, *,
                          should_stop: Callable[[], str | None] | None = None,
                          cancel: asyncio.Event | None = None,
                          on_spawn: Callable[[int, int], None] | None = None,
                          work_done: Callable[[], bool] | None = None) -> SessionResult:
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
                                                   cancel=stop, on_spawn=spawned, work_done=work_done))
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
                                  on_spawn: Callable[[int, int], None] | None = None,
                                  rehearsal: bool = False, work_done: Callable[[], bool] | None = None) -> Any:
    """The interactive half of bridge.attempt.run_attempt (same result type). `rehearsal`: the
    CLI's HOME is a rehearsal's isolated one, which bridge may pre-seed freely."""
    from bridge.agents import resolve
    from bridge.attempt import AttemptResult
    from bridge.trust import seed_rehearsal_home, trust_worktree

    _, cli = resolve(profile, project)
    rules, done, exit_text = rules_from(cli)
    kind, cwd = cli.get("adapter", profile.cli), Path(cmd.cwd or inv.cwd)
    env = {**(os.environ if cmd.inherit_env else {}), **cmd.env}
    if rehearsal:  # every first-run dialog answered in the config, none left to the rules
        seed_rehearsal_home(kind, [cwd, inv.shared_dir, *inv.extra_dirs], env)
    else:  # a fresh worktree is a folder the CLI never saw: answer its trust dialog in advance
        trust_worktree(kind, cwd, env)
    conf = cli.get("interactive") or {}
    spec = SessionSpec(argv=cmd.argv, cwd=cwd, env=cmd.env, inherit_env=cmd.inherit_env,
                       rules=rules, errors=errors_from(cli), done=done,
                       exit_text=exit_text,
                       done_title=conf.get("done_title"), session=conf.get("session"), log=out_path, timeout=timeout,
                       idle_timeout=idle_timeout, grace=grace, run_id=run_id, stage=stage_key)
    err_path.touch()
    record = open_record(profile, cmd, inv, project)

    def on_text(text: str) -> None:  # the screen's new rows, when the CLI keeps no record to read
        if on_event is not None and record is None:
            on_event(AgentEvent(EventKind.MESSAGE, text))

    async with following(record, on_event or (lambda event: None)):
        result = await run_interactive(spec, on_text, should_stop=should_stop, cancel=cancel, on_spawn=on_spawn,
                                       work_done=work_done)
    proc = result.process
    text = (record and record.last_text) or last_message(result.screen, conf.get("message"))
    usage = record.parser.usage if record is not None else Usage()
    kinds = {"timeout": ErrorKind.TIMEOUT, "idle_timeout": ErrorKind.IDLE_TIMEOUT,
             "cancelled": ErrorKind.CANCELLED}
    sid = result.session_id or (record.session if record is not None else None)
    ok, error, reason = False, None, proc.stop_reason
    if result.error is not None:
        error, reason = ErrorKind(result.error.kind), result.error.message
    elif proc.ended_by in kinds:
        error = kinds[proc.ended_by]
    elif result.done or (done is None and spec.done_title is None and proc.exit_code == 0):
        ok = True
    elif proc.exit_code == 0:
        error, reason = ErrorKind.INCOMPLETE, "the session ended before the end of its turn was seen"
    else:
        error, reason = ErrorKind.CRASHED, f"exited {proc.exit_code}"
    outcome = Outcome(ok, error, reason, session_id=sid, final_message=text, usage=usage)
    return AttemptResult(outcome, proc, cmd.argv, out_path, err_path)

