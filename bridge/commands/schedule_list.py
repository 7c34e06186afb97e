"""`bridge schedule list [DIR] -n N`: each schedule and its next fire times."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from bridge.commands.schedule_run import playbook_folder
from bridge.cron import jitter_offset, next_fires, validate_schedules
from bridge.scheduler import load_playbook, playbook_files
from bridge.ui import print_plain, print_schedule_table


def rows(folder: Path, count: int, now: datetime | None = None) -> tuple[list[list[str]], int]:
    """Table rows (playbook, cron, timezone, overlap, catch-up, jitter, next fires) and the broken count."""
    now = now or datetime.now(timezone.utc)
    out: list[list[str]] = []
    broken = 0
    for path in playbook_files(folder):
        try:
            playbook = load_playbook(path)
            validate_schedules(playbook)
        except Exception as exc:  # listed with its error; the others are still shown
            broken += 1
            out.append([path.name, "-", "-", "-", "-", "-", f"error: {exc}"])
            continue
        for schedule in playbook.schedule:
            fires = next_fires(schedule, now, count)
            jitter = jitter_offset(playbook.name, schedule)
            out.append([
                playbook.name, schedule.cron, schedule.timezone, schedule.overlap, schedule.catch_up,
                f"+{jitter:.0f}s" if jitter else "-",
                "\n".join(f.strftime("%Y-%m-%d %H:%M %Z") for f in fires),
            ])
    return out, broken


def run(directory: Path | None = None, count: int = 3, project: Path | None = None) -> int:
    folder, _ = playbook_folder(directory, project)
    table, broken = rows(folder, max(count, 1))
    if not table:
        print_plain(f"no scheduled playbooks in {folder} (add `schedule:` to a playbook)")
        return 0
    print_schedule_table(f"Schedules in {folder}",
                ["playbook", "cron", "timezone", "overlap", "catch-up", "jitter", f"next {count} fires"], table)
    return 1 if broken else 0
