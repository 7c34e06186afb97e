"""The run engine with real subprocesses (the fake agent CLI) in temporary projects."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.events import Status, UnitActivity, UnitStarted, UnitWaiting
from bridge.ledger import Ledger
from tests.runhelp import make_project, pid_alive, run_inproc, wait_for, write_playbook


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path)


def test_outputs_handoff_and_ledger(project: Path) -> None:
    pb = write_playbook(project, """
        stages:
          a:
            agent: f
            prompt: "FAKE: respond_first=1; write={{ shared }}/a.txt=hello; message=from a; tokens=100,20; cost=0.25; tool=Bash:ls -la"
            outputs: [a.txt]
          b:
            agent: f
            needs: a
            prompt: "FAKE: message=b saw {{ stages.a.outputs['a.txt'].text }} and {{ stages.a.final_message }}; cost=0.5"
    """)
    result, events = run_inproc(project, pb)
    assert result.status is Status.SUCCESS
    assert result.cost_usd == pytest.approx(0.75)
    assert any(isinstance(e, UnitActivity) and "ls -la" in e.text for e in events)
    with Ledger(project) as ledger:
        run = ledger.run(result.run_id)
        assert run is not None and run.status == "success" and run.cost_usd == pytest.approx(0.75)
        units = {u.key: u for u in ledger.units(result.run_id)}
        assert units["b"].final_message == "b saw hello and from a"
        assert units["a"].tokens == 120
        attempts = ledger.attempts(result.run_id, "a")
        assert len(attempts) == 1 and attempts[0].status == "success"
        assert attempts[0].argv[0].endswith("fake_agent.py") and attempts[0].session_id
        assert attempts[0].input_tokens == 100 and attempts[0].cost_usd == pytest.approx(0.25)
        assert ledger.attempts(result.run_id, "b")[0].upstream_transcript_bytes > 0
        (art,) = ledger.artifacts(result.run_id, "a")
        assert art["path"] == "a.txt" and art["size"] == 5 and len(art["sha256"]) == 64
    assert (project / ".bridge" / "runs" / result.run_id / "summary.md").exists()


def test_outputs_complete_stops_running_agent(project: Path, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    pb = write_playbook(project, f"""
        stages:
          a:
            agent: f
            prompt: "FAKE: pidfile={pidfile}; write={{{{ shared }}}}/r.json={{\\"ok\\": true}}; sleep=60"
            outputs: [r.json]
    """)
    result, _ = run_inproc(project, pb)
    assert result.status is Status.SUCCESS, result.reason
    assert "outputs complete" in result.stages["a"].units[0].reason
    assert not pid_alive(int(pidfile.read_text()))


def test_stage_env_over_profile_env_reaches_the_agent(project: Path) -> None:
    pb = project / "env.yaml"
    pb.write_text(
        "version: 1\nname: env\nagents:\n"
        "  f: {cli: claude, env: {FAKE_AGENT_DEFAULTS: 'FAKE: message=from the profile'}}\n"
        "stages:\n"
        "  plain: {agent: f, prompt: go}\n"
        "  staged: {agent: f, prompt: go, env: {FAKE_AGENT_DEFAULTS: 'FAKE: message=from the stage'}}\n")
    result, _ = run_inproc(project, pb)
    assert result.status is Status.SUCCESS, result.reason
    assert result.stages["plain"].final_message == "from the profile"
    assert result.stages["staged"].final_message == "from the stage"


def test_missing_outputs_fail_with_names(project: Path) -> None:
    pb = write_playbook(project, """
        stages:
          a:
            agent: f
            prompt: "FAKE: write={{ shared }}/one.txt=x"
            outputs: [one.txt, two.txt, three.json]
    """)
    result, _ = run_inproc(project, pb)
    assert result.status is Status.FAILURE
    reason = result.stages["a"].reason
    assert "two.txt" in reason and "three.json" in reason and "one.txt" not in reason


def test_retry_then_success(project: Path, tmp_path: Path) -> None:
    count = tmp_path / "count"
    pb = write_playbook(project, f"""
        stages:
          a:
            agent: f
            retry: {{limit: 2, backoff: 10ms}}
            prompt: "FAKE: count={count}; fail_first=1"
    """)
    result, _ = run_inproc(project, pb)
    assert result.status is Status.SUCCESS
    assert len(count.read_text().splitlines()) == 2
    with Ledger(project) as ledger:
        assert [a.status for a in ledger.attempts(result.run_id, "a")] == ["failure", "success"]


def test_rate_limit_wait_is_not_an_attempt(project: Path, tmp_path: Path) -> None:
    count = tmp_path / "count"
    pb = write_playbook(project, f"""
        stages:
          a:
            agent: f
            prompt: "FAKE: count={count}; rate_limit_first=1; reset=0.2"
    """)
    result, events = run_inproc(project, pb)  # retry.limit is 0: a counted failure would end it
    assert result.status is Status.SUCCESS, result.reason
    waits = [e for e in events if isinstance(e, UnitWaiting)]
    assert len(waits) == 1 and "usage limit" in waits[0].reason
    assert len(count.read_text().splitlines()) == 2
    # the second run of the agent is attempt 2 (its own folder), said to follow a wait, not a failure
    from bridge.ui import describe

    started = [e for e in events if isinstance(e, UnitStarted)]
    assert [(e.attempt, e.after_wait) for e in started] == [(1, False), (2, True)]
    assert "after the usage-limit wait" in (describe(started[1]) or "") and "not a retry" in (describe(started[1]) or "")
    from tests.runhelp import bridge

    shown = bridge(project, "show", result.run_id, "a").stdout
    assert "attempts  2 (1 stopped by a usage limit and run again after the wait: not failures)" in shown


def test_budget_exceeded_stops_the_run(project: Path, tmp_path: Path) -> None:
    count = tmp_path / "count"
    pb = write_playbook(project, f"""
        max_tokens: 150
        stages:
          a: {{agent: f, prompt: "FAKE: count={count}; tokens=100,0"}}
          b: {{agent: f, needs: a, prompt: "FAKE: count={count}; tokens=100,0"}}
          c: {{agent: f, needs: b, prompt: "FAKE: count={count}"}}
    """)
    result, _ = run_inproc(project, pb)
    assert result.status is Status.FAILURE
    assert "budget exceeded" in result.reason and "200 tokens > max_tokens 150" in result.reason
    assert result.stages["c"].status is Status.CANCELLED
    assert len(count.read_text().splitlines()) == 2


def test_stage_budget(project: Path) -> None:
    pb = write_playbook(project, """
        stages:
          a: {agent: f, max_cost_usd: 0.1, prompt: "FAKE: cost=0.5"}
          b: {agent: f, needs: a, prompt: "FAKE: message=hi"}
    """)
    result, _ = run_inproc(project, pb)
    a = result.stages["a"]
    assert a.status is Status.FAILURE and "max_cost_usd" in a.reason
    assert a.units[0].error is not None and a.units[0].error.value == "budget"
    assert result.stages["b"].status is Status.SKIPPED


def test_fail_fast_stops_siblings_without_leftovers(project: Path, tmp_path: Path) -> None:
    pb = write_playbook(project, f"""
        stages:
          m:
            agent: f
            matrix: {{x: [bad, s1, s2]}}
            prompt: "FAKE: pidfile={tmp_path}/{{{{ matrix.x }}}}.pid; {{% if matrix.x == 'bad' %}}pre_sleep=0.5; result=error{{% else %}}sleep=60{{% endif %}}"
    """)
    result, _ = run_inproc(project, pb)
    statuses = {u.key: u.status for u in result.stages["m"].units}
    assert statuses == {"m-bad": Status.FAILURE, "m-s1": Status.CANCELLED, "m-s2": Status.CANCELLED}
    for name in ("s1", "s2"):
        assert not pid_alive(int((tmp_path / f"{name}.pid").read_text()))


def _peak(events: list) -> int:
    """The most units running at once, from their start and finish events."""
    running, peak = 0, 0
    for e in events:
        if isinstance(e, UnitStarted):
            running += 1
            peak = max(peak, running)
        elif type(e).__name__ == "UnitFinished":
            running -= 1
    return peak


def test_matrix_max_parallel(project: Path, tmp_path: Path) -> None:
    pb = write_playbook(project, """
        stages:
          m:
            agent: f
            max_parallel: 2
            matrix: {x: [1, 2, 3, 4, 5]}
            prompt: "FAKE: sleep=0.2"
    """)
    result, events = run_inproc(project, pb)
    assert result.status is Status.SUCCESS
    assert _peak(events) == 2


def test_the_default_run_wide_limit_is_4(project: Path) -> None:
    """docs/playbooks.md and the schema say so: unset max_parallel means 4 agents at once, not unlimited."""
    from bridge.loader import load_playbook
    from bridge.runner import DEFAULT_MAX_PARALLEL, parallel_limit

    pb = write_playbook(project, """
        stages:
          m:
            agent: f
            matrix: {x: [1, 2, 3, 4, 5, 6]}
            prompt: "FAKE: sleep=1"
    """)
    assert DEFAULT_MAX_PARALLEL == 4 and parallel_limit(None, load_playbook(pb)) == 4
    result, events = run_inproc(project, pb)
    assert result.status is Status.SUCCESS
    assert _peak(events) == 4


def test_loop_until_sees_previous_iteration(project: Path) -> None:
    pb = write_playbook(project, """
        stages:
          fix:
            loop:
              max_iterations: 4
              until: "stages.verify.outputs['verdict.json'].ok"
              stages:
                impl:
                  agent: f
                  prompt: "FAKE: message=impl {{ loop.iteration }} after {{ loop.previous.verify.final_message if loop.previous else 'nothing' }}"
                verify:
                  agent: f
                  needs: impl
                  prompt: "FAKE: respond_first=1; write={{ shared }}/verdict.json={\\"ok\\": {{ 'true' if loop.iteration == 2 else 'false' }}}; message=verdict {{ loop.iteration }}"
                  outputs: [verdict.json]
          after: {agent: f, needs: fix, prompt: "FAKE: message={{ stages.verify.final_message }}"}
    """)
    result, _ = run_inproc(project, pb)
    assert result.status is Status.SUCCESS, result.reason
    assert result.stages["fix"].iterations == 2
    with Ledger(project) as ledger:
        units = {u.key: u for u in ledger.units(result.run_id)}
    assert units["impl@2"].final_message == "impl 2 after verdict 1"
    assert units["after"].final_message == "verdict 2"
    assert "impl@3" not in units


def test_finally_runs_after_failure(project: Path) -> None:
    pb = write_playbook(project, """
        stages:
          a: {agent: f, prompt: "FAKE: result=error; message=broken"}
        finally:
          report: {agent: f, prompt: "FAKE: message=a was {{ stages.a.status }}"}
    """)
    result, _ = run_inproc(project, pb)
    assert result.status is Status.FAILURE
    assert result.stages["report"].status is Status.SUCCESS
    assert result.stages["report"].units[0].final_message == "a was failure"


def test_json_result_file_written(project: Path) -> None:
    pb = write_playbook(project, """
        stages:
          a: {agent: f, prompt: "FAKE: message=ok"}
    """)
    result, _ = run_inproc(project, pb)
    data = json.loads((project / ".bridge" / "runs" / result.run_id / "stages" / "a" / "attempt-1"
                       / "result.json").read_text())
    assert data["status"] == "success" and data["final_message"] == "ok"


def test_from_reuses_earlier_stages(project: Path, tmp_path: Path) -> None:
    pb = write_playbook(project, f"""
        stages:
          a: {{agent: f, prompt: "FAKE: count={tmp_path}/a; write={{{{ shared }}}}/a.txt=A", outputs: [a.txt]}}
          b: {{agent: f, needs: a, prompt: "FAKE: count={tmp_path}/b; message=b got {{{{ stages.a.outputs['a.txt'].text }}}}"}}
    """)
    first, _ = run_inproc(project, pb)
    assert first.status is Status.SUCCESS
    second, _ = run_inproc(project, pb, from_stage="b")
    assert second.status is Status.SUCCESS, second.reason
    assert len((tmp_path / "a").read_text().splitlines()) == 1
    assert len((tmp_path / "b").read_text().splitlines()) == 2
    assert second.stages["b"].units[0].final_message == "b got A"


def test_only_reuses_a_loop_it_leaves_out(project: Path, tmp_path: Path) -> None:
    # a loop left out by --only is reused as it ended (its members' last outputs), never run again
    pb = write_playbook(project, f"""
        stages:
          fix:
            loop:
              until: "stages.verify.outputs['v.json'].status == 'pass'"
              max_iterations: 2
              stages:
                verify: {{agent: f, prompt: "FAKE: count={tmp_path}/v; write={{{{ shared }}}}/v.json={{{{ '{{' }}}}\\"status\\": \\"pass\\"{{{{ '}}' }}}}", outputs: [v.json]}}
          c: {{agent: f, needs: fix, prompt: "FAKE: count={tmp_path}/c; message=c saw {{{{ stages.verify.outputs['v.json'].status }}}}"}}
    """)
    first, _ = run_inproc(project, pb)
    assert first.status is Status.SUCCESS, first.reason
    second, _ = run_inproc(project, pb, only=("c",))
    assert second.status is Status.SUCCESS, second.reason
    assert len((tmp_path / "v").read_text().splitlines()) == 1  # the loop's member never ran again
    assert second.stages["c"].units[0].final_message == "c saw pass"


def test_a_detached_child_holding_stdout_does_not_hold_the_stage(project: Path, tmp_path: Path) -> None:
    """A CLI wrapper that leaves `setsid sleep 600 &` behind with its stdout: the stage ends when the
    agent does (its result seen, the leader gone), not when the sleeper would, and the sleeper is killed."""
    from tests.runhelp import FAKE

    wrapper = tmp_path / "wrapped-agent"
    wrapper.write_text(f'#!/bin/sh\nsetsid sleep 600 &\necho $! > {tmp_path}/sleeper.pid\nexec {FAKE} "$@"\n')
    wrapper.chmod(0o755)
    (project / ".bridge" / "clis.yaml").write_text(f"claude:\n  binary: {wrapper}\n")
    pb = write_playbook(project, """
        stages:
          a: {agent: f, prompt: "FAKE: message=done; cost=0.01"}
    """)
    result, _ = run_inproc(project, pb)
    assert result.status is Status.SUCCESS, result.reason
    sleeper = int((tmp_path / "sleeper.pid").read_text())
    wait_for(lambda: not pid_alive(sleeper), timeout=10, what="the sleeper to be gone")  # killed, maybe not yet reaped
    with Ledger(project) as ledger:
        (attempt,) = ledger.attempts(result.run_id, "a")
        assert attempt.ended_by == "exit" and attempt.exit_code == 0  # not "stopped" after a wait


def test_secrets_of_the_profile_and_of_its_args_are_masked_everywhere(project: Path) -> None:
    """A profile's env secret (in the prompt too) and a key given as `args: [--api-key, ...]`: masked
    in argv.json, prompt.md and the ledger's argv alike."""
    pb = project / "sec.yaml"
    pb.write_text(
        "version: 1\nname: sec\nagents:\n"
        "  f: {cli: claude, env: {ANTHROPIC_API_KEY: tok-from-profile-123}, args: [--api-key, sk-ant-in-args-456]}\n"
        "stages:\n"
        "  a: {agent: f, prompt: 'FAKE: message=ok\nthe key is tok-from-profile-123'}\n")
    result, _ = run_inproc(project, pb)
    assert result.status is Status.SUCCESS, result.reason
    with Ledger(project) as ledger:
        (attempt,) = ledger.attempts(result.run_id, "a")
    folder = Path(attempt.dir or "")
    written = {"ledger argv": attempt.argv_json, "argv.json": (folder / "argv.json").read_text(),
               "prompt.md": (folder / "prompt.md").read_text()}
    for where, text in written.items():
        assert "tok-from-profile-123" not in text and "sk-ant-in-args-456" not in text, where
        assert "***" in text, where
    assert "--api-key" in attempt.argv  # the flag stays, its value is masked


