"""Pointing one real CLI at the rehearsal model: env, extra argv and config files (data in configs/)."""

from __future__ import annotations

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
        """Create the config files (idempotent; existing ones are overwritten)."""
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
        env={k: fill(v) for k, v in (entry.get("env") or {}).items()},
        argv=tuple(fill(a) for a in entry.get("argv") or ()),
        files={Path(fill(p)): fill(c) for p, c in (entry.get("files") or {}).items()},
    )
