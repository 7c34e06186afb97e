"""One shared helper for the run-engine tests: a project wired to the fake agent CLI, and a runner."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FAKE = REPO / "tests" / "fakes" / "fake_agent.py"


def make_project(root: Path) -> Path:
    """A project folder whose `claude` CLI is the fake agent."""
    project = root / "proj"
    (project / ".bridge").mkdir(parents=True, exist_ok=True)
    (project / ".bridge" / "clis.yaml").write_text(f"claude:\n  binary: {FAKE}\n")
    return project


def make_git_project(root: Path) -> Path:
    """make_project, as a git repository on `main` with app.txt and notes.txt committed."""
    proj = make_project(root)
    git(proj, "init", "-q", "-b", "main")
    git(proj, "config", "user.name", "Tester")
    git(proj, "config", "user.email", "t@example.com")
    (proj / "app.txt").write_text("line 1\nline 2\n")
    (proj / "notes.txt").write_text("notes\n")
    git(proj, "add", "app.txt", "notes.txt")
    git(proj, "commit", "-q", "-m", "start")
    return proj


def write_playbook(project: Path, body: str, name: str = "pb") -> Path:
    head = f"version: 1\nname: {name}\nagents:\n  f: {{cli: claude}}\n"
    path = project / f"{name}.yaml"
    path.write_text(head + textwrap.dedent(body))
    return path


def run_inproc(project: Path, playbook: Path, **kw: Any) -> tuple[Any, list[Any]]:
    from bridge.launch import RunSpec, start_run

    events: list[Any] = []
    result = start_run(RunSpec(playbook_path=playbook, project=project, **kw), events.append)
    return result, events


def git(cwd: Path, *args: str) -> str:
    """git with a throwaway identity for the test's own commits (the repo itself has none); stdout stripped."""
    return subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", *args],
        cwd=cwd, check=True, capture_output=True, text=True,
    ).stdout.strip()


def shared_dir(project: Path, run_id: str) -> Path:
    """The run's shared folder, where the docs say it is: .bridge/runs/<run id>/shared."""
    return project / ".bridge" / "runs" / run_id / "shared"


def bridge_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "bridge", *args]


def bridge(project: Path, *args: str, timeout: float = 60, columns: int = 200) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": str(columns)}
    return subprocess.run(bridge_argv(*args, "--dir", str(project)), cwd=project, capture_output=True,
                          text=True, timeout=timeout, env=env)


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def wait_for(predicate: Any, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