def test_only_and_from_reuse_only_the_same_file_with_the_same_vars(project: Path, tmp_path: Path) -> None:
    from bridge.events import RunStarted, UnitFinished

    body = f"""
        vars: {{who: C}}
        stages:
          a: {{agent: f, prompt: "FAKE: count={tmp_path}/a-{{{{ vars.who }}}}; write={{{{ shared }}}}/a.txt=A for {{{{ vars.who }}}}", outputs: [a.txt]}}
          b: {{agent: f, needs: a, prompt: "FAKE: message=b got {{{{ stages.a.outputs['a.txt'].text }}}}"}}
    """
    pb = write_playbook(project, body, name="same")
    first, _ = run_inproc(project, pb)
    assert first.status is Status.SUCCESS, first.reason
    # the same file and vars: reused, and the output names the run the result comes from
    second, events = run_inproc(project, pb, from_stage="b")
    assert second.stages["b"].final_message == "b got A for C"
    (reused,) = [e for e in events if isinstance(e, UnitFinished) and e.key == "a"]
    assert reused.reused and reused.reused_from == first.run_id
    with Ledger(project) as ledger:
        assert ledger.unit(second.run_id, "a").reason == f"reused from run {first.run_id}"  # type: ignore[union-attr]
    # other vars: nothing reused (a is skipped as not selected, and the run says why)
    third, events = run_inproc(project, pb, from_stage="b", vars={"who": "D"})
    assert third.stages["a"].status is Status.SKIPPED
    assert not any(isinstance(e, UnitFinished) and e.reused for e in events)
    (started,) = [e for e in events if isinstance(e, RunStarted)]
    assert any("no earlier run of" in w and "same --var values" in w for w in started.warnings)
    assert not (tmp_path / "a-D").exists()
    # a --var equal to its declared default is the same vars: reused
    fifth, events = run_inproc(project, pb, from_stage="b", vars={"who": "C"})
    assert fifth.stages["b"].final_message == "b got A for C"
    assert any(isinstance(e, UnitFinished) and e.key == "a" and e.reused for e in events)
    # another file that happens to have the same playbook name: nothing reused either
    other = project / "sub"
    other.mkdir()
    twin = other / "same.yaml"
    twin.write_text(pb.read_text())
    fourth, events = run_inproc(project, twin, from_stage="b")
    assert fourth.stages["a"].status is Status.SKIPPED
    assert not any(isinstance(e, UnitFinished) and e.reused for e in events)


