"""Two real Claude Code implementers in their own worktrees, against the rehearsal model, merged
back onto the user's branch; then `bridge clean`. No vendor credentials, only 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from bridge.events import GitNote, Status
from bridge.proctable import run_processes
from bridge.worktrees import worktrees_root
from tests.runhelp import bridge, run_inproc

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

SCRIPT = """
replies:
  - match: 'Create the file (\\S+) now'
    cli: claude
    steps:
      - write_file: {path: '$1', content: "made for $1\\n"}
      - text: 'Created $1.'
"""


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def test_two_claude_implementers_in_worktrees_land_on_the_branch(tmp_path, real_clis, monkeypatch):
    monkeypatch.setenv("PATH", f"{real_clis}{os.pathsep}{os.environ['PATH']}")
    project = tmp_path / "proj"
    project.mkdir()
    git(project, "init", "-q", "-b", "main")
    git(project, "config", "user.name", "Tester")
    git(project, "config", "user.email", "t@example.com")
    (project / "README.md").write_text("# demo\n")
    git(project, "add", "README.md")
    git(project, "commit", "-q", "-m", "start")
    base = git(project, "rev-parse", "HEAD").strip()
    script = tmp_path / "script.yaml"
    script.write_text(SCRIPT)
    playbook = tmp_path / "pb.yaml"  # outside the repository: the user's tree stays clean
    playbook.write_text("""
version: 1
name: wt-e2e
agents:
  impl: {cli: claude, sandbox: workspace-write}
stages:
  build:
    agent: impl
    matrix: {name: [alpha, beta]}
    worktree: {merge: merge}
    timeout: 120
    prompt: "Create the file {{ matrix.name }}.txt now, in the current folder."
""")
    result, events = run_inproc(project, playbook, rehearse=True, script=script)
    assert result.status is Status.SUCCESS, result.reason
    assert run_processes(result.run_id) == [], "an agent process of the run is still running"

    # each agent worked in its own worktree (the CLI reports its cwd in its init event)
    for name in ("alpha", "beta"):
        argv = (project / ".bridge" / "runs" / result.run_id / "stages" / f"build-{name}" / "attempt-1"
                / "argv.json").read_text()
        assert str(worktrees_root(project) / result.run_id / f"build-{name}") in argv
    assert (project / "alpha.txt").read_text() == "made for alpha.txt\n"
    assert (project / "beta.txt").read_text() == "made for beta.txt\n"
    assert git(project, "status", "--porcelain") == ""
    log = git(project, "log", "--format=%s", f"{base}..main")
    assert f"merge bridge/{result.run_id}/build-alpha" in log and f"merge bridge/{result.run_id}/build-beta" in log
    assert any(isinstance(e, GitNote) and e.kind == "landed" for e in events)

    out = bridge(project, "clean")
    assert out.returncode == 0, out.stderr
    assert git(project, "branch", "--list", f"bridge/{result.run_id}/*") == ""
    worktrees = git(project, "worktree", "list", "--porcelain")
    assert str(worktrees_root(project)) not in worktrees
    assert not (worktrees_root(project) / result.run_id).exists()
