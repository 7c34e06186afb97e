"""The pexpect transport against a fake CLI that asks for trust before working."""

from __future__ import annotations

import uuid

import asyncio
import json
import sys
import time
from pathlib import Path

from bridge.interactive import Rule, SessionSpec, _Log, run_interactive, run_session, screen_text
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


def test_screen_text_reads_a_tui_like_a_person():
    raw = "\x1b[2G\x1b[38;5;153mYes,\x1b[12GI\x1b[14Gtrust\x1b[20Gthis\x1b[25Gfolder\x1b[39m\r\n\x1b]0;✳ Claude\x07ok"
    assert screen_text(raw) == " Yes, I trust this folder\nok"


def test_log_holds_back_a_cut_escape_sequence_and_a_cut_secret(tmp_path):
    secret = "sk-test-0123456789abcdef"
    path = tmp_path / "t.log"
    log = _Log(open(path, "w", encoding="utf-8"), Redactor([secret]), None)
    for chunk in ("Yes,\x1b[1", "2GI trust; key=sk-test-0123", "456789abcdef done"):
        log.write(chunk)
    log.close()
    assert log.screen == "Yes, I trust; key=sk-test-0123456789abcdef done"
    assert path.read_text() == "Yes,\x1b[12GI trust; key=*** done"


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
