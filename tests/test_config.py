"""CLI definitions: shipped configs/clis.yaml, then user and project overrides, each entry checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import cli_definition, cli_definitions
from bridge.errors import BridgeError


def _project(tmp_path: Path, text: str) -> Path:
    (tmp_path / ".bridge").mkdir()
    (tmp_path / ".bridge" / "clis.yaml").write_text(text)
    return tmp_path


@pytest.mark.parametrize("text, message", [
    ("codex: 3\n", "codex: expected a mapping of settings (adapter, binary, ...), got 3"),
    ("mine:\n  binary: x\n", "mine: `adapter:` must be one of codex, claude, gemini, command (got none)"),
    ("mine:\n  adapter: clade\n", "mine: `adapter:` must be one of codex, claude, gemini, command (got 'clade')"),
])
def test_a_broken_entry_names_the_file_and_the_fix(tmp_path: Path, text: str, message: str) -> None:
    project = _project(tmp_path, text)
    with pytest.raises(BridgeError) as info:
        cli_definitions(project)
    assert str(info.value).startswith(f"{project / '.bridge' / 'clis.yaml'}: {message}")


def test_a_new_cli_on_a_vendor_adapter_starts_from_that_vendor(tmp_path: Path) -> None:
    project = _project(tmp_path, "claude-work:\n  adapter: claude\n  env: {ANTHROPIC_BASE_URL: 'http://127.0.0.1:9'}\n")
    work, claude = cli_definition("claude-work", project), cli_definition("claude", project)
    assert work["sandbox"] == claude["sandbox"] and work["binary"] == "claude"
    assert work["env"]["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:9"
    assert "ANTHROPIC_BASE_URL" not in (claude.get("env") or {})


def test_overriding_a_shipped_cli_keeps_its_other_settings(tmp_path: Path) -> None:
    project = _project(tmp_path, "codex:\n  binary: /opt/codex/bin/codex\n")
    codex = cli_definition("codex", project)
    assert codex["binary"] == "/opt/codex/bin/codex" and codex["adapter"] == "codex" and codex["sandbox"]
