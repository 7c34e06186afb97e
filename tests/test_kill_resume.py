"""Issue 4's "done when": a 10-stage playbook (fan-out, a loop, a failing stage, a finally stage) is
SIGKILLed at many points and resumed, and always ends as the uninterrupted run did.

Each kill point is a predicate over the run's JSON event stream (`bridge run --json`): the moment it
matches, bridge gets SIGKILL. `bridge resume` must then reach the uninterrupted run's end state:
the same unit statuses, the same files in the shared folder, the same run status; succeeded units
never run again; no agent process of the run is left; the run's cost is the sum of its attempts'.
"""

from __future__ import annotations

import time
import json
import os
import signal
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.ledger import Ledger
from tests.runhelp import bridge, bridge_argv, make_project, pid_alive, wait_for, write_playbook

# plan -> fan (3 items) -> merge -> work (loop: impl -> check, until the counter says 2) -> report;
# lint fails (continue_on_error); flaky fails once, then succeeds on its retry; wrap is `finally`.
# Agents with outputs report their result first (respond_first): not stopped early by their complete
# outputs, so every agent's cost is known and the end state is the same whenever bridge is killed.
PLAYBOOK = """
    stages:
      plan:
        agent: f
        prompt: "FAKE: count={calls}; respond_first=1; pidfile={tmp}/plan.pid; tool=Bash:planning; pre_sleep=0.6; write={{{{ shared }}}}/plan.md=the plan; tokens=100,10; cost=0.01"
        outputs: [plan.md]
      fan:
        agent: f
        needs: plan
        matrix: {{part: [a, b, c]}}
        prompt: "FAKE: count={calls}; respond_first=1; pre_sleep=0.3; write={{{{ shared }}}}/fan-{{{{ matrix.part }}}}.txt={{{{ matrix.part }}}} of {{{{ stages.plan.outputs['plan.md'].text }}}}; tokens=50,5; cost=0.02"
        outputs: ["fan-{{{{ matrix.part }}}}.txt"]
      merge:
        agent: f
        needs: fan
        prompt: "FAKE: count={calls}; respond_first=1; pre_sleep=0.1; write={{{{ shared }}}}/merged.txt={{{{ stages.fan.outputs['fan-a.txt'].text }}}}+{{{{ stages.fan.outputs['fan-b.txt'].text }}}}+{{{{ stages.fan.outputs['fan-c.txt'].text }}}}; cost=0.03"
        outputs: [merged.txt]
      lint:
        agent: f
        needs: plan
        continue_on_error: true
        prompt: "FAKE: count={calls}; pre_sleep=0.2; result=error; message=lint found 3 problems; cost=0.005"
      flaky:
        agent: f
        needs: plan
        retry: {{limit: 2, backoff: 400ms}}
        prompt: "FAKE: count={tmp}/flaky.count; fail_first=1; pre_sleep=0.1; message=flaky ok; cost=0.004"
      work:
        needs: merge
        loop:
          max_iterations: 3
          until: "stages.check.outputs['seen.txt'].text.strip() == '2'"
          stages:
            impl:
              agent: f
              prompt: "FAKE: count={calls}; respond_first=1; pre_sleep=0.2; write={{{{ shared }}}}/counter.txt={{{{ loop.iteration }}}}; message=impl {{{{ loop.iteration }}}}; cost=0.01"
              outputs: [counter.txt]
            check:
              agent: f
              needs: impl
              prompt: "FAKE: count={calls}; respond_first=1; pre_sleep=0.2; read={{{{ shared }}}}/counter.txt={{{{ shared }}}}/seen.txt; message=checked {{{{ loop.iteration }}}}; cost=0.01"
              outputs: [seen.txt]
      report:
        agent: f
        needs: [merge, lint, flaky, work]
        prompt: "FAKE: count={calls}; respond_first=1; write={{{{ shared }}}}/report.md=lint {{{{ stages.lint.status }}}}, {{{{ stages.flaky.final_message }}}}, loop at {{{{ stages.check.outputs['seen.txt'].text }}}}, {{{{ stages.impl.final_message }}}}; cost=0.01"
        outputs: [report.md]
    finally:
      wrap:
        agent: f
        prompt: "FAKE: count={calls}; respond_first=1; pre_sleep=0.3; write={{{{ shared }}}}/wrap.md=report {{{{ stages.report.status }}}}, lint {{{{ stages.lint.status }}}}; cost=0.01"
        outputs: [wrap.md]
"""


