"""Fires started by the OS scheduler: the exported crontab line run as cron runs it, on a new project, and
`bridge schedule fire` under each overlap policy (the playbook lock, its holder, stopping it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from bridge.commands import schedule_export
from bridge.ledger import Ledger
from bridge.scheduled_run import LockHeld, fire_lock, lock_path, playbook_lock, read_holder, write_holder

REPO = Path(__file__).resolve().parent.parent


def playbook(overlap: str = "skip", command: str = "echo said {{ vars.word }}") -> str:
    return textwrap.dedent(f"""\
        version: 1
        name: tick
        vars: {{word: unscheduled}}
        agents:
          sh: {{cli: command, command: [sh, -c, "{{{{ prompt }}}}"]}}
        stages:
          say:
            agent: sh
            prompt: '{command}'
            outputs: [{{path: tick/said.txt, from: final_message}}]
            timeout: 60s
        schedule:
          - {{cron: "* * * * *", overlap: {overlap}, vars: {{word: scheduled}}}}
        """)


def new_project(tmp_path: Path, text: str) -> Path:
    """A project as a user has it before bridge ever ran there: a git repo, no .bridge/ at all."""
    project = tmp_path / "proj"
    (project / "playbooks").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    (project / "playbooks" / "tick.yaml").write_text(text)
    return project


def cron_command(project: Path, capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    """(the PATH line's value, the command of the exported line without its five time fields)."""
    assert schedule_export.run(directory=project / "playbooks", crontab=True) == 0
    lines = capsys.readouterr().out.splitlines()
    path = next(line for line in lines if line.startswith("PATH=")).removeprefix("PATH=")
    line = next(line for line in lines if line.startswith("* * * * * "))
    return path, line.removeprefix("* * * * * ")


def test_exported_crontab_line_runs_on_a_new_project(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = new_project(tmp_path, playbook())
    path, command = cron_command(project, capsys)
    assert "flock" not in command and "schedule fire" in command
    # as cron runs it: /bin/sh, the crontab's PATH, almost no environment, somewhere else as cwd
    done = subprocess.run(["/bin/sh", "-c", command], cwd="/", env={"PATH": path, "HOME": str(tmp_path)},
                          capture_output=True, text=True, timeout=120)
    log = project / ".bridge" / "logs" / "schedule" / "tick.cron.log"
    assert done.returncode == 0, done.stderr + (log.read_text() if log.exists() else "")
    assert lock_path(project, "tick").is_file()
    with Ledger(project) as ledger:
        [run] = ledger.runs()
        [fire] = ledger.fires("tick")
    assert (run.status, run.vars) == ("success", {"word": "scheduled"}), run.reason
    assert (fire["action"], fire["run_id"]) == ("started", run.id)
    assert (project / ".bridge" / "runs" / run.id / "shared" / "tick" / "said.txt").read_text().strip() == \
        "said scheduled"
    assert f"run {run.id}" in log.read_text()


def fire_argv(project: Path) -> list[str]:
    return [sys.executable, "-m", "bridge", "schedule", "fire", str(project / "playbooks" / "tick.yaml"),
            "--dir", str(project)]


def test_fire_skip_records_the_skip_and_exits_0(tmp_path: Path) -> None:
    project = new_project(tmp_path, playbook("skip"))
    with playbook_lock(project, "tick"):  # another run of the playbook holds it
        done = subprocess.run(fire_argv(project), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "skipped" in done.stdout and "overlap: skip" in done.stdout
    with Ledger(project) as ledger:
        assert ledger.runs() == []
        assert [f["action"] for f in ledger.fires("tick")] == ["skipped"]


HOLDER = """
import fcntl, os, signal, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0); os.write(fd, f"{os.getpid()}\\n".encode())
if sys.argv[2] == "ignore-int":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
print("held", flush=True)
time.sleep(60)
"""


def holder(project: Path, mode: str = "") -> subprocess.Popen[str]:
    path = lock_path(project, "tick")
    path.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), mode], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_cancel_stops_the_holder_in_stages_then_takes_the_lock(tmp_path: Path) -> None:
    proc = holder(tmp_path, "ignore-int")  # ignores SIGINT: SIGTERM follows after the grace
    notes: list[str] = []
    try:
        assert read_holder(tmp_path, "tick") == proc.pid
        started = time.monotonic()
        with fire_lock(tmp_path, "tick", "cancel", stop_grace=0.5, poll=0.05, note=notes.append) as fd:
            assert proc.wait(5) == -signal.SIGTERM
            write_holder(fd, os.getpid())
            assert read_holder(tmp_path, "tick") == os.getpid()
        assert time.monotonic() - started < 5
    finally:
        proc.kill()
        proc.wait()
    assert [n.split(": ")[1].split()[0] for n in notes] == ["SIGINT", "SIGTERM"], notes
    assert f"pid {proc.pid}" in notes[0]
    with playbook_lock(tmp_path, "tick"):  # a new holder: the old pid (ours, written above) is gone at once
        assert read_holder(tmp_path, "tick") is None


def test_queue_waits_for_the_holder_and_only_one_fire_waits(tmp_path: Path) -> None:
    proc = holder(tmp_path)
    notes: list[str] = []
    try:
        got: list[str] = []

        def waiter() -> None:
            with fire_lock(tmp_path, "tick", "queue", note=notes.append):
                got.append("lock")

        thread = threading.Thread(target=waiter)
        thread.start()
        deadline = time.monotonic() + 5
        while not notes and time.monotonic() < deadline:
            time.sleep(0.02)
        assert notes and "waiting" in notes[0]
        with pytest.raises(LockHeld, match="already waiting"):  # a second fire while one waits: skipped
            with fire_lock(tmp_path, "tick", "queue"):
                pass
        assert got == []
        proc.send_signal(signal.SIGINT)  # the running copy ends: the waiting fire gets the lock
        thread.join(10)
        assert got == ["lock"]
    finally:
        proc.kill()
        proc.wait()
    with pytest.raises(LockHeld, match="overlap: skip"), playbook_lock(tmp_path, "tick"):
        with fire_lock(tmp_path, "tick", "skip"):
            pass


def test_fire_with_overlap_cancel_stops_the_running_fire(tmp_path: Path) -> None:
    """Two `bridge schedule fire`s, as two cron minutes start them: the second stops the first (its
    run is cancelled, resumable) and runs; they never run at once."""
    project = new_project(tmp_path, playbook("cancel", "if [ -e first ]; then echo second; else touch first; "
                                                       "sleep 60; fi"))
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
    first = subprocess.Popen(fire_argv(project), cwd=project, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (project / "first").exists():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()[0]
            time.sleep(0.05)
        assert read_holder(project, "tick") == first.pid
        second = subprocess.run(fire_argv(project), cwd=project, env=env, capture_output=True, text=True,
                                timeout=60)
        assert second.returncode == 0, second.stdout + second.stderr
        assert "stopping the previous run" in second.stdout and "SIGINT" in second.stdout
        assert first.wait(10) == 130, first.communicate()[0]
    finally:
        first.kill()
        first.wait()
    with Ledger(project) as ledger:
        runs = {r.status: r for r in ledger.runs()}
        assert sorted(runs) == ["cancelled", "success"]
        assert [f["action"] for f in ledger.fires("tick")] == ["started", "started"]
    said = project / ".bridge" / "runs" / runs["success"].id / "shared" / "tick" / "said.txt"
    assert said.read_text().strip() == "second"


def test_a_fire_of_a_broken_playbook_is_recorded_and_says_why(tmp_path: Path) -> None:
    project = new_project(tmp_path, playbook("skip", command="echo {{ vars.nope }}"))
    done = subprocess.run(fire_argv(project), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "no var 'nope'" in done.stderr, done.stderr
    with Ledger(project) as ledger:
        [row] = ledger.fires("tick")
        assert row["action"] == "failed" and "could not be loaded" in row["detail"]
        assert "no var 'nope'" in row["detail"]
