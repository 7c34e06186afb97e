"""Pre-accepting the vendor CLIs' folder-trust prompts for a fresh worktree (no manual step).

Claude Code keeps per-project state in its global config, `<config dir>/.claude.json`, where
config dir is $CLAUDE_CONFIG_DIR or HOME: `{"projects": {"/abs/path": {"hasTrustDialogAccepted":
true}}}`. Gemini CLI keeps `~/.gemini/trustedFolders.json` (or $GEMINI_CLI_TRUSTED_FOLDERS_PATH):
`{"/abs/path": "TRUST_FOLDER"}`. Both files are rewritten atomically, keeping every other key.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bridge.errors import BridgeError
from bridge.worktrees import worktrees_base


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError:
        # The file belongs to the CLI: never overwrite what we cannot read.
        raise BridgeError(f"{path} is not valid JSON; fix or remove it so bridge can mark "
                          "worktrees as trusted") from None
    return data if isinstance(data, dict) else {}


def _save(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.bridge-tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def claude_config_file(config_dir: Path) -> Path:
    # Older Claude Code kept the same data in <config dir>/.config.json; it wins when present.
    legacy = config_dir / ".config.json"
    return legacy if legacy.exists() else config_dir / ".claude.json"


def trust_folder_for_claude(config_dir: Path, folder: Path) -> Path:
    """Mark `folder` as trusted in Claude Code's config under `config_dir`; returns the file."""
    path = claude_config_file(config_dir)
    data = _load(path)
    projects = data.setdefault("projects", {})
    entry = projects.setdefault(str(folder.resolve()), {})
    entry["hasTrustDialogAccepted"] = True
    _save(path, data)
    return path


def trust_folder_for_gemini(gemini_home: Path, folder: Path) -> Path:
    """Mark `folder` as trusted in `<gemini_home>/.gemini/trustedFolders.json`; returns the file."""
    path = gemini_home / ".gemini" / "trustedFolders.json"
    data = _load(path)
    data[str(folder.resolve())] = "TRUST_FOLDER"
    _save(path, data)
    return path


def trust_worktree(kind: str, folder: Path, env: dict[str, str]) -> Path | None:
    """Pre-accept the trust prompt of an interactive `kind` CLI for a bridge worktree `folder`.

    Only folders where bridge makes worktrees (from the user's own commits): under
    `worktrees_base()`, or an old run's `.bridge/worktrees/`; the config dir comes from the CLI's
    environment (CLAUDE_CONFIG_DIR, else HOME), as the CLI reads it.
    """
    resolved = Path(os.path.realpath(folder))
    if Path(os.path.realpath(worktrees_base())) not in resolved.parents \
            and ".bridge/worktrees/" not in resolved.as_posix() + "/":
        return None
    home = Path(env.get("HOME") or os.environ.get("HOME") or Path.home())
    if kind == "claude":
        return trust_folder_for_claude(Path(env.get("CLAUDE_CONFIG_DIR") or home), folder)
    if kind == "gemini":
        return trust_folder_for_gemini(home, folder)
    return None


def seed_rehearsal_home(kind: str, folders: list[Path], env: dict[str, str]) -> Path | None:
    """Answer an interactive `kind` CLI's first-run dialogs in the config of a rehearsal's isolated
    HOME (bridge's own, never the user's): onboarding, the custom API key, trusting `folders`."""
    home = Path(env["HOME"])
    path = None
    for folder in folders:
        if kind == "gemini":  # the cwd, and the --include-directories ("being added") folders
            path = trust_folder_for_gemini(home, folder)
        elif kind == "claude":
            path = trust_folder_for_claude(Path(env.get("CLAUDE_CONFIG_DIR") or home), folder)
    if kind != "claude" or path is None:
        return path
    data = _load(path)
    # without it Claude Code 2.1 first checks that api.anthropic.com is reachable (not 127.0.0.1)
    data["hasCompletedOnboarding"] = True
    key = env.get("ANTHROPIC_API_KEY")
    if key:  # "Detected a custom API key ... Do you want to use this API key?" (default: No)
        answers = data.setdefault("customApiKeyResponses", {"approved": [], "rejected": []})
        approved = answers.setdefault("approved", [])
        if key[-20:] not in approved:  # Claude Code keeps the last 20 characters of an approved key
            approved.append(key[-20:])
    _save(path, data)
    return path
