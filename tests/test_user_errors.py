"""What a new user meets: the scaffold rehearses as shipped, and bad input gets one clear paragraph
(cause and fix, exit 1), never a traceback or lost work."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bridge.cli import app
from bridge.commands.init import PLAYBOOK, REHEARSAL
from bridge.rehearsal import load_script


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    out = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert "Traceback" not in out, out
    return result.exit_code, out


def git_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for args in (["init", "-q", "-b", "main"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
                                                 "--allow-empty", "-m", "init"]):
        subprocess.run(["git", *args], cwd=path, check=True)
    return path


def test_init_scaffolds_a_rehearsal_script_that_parses(tmp_path: Path) -> None:
    code, out = invoke("init", "--dir", str(tmp_path))
    assert code == 0, out
    assert f"created {REHEARSAL}" in out and f"bridge run {PLAYBOOK} --rehearse" in out
    script = load_script(tmp_path / REHEARSAL)
    assert len(script.replies) == 3


@pytest.mark.e2e
def test_init_then_rehearse_succeeds(tmp_path: Path, real_clis: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new user's first `bridge run --rehearse` of what `bridge init` wrote: the real codex (read-only
    planner: bridge writes its answer; workspace-write verifier) and claude, and the run succeeds."""
    monkeypatch.setenv("PATH", f"{real_clis}{os.pathsep}{os.environ['PATH']}")
    project = git_repo(tmp_path / "proj")
    assert invoke("init", "--dir", str(project))[0] == 0
    code, out = invoke("run", str(project / PLAYBOOK), "--rehearse", "--dir", str(project))
    assert code == 0, out
    runs = list((project / ".bridge" / "runs").iterdir())
    shared = runs[0] / "shared"
    assert (shared / "plan.md").read_text().startswith("1. ")
    assert '"pass"' in (shared / "verify.json").read_text()
