"""`bridge runs`: the latest runs of this project, newest first."""

from __future__ import annotations

import time
from pathlib import Path

from bridge.ledger import Ledger
from bridge.ledger_schema import RunRow


def live_status(row: RunRow, project: Path) -> str:
    """The recorded status, except a 'running' run nobody drives any more reads 'interrupted'."""
    from bridge.launch import lock_held
    from bridge.workspace import RunLayout

    if row.status == "running" and not lock_held(RunLayout(project, row.id)):
        return "interrupted"
    return row.status


def run_end(ledger: Ledger, row: RunRow, status: str) -> float:
    """When a run ended: recorded, else (an interrupted run) the last thing it recorded, else now."""
    if row.ended:
        return row.ended
    if status == "interrupted":
        return ledger.last_recorded(row.id) or row.started
    return time.time()


def run(directory: Path | None, limit: int) -> int:
    from bridge.ui import duration, money, print_run_table, print_text

    project = (directory or Path.cwd()).resolve()
    if not (project / ".bridge" / "ledger.db").exists():
        print_text("no runs yet in this project; start one with `bridge run PLAYBOOK`")
        return 0
    with Ledger(project) as ledger:
        rows = ledger.runs(limit)
        table = []
        for row in rows:
            status = live_status(row, project)
            end = run_end(ledger, row, status)
            table.append([row.id, row.playbook, status,
                          time.strftime("%Y-%m-%d %H:%M", time.localtime(row.started)),
                          duration(end - row.started), money(row.cost_usd)])
    if not table:
        print_text("no runs yet in this project; start one with `bridge run PLAYBOOK`")
        return 0
    print_run_table("runs", ["id", "playbook", "status", "started", "duration", "cost"], table)
    return 0
