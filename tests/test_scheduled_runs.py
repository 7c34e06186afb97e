"""The scheduler firing REAL child `bridge run`s: a command-agent playbook, and (e2e) the shipped
nightly-verify rehearsed with the real codex on a fresh copy of the demo sample."""

from __future__ import annotations

import os
import signal
import textwrap
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bridge.demo import build_sample
from bridge.ledger import Ledger
from bridge.proctable import run_processes
from bridge.scheduler import Scheduler
from bridge.workspace import RunLayout

PLAYBOOKS = Path(__file__).resolve().parent.parent / "playbooks"

TICK = textwrap.dedent("""\
    version: 1
    name: tick
    vars: {word: unscheduled}
    agents:
      echo: {cli: command, command: [echo, "{{ prompt }}"]}
    stages:
      say:
        agent: echo
        prompt: "{{ vars.word }} run {{ run.id }}"
        outputs: [{path: tick/said.txt, from: final_message}]
        timeout: 30s
    schedule:
      - {cron: "* * * * *", vars: {word: scheduled}}
""")


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=ZoneInfo("UTC")).timestamp()


class Clock:
    """The scheduler's clock, moved by the test (the child runs in real time)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def run_until_idle(sched: Scheduler, timeout: float) -> None:
    """Tick (the clock stays put: no new fire) until the started child has ended and been reaped;
    on a timeout, kill the child's group so nothing outlives the test."""
    deadline = time.monotonic() + timeout
    try:
        while sched.active:
            assert time.monotonic() < deadline, f"the scheduled run did not end within {timeout:g}s"
            sched.tick()
            time.sleep(0.05)
    finally:
        for pid in sched.active.values():
            os.killpg(pid, signal.SIGKILL)


