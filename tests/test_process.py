"""process.supervise against fake agent executables: every ending leaves no process behind."""

from __future__ import annotations

import uuid

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bridge.errors import AgentNotFound
from bridge.process import ProcessSpec, supervise, which
from bridge.proctable import group_members, kill_leftovers, run_processes

RUN_TEST = f"run-test-{uuid.uuid4().hex[:8]}"  # unique: suites may run side by side
RUN_HOST = f"run-host-{uuid.uuid4().hex[:8]}"  # unique: suites may run side by side
RUN_ORPHAN = f"run-orphan-{uuid.uuid4().hex[:8]}"  # unique: suites may run side by side
FAKE = Path(__file__).parent / "fakes" / "fake_agent"


def spec(tmp_path: Path, *args: str, **kw) -> ProcessSpec:
    kw.setdefault("grace", 1.0)
    return ProcessSpec(argv=(sys.executable, str(FAKE), *args), cwd=tmp_path,
                       stdout_log=tmp_path / "out.jsonl", stderr_log=tmp_path / "err.log",
                       run_id=kw.pop("run_id", RUN_TEST), stage=kw.pop("stage", "s1"), **kw)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def assert_clean(pgid: int, run_id: str = RUN_TEST) -> None:
    assert group_members(pgid) == []
    assert run_processes(run_id) == []


def run(s: ProcessSpec, **kw):
    lines: list[str] = []
    result = asyncio.run(supervise(s, lines.append, **kw))
    return result, lines


def test_lines_exit_code_logs_and_markers(tmp_path):
    result, lines = run(spec(tmp_path, "argv"))
    assert result.exit_code == 0 and result.ended_by == "exit" and result.signal is None
    data = json.loads(lines[0])
    assert data["env"] == {"BRIDGE_RUN_ID": RUN_TEST, "BRIDGE_STAGE": "s1"}
    assert data["stdin"] == ""  # /dev/null, never an open pipe
    assert (tmp_path / "out.jsonl").read_text().strip() == lines[0]
    assert_clean(result.pid)


def test_stdin_file(tmp_path):
    (tmp_path / "prompt.md").write_text("a very long prompt")
    result, lines = run(spec(tmp_path, "argv", stdin_file=tmp_path / "prompt.md"))
    assert json.loads(lines[0])["stdin"] == "a very long prompt"


def test_nonzero_exit_and_partial_last_line(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"a":1}\n')
    result, lines = run(spec(tmp_path, "lines", str(data), "3"))
    assert result.exit_code == 3 and lines == ['{"a":1}']
    result, lines = run(spec(tmp_path, "partial"))
    assert lines == ['{"type":"a"}', '{"type":"trunc']


def test_timeout(tmp_path):
    t0 = time.monotonic()
    result, lines = run(spec(tmp_path, "hang", timeout=0.8))
    assert result.ended_by == "timeout" and "timeout" in result.stop_reason
    assert result.signal == signal.SIGTERM
    assert time.monotonic() - t0 < 5
    assert_clean(result.pid)


def test_idle_timeout_counts_stderr_as_activity(tmp_path):
    result, _ = run(spec(tmp_path, "silent", idle_timeout=0.6))
    assert result.ended_by == "idle_timeout"
    assert_clean(result.pid)
    result, _ = run(spec(tmp_path, "stderr-only", idle_timeout=0.6, timeout=1.5))
    assert result.ended_by == "timeout"  # stderr kept it from going idle
    assert "working" in (tmp_path / "err.log").read_text()


def test_sigterm_ignoring_child_needs_sigkill(tmp_path):
    t0 = time.monotonic()
    result, _ = run(spec(tmp_path, "ignore-term", timeout=0.5, grace=0.5))
    assert result.signal == signal.SIGKILL
    assert time.monotonic() - t0 < 4
    assert_clean(result.pid)


