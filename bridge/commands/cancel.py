"""`bridge cancel RUN`: ask the bridge driving a run to stop it (agents stopped, state saved)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from bridge.errors import RunError
from bridge.ledger import Ledger

WAIT = 30.0


def run(run_id: str, directory: Path | None) -> int:
    from bridge.launch import lock_held, stop_leftovers
    from bridge.ui import print_text
    from bridge.workspace import RunLayout

    project = (directory or Path.cwd()).resolve()
    with Ledger(project) as ledger:
        row = ledger.find_run(run_id)
        layout = RunLayout(project, row.id)
        if lock_held(layout) and row.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(row.pid, signal.SIGTERM)  # the driving bridge treats it as a first Ctrl-C
            deadline = time.monotonic() + WAIT
            while lock_held(layout) and time.monotonic() < deadline:
                time.sleep(0.1)
            if lock_held(layout):
                raise RunError(f"run {row.id}: bridge (pid {row.pid}) did not stop within {WAIT:g}s; "
                               "try again, or stop that process yourself")
            print_text(f"run {row.id} cancelled; continue it with `bridge resume {row.id}`")
            return 0
        if row.status not in ("running", "waiting"):
            print_text(f"run {row.id} is not running (it is {row.status}); nothing to cancel")
            return 0
        ended = ledger.last_recorded(row.id)  # a killed run ended then, not now (before stop_leftovers writes)
        stopped = stop_leftovers(ledger, row.id)
        for unit in ledger.units(row.id):
            if unit.status in ("running", "waiting"):
                ledger.upsert_unit(row.id, unit.key, unit.stage_id, status="cancelled",
                                   reason="cancelled while its bridge was gone")
        ledger.mark_run(row.id, "cancelled", "cancelled after its bridge had gone", ended=ended)
        extra = f"; stopped {stopped} leftover agent process group(s)" if stopped else ""
        print_text(f"run {row.id} was not being driven any more; marked cancelled{extra}. "
                   f"Continue it with `bridge resume {row.id}`")
    return 0
