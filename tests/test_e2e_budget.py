"""A token budget stops a long Claude Code session while it runs (the REAL `claude`, rehearsed),
headless and in its terminal UI.

Claude Code reports its cost only in its result; its assistant events carry each model call's
usage, so bridge counts a session's tokens as they grow and stops it mid-way at `max_tokens`,
not after it spent everything. The TUI prints no usage: bridge reads the same assistant lines
from the session's own record (bridge/session_record.py)."""

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
  worker: {cli: claude, sandbox: workspace-write, allowed_tools: [Bash], interactive: INTERACTIVE}
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


def assistant_calls(lines: list[str]) -> set[str]:
    """The model calls (message ids) in stream-json or record lines."""
    objs = [json.loads(line) for line in lines if line.startswith("{")]
    return {o["message"]["id"] for o in objs if o.get("type") == "assistant"}


@pytest.mark.parametrize("interactive", [False, True], ids=["headless", "tui"])
def test_a_token_budget_stops_a_claude_session_mid_way(tmp_path: Path, real_clis: Path, interactive: bool) -> None:
    (tmp_path / "budget.yaml").write_text(PLAYBOOK.replace("INTERACTIVE", str(interactive).lower()))
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
    if interactive:  # the terminal shows no JSON: the calls are in Claude Code's record of the session
        (record,) = (tmp_path / ".bridge").rglob(f"projects/*/{attempt.session_id}.jsonl")
        calls = assistant_calls(record.read_text().splitlines())
        assert "--session-id" in json.loads(attempt.argv_json)
    else:
        calls = assistant_calls(log.splitlines())
        assert '"type":"result"' not in log.replace(" ", "")
    assert 2 <= len(calls) < STEPS, len(calls)
    assert attempt.input_tokens + attempt.output_tokens > 100  # what the budget counted, recorded
    assert run_processes(run.id) == []