def test_grandchild_killed_after_leader_exits(tmp_path):
    pidfile = tmp_path / "gc.pid"
    result, _ = run(spec(tmp_path, "grandchild", str(pidfile)))
    assert result.exit_code == 0
    gc = int(pidfile.read_text())
    assert not alive(gc) and result.leftovers >= 1
    assert_clean(result.pid)


def test_grandchild_killed_on_timeout(tmp_path):
    pidfile = tmp_path / "gc.pid"
    result, _ = run(spec(tmp_path, "grandchild", str(pidfile), "hang", timeout=0.8, grace=0.3))
    assert result.ended_by == "timeout"
    assert not alive(int(pidfile.read_text()))
    assert_clean(result.pid)


def test_escaped_grandchild_found_by_run_marker(tmp_path):
    pidfile = tmp_path / "gc.pid"
    result, _ = run(spec(tmp_path, "escape", str(pidfile)))
    assert not alive(int(pidfile.read_text()))
    assert_clean(result.pid)


def test_escapees_of_agents_ending_together_are_all_found(tmp_path):
    # the marker scan is shared by agents ending at the same moment: none may miss its escapee
    async def go():
        specs = [spec(tmp_path, "escape", str(tmp_path / f"gc{i}.pid"), stage=f"s{i}") for i in range(6)]
        return await asyncio.gather(*(supervise(s, lambda _: None) for s in specs))

    results = asyncio.run(go())
    for i, result in enumerate(results):
        assert not alive(int((tmp_path / f"gc{i}.pid").read_text())) and result.leftovers >= 1
        assert group_members(result.pid) == []
    assert run_processes(RUN_TEST) == []


def _bounded(coro, limit: float = 30.0):
    """Run `coro`; a hang (the bug these tests guard against) fails instead of blocking the suite."""
    return asyncio.run(asyncio.wait_for(coro, limit))


def test_detached_grandchild_holding_the_pipes_does_not_hold_the_agent(tmp_path):
    # `setsid sleep 40 & exec agent`: the leader exits, a process of another session keeps its stdout
    pidfile = tmp_path / "gc.pid"
    lines: list[str] = []
    result = _bounded(supervise(spec(tmp_path, "holdout", str(pidfile)), lines.append))
    assert result.ended_by == "exit" and result.exit_code == 0
    assert lines == ['{"type":"spawned"}']
    holder = int(pidfile.read_text())
    assert not alive(holder) and result.leftovers >= 1  # found by its run marker, stopped
    assert_clean(result.pid)


def test_cancel_with_a_detached_grandchild_holding_the_pipes(tmp_path):
    # a first Ctrl-C: the agent stops at SIGTERM, its detached grandchild must not keep bridge waiting
    pidfile = tmp_path / "gc.pid"

    async def go():
        ev = asyncio.Event()

        def on_line(line: str) -> None:
            ev.set()  # the agent has started and spawned its grandchild

        return await supervise(spec(tmp_path, "holdout", str(pidfile), "hang", grace=5.0), on_line, cancel=ev)

    result = _bounded(go())
    assert result.ended_by == "cancelled" and result.signal == signal.SIGTERM
    assert not alive(int(pidfile.read_text()))
    assert_clean(result.pid)


def test_should_stop_after_terminal_event_then_hang(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"type":"result"}\n')
    lines: list[str] = []
    seen: list[float] = []

    def on_line(line: str) -> None:
        lines.append(line)
        seen.append(time.monotonic())

    def should_stop() -> str | None:
        return "terminal event seen" if seen and time.monotonic() - seen[0] > 0.3 else None

    result = asyncio.run(supervise(spec(tmp_path, "lines-hang", str(data)), on_line, should_stop=should_stop))
    assert result.ended_by == "stopped" and result.stop_reason == "terminal event seen"
    assert_clean(result.pid)


def test_cancel_event(tmp_path):
    async def go():
        ev = asyncio.Event()
        asyncio.get_running_loop().call_later(0.5, ev.set)
        return await supervise(spec(tmp_path, "ignore-term", grace=0.3), lambda _: None, cancel=ev)

    result = asyncio.run(go())
    assert result.ended_by == "cancelled"
    assert_clean(result.pid)


