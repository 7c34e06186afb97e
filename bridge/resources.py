"""Where the shipped data (configs/, playbooks/) lives, installed or in a source checkout."""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent
# in a checkout, shipped data that lives elsewhere than ../NAME (the wheel maps it in pyproject.toml)
_CHECKOUT = {"clis": Path("tests") / "e2e"}  # package.json + lock pinning the agent CLIs


def data_dir(name: str) -> Path:
    """The shipped `configs`, `playbooks` or `clis` folder (wheel: bridge/_data/NAME; checkout: ../NAME)."""
    installed = _PKG / "_data" / name
    if installed.is_dir():
        return installed
    return _PKG.parent / _CHECKOUT.get(name, Path(name))
