"""`bridge demo` as a user runs it: a subprocess, the real CLIs found on PATH, or install instructions."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.demo import build_sample, install_argv, pinned_clis
from bridge.resources import data_dir

REPO = Path(__file__).resolve().parent.parent


def demo(*args: str, env: dict[str, str], cwd: Path, pythonpath: Path | None = None,
         timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**env, "NO_COLOR": "1", "COLUMNS": "200"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([sys.executable, "-m", "bridge", "demo", *args], cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_demo_yes_rehearses_the_whole_flow(tmp_path: Path, real_clis: Path) -> None:
    # The CLIs laid out as `bridge demo --yes` installs them (bridge's CLI folder in the cache), not on
    # PATH: the demo and its run find them there.
    cache = tmp_path / "cache"
    (cache / "bridge" / "clis").mkdir(parents=True)
    (cache / "bridge" / "clis" / "node_modules").symlink_to(real_clis.parent)
    assert not any(shutil.which(n) for n in ("codex", "claude", "gemini")), "this test needs them off PATH"
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "TMPDIR": str(tmp_path)}
    done = demo("--yes", env=env, cwd=tmp_path)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "Traceback" not in out
    repo = Path(re.search(r"The demo repo:\s+(\S+)", done.stdout).group(1))
    assert repo.parent == tmp_path and repo.name.startswith("bridge-demo-")
    for word in ("audit-security", "implement-one@1", "merged", "verify@2", "Audit reports:", "bridge doctor",
                 "bridge run", "--dir YOUR_REPO", '"status": "pass"'):
        assert word in done.stdout, word
    assert f"codex {cache}/bridge/clis/node_modules/.bin/codex" in done.stdout
    assert "Installing" not in done.stdout and "export PATH" not in done.stdout
    reports = re.search(r"Audit reports:\s+(\S+)/\{", done.stdout).group(1)
    assert sorted(p.name for p in Path(reports).iterdir()) == ["performance.md", "security.md", "test-gaps.md"]
    tests = subprocess.run([sys.executable, "-m", "unittest", "-q"], cwd=repo, capture_output=True, text=True,
                           timeout=60, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert tests.returncode == 0 and "Ran 5 tests" in tests.stderr, tests.stderr


def _installed_copy(tmp_path: Path) -> Path:
    """bridge laid out as the wheel installs it (bridge/_data/...), away from the checkout's CLIs."""
    site = tmp_path / "site"
    shutil.copytree(REPO / "bridge", site / "bridge", ignore=shutil.ignore_patterns("__pycache__", "_data"))
    for name in ("configs", "playbooks", "clis"):
        shutil.copytree(data_dir(name), site / "bridge" / "_data" / name,
                        ignore=shutil.ignore_patterns("node_modules"))
    return site


