"""The real codex, claude and gemini CLIs driven THROUGH bridge.attempt.run_attempt against the
rehearsal model on 127.0.0.1 (no vendor credentials, isolated HOME). Each test checks that no
process of the agent is left behind."""

from __future__ import annotations

import uuid

import asyncio
import json
import time
from pathlib import Path

import pytest

from bridge.agents.base import ErrorKind, EventKind, Invocation
from bridge.attempt import run_attempt
from bridge.playbook import AgentProfile
from bridge.proctable import group_members, run_processes
from bridge.rehearsal import ModelServer, parse_script, wiring

RUN_E2E = f"run-e2e-{uuid.uuid4().hex[:8]}"  # unique: suites may run side by side
pytestmark = pytest.mark.e2e
CLIS = ("codex", "claude", "gemini")


def go(cli: str, world: Path, script: str, prompt: str = "Do the rehearsal task.", *, profile=None,
       timeout: float = 90, idle_timeout: float | None = None, cancel_after: float | None = None,
       run_id: str = RUN_E2E, output_schema: dict | None = None):
    shared = world / "run" / "shared"
    script = script.replace("SHARED", str(shared))
    inv = Invocation(prompt=prompt.replace("SHARED", str(shared)), cwd=world / "repo", shared_dir=shared,
                     stage_dir=world / "run" / "stages" / cli / "attempt-1", output_schema=output_schema)
    profile = profile or AgentProfile(cli=cli, sandbox="workspace-write")
    events: list = []

    async def main():
        with ModelServer(parse_script(script)) as server:
            wire = wiring(cli, server.url, world / "home")
            cancel = asyncio.Event()
            if cancel_after is not None:
                asyncio.get_running_loop().call_later(cancel_after, cancel.set)
            result = await run_attempt(profile, inv, timeout=timeout, idle_timeout=idle_timeout,
                                       on_event=events.append, cancel=cancel, wiring=wire, run_id=run_id,
                                       stage_key=cli, grace=2.0)
            return result, list(server.requests)

    result, requests = asyncio.run(main())
    assert result.process is not None, result.outcome
    assert group_members(result.process.pid) == [], "a process of the agent's group is still running"
    assert run_processes(run_id) == [], "a process carrying this run's marker is still running"
    return result, events, requests


@pytest.mark.parametrize("cli", CLIS)
def test_text_answer(cli, world):
    result, events, _ = go(cli, world, "replies:\n  - steps:\n      - text: 'Hello from the rehearsal model.'\n")
    assert result.outcome.success, (result.outcome, result.stderr_path.read_text()[-2000:])
    assert result.outcome.final_message == "Hello from the rehearsal model."
    assert result.outcome.session_id and result.outcome.usage.output_tokens > 0
    assert events[0].kind is EventKind.SESSION and events[-1].kind is EventKind.RESULT


WRITE = """
replies:
  - match: 'into (\\S+) as (\\S+)'
    steps:
      - write_file: {path: '$1/$2', content: "# Report\\n"}
      - text: 'Wrote the report.'
"""


@pytest.mark.parametrize("cli", CLIS)
def test_tool_writes_into_the_shared_folder_under_the_sandbox(cli, world):
    result, events, _ = go(cli, world, WRITE, "Write the audit into SHARED as report.md")
    assert result.outcome.success, result.outcome
    assert (world / "run" / "shared" / "report.md").read_text() == "# Report\n"
    assert any(e.kind is EventKind.FILE_CHANGE for e in events)
    assert "--dangerously-bypass-approvals-and-sandbox" not in result.argv
    assert "bypassPermissions" not in result.argv and "yolo" not in result.argv


@pytest.mark.parametrize("cli", ["claude", "gemini"])
def test_max_turns_stops_the_cli(cli, world):
    # the write takes a second model turn; claude has a flag; gemini gets model.maxSessionTurns in
    # the rehearsal HOME's settings
    result, _, requests = go(cli, world, WRITE, "Write the audit into SHARED as report.md",
                             profile=AgentProfile(cli=cli, sandbox="workspace-write", max_turns=1))
    assert result.outcome.error is ErrorKind.MAX_TURNS, (result.outcome, result.stderr_path.read_text()[-2000:])
    assert (world / "run" / "shared" / "report.md").exists()  # the first turn's tool call ran
    assert sum(r.method == "POST" for r in requests) == 1  # the model was not asked again


@pytest.mark.parametrize("cli", ["claude", "gemini"])
def test_read_only_can_still_write_the_shared_folder(cli, world):
    result, _, _ = go(cli, world, WRITE, "Write the audit into SHARED as report.md",
                      profile=AgentProfile(cli=cli, sandbox="read-only"))
    assert result.outcome.success, result.outcome
    assert (world / "run" / "shared" / "report.md").exists()


