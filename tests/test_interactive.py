"""The pexpect transport against a fake CLI that asks for trust before working."""

from __future__ import annotations

import uuid

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest

from bridge.config import cli_definition
from bridge.errors import BridgeError
from bridge.interactive import Rule, ScreenError, SessionSpec, errors_from, run_interactive, run_session
from bridge.screen import ScreenLog, last_message, screen_text
from bridge.proctable import group_members, run_processes
from bridge.redact import Redactor
from bridge.trust import seed_rehearsal_home

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
    assert "bye" in result.transcript
    assert "Do you trust" in (tmp_path / "session.log").read_text()
    assert_clean(result.process.pid)


def test_an_exit_refused_by_a_busy_cli_is_submitted_again(tmp_path):
    result = run_session(spec(tmp_path, "--busy", done="TASK COMPLETE", exit_text="/exit\r", timeout=20))
    assert "Slash commands cannot be queued" in result.transcript and "bye" in result.transcript
    assert result.process.exit_code == 0 and result.process.signal is None  # left politely, not killed
    assert_clean(result.process.pid)


def test_the_end_of_a_turn_by_the_window_title(tmp_path):
    """Gemini CLI's case: nothing on screen, but the title goes Ready, Working, Ready."""
    s = spec(tmp_path, "--titles", "--no-done", done_title=r"^◇\s+Ready", exit_text="/exit\r", timeout=20)
    result = run_session(s)
    assert result.done and result.process.ended_by == "stopped"
    assert result.process.stop_reason == "ready again (window title: ◇  Ready (fake))"
    # neither the Ready of the start nor the short blink between two steps ended it
    assert (tmp_path / "out.txt").read_text() == "done by fake-cli\n"
    assert result.process.exit_code == 0 and "bye" in result.transcript  # then /exit
    assert_clean(result.process.pid)


def test_an_error_screen_ends_the_session_at_once_with_its_message(tmp_path):
    stuck = ScreenError(r"Unable to connect", "cannot reach the service: run it once by hand", "config")
    t0 = time.monotonic()
    result = run_session(spec(tmp_path, "--stuck", errors=(stuck,), done="TASK COMPLETE", timeout=30))
    assert time.monotonic() - t0 < 10  # not its timeout: at once, then SIGTERM ignored, SIGKILL
    assert result.error == stuck and not result.done
    assert result.process.ended_by == "error" and result.process.stop_reason == stuck.message
    assert result.process.signal is not None
    assert_clean(result.process.pid)


def test_error_kinds_in_the_config_are_checked():
    cli = {"interactive": {"errors": [{"expect": "x", "message": "m", "kind": "oops"}]}}
    with pytest.raises(BridgeError, match="kind 'oops' is none of"):
        errors_from(cli)
    assert errors_from(cli_definition("claude"))[0].kind == "config"


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


def test_screen_text_reads_a_tui_like_a_person():
    raw = "\x1b[2G\x1b[38;5;153mYes,\x1b[12GI\x1b[14Gtrust\x1b[20Gthis\x1b[25Gfolder\x1b[39m\r\n\x1b]0;✳ Claude\x07ok"
    assert screen_text(raw) == " Yes, I trust this folder\nok"


def test_the_last_message_is_read_off_the_screen_as_a_person_reads_it(tmp_path):
    """Ink places words by column and moves down a line with "\r\x1b[2B" (seen in CI:
    "Wrotethereport." once the moves were dropped, and the next line glued on)."""
    result = run_session(spec(tmp_path, done="TASK COMPLETE", exit_text="/exit\r", timeout=20))
    for text in (result.transcript, result.screen):
        assert "● Wrote the report." in text and "\x1b" not in text
        assert "\x0f" not in text and "\r" not in text
    claude = cli_definition("claude")["interactive"]["message"]
    assert last_message(result.screen, claude) == "Wrote the report."
    assert last_message(result.screen, None) == result.screen.strip()


def test_message_patterns_of_the_shipped_tuis():
    claude = cli_definition("claude")["interactive"]["message"]
    gemini = cli_definition("gemini")["interactive"]["message"]
    screen = "● Write(/tmp/r.md)\n●\n ⎿ Wrote 1 lines\n● First line\n second line\n✻ Brewed for 1s\n❯ \n"
    assert last_message(screen, claude) == "First line\nsecond line"  # a tool call is not a message
    screen = "✦ Old answer\n > next\n✦ Wrote the report.\n\n⚠ Warning: 256-color\n"
    assert last_message(screen, gemini) == "Wrote the report."


def test_log_holds_back_a_cut_escape_sequence_and_a_cut_secret(tmp_path):
    secret = "sk-test-0123456789abcdef"
    path = tmp_path / "t.log"
    log = ScreenLog(open(path, "w", encoding="utf-8"), Redactor([secret]), None)
    for chunk in ("Yes,\x1b[1", "2GI trust; key=sk-test-0123", "456789abcdef done"):
        log.write(chunk)
    log.close()
    assert log.screen.splitlines()[-1] == "Yes, I trust; key=sk-test-0123456789abcdef done"
    assert log.term.text() == "Yes, I trust; key=sk-test-0123456789abcdef done"
    assert path.read_text() == "Yes,\x1b[12GI trust; key=*** done"


def test_a_run_of_blanks_cut_by_a_read_is_still_one_space():
    """Seen under load: "gemini " then "\x1b[1C--resume ID" broke the session pattern."""
    log = ScreenLog(None, Redactor([]), None)
    for chunk in ("To resume: gemini ", "\x1b[1C--resume 1234", "\xa0 ok"):
        log.write(chunk)
    assert log.screen.splitlines()[-1] == "To resume: gemini --resume 1234 ok"


def test_a_rule_answers_once_unless_repeat(tmp_path):
    # the fake asks once; a rule matching the welcome line too must still answer only once
    once = Rule(r"fake-cli|Do you trust", "y\r")
    result = run_session(spec(tmp_path, rules=(once,), done="TASK COMPLETE", exit_text="/exit\r", timeout=20))
    assert result.answered == (once.expect,) and result.done
    assert_clean(result.process.pid)


def test_a_rehearsal_home_is_seeded_for_every_first_run_dialog(tmp_path):
    home = tmp_path / "home"
    env = {"HOME": str(home), "CLAUDE_CONFIG_DIR": str(home / ".claude"),
           "ANTHROPIC_API_KEY": "rehearsal-dummy-key-0000"}
    (home / ".claude").mkdir(parents=True)
    (home / ".claude" / ".claude.json").write_text(json.dumps({"userID": "kept"}))
    for _ in range(2):  # idempotent
        path = seed_rehearsal_home("claude", [tmp_path / "repo"], env)
    data = json.loads(path.read_text())
    assert data["userID"] == "kept" and data["hasCompletedOnboarding"] is True
    assert data["customApiKeyResponses"]["approved"] == ["arsal-dummy-key-0000"]
    assert data["projects"][str((tmp_path / "repo").resolve())]["hasTrustDialogAccepted"] is True
    gemini = json.loads(seed_rehearsal_home("gemini", [tmp_path / "repo", tmp_path / "shared"], env).read_text())
    assert gemini == {str((tmp_path / d).resolve()): "TRUST_FOLDER" for d in ("repo", "shared")}