def test_only_and_from_reject_what_they_cannot_select(project: Path) -> None:
    from bridge.errors import RunError

    pb = write_playbook(project, """
        stages:
          build: {agent: f, prompt: "FAKE: message=built"}
          fix:
            needs: build
            loop:
              max_iterations: 2
              until: "true"
              stages:
                impl: {agent: f, prompt: "FAKE: message=impl"}
        finally:
          report: {agent: f, prompt: "FAKE: message=report"}
    """)
    with pytest.raises(RunError, match=r"'impl' is a member of loop 'fix'.*--only fix"):
        run_inproc(project, pb, only=("impl",))
    with pytest.raises(RunError, match=r"'impl' is a member of loop 'fix'"):
        run_inproc(project, pb, from_stage="impl")
    with pytest.raises(RunError, match=r"no stage 'biuld' \(did you mean 'build'\?\)"):
        run_inproc(project, pb, only=("biuld",))
    with pytest.raises(RunError, match=r"'report' is a `finally` stage"):
        run_inproc(project, pb, only=("report",))
    assert not (project / ".bridge" / "runs").exists() or not any((project / ".bridge" / "runs").iterdir())
    result, _ = run_inproc(project, pb, only=("fix",))  # the loop as a whole runs its members
    assert result.status is Status.SUCCESS and result.stages["impl"].final_message == "impl"


