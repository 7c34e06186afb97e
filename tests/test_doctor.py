"""`bridge doctor` with fake CLI binaries on PATH."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bridge.commands import doctor


def fake(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)


@pytest.fixture
def bin_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "bin"
    d.mkdir()
    monkeypatch.setenv("PATH", f"{d}{os.pathsep}/usr/bin{os.pathsep}/bin")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")
    return d


def all_good(bin_dir: Path, home: Path, monkeypatch) -> None:
    fake(bin_dir, "codex", "echo 'codex-cli 0.169.0'")
    fake(bin_dir, "claude", "echo '2.1.197 (Claude Code)'")
    fake(bin_dir, "gemini", "echo 0.61.0")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-abcdef")
    monkeypatch.setenv("GEMINI_API_KEY", "gm-test-abcdef")
    (home / ".codex").mkdir()
    (home / ".codex" / "auth.json").write_text("{}")  # codex's login state, no env var needed


def test_all_fine_exits_0(bin_dir, isolated_home, monkeypatch, capsys, tmp_path):
    all_good(bin_dir, isolated_home, monkeypatch)
    assert doctor.run(project=tmp_path) == 0
    out = capsys.readouterr().out
    assert "2.1.197" in out and "0.169.0" in out and "auth.json" in out and "$ANTHROPIC_API_KEY" in out
    assert "All agent CLIs are ready." in out
    assert "aider" in out and "optional" in out  # reported, not failing


def test_problems_each_get_a_fix(bin_dir, isolated_home, monkeypatch, capsys, tmp_path):
    all_good(bin_dir, isolated_home, monkeypatch)
    (bin_dir / "claude").unlink()  # missing
    fake(bin_dir, "gemini", "echo 0.50.2")  # too old
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    (isolated_home / ".codex" / "auth.json").unlink()  # no credentials
    assert doctor.run(project=tmp_path) == 1
    out = capsys.readouterr().out
    assert "claude: not installed: npm install -g @anthropic-ai/claude-code" in out
    assert "gemini: version 0.50.2 is older than 0.61.0" in out
    assert "codex: no credentials found: codex login" in out


def test_broken_or_hanging_version_command(bin_dir, isolated_home, monkeypatch, tmp_path):
    all_good(bin_dir, isolated_home, monkeypatch)
    fake(bin_dir, "codex", "echo 'Error: cannot find module' >&2; exit 1")
    fake(bin_dir, "gemini", "exec sleep 30")
    (tmp_path / ".bridge").mkdir()
    (tmp_path / ".bridge" / "clis.yaml").write_text("gemini:\n  version_timeout: 0.5\n")
    checks = {c.name: c for c in doctor.check_all(tmp_path)}
    assert not checks["codex"].ok and "exited 1 without a version" in checks["codex"].problems[0]
    assert not checks["gemini"].ok and "timed out" in checks["gemini"].problems[0]
    assert checks["claude"].ok


def test_parse_version():
    assert doctor.parse_version("codex-cli 0.169.0") == (0, 169, 0)
    assert doctor.parse_version("2.1.197 (Claude Code)") == (2, 1, 197)
    assert doctor.parse_version("no digits") is None


def test_cli_entry_point(bin_dir, isolated_home, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from bridge.cli import app

    all_good(bin_dir, isolated_home, monkeypatch)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output


def test_a_users_own_command_cli_is_never_run_to_ask_its_version(bin_dir, isolated_home, monkeypatch, tmp_path):
    all_good(bin_dir, isolated_home, monkeypatch)
    ran = tmp_path / "ran"
    fake(bin_dir, "my-agent", f"touch {ran}; exit 3")
    (tmp_path / ".bridge").mkdir()
    (tmp_path / ".bridge" / "clis.yaml").write_text(
        "mine:\n  adapter: command\n  binary: my-agent\n  command: [my-agent, '{{ prompt }}']\n")
    check = {c.name: c for c in doctor.check_all(tmp_path)}["mine"]
    assert check.ok and check.problems == () and check.credentials == "none needed"
    assert check.version == "not checked (no version_command)" and not ran.exists()
    assert doctor.run(project=tmp_path) == 0
