"""Resolution stages: a merge conflict handed to the stage a worktree's `on_conflict` names.

For each conflicting unit U, in merge order: a worktree on U's branch with the integration branch
merged in and the conflict markers left in the files (`bridge.merge.open_resolution`); the resolver
runs there as its own unit (key `<resolver>-<U>`), its templates seeing `conflict`; bridge commits
the merge (`conclude_resolution`, refused while markers are left) and merges U's branch once more.
Anything short of that leaves U's branch exactly as it was and U failed (docs/worktrees.md).
A resolution a killed bridge left behind is dropped on resume and run afresh (`recover_interrupted`).
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any

from bridge.branchguard import forbidden_paths
from bridge.events import GitNote, Status
from bridge.merge import (MergeResult, abandon_resolution, conclude_resolution, conflict_prompt_context,
                          drop_interrupted_resolution, merge_back, open_resolution)
from bridge.playbook import Worktree
from bridge.unit import Resolve, StageResult, Unit
from bridge.workspace import stage_key
from bridge.worktrees import WorktreeInfo, add_worktree, open_repo, remove_worktree, run_git


def resolution_key(resolver: str, client: Unit) -> str:
    """The resolver's unit for `client`'s conflict: `resolve-impl-b`, `resolve-impl@2`."""
    return f"{stage_key(resolver)}-{client.key}"


async def resolve_conflicts(integ: Any, result: StageResult, resolver: str, conflicts: list[MergeResult],
                            resolve: Resolve) -> tuple[list[MergeResult], dict[str, str]]:
    """Resolve each conflict in turn: (the conflicts left, why each was not resolved)."""
    from bridge.mergeback import worktree_key

    units = {worktree_key(u.unit): u.unit for u in result.units}
    wt = result.units[0].unit.stage.worktree
    left: list[MergeResult] = []
    why: dict[str, str] = {}
    for m in conflicts:
        again, note = await _resolve_one(integ, units[m.stage_key], m, wt, resolver, resolve)
        if again is not None:
            left.append(again)
            why[again.stage_key] = note
    return left, why


async def _resolve_one(integ: Any, unit: Unit, m: MergeResult, wt: Worktree, resolver: str,
                       resolve: Resolve) -> tuple[MergeResult | None, str]:
    key = resolution_key(resolver, unit)
    info, tip, opened = await asyncio.to_thread(_open, integ, m, wt)
    if not opened.ok:
        files = ", ".join(opened.conflicts) or "(no file reported)"
        integ.ledger.upsert_worktree(integ.run_id, unit.key, unit.stage_id, status="resolving",
                                     branch=m.branch, path=str(info.path), base=integ.base.commit,
                                     conflicts=opened.conflicts,
                                     message=f"conflict in {files} handed to resolution stage {resolver} ({key})")
        integ.emit(GitNote("resolving", f"{m.branch}: conflict in {files} handed to resolution stage "
                                        f"{resolver} ({key})", key=unit.key, branch=m.branch,
                           files=opened.conflicts))
        integ.resolving[key] = info
        try:
            ures = await resolve(resolver, key, conflict_prompt_context(replace(opened, strategy=wt.merge)),
                                 unit)
        finally:
            integ.resolving.pop(key, None)
        problem = None
        if ures.status is not Status.SUCCESS:
            problem = f"resolution stage {resolver} ({key}) {ures.status.value}: {ures.reason or 'no reason given'}"
        else:
            left = await asyncio.to_thread(conclude_resolution, info.path, info, integ.run_id, resolver,
                                           opened.conflicts or m.conflicts)
            bad = () if left else await asyncio.to_thread(forbidden_paths, integ.project, tip, info.branch,
                                                           info.copied)
            if left:
                problem = f"resolution stage {resolver} ({key}) ended, but {left}"
            elif bad:
                problem = (f"resolution stage {resolver} ({key}) committed {', '.join(bad)}, which your "
                           "repository ignores (or bridge copied in); bridge does not merge that")
        if problem is not None:
            await asyncio.to_thread(_drop, info, tip)
            return _unresolved(integ, unit, replace(m, conflicts=opened.conflicts or m.conflicts), info.path,
                               problem)
    again = await asyncio.to_thread(_retry, integ, info, wt)
    if again.ok and opened.ok:
        integ._record_merge(unit, replace(again, message=f"{again.message} (cleanly, on a second try)"))
        return None, ""
    if again.ok:
        integ._record_merge(unit, replace(again, conflicts=opened.conflicts,
                                          message=f"{again.message}; conflict in {', '.join(opened.conflicts)} "
                                                  f"resolved by {resolver} ({key})"), resolved_by=resolver)
        return None, ""
    integ._record_merge(unit, again)
    return again, (f"after resolution stage {resolver} ({key}) the merge conflicted again in "
                   f"{', '.join(again.conflicts) or '(no file reported)'}")


def _open(integ: Any, m: MergeResult, wt: Worktree) -> tuple[WorktreeInfo, str, MergeResult]:
    """A worktree on the conflicting branch, in the middle of merging the integration branch."""
    tip = run_git(open_repo(integ.project), "rev-parse", m.branch)
    info = add_worktree(integ.project, integ.run_id, m.stage_key, tip, copy=wt.copy_)
    return info, tip, open_resolution(info.path, info, integ.run_id)


def _drop(info: WorktreeInfo, tip: str) -> None:
    """The branch back to where it was, the folder gone."""
    abandon_resolution(info.path, tip)
    remove_worktree(info, force=True)


def _retry(integ: Any, info: WorktreeInfo, wt: Worktree) -> MergeResult:
    """Merge the resolved branch once more. It now holds a merge of the integration branch, which
    `rebase` cannot replay commit by commit, so a rebase stage's resolved work lands as one commit."""
    remove_worktree(info, force=True)
    strategy = "squash" if wt.merge == "rebase" else wt.merge
    return merge_back(integ.project, [info], strategy, run_id=integ.run_id, base=integ.base)[0]


