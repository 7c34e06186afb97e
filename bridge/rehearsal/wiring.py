"""Pointing one real CLI at the rehearsal model: env, extra argv and config files (data in configs/)."""

from __future__ import annotations

import os

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from string import Template
from typing import Any

import yaml

from bridge.errors import BridgeError
from bridge.resources import data_dir


@dataclass(frozen=True)
class Wiring:
    """What a CLI needs to talk only to the rehearsal model, with its own isolated HOME."""

    cli: str
    model: str  # a model name the CLI accepts (Codex: from its built-in catalog)
    env: dict[str, str] = field(default_factory=dict)
    argv: tuple[str, ...] = ()  # extra arguments (after the subcommand, before the prompt)
    files: dict[Path, str] = field(default_factory=dict)  # to write before starting the CLI

    def write_files(self) -> None:
        """Create the config files and the temp folder (idempotent; existing files are overwritten)."""
        if self.env.get("TMPDIR"):
            Path(self.env["TMPDIR"]).mkdir(parents=True, exist_ok=True)
        for path, content in self.files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)


@lru_cache(maxsize=1)
def _table() -> dict[str, Any]:
    path = data_dir("configs") / "rehearsal.yaml"
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise BridgeError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise BridgeError(f"{path} must map CLI kind -> wiring")
    return data


# What a rehearsed CLI keeps of bridge's environment: nothing else. Not the user's API keys (a
# rehearsal must never hold them, let alone write them into a CLI's own session files), nor what
# routes a CLI elsewhere (CLAUDE_CODE_USE_BEDROCK, *_BASE_URL, proxies), nor XDG_* folders that would
# point it at the user's own config.
KEPT_ENV = ("PATH", "LANG", "LANGUAGE", "TERM", "COLORTERM", "TZ", "USER", "LOGNAME", "SHELL")


def isolated_environ() -> dict[str, str]:
    """The part of os.environ a rehearsed CLI sees (locale variables included)."""
    return {k: v for k, v in os.environ.items() if k in KEPT_ENV or k.startswith("LC_")}


def wiring_kinds() -> list[str]:
    """The CLI kinds that can be rehearsed."""
    return sorted(_table())


def wiring(cli_kind: str, base_url: str, home: Path) -> Wiring:
    """The wiring of `cli_kind` (codex | claude | gemini) to the server at `base_url`."""
    table = _table()
    if cli_kind not in table:
        raise BridgeError(f"cannot rehearse CLI kind {cli_kind!r}: rehearsals support {', '.join(sorted(table))}")
    entry = table[cli_kind]
    values = {"base_url": base_url.rstrip("/"), "home": str(home)}

    def fill(text: Any) -> str:
        return Template(str(text)).safe_substitute(values)

    return Wiring(
        cli=cli_kind,
        model=str(entry.get("model", "")),
        env={**isolated_environ(),
             **{k: fill(v) for k, v in (entry.get("env") or {}).items()}},
        argv=tuple(fill(a) for a in entry.get("argv") or ()),
        files={Path(fill(p)): fill(c) for p, c in (entry.get("files") or {}).items()},
    )