@pytest.mark.parametrize("cli", ["claude", "gemini"])
def test_read_only_denies_writes_elsewhere(cli, world):
    script = WRITE.replace("'$1/$2'", "'$2'")  # into the repo (cwd) instead
    result, _, _ = go(cli, world, script, "Write the audit into SHARED as report.md",
                      profile=AgentProfile(cli=cli, sandbox="read-only"))
    assert result.outcome.error is ErrorKind.PERMISSION_DENIED, result.outcome
    assert not (world / "repo" / "report.md").exists()


def test_codex_read_only_refused_write_is_a_permission_denial(world):
    """Documented limit: codex ignores --add-dir under read-only, so it cannot write the shared
    folder; its refused patch (a file_change item that failed) fails the attempt as a denial."""
    result, _, _ = go("codex", world, WRITE, "Write the audit into SHARED as report.md",
                      profile=AgentProfile(cli="codex", sandbox="read-only"))
    assert not (world / "run" / "shared" / "report.md").exists()
    assert not (world / "repo" / "report.md").exists()
    assert result.outcome.error is ErrorKind.PERMISSION_DENIED, result.outcome
    assert "patch rejected: writing is blocked by read-only sandbox" in result.outcome.reason


@pytest.mark.parametrize("cli", CLIS)
@pytest.mark.parametrize("status,kind", [(401, ErrorKind.AUTH), (400, ErrorKind.API), (500, ErrorKind.API)])
def test_api_error(cli, world, status, kind):
    script = f"replies:\n  - steps:\n      - error: {{status: {status}, message: 'rehearsal error'}}\n"
    result, _, _ = go(cli, world, script)
    assert not result.outcome.success and result.outcome.error is kind, result.outcome


@pytest.mark.parametrize("cli", CLIS)
def test_rate_limit(cli, world):
    script = "replies:\n  - steps:\n      - error: {status: 429, message: 'rate limited', retry_after: 30}\n"
    result, _, _ = go(cli, world, script)
    assert result.outcome.error is ErrorKind.RATE_LIMIT, result.outcome


def test_claude_max_turns(world):
    script = """
replies:
  - steps:
      - shell: 'echo one'
      - shell: 'echo two'
      - text: 'never reached'
"""
    result, _, _ = go("claude", world, script,
                      profile=AgentProfile(cli="claude", sandbox="workspace-write", max_turns=1,
                                           allowed_tools=["Bash"]))
    assert result.outcome.error is ErrorKind.MAX_TURNS, result.outcome
    assert result.process.exit_code == 1


@pytest.mark.parametrize("cli", CLIS)
def test_timeout_on_a_hanging_model(cli, world):
    t0 = time.monotonic()
    result, _, _ = go(cli, world, "replies:\n  - steps:\n      - hang: true\n", timeout=6)
    assert result.outcome.error is ErrorKind.TIMEOUT, result.outcome
    assert time.monotonic() - t0 < 30


@pytest.mark.parametrize("cli", CLIS)
def test_cancellation(cli, world):
    result, _, _ = go(cli, world, "replies:\n  - steps:\n      - hang: true\n", cancel_after=4)
    assert result.outcome.error is ErrorKind.CANCELLED
    assert result.process.ended_by == "cancelled"


@pytest.mark.parametrize("cli", ["codex", "claude"])
def test_output_schema_is_enforced_by_the_cli(cli, world):
    # a stage's output_schema reaches the CLI (Codex --output-schema, Claude --json-schema) and the
    # answer comes back as that JSON
    schema = {"type": "object", "properties": {"status": {"type": "string"}, "failures": {"type": "integer"}},
              "required": ["status", "failures"], "additionalProperties": False}
    script = "replies:\n  - steps:\n      - structured: {status: pass, failures: 0}\n"
    result, _, requests = go(cli, world, script, output_schema=schema)
    assert result.outcome.success, (result.outcome, result.stderr_path.read_text()[-2000:])
    assert json.loads(result.outcome.final_message) == {"status": "pass", "failures": 0}
    assert ("--output-schema" if cli == "codex" else "--json-schema") in result.argv


@pytest.mark.parametrize("cli", CLIS)
@pytest.mark.parametrize("limit", ["timeout", "idle_timeout"])
def test_a_limit_hit_during_a_running_tool(cli, limit, world):
    # the agent's shell tool is still running (sleep 100) when the limit strikes: a timeout failure,
    # never the "success" result Claude Code prints when it gets SIGTERM, and no sleep left behind
    script = "replies:\n  - steps:\n      - shell: 'sleep 100'\n      - text: 'finished'\n"
    result, _, _ = go(cli, world, script, profile=AgentProfile(cli=cli, sandbox="full-access"),
                      **({"timeout": 8} if limit == "timeout" else {"idle_timeout": 5}))
    expected = ErrorKind.TIMEOUT if limit == "timeout" else ErrorKind.IDLE_TIMEOUT
    assert not result.outcome.success and result.outcome.error is expected, result.outcome
    assert result.process.ended_by == limit
