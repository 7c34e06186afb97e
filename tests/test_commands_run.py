"""`bridge run / resume / cancel / runs / show / logs` as real subprocesses, with the fake agent CLI."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from bridge.ledger import Ledger
from bridge.proctable import run_processes
from tests.runhelp import bridge, bridge_argv, make_project, pid_alive, wait_for, write_playbook


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path)


def popen(project: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.Popen(bridge_argv(*args, "--dir", str(project)), cwd=project, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def slow_chain(project: Path, tmp: Path) -> Path:
    """a (quick) -> b (sleeps 60 s on its first run only) -> c; counters per stage."""
    return write_playbook(project, f"""
        stages:
          a:
            agent: f
            prompt: "FAKE: count={tmp}/a.count; write={{{{ shared }}}}/a.txt=from-a"
            outputs: [a.txt]
          b:
            agent: f
            needs: a
            prompt: "FAKE: count={tmp}/b.count; pidfile={tmp}/b.pid; sleep_first=1:60; message=b read {{{{ stages.a.outputs['a.txt'].text }}}}"
          c:
            agent: f
            needs: b
            prompt: "FAKE: count={tmp}/c.count; message=c after {{{{ stages.b.final_message }}}}"
    """)


def test_resume_after_sigkill(project: Path, tmp_path: Path) -> None:
    pb = slow_chain(project, tmp_path)
    proc = popen(project, "run", str(pb))
    wait_for(lambda: (tmp_path / "b.pid").exists(), what="stage b's agent to start")
    leftover = int((tmp_path / "b.pid").read_text())
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert pid_alive(leftover)  # the agent outlived its bridge
    with Ledger(project) as ledger:
        run_id = ledger.find_run("last").id
        assert ledger.run(run_id).status == "running"  # type: ignore[union-attr]
    listed = bridge(project, "runs")
    assert "interrupted" in listed.stdout

    done = bridge(project, "resume", run_id)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not pid_alive(leftover)
    assert len(lines(tmp_path / "a.count")) == 1  # succeeded stages never run again
    assert len(lines(tmp_path / "b.count")) == 2
    assert len(lines(tmp_path / "c.count")) == 1
    with Ledger(project) as ledger:
        assert ledger.run(run_id).status == "success"  # type: ignore[union-attr]
        assert ledger.unit(run_id, "c").final_message == "c after b read from-a"  # type: ignore[union-attr]
        assert [a.status for a in ledger.attempts(run_id, "b")] == ["interrupted", "success"]


def test_cancel_then_resume(project: Path, tmp_path: Path) -> None:
    pb = slow_chain(project, tmp_path)
    proc = popen(project, "run", str(pb))
    wait_for(lambda: (tmp_path / "b.pid").exists(), what="stage b's agent to start")
    agent = int((tmp_path / "b.pid").read_text())
    cancelled = bridge(project, "cancel", "last")
    assert cancelled.returncode == 0, cancelled.stderr
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "bridge resume" in out
    assert not pid_alive(agent)
    with Ledger(project) as ledger:
        run = ledger.find_run("last")
        assert run.status == "cancelled"
        assert ledger.unit(run.id, "b").status == "cancelled"  # type: ignore[union-attr]
        assert ledger.unit(run.id, "c").status == "cancelled"  # type: ignore[union-attr]
    assert bridge(project, "resume", run.id).returncode == 0
    assert len(lines(tmp_path / "a.count")) == 1 and len(lines(tmp_path / "c.count")) == 1


def test_sigterm_to_bridge_stops_agents_and_keeps_the_run_resumable(project: Path, tmp_path: Path) -> None:
    pb = slow_chain(project, tmp_path)
    proc = popen(project, "run", str(pb))
    wait_for(lambda: (tmp_path / "b.pid").exists(), what="stage b's agent to start")
    agent = int((tmp_path / "b.pid").read_text())
    with Ledger(project) as ledger:
        run_id = ledger.find_run("last").id

        def recorded() -> int | None:  # the group is in the ledger while the agent runs
            rows = ledger.attempts(run_id, "b")
            return rows[-1].pgid if rows and rows[-1].status == "running" else None

        wait_for(recorded, what="stage b's process group in the ledger")
        assert recorded() == os.getpgid(agent)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, out
    assert "bridge resume" in out
    assert not pid_alive(agent) and run_processes(run_id) == []
    with Ledger(project) as ledger:
        assert ledger.run(run_id).status == "cancelled"  # type: ignore[union-attr]
        assert ledger.unit(run_id, "b").status == "cancelled"  # type: ignore[union-attr]
    assert bridge(project, "resume", run_id).returncode == 0
    assert len(lines(tmp_path / "a.count")) == 1 and len(lines(tmp_path / "b.count")) == 2


def test_cancel_when_bridge_is_gone(project: Path, tmp_path: Path) -> None:
    pb = slow_chain(project, tmp_path)
    proc = popen(project, "run", str(pb))
    wait_for(lambda: (tmp_path / "b.pid").exists(), what="stage b's agent to start")
    agent = int((tmp_path / "b.pid").read_text())
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    result = bridge(project, "cancel", "last")
    assert result.returncode == 0 and "marked cancelled" in result.stdout
    assert not pid_alive(agent)


def test_two_runs_of_one_playbook_at_once(project: Path) -> None:
    pb = write_playbook(project, """
        stages:
          m:
            agent: f
            matrix: {x: [1, 2, 3]}
            prompt: "FAKE: write={{ shared }}/out-{{ matrix.x }}.txt={{ run.id }}; sleep=0.3"
            outputs: ["out-{{ matrix.x }}.txt"]
          after: {agent: f, needs: m, prompt: "FAKE: message={{ stages.m.items | length }} items"}
    """)
    procs = [popen(project, "run", str(pb), "--json") for _ in range(2)]
    for p in procs:
        p.communicate(timeout=60)
        assert p.returncode == 0
    with Ledger(project) as ledger:
        runs = ledger.runs()
        assert len(runs) == 2 and {r.status for r in runs} == {"success"}
        for run in runs:
            assert {u.key for u in ledger.units(run.id)} == {"m-1", "m-2", "m-3", "after"}
            shared = project / ".bridge" / "runs" / run.id / "shared"
            assert (shared / "out-2.txt").read_text() == run.id
            assert ledger.unit(run.id, "after").final_message == "3 items"  # type: ignore[union-attr]


def test_run_id_chosen_by_the_caller(project: Path) -> None:
    """The hidden --run-id (the scheduler's and `bridge watch`'s): used as given, safe, never reused."""
    pb = write_playbook(project, """
        stages:
          a: {agent: f, prompt: "FAKE: write={{ shared }}/id.txt={{ run.id }}", outputs: [id.txt]}
    """)
    done = bridge(project, "run", str(pb), "--run-id", "nightly-0001")
    assert done.returncode == 0, done.stdout + done.stderr
    with Ledger(project) as ledger:
        assert [r.id for r in ledger.runs()] == ["nightly-0001"]
    assert (project / ".bridge" / "runs" / "nightly-0001" / "shared" / "id.txt").read_text() == "nightly-0001"
    again = bridge(project, "run", str(pb), "--run-id", "nightly-0001")
    assert again.returncode == 1
    assert "run nightly-0001 already exists" in again.stderr and "bridge resume nightly-0001" in again.stderr
    for bad in ("../escape", "a/b", "-x", "last", ""):
        refused = bridge(project, "run", str(pb), "--run-id", bad)
        assert refused.returncode == 1 and "is not a usable run id" in refused.stderr, (bad, refused.stderr)
    with Ledger(project) as ledger:
        assert [r.id for r in ledger.runs()] == ["nightly-0001"]  # nothing else was started
    assert sorted(p.name for p in (project / ".bridge" / "runs").iterdir()) == ["nightly-0001"]
    assert "--run-id" not in bridge(project, "run", "--help").stdout  # hidden: for bridge's own callers


def test_json_output(project: Path) -> None:
    pb = write_playbook(project, """
        stages:
          a: {agent: f, prompt: "FAKE: message=hi; tool=Bash:echo"}
          b: {agent: f, needs: a, prompt: "FAKE: message=ho"}
    """)
    result = bridge(project, "run", str(pb), "--json")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    names = [e["event"] for e in events]
    assert names[0] == "run_started" and names[-1] == "run_finished"
    assert names.count("unit_started") == 2 and names.count("unit_finished") == 2
    assert events[-1]["status"] == "success"
    assert any(e["event"] == "unit_activity" and e["text"] == "echo" for e in events)


def test_plain_output_and_failure_exit_code(project: Path) -> None:
    pb = write_playbook(project, """
        stages:
          a: {agent: f, prompt: "FAKE: result=error; message=it broke"}
    """)
    result = bridge(project, "run", str(pb))
    assert result.returncode == 1
    out = result.stdout.splitlines()
    assert all(re.match(r"^(\d\d:\d\d:\d\d |  )", line) for line in out), out
    assert any("✗ a failure" in line and "it broke" in line for line in out)
    assert "\x1b[" not in result.stdout


def test_runs_show_logs(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_API_KEY", "supersecret-123456")
    pb = write_playbook(project, """
        stages:
          a: {agent: f, prompt: "FAKE: respond_first=1; message=the key is supersecret-123456; cost=0.5; write={{ shared }}/r.md=report", outputs: [r.md]}
    """)
    assert bridge(project, "run", str(pb)).returncode == 0
    runs = bridge(project, "runs", columns=40)
    assert runs.returncode == 0 and "success" in runs.stdout and "$0.50" in runs.stdout
    # piped: one line per run even on a narrow terminal's width, nothing folded, no trailing blanks
    row = [line for line in runs.stdout.splitlines() if "success" in line]
    assert len(row) == 1 and "$0.50" in row[0] and " pb " in row[0]
    assert all(line == line.rstrip() for line in runs.stdout.splitlines())
    with Ledger(project) as ledger:
        run_id = ledger.find_run("last").id
    shown = bridge(project, "show", run_id[:10])
    assert shown.returncode == 0 and "a " in shown.stdout and run_id in shown.stdout
    stage = bridge(project, "show", "last", "a")
    assert "--- prompt ---" in stage.stdout and "r.md" in stage.stdout and "stdout.jsonl" in stage.stdout
    logs = bridge(project, "logs", "last", "a")
    assert logs.returncode == 0 and '"type": "result"' in logs.stdout
    assert "supersecret-123456" not in logs.stdout and "***" in logs.stdout
    missing = bridge(project, "show", "last", "nope")
    assert missing.returncode == 1 and "no stage 'nope'" in missing.stderr


def test_logs_follow(project: Path, tmp_path: Path) -> None:
    pb = write_playbook(project, f"""
        stages:
          a: {{agent: f, prompt: "FAKE: pidfile={tmp_path}/a.pid; tool=Bash:step-one; sleep=1.5; message=finished"}}
    """)
    proc = popen(project, "run", str(pb))
    wait_for(lambda: (tmp_path / "a.pid").exists(), what="the agent to start")
    follow = bridge(project, "logs", "last", "a", "--follow")
    assert follow.returncode == 0
    assert "step-one" in follow.stdout and "finished" in follow.stdout
    proc.communicate(timeout=30)


def test_resume_checks_the_clis_of_the_stages_left_to_run(project: Path, tmp_path: Path) -> None:
    """A CLI removed between run and resume: one error naming it (and not the CLI of a stage that
    already succeeded), exit 1, nothing touched; once it is back, the resume runs."""
    import shutil

    bins = tmp_path / "bins"
    bins.mkdir()
    echo = tmp_path / "echo-agent"
    echo.write_text('#!/bin/sh\necho "$1"\n')
    echo.chmod(0o755)
    for name in ("agent-done", "agent-left"):
        shutil.copy2(echo, bins / name)
    pb = project / "pb.yaml"
    pb.write_text(textwrap.dedent(f"""\
        version: 1
        name: pb
        agents:
          f: {{cli: claude}}
          d: {{cli: command, command: [{bins / 'agent-done'}, "{{{{ prompt }}}}"]}}
          l: {{cli: command, command: [{bins / 'agent-left'}, "{{{{ prompt }}}}"]}}
        stages:
          a: {{agent: d, prompt: "a done"}}
          b: {{agent: f, needs: a, prompt: "FAKE: count={tmp_path}/b.count; fail_first=1"}}
          c: {{agent: l, needs: b, prompt: "c done"}}
    """))
    first = bridge(project, "run", str(pb))
    assert first.returncode == 1, first.stdout + first.stderr
    with Ledger(project) as ledger:
        run = ledger.find_run("last")
        assert run.status == "failure"
        attempts = len(ledger.attempts(run.id))
    (bins / "agent-done").unlink()  # its stage succeeded: a resume does not need it
    (bins / "agent-left").unlink()
    refused = bridge(project, "resume", run.id)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert refused.stderr.count("agent-left") == 1 and "stage c" in refused.stderr, refused.stderr
    assert "agent-done" not in refused.stderr and f"bridge resume {run.id}" in refused.stderr
    with Ledger(project) as ledger:
        assert ledger.run(run.id).status == "failure"  # type: ignore[union-attr]
        assert len(ledger.attempts(run.id)) == attempts  # nothing ran
    assert len(lines(tmp_path / "b.count")) == 1
    shutil.copy2(echo, bins / "agent-left")
    done = bridge(project, "resume", run.id)
    assert done.returncode == 0, done.stdout + done.stderr
    with Ledger(project) as ledger:
        assert ledger.run(run.id).status == "success"  # type: ignore[union-attr]
        assert ledger.unit(run.id, "c").final_message == "c done"  # type: ignore[union-attr]
        assert [a.status for a in ledger.attempts(run.id, "b")][-1] == "success"


def test_logs_follow_waits_for_the_stage_and_follows_every_matrix_item(project: Path, tmp_path: Path) -> None:
    pb = write_playbook(project, f"""
        stages:
          a: {{agent: f, prompt: "FAKE: pidfile={tmp_path}/a.pid; until={tmp_path}/go; message=a"}}
          m:
            agent: f
            needs: a
            matrix: {{x: [one, two]}}
            prompt: "FAKE: tool=Bash:item-{{{{ matrix.x }}}}; sleep=0.3; message=m {{{{ matrix.x }}}} finished"
          z: {{agent: f, needs: m, prompt: "FAKE: sleep=2; message=z"}}
    """)
    proc = popen(project, "run", str(pb))
    try:
        wait_for(lambda: (tmp_path / "a.pid").exists(), what="stage a's agent to start")
        typo = bridge(project, "logs", "last", "nope", "--follow", timeout=10)
        assert typo.returncode == 1 and "no stage 'nope'" in typo.stderr  # said at once, not waited for
        with Ledger(project) as ledger:
            run_id = ledger.find_run("last").id
            assert ledger.unit(run_id, "m-one") is None  # m has not started: follow waits for it
        follower = subprocess.Popen(bridge_argv("logs", run_id, "m", "--follow", "--dir", str(project)),
                                    cwd=project, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    env={**os.environ, "NO_COLOR": "1"})
        (tmp_path / "go").touch()  # stage a ends only now: m starts while follow waits
        stdout, stderr = follower.communicate(timeout=30)
        follow = subprocess.CompletedProcess(follower.args, follower.returncode, stdout, stderr)
        assert follow.returncode == 0, follow.stderr
        with Ledger(project) as ledger:
            assert ledger.run(run_id).status == "running"  # type: ignore[union-attr]  # ended with m, before z
        out = follow.stdout.splitlines()
        for key in ("m-one", "m-two"):
            assert f"==> {key} attempt 1 <==" in out
            mine = [line for line in out if line.startswith(f"[{key}] ")]
            assert any(f"item-{key[2:]}" in line for line in mine), out
            assert any(f"m {key[2:]} finished" in line for line in mine), out
        assert all(line.startswith(("[m-one] ", "[m-two] ", "==> ")) for line in out), out
    finally:
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_logs_of_a_terminal_session_show_the_screen_not_escape_sequences(project: Path) -> None:
    """An interactive attempt's stdout is a terminal's output: `bridge logs` shows what the screen
    read ("● Wrote the report."), as it was drawn with --follow, never raw escape sequences."""
    fake = Path(__file__).parent / "fakes" / "fake_interactive"
    with (project / ".bridge" / "clis.yaml").open("a") as fh:
        fh.write(textwrap.dedent(f"""
            tui:
              adapter: command
              binary: {fake}
              command: [{fake}, "{{{{ shared }}}}/out.txt"]
              interactive:
                rules: [{{expect: 'Do you trust this folder', respond: "y\\r"}}]
                done: TASK COMPLETE
                exit: "/exit\\r"
        """))
    pb = project / "tui.yaml"
    pb.write_text(textwrap.dedent("""\
        version: 1
        name: tui
        agents:
          t: {cli: tui, interactive: true}
        stages:
          a: {agent: t, prompt: "go"}
    """))
    done = bridge(project, "run", str(pb))
    assert done.returncode == 0, done.stdout + done.stderr
    raw = next((project / ".bridge" / "runs").rglob("stdout.jsonl")).read_text()
    assert "\x1b[" in raw  # what the fake TUI wrote: cursor moves
    for args in ((), ("--follow",)):
        logs = bridge(project, "logs", "last", "a", *args)
        assert logs.returncode == 0, logs.stderr
        assert "● Wrote the report." in logs.stdout and "TASK COMPLETE" in logs.stdout, logs.stdout
        assert "\x1b" not in logs.stdout and "\r" not in logs.stdout


def test_a_finally_stage_runs_again_in_a_resumed_session(project: Path, tmp_path: Path) -> None:
    """Interrupted while `one` runs, `report` (finally) sees one=cancelled; the resume must run it
    again, so the run ends with a report of the final state, not the stale one."""
    pb = write_playbook(project, f"""
        stages:
          one:
            agent: f
            prompt: "FAKE: count={tmp_path}/one.count; pidfile={tmp_path}/one.pid; sleep_first=1:60"
        finally:
          report:
            agent: f
            prompt: "FAKE: count={tmp_path}/report.count; respond_first=1; write={{{{ shared }}}}/report.txt=one={{{{ stages.one.status }}}}"
            outputs: [report.txt]
    """)
    proc = popen(project, "run", str(pb))
    wait_for(lambda: (tmp_path / "one.pid").exists(), what="stage one's agent to start")
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, out
    with Ledger(project) as ledger:
        run_id = ledger.find_run("last").id
    report = project / ".bridge" / "runs" / run_id / "shared" / "report.txt"
    assert report.read_text().strip() == "one=cancelled"
    done = bridge(project, "resume", run_id)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "report success (reused" not in done.stdout
    assert report.read_text().strip() == "one=success"
    assert len(lines(tmp_path / "report.count")) == 2
    with Ledger(project) as ledger:
        assert [a.n for a in ledger.attempts(run_id, "report")] == [1, 2]  # numbering goes on
        assert ledger.unit(run_id, "report").status == "success"  # type: ignore[union-attr]


def test_a_killed_run_cancelled_later_keeps_its_cost_and_its_end(project: Path, tmp_path: Path) -> None:
    """SIGKILLed after a stage that cost something, never resumed, then `bridge cancel`: the run's
    totals are what its attempts recorded (not 0), and it ended when it last recorded something."""
    pb = write_playbook(project, f"""
        stages:
          a: {{agent: f, prompt: "FAKE: respond_first=1; tokens=100,20; cost=0.25"}}
          b: {{agent: f, needs: a, prompt: "FAKE: pidfile={tmp_path}/b.pid; sleep=60"}}
    """)
    proc = popen(project, "run", str(pb))
    wait_for(lambda: (tmp_path / "b.pid").exists(), what="stage b's agent to start")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    killed_at = time.time()
    with Ledger(project) as ledger:
        run_id = ledger.find_run("last").id
        shown = ledger.run(run_id)  # read while interrupted: the sums already
        assert shown is not None and shown.tokens == 120 and shown.cost_usd == pytest.approx(0.25)
    assert bridge(project, "cancel", run_id).returncode == 0
    with Ledger(project) as ledger:
        run = ledger.run(run_id)
        assert run is not None and run.status == "cancelled"
        assert run.tokens == 120 and run.cost_usd == pytest.approx(0.25)
        assert run.ended is not None and run.started < run.ended <= killed_at
        stored = ledger._all("SELECT tokens, cost_usd FROM runs WHERE id = ?", (run_id,))[0]
        assert (stored["tokens"], stored["cost_usd"]) == (120, pytest.approx(0.25))  # the row itself too
    listed = bridge(project, "runs")
    assert "$0.25" in listed.stdout


def test_an_interrupted_loop_iteration_is_cancelled_not_done(project: Path, tmp_path: Path) -> None:
    pb = write_playbook(project, f"""
        stages:
          fix:
            loop:
              max_iterations: 3
              until: "true"
              stages:
                impl: {{agent: f, prompt: "FAKE: pidfile={tmp_path}/impl.pid; sleep_first=1:60; count={tmp_path}/impl.count"}}
    """)
    proc = popen(project, "run", str(pb))
    wait_for(lambda: (tmp_path / "impl.pid").exists(), what="impl's agent to start")
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, out
    assert "fix iteration 1 cancelled" in out and "iteration 1 done" not in out
    assert "continue with: bridge resume" in out  # a resume runs the cancelled iteration again
    with Ledger(project) as ledger:
        run_id = ledger.find_run("last").id
        loop = ledger.unit(run_id, "fix")
        assert loop is not None and loop.status == "cancelled" and loop.iterations == 1
    done = bridge(project, "resume", run_id)
    assert done.returncode == 0 and "fix iteration 1 done: until held" in done.stdout, done.stdout
    with Ledger(project) as ledger:
        loop = ledger.unit(run_id, "fix")
        assert loop is not None and (loop.status, loop.iterations) == ("success", 1)


def test_logs_of_a_loop_are_its_members_logs(project: Path) -> None:
    # the loop's own ledger row has no attempts: `bridge logs RUN <loop>` shows its members' output
    pb = write_playbook(project, """
        stages:
          fix:
            loop:
              until: "loop.iteration >= 2"
              max_iterations: 2
              stages:
                impl: {agent: f, prompt: "FAKE: message=impl round {{ loop.iteration }}"}
    """)
    assert bridge(project, "run", str(pb)).returncode == 0
    logs = bridge(project, "logs", "last", "fix")
    assert logs.returncode == 0 and "impl round 1" in logs.stdout and "impl round 2" in logs.stdout
    shown = bridge(project, "show", "last", "fix")
    assert shown.returncode == 0 and "iteration" in shown.stdout
