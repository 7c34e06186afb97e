"""`bridge validate FILE...`: every problem of every file, with file:line:column; exit 0 if all valid."""

from __future__ import annotations

from pathlib import Path

from bridge.caveats import playbook_warnings
from bridge.errors import PlaybookError
from bridge.loader import load_playbook
from bridge.ui import print_text


def run(files: list[Path]) -> int:
    bad = 0
    for file in files:
        try:
            playbook = load_playbook(file)
        except PlaybookError as exc:
            bad += 1
            for problem in exc.problems:
                print_text(str(problem))
            continue
        print_text(f"ok: {file}", "green")
        for warning in playbook_warnings(playbook):
            print_text(f"  warning: {warning}", "yellow")
    if bad and len(files) > 1:
        print_text(f"{bad} of {len(files)} files have problems", "red")
    return 1 if bad else 0