def test_task_cancellation(tmp_path):
    pidfile = tmp_path / "gc.pid"

    async def go():
        task = asyncio.ensure_future(supervise(spec(tmp_path, "grandchild", str(pidfile), "hang"),
                                               lambda _: None))
        await asyncio.sleep(0.8)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    assert not alive(int(pidfile.read_text()))
    assert run_processes(RUN_TEST) == []


def test_logs_are_redacted(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_API_KEY", "sk-supersecret-123")
    result, lines = run(spec(tmp_path, "secret"))
    assert lines == ["token is sk-supersecret-123"]  # the parser sees the real line
    assert "supersecret" not in (tmp_path / "out.jsonl").read_text()
    assert "***" in (tmp_path / "err.log").read_text()
    assert "supersecret" not in result.stderr_tail


def test_bridge_interrupted_by_sigterm_stops_the_agent(tmp_path):
    pidfile = tmp_path / "gc.pid"
    script = tmp_path / "host.py"
    script.write_text(textwrap.dedent(f"""
        import asyncio, sys
        from pathlib import Path
        from bridge.process import ProcessSpec, supervise, sigterm_as_interrupt
        s = ProcessSpec(argv=(sys.executable, {str(FAKE)!r}, "grandchild", {str(pidfile)!r}, "hang"),
                        cwd=Path({str(tmp_path)!r}), run_id={RUN_HOST!r}, stage="s", grace=0.5)
        with sigterm_as_interrupt():
            try:
                asyncio.run(supervise(s, print))
            except KeyboardInterrupt:
                sys.exit(130)
    """))
    host = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE)
    assert host.stdout is not None
    host.stdout.readline()  # the fake has started and spawned its grandchild
    host.send_signal(signal.SIGTERM)
    assert host.wait(timeout=10) == 130
    assert not alive(int(pidfile.read_text()))
    assert run_processes(RUN_HOST) == []


def test_kill_leftovers_after_bridge_was_sigkilled(tmp_path):
    env = {**os.environ, "BRIDGE_RUN_ID": RUN_ORPHAN, "BRIDGE_STAGE": "s"}
    orphan = subprocess.Popen([sys.executable, str(FAKE), "ignore-term"], env=env,
                              start_new_session=True, stdout=subprocess.PIPE)
    assert orphan.stdout is not None
    orphan.stdout.readline()
    assert kill_leftovers(orphan.pid, "another-run") is False  # not ours: left alone
    assert alive(orphan.pid)
    assert kill_leftovers(orphan.pid, RUN_ORPHAN) is True
    orphan.wait(timeout=5)
    assert group_members(orphan.pid) == []


def test_which(tmp_path):
    assert which("sh")
    with pytest.raises(AgentNotFound, match="codex.*npm install -g @openai/codex"):
        which("codex", extra_path=tmp_path)
    (tmp_path / "codex").write_text("#!/bin/sh\n")
    (tmp_path / "codex").chmod(0o755)
    assert which("codex", extra_path=tmp_path) == str(tmp_path / "codex")


def test_a_huge_line_and_many_small_ones_arrive_whole(tmp_path):
    # one 30 MB line (read in 64 KiB chunks) and 100,000 short ones: each line once, nothing cut
    code = "import sys; sys.stdout.write('x' * 30_000_000 + '\\n' + 'y\\n' * 100_000 + 'tail')"
    got: list[int] = []
    result = asyncio.run(supervise(ProcessSpec(argv=(sys.executable, "-c", code), cwd=tmp_path, timeout=120,
                                               run_id="huge", stage="s"), lambda line: got.append(len(line))))
    assert result.exit_code == 0
    assert got[0] == 30_000_000 and got[1:-1] == [1] * 100_000 and got[-1] == 4 and len(got) == 100_002
