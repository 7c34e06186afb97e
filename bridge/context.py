"""The context of a stage's templates: its shape and the values in it.

Built by `build_context` (real runs, through bridge.views) or `stub_context` (validation and
`bridge plan`), so both have exactly the same shape. Its mappings say what to fix when a template
asks for a key they lack (bridge.templates.Lookup):

    vars      the playbook's vars (with --var overrides)
    matrix    this matrix item's values ({} when the stage has no matrix)
    shared    absolute path of the run's shared folder (str)
    inbox     absolute path of the persistent inbox folder (str)
    run       {"id": ..., "playbook": ...}
    stage     {"id": ..., "name": ...} of the stage being rendered
    loop      {"iteration": 1-based, "max_iterations": n, "previous": {id: StageView} | None}
              inside a loop (previous is None on iteration 1), else None
    tasks     the shared task list: tasks.items (dicts: text, done, owner, line, depth), tasks.done,
              tasks.total, tasks.open; iterating it yields the items (empty without a task list)
    trigger   the file that triggered the run under `bridge watch` (str; the last to change), else None
    triggers  every file of the burst that triggered the run (list of str, `trigger` last), else []
    stages    {id: StageView} of the stages upstream of this one (only those: referencing any
              other stage is an error that names the stage and says to add it to `needs`)
    conflict  only in a resolution stage (one named by a worktree's `on_conflict`): the merge
              conflict it resolves — stage, strategy, files, branch, into, diff, how
              (bridge.merge.conflict_prompt_context)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from bridge import dag
from bridge.output_value import OutputValue, StubValue  # noqa: F401 (re-exported: part of the context)
from bridge.playbook import Playbook, Stage, matrix_items
from bridge.templates import Lookup, TemplateError, fail, render, suggest


class Stages(Lookup):
    """`stages`: the StageViews a template may see; other ids fail with a message saying why."""

    def __init__(self, views: Mapping[str, StageView], owner: str = "", known: Iterable[str] = ()) -> None:
        super().__init__(views)
        self._bridge_owner, self._bridge_known = owner, tuple(known)

    def _message(self, key: Any) -> str:
        visible = ", ".join(self) or "none"
        owner, known = self._bridge_owner, self._bridge_known
        if key in known and owner:
            return (f"stages.{key} is not upstream of {owner!r}, so its results are not known "
                    f"when it runs; add {key!r} to needs (visible here: {visible})")
        return f"there is no stage {key!r}{suggest(key, known or self)} (visible here: {visible})"


class Vars(Lookup):
    """`vars`: the playbook's declared vars."""

    def _message(self, key: Any) -> str:
        return f"no var {key!r}{suggest(key, self)} (declared under `vars:`: {', '.join(self) or 'none'})"


class Matrix(Lookup):
    """`matrix`: this item's values."""

    def _message(self, key: Any) -> str:
        if not self:
            return f"matrix.{key}: this stage has no `matrix:`"
        return f"no matrix key {key!r}{suggest(key, self)} (this stage's matrix: {', '.join(self)})"


class Outputs(Lookup):
    """`stages.<id>.outputs`: declared output path -> OutputValue."""

    def __init__(self, values: Mapping[str, OutputValue], owner: str = "") -> None:
        super().__init__(values)
        self._bridge_owner = owner

    def _message(self, key: Any) -> str:
        declared = ", ".join(self) or "none"
        return f"stage {self._bridge_owner!r} declares no output {key!r}{suggest(key, self)} (declared: {declared})"


class Conflict(Lookup):
    """`conflict`: the merge conflict a resolution stage resolves."""

    def _message(self, key: Any) -> str:
        return f"conflict has no {key!r}{suggest(key, self)} (it has: {', '.join(self)})"


STUB_CONFLICT = {"stage": "(the conflicting unit)", "strategy": "merge", "files": ["(a conflicting file)"],
                 "branch": "bridge/RUN_ID/(unit)", "into": "bridge/RUN_ID/@integration",
                 "diff": "(the diff with conflict markers)", "how": "(how to resolve it)"}


class TasksView:
    """`tasks`: the shared task list as read when the template is rendered."""

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        data = data or {}
        self.items: tuple[dict[str, Any], ...] = tuple(data.get("items") or ())
        self.done = int(data.get("done") or sum(bool(t.get("done")) for t in self.items))
        self.total = int(data.get("total") or len(self.items))
        self.open = int(data.get("open") if data.get("open") is not None else self.total - self.done)

    def __iter__(self) -> Any:
        return iter(self.items)

    def __len__(self) -> int:
        return self.total

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, int):
            return self.items[key]
        if key in ("items", "done", "total", "open"):
            return getattr(self, key)
        raise KeyError(key)

    def to_dict(self) -> dict[str, Any]:
        return {"items": list(self.items), "done": self.done, "total": self.total, "open": self.open}

    def __repr__(self) -> str:
        return f"TasksView(done={self.done}, total={self.total})"


# validation renders templates once: one open placeholder item, so `tasks.items[0].text` validates
STUB_TASKS = TasksView({"items": [{"text": "(a task)", "done": False, "owner": None, "line": 1, "depth": 0}]})


