"""The interactive (terminal) transport driving the REAL Claude Code TUI (`claude` without -p)
against the rehearsal model on 127.0.0.1: dialogs answered (pre-seeded config or expect/respond
rules), the prompt submitted, a file written into the shared folder, completion by the watched
outputs or the done pattern, then /exit and nothing left running."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest

from bridge.agents.base import Invocation
from bridge.attempt import StopKind, run_attempt
from bridge.config import cli_definition
from bridge.interactive import SessionSpec, errors_from, rules_from, run_session
from bridge.screen import last_message, screen_text
from bridge.playbook import AgentProfile
from bridge.proctable import group_members, run_processes
from bridge.rehearsal import ModelServer, parse_script, wiring

RUN_I = f"run-e2e-i-{uuid.uuid4().hex[:8]}"  # unique: suites may run side by side
pytestmark = pytest.mark.e2e
KEY = "rehearsal-dummy-key-0000"  # configs/rehearsal.yaml
WRITE = """
replies:
  - match: 'into (\\S+) as (\\S+)'
    steps:
      - write_file: {path: '$1/$2', content: "# Report\\n"}
      - text: 'Wrote the report.'
"""
ANSWER = "First paragraph of the answer.\n\nSecond paragraph:\n\n- item one\n- item two"
PARAGRAPHS = WRITE.replace("'Wrote the report.'", json.dumps(ANSWER))


def raw(log: Path) -> str:
    """A terminal log as written: read_text() would make each lone "\r" a new line."""
    with log.open(encoding="utf-8", newline="") as fh:
        return fh.read()


def assert_clean(pid: int) -> None:
    assert group_members(pid) == [], "a process of the session's group is still running"
    assert run_processes(RUN_I) == [], "a process carrying this run's marker is still running"


def attempt(cli: str, world: Path, *, watch: bool, script: str = WRITE):
    """One interactive attempt through run_attempt; `watch`: completion by the shared file."""
    shared = world / "run" / "shared"
    inv = Invocation(prompt=f"Write the audit into {shared} as report.md", cwd=world / "repo",
                     shared_dir=shared, stage_dir=world / "run" / "stages" / cli / "attempt-1")
    profile = AgentProfile(cli=cli, sandbox="workspace-write", interactive=True)
    report = shared / "report.md"

    async def main():
        with ModelServer(parse_script(script)) as server:
            wire = wiring(cli, server.url, world / "home")
            return await run_attempt(profile, inv, timeout=40, idle_timeout=None, wiring=wire,
                                     outputs_complete=(lambda: report.exists()) if watch else None,
                                     run_id=RUN_I, stage_key=cli, grace=2.0), list(server.requests)

    result, requests = asyncio.run(main())
    assert result.process is not None, result.outcome
    assert_clean(result.process.pid)
    return result, requests


def test_claude_tui_outputs_complete_then_exit(world):
    result, requests = attempt("claude", world, watch=True)
    assert result.outcome.success, result.outcome.reason
    assert (world / "run" / "shared" / "report.md").read_text() == "# Report\n"
    assert result.stop is not None and result.stop.kind is StopKind.OUTPUTS_COMPLETE
    assert "-p" not in result.argv and "--output-format" not in result.argv
    assert result.process.exit_code == 0 and result.process.signal is None  # left through /exit
    assert any(r.method == "POST" and r.path.startswith("/v1/messages") for r in requests)
    log = screen_text(raw(result.stdout_path))
    # the transcript, masked (the model's closing text may come after the file ended the stage)
    assert "Write the audit into" in log and KEY not in log
    config = json.loads((world / "home" / ".claude" / ".claude.json").read_text())
    assert config["hasCompletedOnboarding"] is True  # no connectivity check of api.anthropic.com


def test_claude_tui_done_pattern_and_session_id(world):
    result, _ = attempt("claude", world, watch=False)
    assert result.outcome.success, result.outcome.reason
    assert result.stop is not None and result.stop.kind is StopKind.AFTER_RESULT
    assert result.process.stop_reason == "done pattern seen"
    assert (world / "run" / "shared" / "report.md").read_text() == "# Report\n"
    assert result.process.exit_code == 0
    assert result.outcome.session_id and len(result.outcome.session_id) == 36  # "claude --resume ID"
    # the id bridge gave the session, whose record it read: the usage the TUI never shows
    assert result.argv[result.argv.index("--session-id") + 1] == result.outcome.session_id
    assert result.outcome.usage.input_tokens > 0 and result.outcome.usage.output_tokens > 0
    assert result.outcome.final_message == "Wrote the report.", repr(result.outcome.final_message)


@pytest.mark.parametrize("cli", ["claude", "gemini"])
def test_tui_final_message_keeps_paragraphs_and_lists(world, cli):
    """The whole last message off the screen: its paragraphs, its list, no TUI chrome."""
    result, _ = attempt(cli, world, watch=False, script=PARAGRAPHS)
    assert result.outcome.success, result.outcome.reason
    assert result.outcome.final_message == ANSWER, repr(result.outcome.final_message)
    # from the CLI's own record of the session: the screen shows no token counts
    assert result.outcome.usage.input_tokens > 0 and result.outcome.usage.output_tokens > 0
    # the screen, where the record is not to be had, says the same (played on the emulator)
    message = cli_definition(cli)["interactive"]["message"]
    assert last_message(screen_text(raw(result.stdout_path)), message) == ANSWER


def test_claude_rules_answer_trust_and_api_key_dialogs(world):
    """Outside rehearsals nothing but onboarding is pre-seeded: the rules of configs/clis.yaml
    answer the trust dialog and the custom-API-key dialog of Claude Code 2.1.197."""
    shared = world / "run" / "shared"
    config_dir = world / "home" / ".claude"
    config_dir.mkdir(parents=True)
    (config_dir / ".claude.json").write_text(json.dumps({"hasCompletedOnboarding": True}))
    rules, done, exit_text = rules_from(cli_definition("claude"))
    cli = cli_definition("claude")["interactive"]
    with ModelServer(parse_script(WRITE)) as server:
        wire = wiring("claude", server.url, world / "home")
        spec = SessionSpec(
            argv=("claude", f"Write the audit into {shared} as report.md", "--permission-mode", "acceptEdits",
                  "--add-dir", str(shared), "--model", wire.model),
            cwd=world / "repo", env=wire.env, rules=rules, done=done, exit_text=exit_text,
            session=cli["session"], log=world / "session.log", timeout=40, grace=2.0, run_id=RUN_I, stage="c")
        result = run_session(spec)
    assert_clean(result.process.pid)
    assert result.answered == tuple(r.expect for r in rules), result.transcript[-3000:]
    assert result.done and result.process.exit_code == 0
    assert (shared / "report.md").read_text() == "# Report\n"
    assert "arsal-dummy-key-0000" not in (world / "session.log").read_text()
    config = json.loads((config_dir / ".claude.json").read_text())
    assert config["customApiKeyResponses"]["approved"] == [KEY[-20:]]
    # Claude Code checks the folder and its parents; it records the answer on a parent (seen: /tmp)
    trusted = [p for p, v in config["projects"].items() if v.get("hasTrustDialogAccepted")]
    assert any((world / "repo").resolve().is_relative_to(p) for p in trusted), config["projects"]


def test_claude_without_its_first_run_fails_with_what_to_do(world):
    """A config that never finished Claude Code's onboarding: it checks api.anthropic.com, cannot
    reach it here, shows "Unable to connect to Anthropic services" and exits 1; the configured
    error names the cause and the fix instead of a bare "exited 1"."""
    cli = cli_definition("claude")
    with ModelServer(parse_script(WRITE)) as server:
        wire = wiring("claude", server.url, world / "home")  # files not written: no onboarding seeded
        spec = SessionSpec(argv=("claude", "say hi", "--model", wire.model), cwd=world / "repo", env=wire.env,
                           errors=errors_from(cli), timeout=40, grace=2.0, run_id=RUN_I, stage="o")
        result = run_session(spec)
        assert [r for r in server.requests if r.method == "POST"] == []  # no model call (a HEAD probe only)
    assert_clean(result.process.pid)
    assert result.error is not None and result.error.kind == "config", result.transcript[-2000:]
    assert result.process.ended_by == "error" and "run `claude` once by hand" in result.process.stop_reason


def test_gemini_tui_outputs_complete_then_quit(world):
    result, requests = attempt("gemini", world, watch=True)
    assert result.outcome.success, result.outcome.reason
    assert (world / "run" / "shared" / "report.md").read_text() == "# Report\n"
    assert result.stop is not None and result.stop.kind is StopKind.OUTPUTS_COMPLETE
    assert "-i" in result.argv and "-p" not in result.argv and "--output-format" not in result.argv
    assert result.process.exit_code == 0 and result.process.signal is None  # left through /quit
    assert result.outcome.session_id and len(result.outcome.session_id) == 36  # "gemini --resume ID"
    log = screen_text(raw(result.stdout_path))
    assert "Do you trust the following folders" not in log  # pre-trusted in the rehearsal HOME
    assert "WriteFile" in log and KEY not in log


def test_gemini_tui_turn_end_by_window_title(world):
    """No outputs watched: the turn's end is read off the window title ("◇  Ready" again)."""
    result, _ = attempt("gemini", world, watch=False)
    assert result.outcome.success, result.outcome.reason
    assert result.stop is not None and result.stop.kind is StopKind.AFTER_RESULT
    assert result.process.stop_reason.startswith("ready again (window title: ◇"), result.process.stop_reason
    assert (world / "run" / "shared" / "report.md").read_text() == "# Report\n"
    assert result.process.exit_code == 0 and result.process.signal is None  # left through /quit
    assert result.outcome.session_id and len(result.outcome.session_id) == 36
    assert result.outcome.final_message == "Wrote the report.", repr(result.outcome.final_message)


def test_gemini_rule_answers_the_added_folders_dialog(world):
    """Not pre-seeded: the rule answers 'Do you trust the following folders being added to this
    workspace?' for the shared folder (--include-directories) of Gemini CLI 0.61.0."""
    shared = world / "run" / "shared"
    cli = cli_definition("gemini")
    rules, _, exit_text = rules_from(cli)
    report = shared / "report.md"
    with ModelServer(parse_script(WRITE)) as server:
        wire = wiring("gemini", server.url, world / "home")
        wire.write_files()
        spec = SessionSpec(
            argv=("gemini", "-i", f"Write the audit into {shared} as report.md", "--skip-trust",
                  "--approval-mode", "auto_edit", "--include-directories", str(shared), *wire.argv),
            cwd=world / "repo", env=wire.env, rules=rules, exit_text=exit_text,
            session=cli["interactive"]["session"], log=world / "session.log", timeout=40, grace=2.0,
            run_id=RUN_I, stage="g")
        result = run_session(spec, should_stop=lambda: "outputs complete" if report.exists() else None)
    assert_clean(result.process.pid)
    assert result.answered == (rules[0].expect,), result.transcript[-3000:]
    assert result.done and result.process.exit_code == 0
    assert report.read_text() == "# Report\n"
