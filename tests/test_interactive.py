"""The pexpect transport against a fake CLI that asks for trust before working."""

from __future__ import annotations

import uuid

import asyncio
import sys
import time
from pathlib import Path

from bridge.interactive import Rule, SessionSpec, run_interactive, run_session
from bridge.process import group_members, run_processes

RUN_I = f"run-i-{uuid.uuid4().hex[:8]}"  # unique: suites may run side by side
FAKE = Path(__file__).parent / "fakes" / "fake_interactive"
TRUST = Rule(r"Do you trust this folder\? \(y/n\)", "y\r")


def spec(tmp_path: Path, *flags: str, **kw) -> SessionSpec:
    kw.setdefault("rules", (TRUST,))
    kw.setdefault("grace", 0.5)
    return SessionSpec(argv=(sys.executable, str(FAKE), str(tmp_path / "out.txt"), *flags), cwd=tmp_path,
                       log=tmp_path / "session.log", run_id=RUN_I, stage="s", **kw)


def assert_clean(pid: int) -> None:
    assert group_members(pid) == []
    assert run_processes(RUN_I) == []


def test_trust_dialog_answered_done_pattern_then_clean_exit(tmp_path):
    result = run_session(spec(tmp_path, done="TASK COMPLETE", exit_text="/exit\r", timeout=20))
    assert result.done and result.answered == (TRUST.expect,)
    assert (tmp_path / "out.txt").read_text() == "done by fake-cli\n"
    assert result.process.exit_code == 0  # it left through /exit, not a signal
    assert "bye" in result.transcript or result.process.exit_code == 0
    assert "Do you trust" in (tmp_path / "session.log").read_text()
    assert_clean(result.process.pid)


def test_refused_without_rule(tmp_path):
    s = spec(tmp_path, rules=(Rule(r"\(y/n\)", "n\r"),), timeout=20)
    result = run_session(s)
    assert result.process.exit_code == 3 and not result.done
    assert not (tmp_path / "out.txt").exists()


def test_completion_by_should_stop_and_stubborn_cli_is_killed(tmp_path):
    out = tmp_path / "out.txt"
    t0 = time.monotonic()
    result = run_session(spec(tmp_path, "--ignore-exit", "--no-done", exit_text="/exit\r", timeout=30),
                         should_stop=lambda: "outputs complete" if out.exists() else None)
    assert result.done and result.process.ended_by == "stopped"
    assert result.process.stop_reason == "outputs complete"
    assert result.process.signal is not None  # /exit was ignored, so it was killed
    assert time.monotonic() - t0 < 10
    assert_clean(result.process.pid)


def test_timeout(tmp_path):
    result = run_session(spec(tmp_path, "--no-done", timeout=1.5))
    assert result.process.ended_by == "timeout" and not result.done
    assert_clean(result.process.pid)


def test_async_cancel(tmp_path):
    async def go():
        ev = asyncio.Event()
        asyncio.get_running_loop().call_later(1.0, ev.set)
        return await run_interactive(spec(tmp_path, "--ignore-exit", "--no-done"), cancel=ev)

    result = asyncio.run(go())
    assert result.process.ended_by == "cancelled"
    assert_clean(result.process.pid)
