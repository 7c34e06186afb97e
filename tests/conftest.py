"""Shared fixtures: keep every test out of the real HOME and config folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
E2E_BIN = REPO / "tests" / "e2e" / "node_modules" / ".bin"


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
        monkeypatch.setenv(var, str(home / var.lower()))
    for secret in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "OPENAI_API_KEY", "GEMINI_API_KEY",
                   "GOOGLE_API_KEY", "CODEX_HOME", "CLAUDE_CONFIG_DIR"):
        monkeypatch.delenv(secret, raising=False)
    monkeypatch.delenv("BRIDGE_CLI_PATH", raising=False)  # agent CLIs: PATH, then the (tmp) cache folder
    from bridge import config

    config._load_clis.cache_clear()
    return home


@pytest.fixture
def real_clis() -> Path:
    """The pinned real CLIs (tests/e2e/node_modules/.bin); installed by the README's test command."""
    missing = [n for n in ("codex", "claude", "gemini") if not (E2E_BIN / n).exists()]
    if missing:
        pytest.fail(f"real CLIs not installed ({', '.join(missing)}): run `npm ci --prefix tests/e2e`")
    return E2E_BIN


@pytest.fixture
def world(tmp_path: Path, real_clis: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """For a real CLI run by hand: repo/ (cwd, not a git repo), run/shared/ (OUTSIDE it), home/, CLIs on PATH."""
    monkeypatch.setenv("PATH", f"{real_clis}{os.pathsep}{os.environ['PATH']}")
    for d in ("repo", "run/shared", "home"):
        (tmp_path / d).mkdir(parents=True)
    return tmp_path
