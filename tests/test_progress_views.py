"""What a person watching a run sees: the Live view on a terminal, `bridge logs --follow`, `bridge runs`."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pexpect
import pytest

from bridge.ledger import Ledger
from tests.runhelp import bridge, bridge_argv, make_project, pid_alive, wait_for, write_playbook

SGR = re.compile(r"\x1b\[([0-9;]*)m")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path)


def colours(raw: str) -> set[str]:
    """The colour parameters of the SGR sequences in `raw` (bold / dim and resets are not colours)."""
    found = set()
    for match in SGR.finditer(raw):
        params = [p for p in match.group(1).split(";") if p]
        for i, p in enumerate(params):
            n = int(p)
            if 30 <= n <= 49 or 90 <= n <= 107:
                found.add(p)
            if n in (38, 48):  # 256 / true colour: the rest of the sequence is the colour
                found.add(";".join(params[i:]))
                break
    return found


def on_a_terminal(project: Path, *args: str, no_color: bool) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    env.update(COLUMNS="140", LINES="50", TERM="xterm-256color")
    if no_color:
        env["NO_COLOR"] = "1"
    argv = bridge_argv(*args, "--dir", str(project))
    child = pexpect.spawn(argv[0], argv[1:], cwd=str(project), env=env, encoding="utf-8",
                          dimensions=(50, 140), timeout=60)
    raw = child.read()  # to EOF
    child.close()
    return child.exitstatus, raw


LIVE_PB = """
    stages:
      plan: {agent: f, prompt: "FAKE: tool=Bash:drafting the plan; sleep=0.6; tokens=1000,200; cost=0.25; message=planned"}
      fan:
        agent: f
        needs: plan
        matrix: {part: [x, y]}
        prompt: "FAKE: tool=Read:part {{ matrix.part }}; sleep=0.3; tokens=10,5; cost=0.01"
"""


@pytest.mark.parametrize("no_color", [False, True])
def test_live_view_rows_and_summary_on_a_terminal(project: Path, no_color: bool) -> None:
    pb = write_playbook(project, LIVE_PB)
    status, raw = on_a_terminal(project, "run", str(pb), no_color=no_color)
    assert status == 0, raw
    text = ANSI.sub("", raw)
    # while it ran: the unit's current activity (the agent's latest tool call) in its row
    assert re.search(r"plan +▶ running +f +1 .*drafting the plan", text), text
    # the end: the final table, one row per unit with status, agent, attempt, elapsed, tokens, cost
    final = text[text.rindex("stage"):]
    assert re.search(r"stage +status +agent +try +elapsed +tokens +cost +activity", final), final
    assert re.search(r"plan +✓ success +f +1 +\d+\.\ds +1,200 +\$0\.2500", final), final
    for part in ("x", "y"):
        assert re.search(rf"fan-{part} +✓ success +f +1 +\d+\.\ds +15 +\$0\.0100", final), final
    assert re.search(r"✓ run \S+ success in \S+ \[1,230 tok, \$0\.2700\]", final), final
    if no_color:
        assert colours(raw) == set()
    else:
        assert colours(raw)  # the check above can see colours: green for success at least


def test_plain_lines_with_no_color_have_no_escape_codes(project: Path) -> None:
    pb = write_playbook(project, LIVE_PB)
    result = bridge(project, "run", str(pb))  # piped, NO_COLOR=1
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "✓ fan-y success" in result.stdout


def test_logs_follow_ends_when_its_stage_ends(project: Path, tmp_path: Path) -> None:
    pb = write_playbook(project, f"""
        stages:
          a: {{agent: f, prompt: "FAKE: pidfile={tmp_path}/a.pid; tool=Bash:step-one; sleep=1; message=a finished"}}
          b: {{agent: f, needs: a, prompt: "FAKE: pidfile={tmp_path}/b.pid; sleep=60; message=b finished"}}
    """)
    proc = subprocess.Popen(bridge_argv("run", str(pb), "--dir", str(project)), cwd=project,
                            env={**os.environ, "NO_COLOR": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (tmp_path / "a.pid").exists(), what="stage a's agent to start")
        follow = bridge(project, "logs", "last", "a", "--follow")
        assert follow.returncode == 0, follow.stderr
        assert "step-one" in follow.stdout and "a finished" in follow.stdout
        with Ledger(project) as ledger:  # it ended with a, not with the run: b still runs
            run = ledger.find_run("last")
            assert run.status == "running"
            assert ledger.unit(run.id, "a").status == "success"  # type: ignore[union-attr]
        wait_for(lambda: (tmp_path / "b.pid").exists(), what="stage b's agent to start")
        assert pid_alive(int((tmp_path / "b.pid").read_text()))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 130
    assert not pid_alive(int((tmp_path / "b.pid").read_text()))


def test_runs_lists_cost_and_duration_of_each_run(project: Path) -> None:
    for cost in ("0.5", "1.25"):
        pb = write_playbook(project, f"""
            stages:
              a: {{agent: f, prompt: "FAKE: sleep=0.2; cost={cost}"}}
        """, name=f"p{cost.replace('.', '')}")
        assert bridge(project, "run", str(pb)).returncode == 0
    listed = bridge(project, "runs")
    assert listed.returncode == 0, listed.stderr
    rows = [line for line in listed.stdout.splitlines() if line.startswith("20")]  # run ids start with a date
    assert len(rows) == 2, listed.stdout
    with Ledger(project) as ledger:
        runs = {r.id: r for r in ledger.runs()}
    for line in rows:
        run = runs[line.split()[0]]
        assert re.search(r" success +\d{4}-\d\d-\d\d \d\d:\d\d +\d+\.\ds +\$\d", line), line
        assert f"${run.cost_usd:.2f}" in line and run.ended is not None
        assert run.ended - run.started >= 0.2
    assert {runs[line.split()[0]].cost_usd for line in rows} == {0.5, 1.25}
