"""A token budget stops a long agent session while it runs (the REAL CLIs, rehearsed): Claude Code
and Gemini CLI headless and in their terminal UIs, Codex headless.

Claude Code's stream carries each model call's usage; Gemini's and Codex's report it only when
the turn ends, and a TUI prints none. So bridge also reads each CLI's own record of the session
as it grows (bridge/session_record.py), counts a session's tokens as they grow and stops it
mid-way at `max_tokens`, not after it spent everything."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from bridge.ledger import Ledger
from bridge.proctable import run_processes
from tests.runhelp import bridge_argv

pytestmark = pytest.mark.e2e

STEPS = 8  # shell calls the scripted model asks for, one per model call

PLAYBOOK = """\
version: 1
name: budget-e2e
agents:
  worker: AGENT
stages:
  long:
    agent: worker
    max_tokens: 100
    timeout: 90s
    prompt: "Count slowly to eight."
"""
# each call answers after 0.5 s, as a real model takes its time: bridge sees the usage grow and
# stops the session between two calls (instant answers raced the whole script past the budget)
SCRIPT = "replies:\n  - match: Count slowly\n    steps:\n" + "".join(
    f"      - {{shell: 'echo {n}', delay: 0.5s}}\n" for n in range(1, STEPS + 1)) + "      - text: Counted.\n"


AGENTS = {  # each may run `echo` without asking
    "claude": "{cli: claude, sandbox: workspace-write, allowed_tools: [Bash]",
    "gemini": "{cli: gemini, sandbox: full-access",
    "codex": "{cli: codex, sandbox: workspace-write",
}
RECORDS = {"claude": "projects/*/{}.jsonl", "gemini": "tmp/*/chats/session-*-{:.8}.jsonl",
           "codex": "sessions/*/*/*/rollout-*-{}.jsonl"}


def model_calls(cli: str, lines: list[str]) -> int:
    """The model calls in a Claude stream-json or in a CLI's record of the session."""
    objs = [json.loads(line) for line in lines if line.startswith("{")]
    if cli == "claude":
        return len({o["message"]["id"] for o in objs if o.get("type") == "assistant"})
    if cli == "gemini":
        return len({o["id"] for o in objs if o.get("type") == "gemini"})
    return sum(1 for o in objs if (o.get("payload") or {}).get("type") == "token_count")


@pytest.mark.parametrize("cli,interactive", [("claude", False), ("claude", True), ("gemini", False),
                                             ("gemini", True), ("codex", False)],
                         ids=["claude", "claude-tui", "gemini", "gemini-tui", "codex"])
def test_a_token_budget_stops_a_session_mid_way(tmp_path: Path, real_clis: Path, cli: str,
                                                interactive: bool) -> None:
    agent = AGENTS[cli] + (", interactive: true}" if interactive else "}")
    (tmp_path / "budget.yaml").write_text(PLAYBOOK.replace("AGENT", agent))
    (tmp_path / "budget.script.yaml").write_text(SCRIPT)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    done = subprocess.run(bridge_argv("run", str(tmp_path / "budget.yaml"), "--rehearse", "--script",
                                      str(tmp_path / "budget.script.yaml"), "--json", "--dir", str(tmp_path)),
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PATH": f"{real_clis}{os.pathsep}{os.environ['PATH']}"})
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    end = events[-1]
    assert end["event"] == "run_finished" and end["status"] == "failure"
    with Ledger(tmp_path) as ledger:
        run = ledger.find_run("last")
        (unit,) = ledger.units(run.id)
        (attempt,) = ledger.attempts(run.id, "long")
    assert unit.status == "failure" and "max_tokens 100" in unit.reason, unit.reason
    # stopped while running: fewer model calls than the script's steps, its tokens counted
    log = Path(attempt.stdout_path).read_text()
    if cli == "claude" and not interactive:
        calls = model_calls(cli, log.splitlines())
        assert '"type":"result"' not in log.replace(" ", "")
    else:  # the calls as the CLI's own record of the session has them
        (record,) = (tmp_path / ".bridge").rglob(RECORDS[cli].format(attempt.session_id))
        calls = model_calls(cli, record.read_text().splitlines())
    assert 1 <= calls < STEPS, calls
    assert attempt.input_tokens + attempt.output_tokens > 100  # what the budget counted, recorded
    assert run_processes(run.id) == []
