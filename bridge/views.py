"""Results -> what templates see: StageViews over finished stages, and each stage's context."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bridge import dag
from bridge.playbook import Playbook, Stage
from bridge.context import Outputs, OutputValue, StageView, build_context
from bridge.templates import TemplateError, evaluate, render
from bridge.unit import StageResult, UnitResult
from bridge.workspace import stage_key

__all__ = ["Contexts", "evaluate", "handed_bytes", "handed_pieces", "render", "unit_key"]


def unit_key(stage_id: str, matrix: dict[str, Any] | None, iteration: int | None) -> str:
    """The unit's name in the ledger and the run folder: `audit-security`, `verify@2` in a loop."""
    key = stage_key(stage_id, matrix or None)
    return f"{key}@{iteration}" if iteration is not None else key


def handed_pieces(context: dict[str, Any]) -> list[str]:
    """What upstream stages offer a prompt: summaries, final messages, output texts and paths."""
    views: list[StageView] = []
    pending = list((context.get("stages") or {}).values())
    previous = (context.get("loop") or {}).get("previous") if isinstance(context.get("loop"), dict) else None
    pending += list((previous or {}).values())
    while pending:
        view = pending.pop()
        views.append(view)
        pending.extend(view.items)
    pieces: list[str] = []
    for view in views:
        pieces += [view.summary, view.final_message]
        for out in view.outputs.values():
            # an output the template never read (only its path) is not read now either
            pieces += [out.text if getattr(out, "loaded", True) else "", str(out)]
    return pieces


MIN_LINE = 12  # a line of a piece counts on its own (not verbatim with the rest) from this many characters


def handed_bytes(prompt: str, pieces: list[str]) -> int:
    """UTF-8 bytes of `prompt` that are upstream pieces (see handed_pieces), quoted in it.

    A piece counts where it occurs verbatim; one a filter re-laid out (`| indent`, `| trim`, a
    `{% for %}` over its lines) counts line by line: each of its lines found in the prompt, in order,
    if it has at least MIN_LINE characters or directly follows a line already found (so short lines
    of the prompt's own wording do not count). Overlaps count once (a capped summary inside the final
    message it was cut from); the prompt's own wording counts not at all. This is what the ledger
    records as an attempt's hand-off; a filter that changes the text itself (`| upper`) is not seen.
    """
    covered = bytearray(len(prompt))
    for piece in {p for p in pieces if p and p.strip()}:
        start = prompt.find(piece)
        if start != -1:
            while start != -1:
                covered[start:start + len(piece)] = b"\x01" * len(piece)
                start = prompt.find(piece, start + len(piece))
            continue
        at, previous = 0, None  # where to search next; the end of the last line found
        for line in (ln.strip() for ln in piece.splitlines()):
            if not line:
                continue
            pos = prompt.find(line, at)
            follows = previous is not None and pos != -1 and prompt.count("\n", previous, pos) <= 1 \
                and not prompt[previous:pos].strip()
            if pos == -1 or (len(line) < MIN_LINE and not follows):
                previous = None
                continue
            covered[pos:pos + len(line)] = b"\x01" * len(line)
            at = previous = pos + len(line)
    return sum(len(ch.encode("utf-8")) for ch, hit in zip(prompt, covered) if hit)


class Contexts:
    """Builds template contexts for one run; views of finished results are built once and cached."""

    def __init__(self, playbook: Playbook, *, shared: Path, inbox: Path, run_id: str,
                 vars: dict[str, Any], tasks: Callable[[], dict[str, Any]] = dict,
                 trigger: str | None = None, triggers: tuple[str, ...] = ()) -> None:
        self.playbook, self.shared, self.inbox, self.run_id = playbook, shared, inbox, run_id
        self.vars, self.tasks, self.trigger, self.triggers = vars, tasks, trigger, triggers
        self.places = dag.places(playbook)
        self._visible: dict[tuple[str, bool], list[str]] = {}
        self._views: dict[int, tuple[StageResult, StageView]] = {}  # id(result) -> (result, its view)

    def output_rels(self, stage: Stage, matrix: dict[str, Any]) -> list[str]:
        """The stage's declared output paths for one matrix item (paths may use `matrix` / `vars`)."""
        ctx = {"vars": self.vars, "matrix": matrix, "shared": str(self.shared),
               "run": {"id": self.run_id, "playbook": self.playbook.name}}
        out = []
        for spec in stage.outputs:
            try:
                out.append(render(spec.path, ctx, "outputs") if "{" in spec.path else spec.path)
            except TemplateError:
                out.append(spec.path)
        return out

    def _unit_view(self, sid: str, res: UnitResult) -> StageView:
        rels = self.output_rels(res.unit.stage, res.unit.matrix)
        outputs = Outputs({rel: OutputValue.load(self.shared, rel) for rel in rels}, sid)
        return StageView(sid, res.status.value, outputs, res.summary, res.final_message, res.cost_usd,
                         dict(res.unit.matrix))

    def view(self, sid: str, result: StageResult | None) -> StageView:
        if result is None:
            return StageView(sid, "pending", Outputs({}, sid))
        cached = self._views.get(id(result))
        if cached is not None and cached[0] is result:  # an id is reused once its object is freed
            return cached[1]
        stage = self.places[sid].stage if sid in self.places else None
        if stage is not None and stage.matrix:
            items = tuple(self._unit_view(sid, u) for u in result.units)
            merged = Outputs({k: v for item in items for k, v in item.outputs.items()}, sid)
            view = StageView(sid, result.status.value, merged, result.summary, result.final_message,
                             result.cost_usd, {}, items)
        elif len(result.units) == 1 and stage is not None and stage.loop is None:
            unit = self._unit_view(sid, result.units[0])
            view = StageView(sid, result.status.value, unit.outputs, unit.summary, unit.final_message,
                             unit.cost_usd)
        else:
            view = StageView(sid, result.status.value, Outputs({}, sid), result.summary,
                             result.final_message, result.cost_usd)
        self._views[id(result)] = (result, view)  # the result is held, so its id stays its own
        return view

    def views(self, results: dict[str, StageResult]) -> dict[str, StageView]:
        return {sid: self.view(sid, res) for sid, res in results.items()}

    def visible(self, sid: str, until: bool = False) -> list[str]:
        key = (sid, until)
        if key not in self._visible:
            self._visible[key] = dag.visible(self.playbook, sid, until=until)
        return self._visible[key]

    def context(self, sid: str, results: dict[str, StageResult], *, matrix: dict[str, Any] | None = None,
                iteration: int | None = None, previous: dict[str, StageResult] | None = None,
                until: bool = False, conflict: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The context of `sid`'s templates (its prompt, `if`, outputs; its `until` with until=True);
        `conflict` for a resolution stage's unit."""
        place = self.places[sid]
        stages = {v: self.view(v, results.get(v)) for v in self.visible(sid, until)}
        loop_id = sid if until else place.loop
        loop_max = None
        if loop_id is not None:
            spec = self.places[loop_id].stage.loop
            loop_max = spec.max_iterations if spec else None
        return build_context(
            vars=self.vars, shared=self.shared, inbox=self.inbox, run_id=self.run_id,
            playbook=self.playbook.name, stage_id=sid, stage_name=place.stage.name, stages=stages,
            matrix=matrix or {}, loop_iteration=iteration if loop_id is not None else None,
            loop_max=loop_max, loop_previous=None if previous is None else self.views(previous),
            tasks=self.tasks(), trigger=self.trigger, known=self.places, conflict=conflict, triggers=self.triggers,
        )
