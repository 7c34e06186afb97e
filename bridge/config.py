"""Data that configures bridge: CLI definitions (configs/clis.yaml) merged with user overrides."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from bridge.errors import BridgeError
from bridge.resources import data_dir


def _user_config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "bridge"


def _read(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise BridgeError(f"{path} is not valid YAML ({exc}). Fix the file or remove it.") from exc
    if not isinstance(data, dict):
        raise BridgeError(f"{path} must be a mapping of CLI name -> settings.")
    return data


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


ADAPTERS = ("codex", "claude", "gemini", "command")  # the argv builders / parsers in bridge/agents/


def _check(path: Path, data: dict[str, Any], shipped: dict[str, Any]) -> None:
    """Each entry a mapping; a new CLI names its adapter (and a binary unless it has a command)."""
    for name, entry in data.items():
        if not isinstance(entry, dict):
            raise BridgeError(f"{path}: {name}: expected a mapping of settings (adapter, binary, ...), "
                              f"got {entry!r}. Fix the entry or remove it.")
        adapter = entry.get("adapter", (shipped.get(name) or {}).get("adapter"))
        if adapter not in ADAPTERS:
            got = "none" if adapter is None else repr(adapter)
            raise BridgeError(f"{path}: {name}: `adapter:` must be one of {', '.join(ADAPTERS)} (got {got}); "
                              "it says how bridge builds the argv and reads the output.")


@lru_cache(maxsize=8)
def _load_clis(project: str) -> dict[str, dict[str, Any]]:
    shipped_path = data_dir("configs") / "clis.yaml"
    shipped = _read(shipped_path)
    merged: dict[str, Any] = dict(shipped)
    for path in (_user_config_dir() / "clis.yaml", Path(project) / ".bridge" / "clis.yaml"):
        if path.is_file():
            data = _read(path)
            _check(path, data, merged)
            for name, entry in data.items():
                # a new CLI on a vendor adapter (`claude-work: {adapter: claude, env: ...}`) starts
                # from that vendor's shipped definition: its sandbox flags, parser settings, record
                base = merged.get(name) or (shipped.get(entry["adapter"], {}) if entry.get("adapter") != "command"
                                            else {})
                merged[name] = _merge(base, entry)
    return merged


def cli_definitions(project: Path | None = None) -> dict[str, dict[str, Any]]:
    """Every CLI definition by name (shipped, then user, then project overrides)."""
    return _load_clis(str((project or Path.cwd()).resolve()))


def cli_definition(name: str, project: Path | None = None) -> dict[str, Any]:
    """One CLI's definition; `command` is the generic adapter with no binary of its own."""
    defs = cli_definitions(project)
    if name == "command":
        return {"adapter": "command", **defs.get("command", {})}
    if name not in defs:
        raise BridgeError(f"no CLI named {name!r} is defined; known: {', '.join(known_cli_names(project))}")
    return defs[name]


def known_cli_names(project: Path | None = None) -> list[str]:
    """Valid values of an agent profile's `cli:`."""
    return sorted({*cli_definitions(project), "command"})