def test_missing_clis_without_yes_print_the_install_command(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {**os.environ, "PATH": f"{empty}{os.pathsep}/usr/bin{os.pathsep}/bin", "TMPDIR": str(tmp_path)}
    if any(shutil.which(n, path=env["PATH"]) for n in ("codex", "claude", "gemini")):
        pytest.fail("an agent CLI is installed system-wide; this test needs a PATH without them")
    done = demo(env=env, cwd=tmp_path, pythonpath=_installed_copy(tmp_path), timeout=60)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "Traceback" not in out
    assert "codex, claude are not installed" in out  # the demo's playbook uses no gemini
    flat = " ".join(out.split())
    assert " ".join(install_argv(Path(os.environ["XDG_CACHE_HOME"]) / "bridge" / "clis", ("codex", "claude"))) in flat
    assert "@openai/codex@0.169.0" in out and "bridge demo --yes" in out
    assert "gemini" not in out
    assert pinned_clis() == {"@openai/codex": "0.169.0", "@anthropic-ai/claude-code": "2.1.197",
                             "@google/gemini-cli": "0.61.0"}
    assert not any(tmp_path.glob("bridge-demo-*"))


def test_missing_node_with_yes_says_how_to_get_it(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    done = demo("--yes", env={**os.environ, "PATH": str(empty)}, cwd=tmp_path,
                pythonpath=_installed_copy(tmp_path), timeout=60)
    out = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 1, out
    assert "Traceback" not in out
    assert "Node.js (with npm) is needed" in out and "https://nodejs.org" in out


def test_keep_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "mine.txt").write_text("keep me")
    from bridge.errors import BridgeError

    with pytest.raises(BridgeError, match="not empty"):
        build_sample(tmp_path / "x")
    assert (tmp_path / "x" / "mine.txt").read_text() == "keep me"


def test_the_demo_needs_only_the_clis_its_playbook_uses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """codex and claude found, gemini not: the demo goes on (it never asks to install gemini)."""
    from bridge.commands.demo import _ensure_clis
    from bridge.demo import needed_clis

    assert needed_clis() == ("codex", "claude")
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in ("codex", "claude"):
        (folder / name).write_text("#!/bin/sh\nexit 0\n")
        (folder / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}/usr/bin{os.pathsep}/bin")
    if shutil.which("gemini"):
        pytest.fail("gemini is installed system-wide; this test needs a PATH without it")
    assert _ensure_clis(yes=False) == {"codex": str(folder / "codex"), "claude": str(folder / "claude")}
    assert install_argv(tmp_path, ("claude",))[-1].startswith("@anthropic-ai/claude-code@")
    assert len([a for a in install_argv(tmp_path) if a.startswith("@")]) == 3  # all of them by default


# ---- the shipped rehearsal scripts on a repository that is not the sample -----------------------

def test_foreign_rehearsal_names_the_files_only_off_the_sample(tmp_path: Path) -> None:
    from bridge.demo import foreign_rehearsal, is_sample

    scripts = data_dir("playbooks") / "rehearsals"
    mine = tmp_path / "mine"
    (mine / "src").mkdir(parents=True)
    (mine / "README.md").write_text("my project\n")
    sample = build_sample(tmp_path / "sample")
    assert is_sample(sample) and not is_sample(mine)
    warning = foreign_rehearsal(scripts / "audit-then-implement.yaml", mine)
    assert warning is not None
    assert "inventory/store.py, inventory/util.py, tests/test_store.py" in warning
    assert "nothing this run merges lands on your branch" in warning and "--script" in warning
    assert foreign_rehearsal(scripts / "audit-then-implement.yaml", sample) is None  # the demo itself
    assert foreign_rehearsal(scripts / "nightly-verify.yaml", mine) is None  # writes no repository file
    own = tmp_path / "own.yaml"
    (own).write_text((scripts / "audit-then-implement.yaml").read_text())
    assert foreign_rehearsal(own, mine) is None  # a script of the user's own: theirs to decide


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_rehearsing_the_demo_script_on_another_repo_leaves_its_branch_alone(tmp_path: Path, real_clis: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """audit-then-implement --rehearse on a repo that is not the sample: warned at the start, the
    scripted demo fixes never land on the user's branch, and a test command that ran no test is a fail
    (the repo has no Python tests: `python3 -m unittest` says "Ran 0 tests" and exits 0 on 3.11)."""
    from bridge.events import RunStarted, Status
    from bridge.launch import RunSpec, start_run
    from bridge.ledger import Ledger
    from bridge.workspace import RunLayout
    from tests.runhelp import git

    monkeypatch.setenv("PATH", f"{real_clis}{os.pathsep}{os.environ['PATH']}")
    repo = tmp_path / "mine"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("# my service\n")
    (repo / "main.go").write_text("package main\n\nfunc main() {}\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "mine")
    head = git(repo, "rev-parse", "HEAD")
    events: list = []
    result = start_run(RunSpec(playbook_path=data_dir("playbooks") / "audit-then-implement.yaml", project=repo,
                               rehearse=True), events.append)
    [started] = [e for e in events if isinstance(e, RunStarted)]
    assert any("written for the demo's sample" in w for w in started.warnings), started.warnings
    assert git(repo, "rev-parse", "HEAD") == head and git(repo, "branch", "--show-current") == "main"
    assert not (repo / "inventory").exists() and not (repo / "tests").exists()
    assert result.status is Status.FAILURE  # no test ran, so verify never passed
    verdict = (RunLayout(repo, result.run_id).shared / "verify" / "result.json").read_text()
    assert '"fail"' in verdict and '"failed": 0' in verdict
    with Ledger(repo) as ledger:
        landing = ledger.landing(result.run_id)
    assert landing is not None and not landing["landed"] and "not the demo's sample" in landing["message"]


def test_the_closing_advice_says_how_to_use_it_on_your_repo(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from bridge.commands.demo import _story
    from bridge.demo import playbook_path

    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")
    repo = build_sample(tmp_path / "repo")
    result = SimpleNamespace(run_id="20240501-100000-abcd", stages={"fix": SimpleNamespace(iterations=2)})
    _story(repo, result, {"codex": "/x/codex", "claude": "/x/claude"}, playbook_path())
    out = " ".join(capsys.readouterr().out.split())
    assert f"bridge run {playbook_path()} --dir YOUR_REPO --var test_command='npm test'" in out
    assert "runs no test at all counts as a fail" in out
    assert f"cp {playbook_path().parent / 'nightly-verify.yaml'} YOUR_REPO/playbooks/" in out
    assert "bridge schedule export --crontab --dir YOUR_REPO" in out