def test_max_parallel_below_one_is_refused_before_the_run_exists(project: Path, tmp_path: Path) -> None:
    from bridge.errors import RunError
    from bridge.resume import resume_run
    from tests.runhelp import bridge

    pb = write_playbook(project, f"""
        stages:
          a: {{agent: f, prompt: "FAKE: count={tmp_path}/a; fail_first=1; message=a done"}}
    """)
    for bad in ("-3", "0"):
        refused = bridge(project, "run", str(pb), "--max-parallel", bad)
        assert refused.returncode == 2 and "--max-parallel" in refused.stderr, refused.stderr
    with pytest.raises(RunError, match="--max-parallel must be at least 1"):
        run_inproc(project, pb, max_parallel=0)  # a caller other than the CLI (watch, schedules)
    assert not (project / ".bridge" / "ledger.db").exists() or not Ledger(project).runs()
    # a run an older bridge recorded with -3: its resume uses the default limit, and says so
    failed, _ = run_inproc(project, pb)
    assert failed.status is Status.FAILURE
    with Ledger(project) as ledger:
        ledger._exec("UPDATE runs SET options_json = json_set(options_json, '$.max_parallel', -3) WHERE id = ?",
                     (failed.run_id,))
    events: list = []
    resumed = resume_run(project, failed.run_id, events.append)
    assert resumed.status is Status.SUCCESS, resumed.reason
    assert any("recorded --max-parallel -3 is not a usable limit" in w for w in events[0].warnings)


