"""Where the shipped data (configs/, playbooks/) lives, installed or in a source checkout."""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """The shipped `configs` or `playbooks` folder (wheel: bridge/_data/NAME; checkout: ../NAME)."""
    installed = _PKG / "_data" / name
    if installed.is_dir():
        return installed
    return _PKG.parent / name