def test_a_fire_starts_a_real_bridge_run_that_succeeds(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    (project / ".bridge").mkdir(parents=True)
    (project / "playbooks").mkdir()
    (project / "playbooks" / "tick.yaml").write_text(TICK)
    clock, events = Clock(ts(2024, 5, 1, 10, 0, 30)), []  # type: ignore[var-annotated]
    with Ledger(project) as ledger:
        sched = Scheduler(project / "playbooks", project, ledger, clock=clock, on_event=events.append)
        sched.tick()
        assert sched.active == {}  # 10:00:30: nothing due yet
        clock.now = ts(2024, 5, 1, 10, 1, 0)
        sched.tick()
        assert list(sched.active) == ["tick"]  # the 10:01 fire started a child `bridge run`
        run_until_idle(sched, 60)
        fires = [(f["scheduled_for"], f["action"], f["run_id"]) for f in ledger.fires("tick")]
        [run] = ledger.runs()
    assert fires == [(ts(2024, 5, 1, 10, 1), "started", run.id)]  # the fire names the run it started
    assert (run.playbook, run.status) == ("tick", "success"), run.reason
    assert run.vars == {"word": "scheduled"}  # the schedule's vars reached the run as --var
    said = RunLayout(project, run.id).shared / "tick" / "said.txt"
    assert said.read_text().strip() == f"scheduled run {run.id}"
    ended = [e for e in events if e.kind == "ended"]
    assert len(ended) == 1 and "exit code 0" in ended[0].message
    [log] = (project / ".bridge" / "logs" / "schedule").iterdir()
    assert log.name == "tick-20240501T100100.log"
    assert run_processes(run.id) == []


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_scheduled_nightly_verify_rehearsed(tmp_path: Path, real_clis: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """`bridge schedule run playbooks/ --rehearse` at 03:00: nightly-verify runs on the sample (2 of
    its 4 tests fail), Codex triages, the run fails, and its notify command writes its line."""
    monkeypatch.setenv("BRIDGE_CLI_PATH", str(real_clis))  # found the way bridge finds any CLI
    repo = build_sample(tmp_path / "repo")
    clock, events = Clock(ts(2024, 5, 1, 2, 59, 50)), []  # type: list[SchedulerEvent]
    with Ledger(repo) as ledger:
        sched = Scheduler(PLAYBOOKS, repo, ledger, clock=clock, on_event=events.append, rehearse=True)
        sched.tick()
        loaded = {e.playbook for e in events if e.kind == "loaded"}
        assert "nightly-verify" in loaded and not [e for e in events if e.kind == "broken"]
        assert sched.active == {}
        clock.now = ts(2024, 5, 1, 3, 0, 0)
        sched.tick()
        assert list(sched.active) == ["nightly-verify"]
        run_until_idle(sched, 200)
        fires = [(f["scheduled_for"], f["action"]) for f in ledger.fires("nightly-verify")]
        [run] = ledger.runs()
    assert fires == [(ts(2024, 5, 1, 3), "started")]
    log = next((repo / ".bridge" / "logs" / "schedule").iterdir()).read_text()
    assert (run.playbook, run.status) == ("nightly-verify", "failure"), log[-3000:]
    assert run.options.get("rehearse") is True, run.options
    triage = (RunLayout(repo, run.id).shared / "nightly" / "triage.md").read_text()
    assert "test_find_does_not_inject" in triage and "test_total_value_counts_quantity" in triage
    line = (repo / ".bridge" / "nightly-verify.log").read_text().split()
    assert line[:2] == [run.id, "failure"]  # the notify command ran
    assert run_processes(run.id) == []


def test_rehearse_reaches_the_child_argv(tmp_path: Path) -> None:
    from bridge.scheduled_run import run_argv

    argv = run_argv(tmp_path / "pb.yaml", {"target": "main"}, rehearse=True)
    assert argv[-3:] == ["--var", "target=main", "--rehearse"]
    assert "--rehearse" not in run_argv(tmp_path / "pb.yaml", {})
    assert run_argv(tmp_path / "pb.yaml", {}, run_id="20240501-100100-ab12")[-2:] == \
        ["--run-id", "20240501-100100-ab12"]


# ---- the shipped playbooks/ folder ------------------------------------------------------------

def test_schedule_list_of_the_shipped_folder(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Only top-level files are playbooks: the rehearsal scripts in playbooks/rehearsals/ are not."""
    from bridge.commands import schedule_list
    from bridge.scheduler import playbook_files

    assert all(p.parent == PLAYBOOKS for p in playbook_files(PLAYBOOKS))
    assert "nightly-verify.yaml" in {p.name for p in playbook_files(PLAYBOOKS)}
    rows, broken = schedule_list.rows(PLAYBOOKS, 2, datetime(2024, 3, 29, 12, tzinfo=ZoneInfo("UTC")))
    assert broken == 0
    assert rows == [["nightly-verify", "0 3 * * *", "UTC", "skip", "last", "-",
                     "2024-03-30 03:00 UTC\n2024-03-31 03:00 UTC"]]
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")
    assert schedule_list.run(PLAYBOOKS, 3) == 0
    out = capsys.readouterr().out
    assert "nightly-verify" in out and out.count("03:00 UTC") == 3 and "error" not in out


@pytest.mark.parametrize("kind", ["systemd", "crontab"])
def test_schedule_export_of_the_shipped_folder(kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    from bridge.commands import schedule_export

    assert schedule_export.run(directory=PLAYBOOKS, **{kind: True}) == 0
    captured = capsys.readouterr()
    assert f"{PLAYBOOKS / 'nightly-verify.yaml'}" in captured.out and "rehearsals" not in captured.out
    assert ("OnCalendar=*-*-* 03:00:00 UTC" if kind == "systemd" else "\n0 3 * * * cd ") in captured.out
    assert captured.err == ""


# ---- a run that cannot start is still a run ----------------------------------------------------

GHOST = textwrap.dedent("""\
    version: 1
    name: ghost
    vars: {word: hi}
    agents:
      ghost: {cli: command, command: [bridge-test-no-such-cli, "{{ prompt }}"]}
    stages:
      s: {agent: ghost, prompt: "{{ vars.word }}"}
    schedule:
      - {cron: "* * * * *"}
    notify:
      - on: failure
        command: [sh, -c, 'echo "$BRIDGE_RUN_ID $BRIDGE_RUN_STATUS" > notified.txt']
      - on: success
        command: [sh, -c, 'echo wrong > notified.txt']
""")


def test_a_fire_whose_cli_is_missing_is_a_failed_run_notified(tmp_path: Path) -> None:
    """The CLI is not on the PATH the run gets (cron's, say): the fire's run is recorded failed with
    the reason, `bridge show` finds it, summary.md says why, `notify: on: failure` fires, and the
    scheduler's line carries the reason."""
    from tests.runhelp import bridge

    project = tmp_path / "proj"
    (project / ".bridge").mkdir(parents=True)
    (project / "playbooks").mkdir()
    (project / "playbooks" / "ghost.yaml").write_text(GHOST)
    clock, events = Clock(ts(2024, 5, 1, 10, 0, 30)), []  # type: ignore[var-annotated]
    with Ledger(project) as ledger:
        sched = Scheduler(project / "playbooks", project, ledger, clock=clock, on_event=events.append)
        sched.tick()
        clock.now = ts(2024, 5, 1, 10, 1, 0)
        sched.tick()
        run_until_idle(sched, 60)
        [fire] = ledger.fires("ghost")
        run = ledger.run(fire["run_id"])
    assert run is not None, "the fire's run id names no run"
    assert run.status == "failure" and "bridge-test-no-such-cli" in run.reason
    assert run.reason.startswith("the run could not start: ")
    [ended] = [e for e in events if e.kind == "ended"]
    assert "exit code 1: failure: the run could not start:" in ended.message
    assert "bridge-test-no-such-cli" in ended.message and "\n" not in ended.message
    shown = bridge(project, "show", run.id)
    assert shown.returncode == 0 and "failure" in shown.stdout and "bridge-test-no-such-cli" in shown.stdout
    summary = (project / ".bridge" / "runs" / run.id / "summary.md").read_text()
    assert summary.startswith("# ghost: failure") and "bridge-test-no-such-cli" in summary.split("## Errors")[1]
    assert (project / "notified.txt").read_text().split() == [run.id, "failure"]


def test_a_bad_var_with_a_chosen_run_id_is_recorded(tmp_path: Path) -> None:
    from tests.runhelp import bridge

    project = tmp_path / "proj"
    (project / ".bridge").mkdir(parents=True)
    (project / "pb.yaml").write_text(TICK)
    plain = bridge(project, "run", "pb.yaml", "--var", "nope=1")  # by hand, no id promised: only the error
    assert plain.returncode == 1 and "nope" in plain.stderr
    with Ledger(project) as ledger:
        assert ledger.runs() == []
    chosen = bridge(project, "run", "pb.yaml", "--var", "nope=1", "--run-id", "20240501-100100-beef")
    assert chosen.returncode == 1 and "nope" in chosen.stderr
    with Ledger(project) as ledger:
        run = ledger.run("20240501-100100-beef")
    assert run is not None and run.status == "failure" and "nope" in run.reason
    assert run.playbook == "tick" and run.vars == {"nope": "1"}
    assert (project / ".bridge" / "runs" / run.id / "summary.md").is_file()
    again = bridge(project, "run", "pb.yaml", "--run-id", "20240501-100100-beef")  # the id is taken now
    assert again.returncode == 1 and "already exists" in again.stderr


def test_sigterm_says_what_the_scheduler_waits_for(tmp_path: Path) -> None:
    """`bridge schedule run` on SIGTERM: the first line says at once what it waits for and how long; a
    second SIGTERM stops the run (cancelled, resumable) and the scheduler exits 0."""
    import subprocess
    import sys

    project = tmp_path / "proj"
    (project / ".bridge").mkdir(parents=True)
    (project / "playbooks").mkdir()
    (project / "playbooks" / "slow.yaml").write_text(TICK.replace("name: tick", "name: slow").replace(
        "[echo, ", "[sh, -c, ").replace('"{{ vars.word }} run {{ run.id }}"', '"touch started; sleep 60"').replace(
        '{cron: "* * * * *", ', '{cron: "* * * * *", catch_up: last, '))
    with Ledger(project) as ledger:  # the last fire 3 minutes ago: catch_up: last starts a run at once
        ledger.record_fire("slow", time.time() - 180, time.time() - 180, "started", None)
    env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(PLAYBOOKS.parent)}
    proc = subprocess.Popen([sys.executable, "-m", "bridge", "schedule", "run", "--dir", str(project)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (project / "started").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.stdout is not None
        t0 = time.monotonic()
        line = ""
        while "stopping:" not in line:
            line = proc.stdout.readline()
            assert line, "the scheduler ended without saying it was stopping"
        assert time.monotonic() - t0 < 5
        assert "stopping: waiting up to 30s for 1 running run (slow)" in line
        proc.send_signal(signal.SIGTERM)  # a second one: stop it now
        rest = proc.communicate(timeout=60)[0]
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, rest
    assert "SIGINT" in rest and "scheduler stopped" in rest
    with Ledger(project) as ledger:
        [run] = ledger.runs()
    assert run.status == "cancelled"