def setup(tmp: Path) -> tuple[Path, Path]:
    project = make_project(tmp)
    pb = write_playbook(project, PLAYBOOK.format(calls=tmp / "calls.txt", tmp=tmp), name="ten")
    return project, pb


def popen_json(project: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(bridge_argv(*args, "--json", "--dir", str(project)), cwd=project, text=True,
                            env={**os.environ, "NO_COLOR": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)


def calls(tmp: Path) -> Counter[str]:
    """How many times each unit's agent started (the fake appends `<BRIDGE_STAGE> <pid>`)."""
    counts: Counter[str] = Counter()
    for path in (tmp / "calls.txt", tmp / "flaky.count"):
        if path.exists():
            counts.update(line.split()[0] for line in path.read_text().splitlines())
    return counts


def marked_processes(run_id: str) -> list[int]:
    """Every live process whose environment says BRIDGE_RUN_ID=run_id (an independent /proc scan)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if f"BRIDGE_RUN_ID={run_id}".encode() in environ.split(b"\0") and pid_alive(int(entry)):
            found.append(int(entry))
    return found


def end_state(project: Path, run_id: str) -> dict[str, Any]:
    shared = project / ".bridge" / "runs" / run_id / "shared"
    with Ledger(project) as ledger:
        run = ledger.run(run_id)
        assert run is not None
        units = {u.key: u for u in ledger.units(run_id)}
        attempts = ledger.attempts(run_id)
    files = {str(p.relative_to(shared)): p.read_text() for p in sorted(shared.rglob("*"))
             if p.is_file() and ".fake-" not in p.name}  # a fake's temp file, if it was killed mid-write
    return {"status": run.status, "cost": run.cost_usd, "tokens": run.tokens,
            "units": {k: u.status for k, u in units.items()},
            "attempts": {k: u.attempts for k, u in units.items()},
            "unit_cost": {k: u.cost_usd for k, u in units.items()},
            "attempt_rows": attempts, "files": files}


def assert_cost_is_the_sum_of_attempts(state: dict[str, Any]) -> None:
    rows = state["attempt_rows"]
    assert state["cost"] == pytest.approx(sum(a.cost_usd or 0 for a in rows))
    assert state["tokens"] == sum(a.input_tokens + a.output_tokens for a in rows)
    for key, cost in state["unit_cost"].items():
        assert cost == pytest.approx(sum(a.cost_usd or 0 for a in rows if a.key == key)), key


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The uninterrupted run's end state."""
    tmp = tmp_path_factory.mktemp("baseline")
    project, pb = setup(tmp)
    done = bridge(project, "run", str(pb))
    assert done.returncode == 0, done.stdout + done.stderr
    with Ledger(project) as ledger:
        run_id = ledger.find_run("last").id
    state = end_state(project, run_id)
    state["calls"] = calls(tmp)
    return state


def test_the_uninterrupted_run(baseline: dict[str, Any]) -> None:
    assert baseline["status"] == "success"  # lint failed, but with continue_on_error
    assert baseline["units"] == {
        "plan": "success", "fan-a": "success", "fan-b": "success", "fan-c": "success", "merge": "success",
        "lint": "failure", "flaky": "success", "impl@1": "success", "check@1": "success",
        "impl@2": "success", "check@2": "success", "report": "success", "wrap": "success",
        "work": "success"}  # the loop's own row (no agent of its own)
    assert baseline["attempts"]["flaky"] == 2 and baseline["attempts"]["plan"] == 1
    files = baseline["files"]
    assert files["merged.txt"] == "a of the plan+b of the plan+c of the plan"
    assert files["counter.txt"] == "2" and files["seen.txt"] == "2"
    assert files["report.md"] == "lint failure, flaky ok, loop at 2, impl 2"
    assert files["wrap.md"] == "report success, lint failure"
    assert baseline["calls"] == {**{key: 1 for key in baseline["units"] if key != "work"}, "flaky": 2}
    assert baseline["cost"] == pytest.approx(0.01 + 3 * 0.02 + 0.03 + 0.005 + 2 * 0.004 + 4 * 0.01 + 0.01 + 0.01)
    assert_cost_is_the_sum_of_attempts(baseline)


Point = Callable[[dict[str, Any], list[dict[str, Any]]], bool]


def _started(events: list[dict[str, Any]], prefix: str) -> int:
    return sum(1 for e in events if e["event"] == "unit_started" and e["key"].startswith(prefix))


KILL_POINTS: dict[str, Point] = {
    # the plan agent has printed a tool call and is still working
    "plan-mid-output": lambda e, seen: e["event"] == "unit_activity" and e["key"] == "plan" and e["text"] == "planning",
    "plan-finished": lambda e, seen: e["event"] == "unit_finished" and e["key"] == "plan",
    "fan-out-half-started": lambda e, seen: e["event"] == "unit_started" and _started(seen, "fan-") == 2,
    "first-fan-item-finished": lambda e, seen: e["event"] == "unit_finished" and e["key"].startswith("fan-"),
    "lint-failed": lambda e, seen: e["event"] == "unit_finished" and e["key"] == "lint",
    "flaky-waiting-to-retry": lambda e, seen: e["event"] == "unit_retrying" and e["key"] == "flaky",
    "loop-iteration-2-started": lambda e, seen: e["event"] == "unit_started" and e["key"] == "impl@2",
    "loop-done": lambda e, seen: e["event"] == "unit_finished" and e["key"] == "check@2",
    "finally-running": lambda e, seen: e["event"] == "unit_started" and e["key"] == "wrap",
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_killed_and_resumed_ends_as_the_uninterrupted_run(point: str, baseline: dict[str, Any],
                                                            tmp_path: Path) -> None:
    project, pb = setup(tmp_path)
    proc = popen_json(project, "run", str(pb))
    assert proc.stdout is not None
    seen: list[dict[str, Any]] = []
    for line in proc.stdout:
        event = json.loads(line)
        seen.append(event)
        if KILL_POINTS[point](event, seen):
            proc.send_signal(signal.SIGKILL)
            break
    else:
        pytest.fail(f"the run ended before kill point {point}: {[e['event'] for e in seen]}")
    proc.wait(timeout=10)
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    run_id = seen[0]["run_id"]
    if point == "plan-mid-output":  # the agent outlived its bridge
        assert pid_alive(int((tmp_path / "plan.pid").read_text()))
    with Ledger(project) as ledger:
        assert ledger.run(run_id).status == "running"  # type: ignore[union-attr]
        finished = {u.key for u in ledger.units(run_id) if u.status == "success"}
        # units the kill interrupted (started, not finished): they run again, with one more attempt
        interrupted = {u.key for u in ledger.units(run_id) if u.status in ("running", "waiting")}

    resumed = bridge(project, "resume", run_id)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    if point == "plan-mid-output":
        assert not pid_alive(int((tmp_path / "plan.pid").read_text()))
    assert marked_processes(run_id) == []

    state = end_state(project, run_id)
    assert state["status"] == baseline["status"]
    assert state["units"] == baseline["units"]
    assert state["files"] == baseline["files"]
    counts = calls(tmp_path)
    for key in finished:  # succeeded before the kill: never run again
        assert counts[key] == baseline["calls"][key], key
    for key, status in state["units"].items():
        if status == "success" and key not in interrupted:
            assert state["attempts"][key] == baseline["attempts"][key], key
            assert counts[key] == baseline["calls"][key], key
    assert_cost_is_the_sum_of_attempts(state)


def test_a_units_handoff_bytes_are_its_latest_attempts(tmp_path: Path) -> None:
    project, pb = setup(tmp_path)
    assert bridge(project, "run", str(pb)).returncode == 0
    with Ledger(project) as ledger:
        run_id = ledger.find_run("last").id
        for unit in ledger.units(run_id):
            if unit.is_loop:
                continue
            last = ledger.attempts(run_id, unit.key)[-1]
            assert unit.handoff_bytes == last.handoff_bytes, unit.key
        merge = ledger.unit(run_id, "merge")
        assert merge is not None and merge.handoff_bytes == len("a of the plan") * 3


def test_second_ctrl_c_kills_the_agents_at_once(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    pb = write_playbook(project, f"""
        stages:
          slow: {{agent: f, prompt: "FAKE: count={tmp_path}/calls.txt; pidfile={tmp_path}/slow.pid; ignore_term=1; sleep_first=1:60; message=slow done"}}
        finally:
          wrap: {{agent: f, prompt: "FAKE: count={tmp_path}/calls.txt; message=wrapped"}}
    """)
    proc = popen_json(project, "run", str(pb))
    assert proc.stdout is not None
    run_id = json.loads(proc.stdout.readline())["run_id"]
    with Ledger(project) as ledger:  # the session id comes after the agent ignores SIGTERM
        wait_for(lambda: (u := ledger.unit(run_id, "slow")) is not None and u.session_id,
                 what="the slow agent to start")
    agent = int((tmp_path / "slow.pid").read_text())
    proc.send_signal(signal.SIGINT)
    events = []
    for line in proc.stdout:
        events.append(json.loads(line))
        if events[-1]["event"] == "run_cancelling":
            break
    assert pid_alive(agent)  # SIGTERM did not stop it; the first Ctrl-C waits for it
    proc.send_signal(signal.SIGINT)
    events += [json.loads(line) for line in proc.stdout]
    proc.wait(timeout=30)
    proc.stdout.close()
    assert proc.returncode == 130
    assert [e["force"] for e in events if e["event"] == "run_cancelling"] == [False, True]
    assert events[-1]["event"] == "run_finished" and events[-1]["status"] == "cancelled"
    assert events[-1]["resumable"]
    assert not pid_alive(agent) and marked_processes(run_id) == []
    assert calls(tmp_path) == {"slow": 1}  # forced: the finally stage never started
    with Ledger(project) as ledger:
        assert ledger.run(run_id).status == "cancelled"  # type: ignore[union-attr]
        assert ledger.unit(run_id, "slow").status == "cancelled"  # type: ignore[union-attr]
        assert ledger.unit(run_id, "wrap").status == "cancelled"  # type: ignore[union-attr]
    done = bridge(project, "resume", run_id)
    assert done.returncode == 0, done.stdout + done.stderr
    assert calls(tmp_path) == {"slow": 2, "wrap": 1}


def test_a_cancel_during_a_resume_keeps_earlier_successes(tmp_path: Path) -> None:
    """b succeeded after a failed (continue_on_error); a resume re-runs a and is cancelled meanwhile:
    b stays a success and never runs again (it used to be re-gated and marked cancelled)."""
    project = make_project(tmp_path)
    body = """
        stages:
          a: {{agent: f, continue_on_error: true, prompt: "FAKE: count={tmp}/calls.txt; pidfile={tmp}/a.pid; result=error{slow}"}}
          b: {{agent: f, needs: a, prompt: "FAKE: count={tmp}/calls.txt; message=b done"}}
          c: {{agent: f, prompt: "FAKE: count={tmp}/calls.txt; result=error"}}
    """
    pb = write_playbook(project, body.format(tmp=tmp_path, slow=""))
    first = bridge(project, "run", str(pb))
    assert first.returncode == 1  # c failed
    with Ledger(project) as ledger:
        run_id = ledger.find_run("last").id
        assert ledger.unit(run_id, "b").status == "success"  # type: ignore[union-attr]
    write_playbook(project, body.format(tmp=tmp_path, slow="; sleep=60"))  # a resume reads it again
    (tmp_path / "a.pid").unlink()
    proc = popen_json(project, "resume", run_id)
    # a's agent runs again, and c (failed before, so run again too) has been started: under load c
    # may start after a, and a cancel before it would leave c unrun this time
    wait_for(lambda: (tmp_path / "a.pid").exists() and calls(tmp_path).get("c") == 2,
             what="a's agent to start again, and c's")
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 130
    with Ledger(project) as ledger:
        assert ledger.run(run_id).status == "cancelled"  # type: ignore[union-attr]
        assert ledger.unit(run_id, "a").status == "cancelled"  # type: ignore[union-attr]
        assert ledger.unit(run_id, "b").status == "success"  # type: ignore[union-attr]
    write_playbook(project, body.format(tmp=tmp_path, slow=""))
    last = bridge(project, "resume", run_id)
    assert last.returncode == 1  # c fails again
    assert calls(tmp_path) == {"a": 3, "b": 1, "c": 3}


def test_a_unit_reused_by_a_resume_keeps_the_times_it_ran_at(tmp_path: Path) -> None:
    # its row used to get the resume's time as its end: summary.md and notify showed wall time
    project = make_project(tmp_path)
    pb = write_playbook(project, """
        stages:
          a: {agent: f, prompt: "FAKE: message=a"}
          c: {agent: f, prompt: "FAKE: result=error"}
    """)
    assert bridge(project, "run", str(pb)).returncode == 1
    with Ledger(project) as ledger:
        run_id = ledger.find_run("last").id
        before = ledger.unit(run_id, "a")
    time.sleep(1.2)
    assert bridge(project, "resume", run_id).returncode == 1  # c fails again; a is reused
    with Ledger(project) as ledger:
        after = ledger.unit(run_id, "a")
    assert after.status == "success" and (after.started, after.ended) == (before.started, before.ended)
