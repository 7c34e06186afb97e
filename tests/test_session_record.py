"""Reading a CLI's own record of a session as it grows (bridge/session_record.py), and the record
parsers, on records the pinned CLIs wrote in rehearsals (tests/fixtures/records/)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from bridge import session_record
from bridge.agents.base import EventKind
from bridge.agents.claude import ClaudeParser
from bridge.agents.codex import CodexRecordParser
from bridge.agents.gemini import GeminiRecordParser
from bridge.config import cli_definition
from bridge.session_record import SessionRecord, following, given_session, record_dir

SID = "f1258c8a-0145-467d-aa21-aa50d46b74d8"
RECORDS = Path(__file__).parent / "fixtures" / "records"
CLAUDE = {"dir": "~/.claude", "glob": "projects/*/{session}.jsonl"}


def assistant(mid: str, text: str, inp: int, out: int) -> str:
    return json.dumps({"type": "assistant", "sessionId": SID, "message": {
        "id": mid, "role": "assistant", "content": [{"type": "text", "text": text}],
        "usage": {"input_tokens": inp, "output_tokens": out, "cache_read_input_tokens": 0}}}) + "\n"


@pytest.fixture(autouse=True)
def search_at_once(monkeypatch):
    monkeypatch.setattr(session_record, "FIND_EVERY", 0.0)


def test_a_record_not_found_yet_is_searched_for_at_most_every_half_second(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(session_record, "FIND_EVERY", 0.5)
    record = SessionRecord(CLAUDE, {"HOME": str(tmp_path)}, ClaudeParser(), SID)
    path = tmp_path / ".claude" / "projects" / "p" / f"{SID}.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text(assistant("m1", "Looking.", 31, 25))
    assert record.poll() == []  # searched a moment ago: not again yet
    time.sleep(0.55)
    assert [e.kind for e in record.poll()] == [EventKind.USAGE, EventKind.MESSAGE]


def test_lines_are_read_as_they_come_and_a_line_being_written_waits(tmp_path: Path):
    record = SessionRecord(CLAUDE, {"HOME": str(tmp_path)}, ClaudeParser(), SID)
    assert record.poll() == []  # the CLI has not written it yet
    path = tmp_path / ".claude" / "projects" / "-tmp-repo" / f"{SID}.jsonl"
    path.parent.mkdir(parents=True)
    first, second = assistant("m1", "Looking.", 31, 25), assistant("m2", "Done.", 40, 18)
    path.write_text(json.dumps({"type": "user", "message": {"content": "hi"}}) + "\n" + first + second[:30])
    events = record.poll()
    assert [e.kind for e in events] == [EventKind.USAGE, EventKind.MESSAGE]
    assert record.parser.usage.total == 56 and record.last_text == "Looking."
    with path.open("a") as fh:
        fh.write(second[30:])
    assert [e.text for e in record.poll() if e.kind is EventKind.MESSAGE] == ["Done."]
    assert record.parser.usage.input_tokens == 71 and record.last_text == "Done."
    assert record.poll() == []


def test_a_resumed_session_counts_only_what_this_attempt_adds(tmp_path: Path):
    path = tmp_path / ".claude" / "projects" / "p" / f"{SID}.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text(assistant("old", "Earlier.", 500, 500))
    record = SessionRecord(CLAUDE, {"HOME": str(tmp_path)}, ClaudeParser(), SID)
    with path.open("a") as fh:
        fh.write(assistant("new", "Now.", 10, 5))
    record.poll()
    assert record.parser.usage.total == 15 and record.last_text == "Now."


def test_a_session_announced_by_the_stream_is_followed_from_then(tmp_path: Path):
    """Codex names its rollout file by the thread id of its first event: no id, nothing read."""
    conf = cli_definition("codex")["record"]
    record = SessionRecord(conf, {"HOME": str(tmp_path)}, CodexRecordParser())
    thread = "01a1ff10-0cad-7333-9c09-732e6711020c"
    path = tmp_path / ".codex" / "sessions" / "2026" / "11" / "21" / f"rollout-2026-11-21T17-03-24-{thread}.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text((RECORDS / "codex-0.169.0-exec.jsonl").read_text())
    assert record.poll() == []
    record.start(thread)  # the file is there already: as for a resume, read from its end
    assert record.poll() == [] and record.path == path


def test_following_reads_while_the_body_runs_and_once_more_at_its_end(tmp_path: Path):
    path = tmp_path / ".claude" / "projects" / "p" / f"{SID}.jsonl"
    path.parent.mkdir(parents=True)
    record = SessionRecord(CLAUDE, {"HOME": str(tmp_path)}, ClaudeParser(), SID)
    seen: list[str] = []

    async def body() -> None:
        async with following(record, lambda e: seen.append(e.text) if e.kind is EventKind.MESSAGE else None):
            path.write_text(assistant("m1", "first", 1, 1))
            await asyncio.sleep(0.6)
            assert seen == ["first"]  # read while running
            with path.open("a") as fh:
                fh.write(assistant("m2", "last", 1, 1))  # written just before the CLI exited

    asyncio.run(body())
    assert seen == ["first", "last"]


def test_where_each_cli_keeps_its_record():
    claude, gemini, codex = (cli_definition(c)["record"] for c in ("claude", "gemini", "codex"))
    assert record_dir(claude, {"HOME": "/h"}) == Path("/h/.claude")  # the CLI's HOME, not bridge's
    assert record_dir(claude, {"HOME": "/h", "CLAUDE_CONFIG_DIR": "/c"}) == Path("/c")
    assert record_dir(codex, {"HOME": "/h", "CODEX_HOME": "/x"}) == Path("/x")
    assert gemini["glob"].format(session=SID) == "tmp/*/chats/session-*-f1258c8a.jsonl"
    assert given_session(claude, ("claude", "hi", "--session-id", SID), None) == SID
    assert given_session(claude, ("claude", "hi", "--resume", "abc"), "abc") == "abc"
    assert given_session(codex, ("codex", "exec", "hi"), None) is None  # the stream will say
    assert not claude["headless"] and gemini["headless"] and codex["headless"]


def feed(parser, name: str):
    return [e for line in (RECORDS / name).read_text().splitlines() for e in parser.feed(line)]


def test_claude_record_parser():
    parser = ClaudeParser()
    events = feed(parser, "claude-2.1.197-tui.jsonl")
    assert [e.text for e in events if e.kind is EventKind.FILE_CHANGE][0].endswith("/run/shared/report.md")
    assert parser.usage.input_tokens == 62 and parser.usage.output_tokens == 43  # two calls, per message id
    assert [e.text for e in events if e.kind is EventKind.MESSAGE][-1].startswith("First paragraph of the answer.")


def test_gemini_record_parser_counts_each_call_once_though_its_line_is_written_again():
    parser = GeminiRecordParser()
    events = feed(parser, "gemini-0.61.0-tui.jsonl")
    (written,) = [e.text for e in events if e.kind is EventKind.FILE_CHANGE]  # its line came twice
    assert written.endswith("/run/shared/report.md")
    assert len(parser.calls) == 2 and parser.usage.input_tokens == 82 and parser.usage.output_tokens == 24
    messages = [e.text for e in events if e.kind is EventKind.MESSAGE]
    assert messages == ["First paragraph of the answer.\n\nSecond paragraph:\n\n- item one\n- item two"]


def test_codex_record_parser_takes_the_running_total():
    parser = CodexRecordParser()
    events = feed(parser, "codex-0.169.0-exec.jsonl")
    usage = [e for e in events if e.kind is EventKind.USAGE]
    assert usage and parser.usage.input_tokens == 25 and parser.usage.output_tokens == 24
    assert [e.text for e in events if e.kind is EventKind.MESSAGE] == ["Hello from the rehearsal model."]
