"""The stage graph: execution layers, cycles, and which stages are upstream of which.

Functions here take plain `needs` graphs (`{stage_id: [needed ids]}`) or a `Playbook`, and never
look at raw YAML (the loader reports dangling needs and cycles with file positions).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from bridge.errors import BridgeError
from bridge.playbook import Playbook, Stage

Needs = Mapping[str, Sequence[str]]

TOP = "stages"
FINALLY = "finally"


class CycleError(BridgeError):
    """Stages need each other in a circle; `cycle` is the path, e.g. ['a', 'b', 'a']."""

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        super().__init__(f"stages need each other in a cycle: {' -> '.join(cycle)}; remove one of these needs")


def needs_of(stages: Mapping[str, Stage]) -> dict[str, list[str]]:
    """The needs graph of one group of stages (top level, one loop, or finally)."""
    return {sid: list(stage.needs) for sid, stage in stages.items()}


def find_cycle(needs: Needs) -> list[str] | None:
    """The first cycle found, as a closed path (a -> b -> a), or None. Unknown ids are ignored."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in needs.get(node, ()):
            if dep not in needs:
                continue
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in needs:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def layers(needs: Needs) -> list[list[str]]:
    """Stages grouped so each layer only needs earlier layers; declaration order within a layer.

    A need outside the group (a `finally` stage's on a main stage) is met before the group starts.
    """
    cycle = find_cycle(needs)
    if cycle:
        raise CycleError(cycle)
    depth: dict[str, int] = {}

    def level(sid: str) -> int:
        if sid not in depth:
            depth[sid] = 1 + max((level(d) for d in needs[sid] if d in needs), default=-1)
        return depth[sid]

    out: list[list[str]] = []
    for sid in needs:
        n = level(sid)
        while len(out) <= n:
            out.append([])
        out[n].append(sid)
    return out


def upstream(needs: Needs, sid: str) -> set[str]:
    """Every stage `sid` needs, directly or transitively (never `sid` itself, even in a cycle)."""
    seen: set[str] = set()
    todo = list(needs.get(sid, ()))
    while todo:
        dep = todo.pop()
        if dep in seen or dep == sid:
            continue
        seen.add(dep)
        todo.extend(needs.get(dep, ()))
    return seen


@dataclass(frozen=True)
class Place:
    """Where a stage lives: its group ('stages', 'finally' or the id of its loop)."""

    stage: Stage
    group: str
    loop: str | None  # the enclosing loop stage's id, for loop members


def places(playbook: Playbook) -> dict[str, Place]:
    """Every stage id of the playbook (loop members and finally stages included) -> its Place."""
    out: dict[str, Place] = {}

    def walk(stages: Mapping[str, Stage], group: str, loop: str | None) -> None:
        for sid, stage in stages.items():
            out.setdefault(sid, Place(stage, group, loop))
            if stage.loop is not None:
                walk(stage.loop.stages, sid, sid)

    walk(playbook.stages, TOP, None)
    walk(playbook.finally_, FINALLY, None)
    return out


def group_stages(playbook: Playbook, group: str) -> Mapping[str, Stage]:
    """The stages of one group: 'stages', 'finally' or a loop id."""
    if group == TOP:
        return playbook.stages
    if group == FINALLY:
        return playbook.finally_
    loop = places(playbook)[group].stage.loop
    if loop is None:
        raise BridgeError(f"stage {group!r} is not a loop")
    return loop.stages


def _with_members(playbook: Playbook, ids: Iterable[str], where: dict[str, Place]) -> set[str]:
    """ids plus, for each loop among them, all its members (their last iteration is visible)."""
    out: set[str] = set()
    todo = list(ids)
    while todo:
        sid = todo.pop()
        if sid in out:
            continue
        out.add(sid)
        loop = where[sid].stage.loop if sid in where else None
        if loop is not None:
            todo.extend(loop.stages)
    return out


def visible(playbook: Playbook, sid: str, *, until: bool = False) -> list[str]:
    """Stage ids a template of `sid` may reference as `stages.<id>`, in declaration order.

    A stage sees its transitive needs (a needed loop brings its members). A loop member also sees
    what its loop sees. A finally stage sees every other stage except later finally stages it does
    not need. With until=True (the loop's `until`), the loop's own members are visible too.
    """
    where = places(playbook)
    place = where[sid]
    seen: set[str] = set()
    if place.group == FINALLY:
        seen |= {i for i, p in where.items() if p.group != FINALLY}
        seen |= upstream(needs_of(playbook.finally_), sid)
    else:
        cur: str | None = sid
        while cur is not None:
            group = group_stages(playbook, where[cur].group)
            seen |= _with_members(playbook, upstream(needs_of(group), cur), where)
            cur = where[cur].loop
    if until and place.stage.loop is not None:
        seen |= _with_members(playbook, place.stage.loop.stages, where)
    seen.discard(sid)
    return [i for i in where if i in seen]


def resolvers(playbook: Playbook) -> dict[str, list[str]]:
    """Resolution stages: the ids named by a worktree's `on_conflict` -> the stages they serve.

    A resolver is not scheduled in the DAG: it runs only when merging one of those stages' units
    conflicts (bridge.mergeback), on that unit's branch (see docs/worktrees.md).
    """
    out: dict[str, list[str]] = {}
    for sid, place in places(playbook).items():
        wt = place.stage.worktree
        if wt is not None and wt.on_conflict not in ("fail", "continue"):
            out.setdefault(wt.on_conflict, []).append(sid)
    return out