def _unresolved(integ: Any, unit: Unit, m: MergeResult, path: Path, problem: str) -> tuple[MergeResult, str]:
    integ.ledger.upsert_worktree(integ.run_id, unit.key, unit.stage_id, status="conflict",
                                 branch=m.branch, path=str(path), base=integ.base.commit,
                                 conflicts=m.conflicts, message=problem)
    integ.emit(GitNote("unresolved", f"{m.branch}: {problem}; the branch is kept as it was", key=unit.key,
                       branch=m.branch, files=m.conflicts))
    return m, problem


def interrupted(row: dict[str, Any] | None, path: Path) -> bool:
    """Whether an earlier session of the run left a resolution of this unit unfinished: the ledger says
    `resolving`, or a worktree is still there after its merge conflicted (bridge died in between)."""
    if row is None or not row.get("commit_sha"):
        return False
    return row["status"] == "resolving" or (row["status"] == "conflict" and path.exists())


def recover_interrupted(integ: Any, unit: Unit, info: WorktreeInfo, row: dict[str, Any]) -> None:
    """Drop what an interrupted resolution left (markers, a half-done merge, a resolver's late edits or
    commits), saved first as `patches/<key>.interrupted-resolution.patch` and recorded; the branch goes
    back to where its stage left it, so the merge step meets the conflict again and runs the resolver."""
    from bridge.mergeback import PATCHES

    patch = integ.layout.shared / PATCHES / f"{info.stage_key}.interrupted-resolution.patch"
    files = drop_interrupted_resolution(integ.project, info, row["commit_sha"], patch)
    saved = ""
    if files:
        data = patch.read_bytes()
        rel = patch.relative_to(integ.layout.shared).as_posix()
        integ.ledger.add_artifact(integ.run_id, unit.key, rel, len(data), hashlib.sha256(data).hexdigest())
        saved = f"; what it had done to {', '.join(files)} is saved in {patch}"
    text = (f"{info.branch}: an earlier session stopped while its conflict was being resolved; that "
            f"unfinished resolution is dropped (never committed){saved}, and the conflict is resolved afresh")
    integ.ledger.upsert_worktree(integ.run_id, unit.key, unit.stage_id, branch=info.branch, path=str(info.path),
                                 base=integ.base.commit, status="conflict", message=text)
    integ.emit(GitNote("unresolved", text, key=unit.key, branch=info.branch, files=files))
