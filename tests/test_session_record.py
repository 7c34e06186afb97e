"""Reading a CLI's own session record as it grows (bridge/session_record.py), with the Claude
parser, on lines shaped like the ones Claude Code 2.1.197 wrote in a rehearsal."""

from __future__ import annotations

import json
from pathlib import Path

from bridge.agents.base import EventKind
from bridge.agents.claude import ClaudeParser
from bridge.config import cli_definition
from bridge.session_record import SessionRecord, record_dir

SID = "f1258c8a-0145-467d-aa21-aa50d46b74d8"


def assistant(mid: str, text: str, inp: int, out: int) -> str:
    return json.dumps({"type": "assistant", "sessionId": SID, "message": {
        "id": mid, "role": "assistant", "content": [{"type": "text", "text": text}],
        "usage": {"input_tokens": inp, "output_tokens": out, "cache_read_input_tokens": 0}}}) + "\n"


def test_lines_are_read_as_they_come_and_a_line_being_written_waits(tmp_path: Path):
    folder = tmp_path / "projects" / "-tmp-repo"
    record = SessionRecord(tmp_path, f"projects/*/{SID}.jsonl", ClaudeParser(), SID)
    assert record.poll() == []  # the CLI has not written it yet
    folder.mkdir(parents=True)
    path = folder / f"{SID}.jsonl"
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
    path = tmp_path / "projects" / "p" / f"{SID}.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text(assistant("old", "Earlier.", 500, 500))
    record = SessionRecord(tmp_path, f"projects/*/{SID}.jsonl", ClaudeParser(), SID)
    with path.open("a") as fh:
        fh.write(assistant("new", "Now.", 10, 5))
    record.poll()
    assert record.parser.usage.total == 15 and record.last_text == "Now."


def test_the_record_folder_is_where_the_cli_looks():
    conf = cli_definition("claude")["interactive"]["record"]
    assert record_dir(conf, {"HOME": "/h"}) == Path("/h/.claude")  # the CLI's HOME, not bridge's
    assert record_dir(conf, {"HOME": "/h", "CLAUDE_CONFIG_DIR": "/c"}) == Path("/c")
