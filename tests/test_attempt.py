"""run_attempt end to end with fake vendor binaries on PATH replaying recorded streams."""

from __future__ import annotations

import uuid

import asyncio
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from bridge.agents.base import ErrorKind, EventKind, Invocation
from bridge.attempt import StopKind, run_attempt
from bridge.playbook import AgentProfile
from bridge.proctable import group_members, run_processes

RUN_A = f"run-a-{uuid.uuid4().hex[:8]}"  # unique: suites may run side by side
FAKES = Path(__file__).parent / "fakes"
STREAMS = Path(__file__).parent / "fixtures" / "streams"


@pytest.fixture
def fake_bin(tmp_path, monkeypatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("codex", "claude", "gemini"):
        (bin_dir / name).symlink_to(FAKES / "fake_vendor")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ARGV_OUT", str(tmp_path / "argv.json"))
    return bin_dir


def invocation(tmp_path: Path, prompt: str = "Do it.") -> Invocation:
    (tmp_path / "repo").mkdir(exist_ok=True)
    return Invocation(prompt=prompt, cwd=tmp_path / "repo", shared_dir=tmp_path / "shared",
                      stage_dir=tmp_path / "stages" / "a" / "attempt-1")


def attempt(profile, inv, **kw):
    events = []
    kw.setdefault("timeout", 20)
    kw.setdefault("idle_timeout", None)
    result = asyncio.run(run_attempt(profile, inv, on_event=events.append, run_id=RUN_A, stage_key="a", **kw))
    if result.process is not None:
        assert group_members(result.process.pid) == []
    assert run_processes(RUN_A) == []
    return result, events


@pytest.mark.parametrize("cli", ["codex", "claude", "gemini"])
def test_success_replayed(cli, tmp_path, fake_bin, monkeypatch):
    monkeypatch.setenv("FAKE_STREAM", str(STREAMS / cli / "write_shared.jsonl"))
    inv = invocation(tmp_path)
    result, events = attempt(AgentProfile(cli=cli, sandbox="workspace-write"), inv)
    assert result.outcome.success, result.outcome
    assert result.outcome.final_message == "Wrote the report."
    assert any(e.kind is EventKind.FILE_CHANGE for e in events)
    seen = json.loads((tmp_path / "argv.json").read_text())
    assert seen["argv"][1:] == list(result.argv[1:]) and Path(result.argv[0]).is_absolute()
    assert seen["env"]["BRIDGE_RUN_ID"] == RUN_A and seen["stdin"] == ""
    assert (inv.stage_dir / "prompt.md").read_text() == "Do it."
    assert json.loads((inv.stage_dir / "argv.json").read_text())["argv"] == list(result.argv)
    assert result.stdout_path.read_text().count("\n") >= 3


def test_errors_and_exit_codes(tmp_path, fake_bin, monkeypatch):
    monkeypatch.setenv("FAKE_STREAM", str(STREAMS / "claude" / "permission_denied.jsonl"))
    result, _ = attempt(AgentProfile(cli="claude"), invocation(tmp_path))
    assert result.outcome.error is ErrorKind.PERMISSION_DENIED
    monkeypatch.setenv("FAKE_STREAM", str(STREAMS / "gemini" / "error_429.jsonl"))
    monkeypatch.setenv("FAKE_EXIT", "173")
    result, _ = attempt(AgentProfile(cli="gemini"), invocation(tmp_path))
    assert result.outcome.error is ErrorKind.RATE_LIMIT and result.outcome.reset_at
    assert result.process.exit_code == 173


def test_exit_zero_without_result_is_incomplete(tmp_path, fake_bin, monkeypatch):
    (tmp_path / "s.jsonl").write_text('{"type":"thread.started","thread_id":"t"}\n')
    monkeypatch.setenv("FAKE_STREAM", str(tmp_path / "s.jsonl"))
    result, _ = attempt(AgentProfile(cli="codex"), invocation(tmp_path))
    assert result.outcome.error is ErrorKind.INCOMPLETE and result.outcome.session_id == "t"


def test_hang_after_result_is_stopped_and_still_a_success(tmp_path, fake_bin, monkeypatch):
    monkeypatch.setenv("FAKE_STREAM", str(STREAMS / "claude" / "text.jsonl"))
    monkeypatch.setenv("FAKE_THEN", "hang-ignore-term")
    t0 = time.monotonic()
    result, _ = attempt(AgentProfile(cli="claude"), invocation(tmp_path), exit_grace=0.5, grace=0.5)
    assert time.monotonic() - t0 < 8
    assert result.outcome.success and result.process.ended_by == "stopped"
    assert "terminal event" in result.process.stop_reason
    assert result.stop.kind is StopKind.AFTER_RESULT and "terminal event" in result.stop.reason


def test_timeout_and_idle_timeout(tmp_path, fake_bin, monkeypatch):
    monkeypatch.setenv("FAKE_THEN", "hang-ignore-term")
    result, _ = attempt(AgentProfile(cli="gemini"), invocation(tmp_path), timeout=1.0, grace=0.3)
    assert result.outcome.error is ErrorKind.TIMEOUT
    result, _ = attempt(AgentProfile(cli="codex"), invocation(tmp_path), timeout=20, idle_timeout=0.8, grace=0.3)
    assert result.outcome.error is ErrorKind.IDLE_TIMEOUT


def test_outputs_complete_stop(tmp_path, fake_bin, monkeypatch):
    monkeypatch.setenv("FAKE_THEN", "hang")
    inv = invocation(tmp_path)
    out = inv.shared_dir / "report.md"
    out.parent.mkdir(parents=True)

    def outputs_complete() -> bool:
        if not out.exists():
            out.write_text("done")
            return False
        return True

    result, _ = attempt(AgentProfile(cli="codex"), inv, outputs_complete=outputs_complete)
    assert result.outcome.success and result.outcome.reason == "stopped: outputs complete"
    assert result.stop.kind is StopKind.OUTPUTS_COMPLETE and result.process.ended_by == "stopped"


def test_requested_stop_is_not_a_success(tmp_path, fake_bin, monkeypatch):
    monkeypatch.setenv("FAKE_THEN", "hang")
    calls = []

    def should_stop():
        calls.append(1)
        return "budget: max_cost_usd 1 reached" if len(calls) > 2 else None

    result, _ = attempt(AgentProfile(cli="codex"), invocation(tmp_path), should_stop=should_stop,
                        outputs_complete=lambda: False)
    assert not result.outcome.success and result.outcome.error is ErrorKind.CANCELLED
    assert result.stop.kind is StopKind.REQUESTED and result.stop.reason == "budget: max_cost_usd 1 reached"
    assert result.outcome.reason == "stopped: budget: max_cost_usd 1 reached"


def test_exit_by_itself_has_no_stop(tmp_path, fake_bin, monkeypatch):
    monkeypatch.setenv("FAKE_STREAM", str(STREAMS / "claude" / "text.jsonl"))
    result, _ = attempt(AgentProfile(cli="claude"), invocation(tmp_path))
    assert result.outcome.success and result.stop is None


def test_on_spawn_sees_the_running_group(tmp_path, fake_bin, monkeypatch):
    monkeypatch.setenv("FAKE_THEN", "hang")
    spawned = []

    def on_spawn(pid: int, pgid: int) -> None:
        spawned.append((pid, pgid, os.getpgid(pid)))  # the process exists already

    result, _ = attempt(AgentProfile(cli="claude"), invocation(tmp_path), timeout=1.0, grace=0.3,
                        on_spawn=on_spawn)
    assert spawned == [(result.process.pid, result.process.pid, result.process.pid)]
    assert result.stop.kind is StopKind.TIMEOUT and result.outcome.error is ErrorKind.TIMEOUT


def test_env_layers_profile_then_stage_then_rehearsal(tmp_path, fake_bin, monkeypatch):
    monkeypatch.setenv("FAKE_STREAM", str(STREAMS / "claude" / "text.jsonl"))
    profile = AgentProfile(cli="claude", env={"FAKE_LAYER": "profile", "FAKE_PROFILE": "p",
                                              "FAKE_GATEWAY": "https://vendor.example"})
    inv = replace(invocation(tmp_path), env={"FAKE_LAYER": "stage", "FAKE_STAGE": "s"})
    result, _ = attempt(profile, inv)
    seen = json.loads((tmp_path / "argv.json").read_text())["env"]
    assert (seen["FAKE_LAYER"], seen["FAKE_PROFILE"], seen["FAKE_STAGE"]) == ("stage", "p", "s")
    assert seen["BRIDGE_RUN_ID"] == RUN_A  # a stage cannot take the run marker away

    # a rehearsal's env is the whole environment: bridge's own (a user's keys, a Bedrock switch)
    # never reaches the rehearsed CLI
    monkeypatch.setenv("FAKE_USERS_OWN", "sk-users-real-key")
    wiring = SimpleNamespace(env={"FAKE_LAYER": "rehearsal", "FAKE_GATEWAY": "http://127.0.0.1:1",
                                  "FAKE_ARGV_OUT": str(tmp_path / "argv2.json")},
                             argv=(), files={}, model=None)
    result, _ = attempt(profile, inv, wiring=wiring)
    seen = json.loads((tmp_path / "argv2.json").read_text())["env"]
    assert (seen["FAKE_LAYER"], seen["FAKE_GATEWAY"], seen["FAKE_STAGE"]) == (
        "rehearsal", "http://127.0.0.1:1", "s")
    assert "FAKE_USERS_OWN" not in seen and "FAKE_STREAM" not in seen and seen["BRIDGE_RUN_ID"] == RUN_A


def test_configuration_error_is_an_outcome(tmp_path):
    (tmp_path / ".bridge").mkdir()
    (tmp_path / ".bridge" / "clis.yaml").write_text(
        f"echoer:\n  adapter: command\n  binary: {FAKES / 'fake_vendor'}\n"
        f"  command: [{FAKES / 'fake_vendor'}, '{{{{ prompt }}}}']\n")
    inv = invocation(tmp_path, prompt="p" * 150_000)
    result, _ = attempt(AgentProfile(cli="echoer"), inv, project=tmp_path)
    assert result.process is None and result.outcome.error is ErrorKind.CONFIG
    assert "too long" in result.outcome.reason
    assert (inv.stage_dir / "prompt.md").read_text() == inv.prompt


def test_cancel(tmp_path, fake_bin, monkeypatch):
    monkeypatch.setenv("FAKE_THEN", "hang")

    async def go():
        ev = asyncio.Event()
        asyncio.get_running_loop().call_later(0.7, ev.set)
        return await run_attempt(AgentProfile(cli="claude"), invocation(tmp_path), timeout=30, idle_timeout=None,
                                 on_event=None, cancel=ev, run_id=RUN_A, stage_key="a", grace=0.3)

    result = asyncio.run(go())
    assert result.outcome.error is ErrorKind.CANCELLED
    assert group_members(result.process.pid) == [] and run_processes(RUN_A) == []


def test_missing_binary_is_not_found_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    result, _ = attempt(AgentProfile(cli="codex"), invocation(tmp_path))
    assert result.process is None and result.outcome.error is ErrorKind.NOT_FOUND
    assert "npm install -g @openai/codex" in result.outcome.reason


def test_secrets_redacted_in_records(tmp_path, fake_bin, monkeypatch):
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-abcdef-123456")
    monkeypatch.setenv("FAKE_STREAM", str(STREAMS / "codex" / "text.jsonl"))
    inv = invocation(tmp_path, prompt="use tok-abcdef-123456 please")
    result, _ = attempt(AgentProfile(cli="codex", env={"API_KEY": "sk-profile-secret"}), inv)
    assert "tok-abcdef" not in (inv.stage_dir / "prompt.md").read_text()
    argv_json = (inv.stage_dir / "argv.json").read_text()
    assert "tok-abcdef" not in argv_json and "sk-profile-secret" not in argv_json and "***" in argv_json


def test_long_prompt_reaches_stdin(tmp_path, fake_bin, monkeypatch):
    monkeypatch.setenv("FAKE_STREAM", str(STREAMS / "codex" / "text.jsonl"))
    prompt = "p" * 150_000
    result, _ = attempt(AgentProfile(cli="codex"), invocation(tmp_path, prompt=prompt))
    seen = json.loads((tmp_path / "argv.json").read_text())
    assert seen["stdin"] == prompt and seen["argv"][-1] == "-"


def test_interactive_profile_uses_the_terminal_transport(tmp_path, monkeypatch):
    (tmp_path / ".bridge").mkdir()
    (tmp_path / ".bridge" / "clis.yaml").write_text(f"""
trusty:
  adapter: command
  binary: {FAKES / 'fake_interactive'}
  command: [{FAKES / 'fake_interactive'}, "{{{{ shared }}}}/out.txt"]
  interactive:
    rules: [{{expect: 'Do you trust this folder', respond: "y\\r"}}]
    done: TASK COMPLETE
    exit: "/exit\\r"
""")
    inv = invocation(tmp_path)
    inv.shared_dir.mkdir()
    result, events = attempt(AgentProfile(cli="trusty", interactive=True), inv, project=tmp_path)
    assert result.outcome.success, result.outcome
    assert (inv.shared_dir / "out.txt").exists()
    assert "TASK COMPLETE" in result.outcome.final_message and events


def test_an_interactive_error_screen_fails_the_attempt_with_its_kind_and_message(tmp_path):
    (tmp_path / ".bridge").mkdir()
    (tmp_path / ".bridge" / "clis.yaml").write_text(f"""
stuck:
  adapter: command
  binary: {FAKES / 'fake_interactive'}
  command: [{FAKES / 'fake_interactive'}, "{{{{ shared }}}}/out.txt", "--stuck"]
  interactive:
    errors: [{{expect: 'Unable to connect', kind: config, message: "cannot connect: run it once by hand"}}]
    done: TASK COMPLETE
""")
    inv = invocation(tmp_path)
    inv.shared_dir.mkdir()
    result, _ = attempt(AgentProfile(cli="stuck", interactive=True), inv, project=tmp_path)
    assert not result.outcome.success
    assert result.outcome.error is ErrorKind.CONFIG  # not retried: a retry would show the same screen
    assert result.outcome.reason == "cannot connect: run it once by hand"


@pytest.mark.parametrize("limit", ["timeout", "idle_timeout"])
def test_a_result_given_only_when_stopped_is_no_success(limit, tmp_path, fake_bin, monkeypatch):
    # Claude Code answers SIGTERM with a "success" result: after a timeout it must stay a timeout
    monkeypatch.setenv("FAKE_STREAM", str(STREAMS / "claude" / "write_shared.jsonl"))
    monkeypatch.setenv("FAKE_THEN", "hang-answer-term")
    result, _ = attempt(AgentProfile(cli="claude", sandbox="workspace-write"), invocation(tmp_path),
                        **{limit: 1.0}, grace=2.0)
    assert result.stop is not None and result.stop.kind.value == limit
    assert not result.outcome.success
    assert result.outcome.error is (ErrorKind.TIMEOUT if limit == "timeout" else ErrorKind.IDLE_TIMEOUT)
    assert result.process is not None and result.process.exit_code == 143  # it did print its result


def test_the_signal_that_killed_an_agent_is_named(tmp_path):
    profile = AgentProfile(cli="command", command=["python3", "-c", "import os, signal; print('working', flush=True); "
                                                   "os.kill(os.getpid(), signal.SIGSEGV)"])
    result, _ = attempt(profile, invocation(tmp_path))
    assert result.outcome.error is ErrorKind.CRASHED
    assert result.process.signal == 11 and "killed by SIGSEGV (11)" in result.outcome.reason, result.outcome.reason
