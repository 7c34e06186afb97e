"""`--only` / `--from`: which stages a run runs, and what it reuses for the others from an earlier run.

Reuse is explicit and safe: only from the latest earlier run of the same playbook file (its resolved
path) with the same `--var` values, named in the output ("reused from run X"); with none, the
stages left out are skipped, and the run says so. Never prints.
"""

from __future__ import annotations

import difflib
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bridge import dag
from bridge.errors import RunError
from bridge.ledger import Ledger
from bridge.playbook import Playbook, iter_stages
from bridge.unit import Prior
from bridge.workspace import RunLayout


def selected_stages(playbook: Playbook, only: tuple[str, ...], from_stage: str | None) -> frozenset[str] | None:
    """The stage ids a run with --only / --from runs (None: all); RunError for an id it cannot select."""
    if not only and from_stage is None:
        return None
    places = dag.places(playbook)
    for sid in (*only, *([from_stage] if from_stage else [])):
        _check_selectable(sid, places)
    chosen = set(only)
    if from_stage is not None:
        needs = dag.needs_of(playbook.stages)
        chosen |= {from_stage} | {s for s in playbook.stages if from_stage in dag.upstream(needs, s)}
    for sid, stage in iter_stages(playbook.stages):
        if sid in chosen and stage.loop is not None:
            chosen |= {m for m, _ in iter_stages(stage.loop.stages)}
    return frozenset(chosen | set(playbook.finally_))


def _check_selectable(sid: str, places: dict[str, dag.Place]) -> None:
    option = "--only / --from"
    if sid not in places:
        top = sorted(s for s, p in places.items() if p.group == dag.TOP)
        close = difflib.get_close_matches(sid, top, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise RunError(f"{option}: there is no stage {sid!r}{hint}. The stages it can select: {', '.join(top)}")
    place = places[sid]
    if place.loop is not None:
        outer = place.loop
        while places[outer].loop is not None:
            outer = places[outer].loop or outer
        raise RunError(f"{option}: stage {sid!r} is a member of loop {outer!r}, which runs as a whole: "
                       f"select the loop (--only {outer} or --from {outer})")
    if place.group == dag.FINALLY:
        raise RunError(f"{option}: {sid!r} is a `finally` stage; those run in every run, whatever is "
                       "selected: select main stages only")


@dataclass(frozen=True)
class Reuse:
    """What a run with --only / --from takes from an earlier run for the stages it leaves out."""

    prior: dict[str, Prior] = field(default_factory=dict)
    run_id: str | None = None  # the run the results come from; None when no run qualified

    def note(self, playbook_path: Path) -> tuple[str, ...]:
        """What the run says about it at its start (the reused units name the run as they finish)."""
        if self.run_id is not None:
            return ()
        return (f"no earlier run of {playbook_path} with the same --var values: the stages --only / --from "
                "leave out are skipped, not reused",)


_REUSED = re.compile(r"^reused from run (\S+)")


def _origin(ledger: Ledger, run_id: str, row: Any) -> str:
    """The run a unit's result was made in, following `reused from run X` back (a few hops at most)."""
    for _ in range(20):
        m = _REUSED.match(row.reason or "")
        earlier = ledger.unit(m.group(1), row.key) if m else None
        if earlier is None:
            return run_id
        run_id, row = m.group(1), earlier
    return run_id


def reuse_earlier(ledger: Ledger, playbook_path: Path, vars: dict[str, str], layout: RunLayout,
                  selected: frozenset[str]) -> Reuse:
    """The successful units, outside `selected`, of the latest earlier run of the same playbook file
    with the same vars (a --var equal to its declared default counts as not given); their outputs are
    copied into this run's shared folder."""
    try:
        declared = (yaml.safe_load(playbook_path.read_text(encoding="utf-8")) or {}).get("vars") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        declared = {}

    def effective(given: dict[str, str]) -> dict[str, str]:
        merged = {**(declared if isinstance(declared, dict) else {}), **given}
        return {k: v if isinstance(v, str) else json.dumps(v) for k, v in merged.items()}

    runs = [r for r in ledger.runs(200) if r.id != layout.run_id and r.playbook_path == str(playbook_path)
            and effective(r.vars) == effective(vars)]
    if not runs:
        return Reuse()
    prev = runs[0]
    prior = {}
    prev_shared = RunLayout(layout.project, prev.id).shared
    for row in ledger.units(prev.id):
        if row.status != "success" or row.stage_id in selected:
            continue
        prior[row.key] = Prior("success", row.attempts, row.final_message, row.summary, row.session_id,
                               stage_id=row.stage_id, from_run=prev.id)
        origin = _origin(ledger, prev.id, row)  # the run it really ran in (it may be reused there too)
        origin_shared = prev_shared if origin == prev.id else RunLayout(layout.project, origin).shared
        for art in ledger.artifacts(origin, row.key):
            src, dst = origin_shared / art["path"], layout.shared / art["path"]
            if src.is_file():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
    return Reuse(prior, prev.id)