@dataclass(frozen=True)
class StageView:
    """What a template knows about another stage (its last attempt / last loop iteration)."""

    id: str
    status: str = "pending"
    outputs: Mapping[str, OutputValue] = field(default_factory=dict)
    summary: str = ""
    final_message: str = ""
    cost_usd: float = 0.0
    matrix: Mapping[str, Any] = field(default_factory=dict)
    items: tuple[StageView, ...] = ()  # one view per matrix item; () without a matrix

    def __getattr__(self, name: str) -> Any:  # only for names a StageView lacks
        if name.startswith("_"):
            raise AttributeError(name)
        fields = ("status", "outputs", "summary", "final_message", "cost_usd", "matrix", "items")
        fail(f"stages.{self.id} has no {name!r}{suggest(name, fields)} (it has: {', '.join(fields)})")


def build_context(
    *, vars: Mapping[str, Any], shared: Path, inbox: Path, run_id: str, playbook: str, stage_id: str,
    stages: Mapping[str, StageView], stage_name: str | None = None, matrix: Mapping[str, Any] | None = None,
    loop_iteration: int | None = None, loop_max: int | None = None,
    loop_previous: Mapping[str, StageView] | None = None, tasks: Any = None,
    trigger: Path | str | None = None, known: Iterable[str] = (), conflict: Mapping[str, Any] | None = None,
    triggers: Iterable[Path | str] = (),
) -> dict[str, Any]:
    """The context of one stage's templates, from plain values (see the module docstring).

    `stages` should hold exactly the views of `bridge.dag.visible(playbook, stage_id)`; `known` (all
    stage ids of the playbook) only improves the message when a template names another stage.
    """
    loop = None
    if loop_iteration is not None:
        previous = None if loop_previous is None else Stages(loop_previous, stage_id, known)
        loop = {"iteration": loop_iteration, "max_iterations": loop_max, "previous": previous}
    extra = {} if conflict is None else {"conflict": Conflict(conflict)}
    return {
        "vars": Vars(vars),
        "matrix": Matrix(matrix or {}),
        "shared": str(shared),
        "inbox": str(inbox),
        "run": {"id": run_id, "playbook": playbook},
        "stage": {"id": stage_id, "name": stage_name or stage_id},
        "loop": loop,
        "tasks": tasks if isinstance(tasks, TasksView) else TasksView(
            tasks if isinstance(tasks, Mapping) else {"items": list(tasks or [])}),
        "trigger": None if trigger is None else str(trigger),
        "triggers": [str(t) for t in triggers] or ([] if trigger is None else [str(trigger)]),
        "stages": Stages(stages, stage_id, known),
        **extra,
    }


def _stub_view(playbook: Playbook, sid: str, stage: Stage, shared: Path) -> StageView:
    items = []
    for item in matrix_items(stage.matrix):
        ctx = {"vars": dict(playbook.vars), "matrix": item, "shared": str(shared), "stages": {}}
        outs = {}
        for spec in stage.outputs:
            try:
                rel = render(spec.path, ctx, sid)
            except TemplateError:
                rel = spec.path  # reported on the stage itself
            outs[rel] = OutputValue(shared / rel, rel, f"(content of {rel})", stub=True)
        items.append(StageView(sid, "success", Outputs(outs, sid), f"(summary of {sid})",
                               f"(final message of {sid})", 0.0, item))
    merged = Outputs({k: v for view in items for k, v in view.outputs.items()}, sid)
    top = items[0] if len(items) == 1 and not stage.matrix else None
    if top is not None:
        return top
    return StageView(sid, "success", merged, f"(summary of {sid})", f"(final message of {sid})", 0.0,
                     {}, tuple(items))


def stub_context(
    playbook: Playbook, stage_id: str, shared: Path, *, matrix: Mapping[str, Any] | None = None,
    until: bool = False, trigger: bool = True, first_iteration: bool = False,
) -> dict[str, Any]:
    """The context of `stage_id`'s templates with stub values (status success, placeholder text).

    matrix: the item to use (default: the stage's first item). until=True: the context of a loop
    stage's `until` (its members visible, `loop` set). first_iteration=True: `loop.previous` is None,
    as on a loop's first iteration (otherwise it holds stub views). Used by validation and `bridge plan`.
    """
    where = dag.places(playbook)
    place = where[stage_id]
    views = {sid: _stub_view(playbook, sid, where[sid].stage, shared)
             for sid in dag.visible(playbook, stage_id, until=until)}
    loop_id = stage_id if until else place.loop
    iteration = max_it = previous = None
    if loop_id is not None:
        members = dag.group_stages(playbook, loop_id)
        loop_spec = where[loop_id].stage.loop
        iteration, max_it = 1, loop_spec.max_iterations if loop_spec else None
        previous = None if first_iteration else {
            sid: _stub_view(playbook, sid, where[sid].stage, shared) for sid in members}
    if matrix is None:
        matrix = matrix_items(place.stage.matrix)[0]
    return build_context(
        vars=playbook.vars, shared=shared, inbox=shared.parent / "inbox", run_id="RUN_ID",
        playbook=playbook.name, stage_id=stage_id, stage_name=place.stage.name, stages=views,
        matrix=matrix, loop_iteration=iteration, loop_max=max_it, loop_previous=previous,
        tasks=STUB_TASKS, trigger=str(shared.parent / "inbox" / "TRIGGER") if trigger else None, known=where,
        conflict=STUB_CONFLICT if stage_id in dag.resolvers(playbook) else None,
    )
