"""Resuming an interrupted run: what earlier sessions left, what changed since, what still runs.

`resume_run` is what `bridge resume` calls; it drives the rest of the run with launch's Session.
"""

from __future__ import annotations

import os
from pathlib import Path

from bridge.events import Emit
from bridge.launch import RunSpec, Session, load, playbook_digest, run_lock, stop_leftovers
from bridge.ledger import Ledger
from bridge.ledger_schema import RunRow
from bridge.errors import RunError
from bridge.playbook import Playbook, iter_stages
from bridge.selection import selected_stages
from bridge.unit import Prior, RunResult
from bridge.workspace import RunLayout


def _prior_sessions(ledger: Ledger, run_id: str) -> dict[str, Prior]:
    """What the earlier sessions of a run left per unit. An unfinished unit's attempts, tokens and
    cost come from its attempt rows: a killed bridge never wrote them into the unit's row."""
    totals = ledger.attempt_totals(run_id)
    prior = {}
    for u in ledger.units(run_id):
        attempts, tok, cost = totals.get(u.key, (0, 0, 0.0))
        if u.status == "success":  # possibly reused from an earlier run (--from): no attempts here
            attempts, tok, cost = u.attempts, u.tokens, u.cost_usd
        prior[u.key] = Prior(u.status, attempts, u.final_message, u.summary, u.session_id, tok, cost,
                             stage_id=u.stage_id)
    return prior


def resume_run(project: Path, ref: str, emit: Emit) -> RunResult:
    """Continue an interrupted (or failed) run: succeeded units are reused, the rest run again."""
    project = project.resolve()
    with Ledger(project) as ledger:
        row: RunRow = ledger.find_run(ref)
        layout = RunLayout(project, row.id)
        if row.status == "success":
            raise RunError(f"run {row.id} already succeeded; there is nothing to resume")
        with run_lock(layout):
            stop_leftovers(ledger, row.id)
            opts = row.options
            parallel, bad_parallel = _stored_parallel(opts.get("max_parallel"))
            spec = RunSpec(Path(row.playbook_path), project, row.vars, tuple(opts.get("only") or ()),
                           opts.get("from_stage"), parallel, bool(opts.get("rehearse")),
                           Path(opts["script"]) if opts.get("script") else None,
                           Path(row.trigger) if row.trigger else None,
                           triggers=tuple(Path(t) for t in opts.get("triggers") or ()))
            playbook = load(spec.playbook_path, spec.vars, project)
            layout.create()
            prior = _prior_sessions(ledger, row.id)
            notes = _edited(spec.playbook_path, opts.get("playbook_sha256"), playbook, prior) + bad_parallel
            selected = selected_stages(playbook, spec.only, spec.from_stage)
            _check_resume_clis(playbook, selected, prior, project, row.id)  # before the run is touched
            ledger.reopen_run(row.id, os.getpid())
            from bridge.mergeback import base_from_json, take_base

            return Session(playbook, spec, layout, ledger, emit, prior, selected, resumed=True,
                           base=base_from_json(opts.get("base")) or take_base(project, playbook),
                           notes=notes).drive()


def _stored_parallel(value: object) -> tuple[int | None, tuple[str, ...]]:
    """The run's --max-parallel as recorded; a value no run can use (an older bridge accepted -3) is
    dropped, with a note, so the resume runs with the playbook's or the default limit."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value, ()  # type: ignore[return-value]
    return None, (f"the run's recorded --max-parallel {value!r} is not a usable limit (at least 1): "
                  "the resume uses the playbook's max_parallel, else 4",)


def _check_resume_clis(playbook: Playbook, selected: frozenset[str] | None, prior: dict[str, Prior],
                       project: Path, run_id: str) -> None:
    """The pre-flight of `start_run`, for the stages a resume still runs: one error lists every missing CLI."""
    from bridge.errors import AgentNotFound
    from bridge.preflight import check_clis, still_to_run

    finals = {sid for sid, _ in iter_stages(playbook.finally_)}  # run again in every session
    succeeded = {key for key, p in prior.items() if p.status == "success" and p.stage_id not in finals}
    try:
        check_clis(playbook, still_to_run(playbook, selected, succeeded), project)
    except AgentNotFound as exc:
        raise AgentNotFound(f"{exc} The run is unchanged: `bridge resume {run_id}` continues it once "
                            "the CLI is found.") from None


def _edited(path: Path, recorded: str | None, playbook: Playbook, prior: dict[str, Prior]) -> tuple[str, ...]:
    """A resume runs the playbook as it is now; say so when it changed since the run started."""
    if recorded is None or playbook_digest(path) == recorded:
        return ()
    known = {sid for sid, _ in [*iter_stages(playbook.stages), *iter_stages(playbook.finally_)]}
    gone = sorted({p.stage_id for p in prior.values() if p.stage_id and p.stage_id not in known})
    tail = f"; stages of the run no longer in it: {', '.join(gone)}" if gone else ""
    return (f"{path} changed since this run started: the resume runs it as it is now (succeeded units "
            f"are kept){tail}",)
