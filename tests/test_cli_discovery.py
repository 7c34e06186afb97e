"""Finding the agent CLIs: PATH, then bridge's own CLI folder ($XDG_CACHE_HOME/bridge/clis/node_modules/.bin,
where `bridge demo --yes` installs them), or $BRIDGE_CLI_PATH — the same rule for which, doctor and a run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bridge.commands import doctor
from bridge.errors import AgentNotFound
from bridge.ledger import Ledger
from bridge.process import cli_dirs, cli_install_dir, which

FAKES = Path(__file__).parent / "fakes"


def executable(folder: Path, name: str, body: str = "exit 0") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def cache_bin(isolated_home: Path) -> Path:
    """bridge's CLI folder under the test's XDG_CACHE_HOME (as `bridge demo --yes` lays it out)."""
    folder = Path(os.environ["XDG_CACHE_HOME"]) / "bridge" / "clis" / "node_modules" / ".bin"
    assert cli_install_dir() / "node_modules" / ".bin" == folder
    return folder


@pytest.fixture
def plain_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH = an empty folder of the test's, then the system's /usr/bin and /bin (no agent CLIs)."""
    folder = tmp_path / "path-bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}/usr/bin{os.pathsep}/bin")
    for name in ("codex", "claude", "gemini"):
        if any((Path(d) / name).exists() for d in ("/usr/bin", "/bin")):
            pytest.fail(f"{name} is installed system-wide; this test needs a PATH without it")
    return folder


def test_the_cache_folder_is_searched_after_path(cache_bin: Path, plain_path: Path) -> None:
    assert cli_dirs() == [str(cache_bin)]
    with pytest.raises(AgentNotFound, match=f"not on PATH nor in {cache_bin}"):
        which("codex")
    cached = executable(cache_bin, "codex")
    assert which("codex") == str(cached)
    on_path = executable(plain_path, "codex")
    assert which("codex") == str(on_path)  # PATH wins over bridge's folder


def test_bridge_cli_path_replaces_the_cache_folder(cache_bin: Path, plain_path: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    executable(cache_bin, "codex")
    mine = executable(tmp_path / "mine", "codex")
    monkeypatch.setenv("BRIDGE_CLI_PATH", f"{tmp_path / 'elsewhere'}{os.pathsep}{tmp_path / 'mine'}")
    assert which("codex") == str(mine)
    monkeypatch.setenv("BRIDGE_CLI_PATH", "")  # empty: PATH only
    assert cli_dirs() == []
    with pytest.raises(AgentNotFound, match="BRIDGE_CLI_PATH is empty"):
        which("codex")


def test_doctor_finds_clis_in_the_cache_folder(cache_bin: Path, plain_path: Path, isolated_home: Path,
                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "300")
    executable(cache_bin, "codex", "echo 'codex-cli 0.169.0'")
    executable(cache_bin, "claude", "echo '2.1.197 (Claude Code)'")
    executable(plain_path, "gemini", "echo 0.61.0")
    executable(cache_bin, "gemini", "echo 0.1.0")  # shadowed by the one on PATH
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-abcdef")
    monkeypatch.setenv("GEMINI_API_KEY", "gm-test-abcdef")
    (isolated_home / ".codex").mkdir()
    (isolated_home / ".codex" / "auth.json").write_text("{}")
    checks = {c.name: c for c in doctor.check_all(tmp_path)}
    assert checks["codex"].path == str(cache_bin / "codex") and checks["codex"].version == "0.169.0"
    assert checks["claude"].path == str(cache_bin / "claude") and checks["claude"].ok
    assert checks["gemini"].path == str(plain_path / "gemini") and checks["gemini"].version == "0.61.0"
    assert doctor.run(project=tmp_path) == 0
    assert "All agent CLIs are ready." in capsys.readouterr().out


def test_doctor_says_where_it_looked(cache_bin: Path, plain_path: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "300")
    assert doctor.run(project=tmp_path) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert f"on PATH, then in {cache_bin}" in out and "bridge demo --yes" in out


def test_a_run_uses_the_cli_in_the_cache_folder(cache_bin: Path, plain_path: Path, tmp_path: Path) -> None:
    """`bridge run` (a child process, as schedule and watch start it) finds claude in bridge's folder
    and puts its absolute path in the agent's argv."""
    cache_bin.mkdir(parents=True)
    (cache_bin / "claude").symlink_to(FAKES / "fake_agent.py")
    project = tmp_path / "proj"
    (project / ".bridge").mkdir(parents=True)
    playbook = project / "pb.yaml"
    playbook.write_text(textwrap.dedent("""\
        version: 1
        name: found
        agents: {a: {cli: claude}}
        stages:
          s:
            agent: a
            prompt: "FAKE: write={{ shared }}/out.txt=from-the-cache"
            outputs: [out.txt]
    """))
    done = subprocess.run([sys.executable, "-m", "bridge", "run", str(playbook), "--dir", str(project)],
                          cwd=project, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "NO_COLOR": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    with Ledger(project) as ledger:
        [row] = ledger.runs()
        assert row.status == "success"
    run_dir = project / ".bridge" / "runs" / row.id
    assert (run_dir / "shared" / "out.txt").read_text() == "from-the-cache"
    argv = json.loads((run_dir / "stages" / "s" / "attempt-1" / "argv.json").read_text())["argv"]
    assert argv[0] == str(cache_bin / "claude")


def test_schedule_export_puts_the_cache_folder_on_the_exported_path(cache_bin: Path, plain_path: Path) -> None:
    from bridge.commands import schedule_export

    executable(cache_bin, "codex")
    executable(plain_path, "node")
    path, missing = schedule_export.run_path()
    folders = path.split(os.pathsep)
    assert folders[:2] == [str(cache_bin), str(plain_path)]  # the CLI's folder, then node's
    assert missing == ["claude", "gemini"]
