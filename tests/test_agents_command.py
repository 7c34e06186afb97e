"""The generic command adapter's parsers: plain text and configured JSONL."""

from __future__ import annotations

import json

from bridge.agents import command
from bridge.agents.base import ErrorKind
from bridge.config import cli_definition


def test_text_output():
    parser = command.new_parser({"output": "text"})
    for line in ("Working...", "All done."):
        parser.feed(line)
    assert not parser.terminal
    outcome = parser.finish(0)
    assert outcome.success and outcome.final_message == "Working...\nAll done."
    failed = command.new_parser({}).finish(2, "boom\nError: invalid api key")
    assert failed.error is ErrorKind.AUTH and "exited 2" in failed.reason
    assert command.new_parser({}).finish(1, "segfault").error is ErrorKind.CRASHED


def test_jsonl_with_configured_fields():
    parser = command.new_parser(cli_definition("script"))
    lines = [{"type": "start", "session_id": "abc"}, {"type": "message", "text": "thinking"},
             {"type": "result", "status": "success", "result": "final answer",
              "usage": {"input_tokens": 10, "output_tokens": 3}, "cost_usd": 0.01}]
    for obj in lines:
        parser.feed(json.dumps(obj))
    assert parser.terminal
    outcome = parser.finish(0)
    assert outcome.success and outcome.session_id == "abc" and outcome.final_message == "final answer"
    assert outcome.usage.input_tokens == 10 and outcome.cost_usd == 0.01


def test_jsonl_failure_and_incomplete():
    fields = cli_definition("script")
    parser = command.new_parser(fields)
    parser.feed(json.dumps({"type": "result", "status": "error", "error": {"message": "429 rate limited, retry after 30"}}))
    outcome = parser.finish(1)
    assert outcome.error is ErrorKind.RATE_LIMIT and outcome.reset_at is not None
    parser = command.new_parser(fields)
    parser.feed(json.dumps({"type": "message", "text": "hi"}))
    assert parser.finish(0).error is ErrorKind.INCOMPLETE
