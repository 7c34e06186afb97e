"""A run's end, told: summary.md built from the ledger, the playbook's notifications, and what became
of them — a notification that did not arrive is a `RunWarning` event, a line in summary.md and an
event in the ledger; it never changes the run's result. Never prints."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from bridge.errors import BridgeError
from bridge.events import Emit, RunWarning, Status, to_dict
from bridge.ledger import Ledger
from bridge.notify import RunSummary, StageSummary, notify, write_run_summary
from bridge.playbook import Notify
from bridge.workspace import RunLayout

if TYPE_CHECKING:
    from bridge.launch import RunSpec

NOTE_CHARS = 160


def one_line(text: str, limit: int = NOTE_CHARS) -> str:
    """The first non-empty line of `text`, cut to `limit` characters."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[:limit - 1] + "…"


def stage_rows(ledger: Ledger, run_id: str) -> tuple[StageSummary, ...]:
    """One StageSummary per unit in the ledger; a unit nobody reported usage for has cost and tokens None."""
    out = []
    branches = {w["key"]: w for w in ledger.worktrees(run_id)}
    for row in ledger.units(run_id):
        reports = tuple(a["path"] for a in ledger.artifacts(run_id, row.key))
        wt = branches.get(row.key)
        failed = row.status in ("failure", "cancelled")
        if row.status != "success":
            note = one_line(row.reason) or None
        elif row.iteration is not None:  # a loop round: its verdict, since its outputs are overwritten
            note = one_line(row.final_message) or None
        else:
            note = None
        out.append(StageSummary(
            id=row.key, status=row.status, attempts=row.attempts,
            duration=(row.ended - row.started) if row.ended and row.started else 0.0,
            cost_usd=row.cost_usd or None, tokens=row.tokens or None, reports=reports,
            branch=wt["branch"] if wt else None,
            branch_note=f"{wt['status']}: {wt['message']}" if wt and wt["message"] else wt["status"] if wt else None,
            worktree=wt["path"] if wt and Path(wt["path"]).exists() else None,
            error=row.reason if failed else None, note=note))
    return tuple(out)


def loop_rounds(ledger: Ledger, run_id: str) -> tuple[str, ...]:
    """'fix: round 1 until not met, round 2 until held' per loop stage, from the recorded iterations."""
    rounds: dict[str, dict[int, str]] = {}
    words = {"running": "until not met", "success": "until held", "failure": "failed", "cancelled": "cancelled"}
    for name, data in ledger.events(run_id):
        if name == "loop_iteration":  # `status` says how the round ended (older records: `done` = held)
            status = data.get("status") or ("success" if data["done"] else "running")
            reason = data.get("reason") or ""
            what = "until never held" if reason.startswith("until never held") else words.get(status, status)
            rounds.setdefault(data["stage_id"], {})[data["iteration"]] = what
    return tuple(f"{sid}: " + ", ".join(f"round {i} {what}" for i, what in sorted(its.items()))
                 for sid, its in rounds.items())


def tell(ledger: Ledger, layout: RunLayout, *, playbook: str, notifies: Sequence[Notify], status: str,
         reason: str, started: float, ended: float, tokens: int, cost_usd: float, emit: Emit,
         resumed_at: float | None = None) -> Path:
    """Write summary.md, send the notifications, record and emit the ones that failed; the summary's path."""
    run_id = layout.run_id
    landing = ledger.landing(run_id)
    summary = RunSummary(run_id, playbook, status, started, ended, stage_rows(ledger, run_id),
                         cost_usd or None, tokens or None, str(layout.shared),
                         (reason,) if reason and status != "success" else (),
                         landing=landing["message"] if landing else None, resumed_at=resumed_at,
                         loops=loop_rounds(ledger, run_id))
    path = write_run_summary(layout.summary, summary)
    if not notifies:
        return path
    failures = notify(list(notifies), summary, summary_path=path, cwd=layout.project)
    if failures:
        summary = dataclasses.replace(summary, notify_failures=tuple(str(f) for f in failures))
        write_run_summary(layout.summary, summary)
        for failure in failures:
            warning = RunWarning(f"notification {failure} (the run's result stands)")
            data: dict[str, Any] = to_dict(warning)
            ledger.add_event(run_id, data.pop("event"), data)
            emit(warning)
    return path


def tell_not_started(spec: RunSpec, options: dict[str, Any], exc: BridgeError, emit: Emit) -> None:
    """A run whose id was promised (by a scheduler, `bridge watch`) that failed its checks — a CLI missing
    from cron's PATH, a bad --var — is still a run: recorded failed with the reason (`bridge show` has
    it), summarised, and notified (`on: failure`)."""
    from bridge.launch import load

    assert spec.run_id is not None
    try:  # its name and notify entries, from the playbook as written (the --var may be what is wrong)
        playbook = load(spec.playbook_path, {}, spec.project)
    except BridgeError:
        playbook = None
    name = playbook.name if playbook is not None else spec.playbook_path.stem
    reason = f"the run could not start: {exc}"
    layout = RunLayout(spec.project, spec.run_id).create()
    with Ledger(spec.project) as ledger:
        ledger.start_run(spec.run_id, name, spec.playbook_path, spec.project, vars=spec.vars, options=options,
                         pid=os.getpid(), trigger=str(spec.trigger) if spec.trigger else None)
        ledger.finish_run(spec.run_id, Status.FAILURE.value, reason, tokens=0, cost_usd=0.0)
        row = ledger.run(spec.run_id)
        tell(ledger, layout, playbook=name, notifies=playbook.notify if playbook is not None else (),
             status=Status.FAILURE.value, reason=reason, started=row.started if row else time.time(),
             ended=time.time(), tokens=0, cost_usd=0.0, emit=emit)