def test_a_loop_is_in_the_ledger_and_in_show_with_its_iterations(project: Path, tmp_path: Path) -> None:
    """A loop whose until never holds: its own row says so (status, reason, iterations), its members'
    rows name it, `bridge show RUN fix` lists the iterations, and the end suggests no resume (a resume
    would reuse every unit and end the same)."""
    from bridge.events import LoopIteration
    from tests.runhelp import bridge

    pb = write_playbook(project, """
        stages:
          fix:
            loop:
              max_iterations: 2
              until: "stages.impl.final_message == 'fixed'"
              stages:
                impl: {agent: f, prompt: "FAKE: message=still broken {{ loop.iteration }}; cost=0.01; sleep=0.3"}
    """)
    result, events = run_inproc(project, pb)
    assert result.status is Status.FAILURE and "until never held in 2 iterations" in result.reason
    assert not result.resumable
    rounds = [(e.iteration, e.done, e.status) for e in events if isinstance(e, LoopIteration)]
    assert rounds == [(1, False, "running"), (2, True, "failure")]
    with Ledger(project) as ledger:
        loop = ledger.unit(result.run_id, "fix")
        assert loop is not None and loop.is_loop
        assert (loop.status, loop.reason, loop.iterations) == ("failure", "until never held in 2 iterations", 2)
        assert {u.key: u.loop_id for u in ledger.units(result.run_id) if not u.is_loop} == \
            {"impl@1": "fix", "impl@2": "fix"}
        ran = ledger.attempt_time(result.run_id)
    shown = bridge(project, "show", result.run_id, "fix")
    assert shown.returncode == 0, shown.stderr
    assert "fix (loop)" in shown.stdout and "until never held in 2 iterations" in shown.stdout
    assert "iterations 2" in shown.stdout and "$0.02" in shown.stdout
    assert [line.split()[:3] for line in shown.stdout.splitlines() if line.startswith("impl@")] == \
        [["impl@1", "1", "success"], ["impl@2", "2", "success"]]
    table = bridge(project, "show", result.run_id).stdout
    (row,) = [line for line in table.splitlines() if line.startswith("fix ")]
    assert "failure" in row and "until never held" in row and "2 it." in row
    from bridge.ui import duration

    assert duration(ran["impl@1"] + ran["impl@2"]) in row  # the loop's time: its iterations'
    plain = bridge(project, "run", str(pb))
    assert plain.returncode == 1 and "until never held" in plain.stdout
    assert "bridge resume" not in plain.stdout  # nothing a resume could change


def test_a_units_duration_in_show_is_every_attempts(project: Path, tmp_path: Path) -> None:
    from bridge.ui import duration
    from tests.runhelp import bridge

    pb = write_playbook(project, f"""
        stages:
          a:
            agent: f
            retry: {{limit: 1, backoff: 0s}}
            prompt: "FAKE: count={tmp_path}/a; fail_first=1; sleep=1"
    """)
    result, _ = run_inproc(project, pb)
    assert result.status is Status.SUCCESS, result.reason
    with Ledger(project) as ledger:
        rows = ledger.attempts(result.run_id, "a")
    total = sum((a.ended or 0) - a.started for a in rows)
    assert len(rows) == 2 and duration(total) != duration((rows[-1].ended or 0) - rows[-1].started)
    (line,) = [x for x in bridge(project, "show", result.run_id).stdout.splitlines() if x.startswith("a ")]
    assert duration(total) in line.split()
