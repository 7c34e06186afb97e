"""`bridge schedule fire PLAYBOOK --schedule N`: one fire, as a crontab line or a systemd unit starts it."""

from __future__ import annotations

import time
from pathlib import Path

from bridge.commands.run import EXIT_CODES


def run(playbook: Path, number: int = 1, directory: Path | None = None) -> int:
    from bridge.os_fire import fire
    from bridge.ui import print_schedule_event, progress

    def note(text: str) -> None:
        print_schedule_event(time.time(), "note", "", text)

    with progress(False) as emit:
        result = fire(playbook, directory or Path.cwd(), number, emit, note=note)
    return 0 if result is None else EXIT_CODES.get(result.status, 1)
