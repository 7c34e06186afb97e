"""The stream parsers on event streams recorded from the real CLIs (tests/fixtures/streams)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from bridge.agents import ADAPTERS
from bridge.agents.base import ErrorKind, EventKind, Outcome, classify_error, parse_reset

STREAMS = Path(__file__).parent / "fixtures" / "streams"


def replay(cli: str, case: str, exit_code: int | None = None) -> tuple[Outcome, list]:
    path = STREAMS / cli / f"{case}.jsonl"
    if not path.exists():
        pytest.fail(f"no recording {path}: re-record with tests/fixtures/record_streams.py")
    meta = json.loads(path.with_suffix(".meta.json").read_text())
    stderr = path.with_suffix(".stderr.txt")
    parser = ADAPTERS[cli].new_parser({})
    events = []
    for line in path.read_text().splitlines():
        events += parser.feed(line)
    code = meta.get("exit_code") if exit_code is None else exit_code
    return parser.finish(code, stderr.read_text() if stderr.exists() else ""), events


def feed_all(cli: str, lines: list[str], exit_code: int | None = 0, stderr: str = "") -> Outcome:
    parser = ADAPTERS[cli].new_parser({})
    for line in lines:
        parser.feed(line)
    return parser.finish(exit_code, stderr)


@pytest.mark.parametrize("cli", ["codex", "claude", "gemini"])
@pytest.mark.parametrize("case,message", [("text", "Hello from the rehearsal model."),
                                          ("write_shared", "Wrote the report."),
                                          ("shell", "Ran the command."),
                                          ("multi_step", "All three steps done.")])
def test_success_streams(cli, case, message):
    outcome, events = replay(cli, case)
    assert outcome.success and outcome.error is None
    assert outcome.final_message == message
    assert outcome.session_id
    assert outcome.usage.input_tokens > 0 and outcome.usage.output_tokens > 0
    kinds = [e.kind for e in events]
    assert kinds[0] is EventKind.SESSION and EventKind.RESULT in kinds


@pytest.mark.parametrize("cli", ["codex", "claude", "gemini"])
def test_tool_events(cli):
    _, events = replay(cli, "write_shared")
    changes = [e for e in events if e.kind is EventKind.FILE_CHANGE]
    assert changes and "<SHARED>/report.md" in changes[0].text
    _, events = replay(cli, "shell")
    assert any(e.kind is EventKind.COMMAND for e in events)


@pytest.mark.parametrize("cli", ["codex", "claude", "gemini"])
@pytest.mark.parametrize("case,kind", [("error_401", ErrorKind.AUTH), ("error_429", ErrorKind.RATE_LIMIT),
                                       ("error_400", ErrorKind.API), ("error_500", ErrorKind.API)])
def test_error_streams(cli, case, kind):
    outcome, _ = replay(cli, case)
    assert not outcome.success
    assert outcome.error is kind, outcome.reason
    assert outcome.reason


def test_gemini_rate_limit_reset_hint():
    outcome, _ = replay("gemini", "error_429")
    assert outcome.reset_at is not None  # "Suggested retry after 1s."


def test_claude_cost_and_usage():
    outcome, _ = replay("claude", "multi_step")
    assert outcome.cost_usd == pytest.approx(0.001281)
    assert outcome.num_turns == 4  # three tool steps and the answer


def test_claude_usage_runs_with_the_stream_and_the_result_settles_it():
    """Each model call's assistant events carry its usage: a session stopped before its result
    (outputs complete, a budget) still has its calls counted; the result gives the final figures."""
    lines = (STREAMS / "claude" / "multi_step.jsonl").read_text().splitlines()
    parser = ADAPTERS["claude"].new_parser({})
    running = []
    for line in lines:
        if '"type":"result"' in line.replace(" ", ""):
            break
        running += [e.data["usage"] for e in parser.feed(line) if e.kind is EventKind.USAGE]
    assert [u.input_tokens for u in running] == [28, 56, 84, 112]  # one assistant event per call here
    assert running[-1].input_tokens == 112 and running[-1].output_tokens == 4  # 4 calls, outputs as started
    stopped = parser.finish(None)  # stopped here: no result
    assert stopped.usage.input_tokens == 112 and stopped.cost_usd is None
    outcome, events = replay("claude", "multi_step")
    assert (outcome.usage.input_tokens, outcome.usage.output_tokens) == (112, 63)  # the result's figures
    last = [e for e in events if e.kind is EventKind.USAGE][-1]
    assert last.data["usage"] == outcome.usage and last.data["total_cost_usd"] == pytest.approx(0.001281)
    # a message with a text and a tool block comes as two assistant events with one id: counted once
    block = '{"type":"assistant","message":{"id":"m1","usage":{"input_tokens":7,"output_tokens":2},"content":[%s]}}'
    twice = feed_all("claude", [block % '{"type":"text","text":"hi"}',
                                block % '{"type":"tool_use","name":"Bash","input":{"command":"ls"}}'], exit_code=None)
    assert (twice.usage.input_tokens, twice.usage.output_tokens) == (7, 2)


def test_claude_permission_denial_is_a_failure():
    outcome, _ = replay("claude", "permission_denied")
    assert outcome.success is False and outcome.error is ErrorKind.PERMISSION_DENIED
    assert outcome.permission_denials == ("Write(<SHARED>/report.md)",)


def test_claude_max_turns():
    outcome, _ = replay("claude", "max_turns")
    assert outcome.error is ErrorKind.MAX_TURNS and outcome.num_turns == 2


def test_gemini_max_turns():
    # what gemini 0.61 prints when model.maxSessionTurns is exceeded (then it exits 53)
    result = ('{"type":"result","status":"error","error":{"type":"FatalTurnLimitedError","message":'
              '"Reached max session turns for this session. Increase the number of turns by specifying '
              'maxSessionTurns in settings.json."},"stats":{"input_tokens":5}}')
    outcome = feed_all("gemini", ['{"type":"init","session_id":"s1"}', result], exit_code=53)
    assert outcome.error is ErrorKind.MAX_TURNS and "max session turns" in outcome.reason


def test_structured_output():
    outcome, _ = replay("claude", "structured")
    assert outcome.success and json.loads(outcome.final_message) == {"status": "ok", "findings": 2}


@pytest.mark.parametrize("cli", ["codex", "claude"])
def test_killed_while_hanging_is_not_a_success(cli):
    outcome, _ = replay(cli, "hang")
    assert not outcome.success and outcome.error is ErrorKind.CRASHED


def test_codex_usage_is_cumulative_take_the_last():
    lines = ['{"type":"thread.started","thread_id":"t1"}',
             '{"type":"turn.completed","usage":{"input_tokens":100,"cached_input_tokens":10,"output_tokens":5}}',
             '{"type":"turn.completed","usage":{"input_tokens":250,"cached_input_tokens":40,"output_tokens":9}}']
    outcome = feed_all("codex", lines)
    assert (outcome.usage.input_tokens, outcome.usage.output_tokens, outcome.usage.cached_tokens) == (250, 9, 40)


@pytest.mark.parametrize("cli,first", [
    ("codex", '{"type":"thread.started","thread_id":"t1"}'),
    ("claude", '{"type":"system","subtype":"init","session_id":"s1"}'),
    ("gemini", '{"type":"init","session_id":"s1"}'),
])
def test_exit_zero_without_terminal_is_incomplete(cli, first):
    outcome = feed_all(cli, [first], exit_code=0)
    assert not outcome.success and outcome.error is ErrorKind.INCOMPLETE
    assert outcome.session_id in ("t1", "s1")


@pytest.mark.parametrize("cli", ["codex", "claude", "gemini"])
def test_truncated_line_is_malformed_never_a_crash(cli):
    good = (STREAMS / cli / "text.jsonl").read_text().splitlines()
    lines = good[:-1] + [good[-1][: len(good[-1]) // 2]]
    outcome = feed_all(cli, lines, exit_code=0)
    assert not outcome.success and outcome.error is ErrorKind.MALFORMED
    assert "unparseable" in outcome.reason


@pytest.mark.parametrize("cli", ["codex", "claude", "gemini"])
def test_noise_lines_are_tolerated_in_a_good_stream(cli):
    good = (STREAMS / cli / "text.jsonl").read_text().splitlines()
    lines = ["Warning: Basic terminal detected (TERM=dumb).", "[2026-11-21T18:00:00Z] WARN slow disk", *good, "",
             "[STARTUP] phase skipped", "[12:00:01] done"]
    outcome = feed_all(cli, lines)
    assert outcome.success and outcome.final_message == "Hello from the rehearsal model."


@pytest.mark.parametrize("line", ['[{"type": "x"', '[1, 2', '[-3, ', '{"type": '])
def test_a_cut_json_line_is_malformed_even_when_it_starts_with_a_bracket(line):
    good = (STREAMS / "claude" / "text.jsonl").read_text().splitlines()
    outcome = feed_all("claude", [good[0], line, *good[1:]])
    assert outcome.error is ErrorKind.MALFORMED, outcome


@pytest.mark.parametrize("cli", ["codex", "claude", "gemini"])
def test_only_garbage_is_malformed(cli):
    outcome = feed_all(cli, ["Segmentation fault", "\x00\x01binary", "42"], exit_code=0)
    assert outcome.error is ErrorKind.MALFORMED and "no JSON events" in outcome.reason


def test_unexpected_shapes_do_not_crash():
    outcome = feed_all("claude", ['{"type":"assistant","message":{"content":"not a list"}}',
                                  '{"type":"result","subtype":"success","usage":"x"}'])
    assert outcome.error is ErrorKind.MALFORMED


def test_crash_with_auth_error_on_stderr():
    outcome = feed_all("gemini", [], exit_code=41, stderr="Please set an Auth method in settings.json or "
                       "specify GEMINI_API_KEY. Error: invalid api key")
    assert outcome.error is ErrorKind.AUTH
    outcome = feed_all("codex", [], exit_code=1, stderr="thread 'main' panicked")
    assert outcome.error is ErrorKind.CRASHED and "exited 1" in outcome.reason


def test_claude_rate_limit_with_reset_in_text():
    line = json.dumps({"type": "result", "subtype": "success", "is_error": True, "api_error_status": 429,
                       "result": "Claude usage limit reached. Your limit will reset at 2026-11-21T18:00:00Z",
                       "session_id": "s"})
    outcome = feed_all("claude", [line], exit_code=1)
    assert outcome.error is ErrorKind.RATE_LIMIT
    assert outcome.reset_at == pytest.approx(1795284000.0)


def test_claude_429_waits_as_long_as_claude_itself_was_told():
    # its api_retry lines carry the API's retry-after as retry_delay_ms; the result then gives none
    lines = (STREAMS / "claude" / "error_429.jsonl").read_text().splitlines()
    before = time.time()
    outcome = feed_all("claude", lines, exit_code=1)
    assert outcome.error is ErrorKind.RATE_LIMIT
    assert before + 1.0 <= outcome.reset_at <= time.time() + 1.0  # retry_delay_ms 1000 in the recording


def test_codex_usage_limit_with_resets_in_seconds():
    line = json.dumps({"type": "turn.failed", "error": {"message": json.dumps(
        {"type": "usage_limit_reached", "message": "You've hit your usage limit.", "resets_in_seconds": 120})}})
    parser = ADAPTERS["codex"].new_parser({})
    parser.feed(line)
    outcome = parser.finish(1)
    assert outcome.error is ErrorKind.RATE_LIMIT and outcome.reset_at is not None


@pytest.mark.parametrize("text,expected", [
    ("Retry-After: 30", 1030.0), ("resets_in_seconds\": 90", 1090.0), ("try again in 2 hours", 8200.0),
    ("Please retry in 37.5s.", 1037.5), ("\"retryDelay\": \"12s\"", 1012.0),
    ("resets_at: 1795284000", 1795284000.0), ("Suggested retry after 1s.", 1001.0), ("nothing here", None),
    ("try again in 4 days 20 hours 9 minutes", 1000.0 + 4 * 86400 + 20 * 3600 + 9 * 60),
    ("try again in 1h 30m", 6400.0), ("Claude AI usage limit reached|1795284000", 1795284000.0),
    ("Error 429 at 12 rows", None),
])
def test_parse_reset(text, expected):
    assert parse_reset(text, now=1000.0) == expected


def test_parse_reset_clock_time_is_in_the_future():
    at = parse_reset("You can try again at 3:05 PM", now=1000.0)
    assert at is not None and 1000.0 < at <= 1000.0 + 86400


def test_parse_reset_clock_times_as_the_clis_print_them():
    from datetime import datetime

    now = datetime(2026, 11, 21, 18, 14, 17).astimezone().timestamp()
    local = lambda *a: datetime(*a).astimezone().timestamp()  # noqa: E731
    # to the minute: 6:14 PM at 18:14:17 is now, not tomorrow
    assert parse_reset("Try again at 6:14 PM.", now) == now
    assert parse_reset("try again at 7:30 pm", now) == local(2026, 11, 21, 19, 30)
    assert parse_reset("Try again at 6:00 PM.", now) == local(2026, 11, 22, 18, 0)  # long past: tomorrow
    assert parse_reset("5-hour limit reached ∙ resets 3pm", now) == local(2026, 11, 22, 15, 0)
    assert parse_reset("Try again at Nov 24th, 2026 3:04 PM.", now) == local(2026, 11, 24, 15, 4)
    assert classify_error("5-hour limit reached ∙ resets 3pm") is ErrorKind.RATE_LIMIT


@pytest.mark.parametrize("text,status,kind", [
    ("anything", 401, ErrorKind.AUTH), ("Invalid API key", None, ErrorKind.AUTH),
    ("429 Too Many Requests", None, ErrorKind.RATE_LIMIT), ("RESOURCE_EXHAUSTED quota", None, ErrorKind.RATE_LIMIT),
    ("500 internal error", None, ErrorKind.API),
])
def test_classify_error(text, status, kind):
    assert classify_error(text, status) is kind


def test_gemini_policy_denial_is_a_failure():
    """Observed on gemini 0.61.0 under bridge's read-only policy file: the run still says success."""
    lines = ['{"type":"init","session_id":"s1","model":"gemini-2.5-flash"}',
             '{"type":"tool_use","tool_name":"write_file","tool_id":"w1","parameters":{"file_path":"/repo/out.txt"}}',
             '{"type":"tool_result","tool_id":"w1","status":"error","output":"Tool execution denied by policy.",'
             '"error":{"type":"policy_violation","message":"Tool execution denied by policy."}}',
             '{"type":"message","role":"assistant","content":"done","delta":true}',
             '{"type":"result","status":"success","stats":{"input_tokens":40,"output_tokens":15}}']
    outcome = feed_all("gemini", lines)
    assert outcome.error is ErrorKind.PERMISSION_DENIED and outcome.permission_denials == ("w1",)


def test_codex_refused_patch_is_a_permission_denial():
    good = (STREAMS / "codex" / "text.jsonl").read_text().splitlines()
    outcome = feed_all("codex", good, exit_code=0, stderr="ERROR codex_core::tools::router: error=patch rejected: "
                       "writing is blocked by read-only sandbox; rejected by user approval settings")
    assert outcome.error is ErrorKind.PERMISSION_DENIED and "patch rejected" in outcome.reason
    assert feed_all("codex", good, exit_code=0).success
