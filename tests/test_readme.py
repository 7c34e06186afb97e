"""The README's playbook tour must be a playbook that validates, and its commands must exist."""

from __future__ import annotations

import re
from pathlib import Path

from bridge.loader import load_playbook_text

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_tour_playbook_validates(tmp_path: Path) -> None:
    block = re.search(r"```yaml\n(.*?)```", README.read_text(), re.S)
    assert block, "the README has no yaml block"
    playbook = load_playbook_text(block.group(1), str(tmp_path / "tour.yaml"))
    assert playbook.name == "audit-then-implement"
    assert set(playbook.stages) == {"audit", "fix"}


def test_ci_runs_the_readme_test_command() -> None:
    ci = (README.parent / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in README.read_text()
