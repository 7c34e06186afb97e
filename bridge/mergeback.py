"""Worktree stages inside a run: where each agent works, the merge step when a stage ends, landing.

One `Integration` per run. `workdir(unit)` gives a `worktree:` stage's unit its own worktree from the
run's integration tip, and any other unit the folder that shows the merged work (see docs/worktrees.md,
"Where stages run"). `stage_done(result)` is THE merge step: the runner calls it once every unit of a
stage has finished; it commits leftovers, writes patches, merges in the stated order, applies
`on_conflict` (a resolution stage: bridge.resolution) and lands the work on the user's branch when
nothing can be disturbed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import git

from bridge.branchguard import forbidden_paths
from bridge.errors import BridgeError
from bridge.events import Emit, GitNote, Status, UnitFinished
from bridge.ledger import Ledger
from bridge.merge import Landing, MergeResult, integration_branch, land, merge_back, merge_order
from bridge.playbook import Playbook, uses_worktrees
from bridge.resolution import interrupted, recover_interrupted
from bridge.unit import Resolve, StageResult, Unit
from bridge.worktrees import (
    BaseInfo, WorktreeInfo, add_worktree, base_commit, branch_name, checkout_of, finish_worktree,
    open_repo, registered_worktrees, remove_worktree, run_git, worktree_lock, worktree_path,
    worktrees_root,
)
from bridge.workspace import RunLayout

PATCHES = "patches"  # under the shared folder: <key>.patch and <key>.diffstat per worktree unit


def take_base(project: Path, playbook: Playbook) -> BaseInfo | None:
    """The run's base (HEAD) when the project is a git repository; an error only if worktrees need it."""
    try:
        return base_commit(project)
    except BridgeError:
        if uses_worktrees(playbook):
            raise
        return None


def base_to_json(base: BaseInfo | None) -> dict[str, Any] | None:
    if base is None:
        return None
    return {"commit": base.commit, "branch": base.branch, "dirty": base.dirty,
            "dirty_files": list(base.dirty_files)}


def base_from_json(data: dict[str, Any] | None) -> BaseInfo | None:
    if not data:
        return None
    return BaseInfo(data["commit"], data.get("branch"), bool(data.get("dirty")),
                    tuple(data.get("dirty_files") or ()))


def worktree_key(unit: Unit) -> str:
    """The unit's branch / folder name: `impl-linux`, `impl.2` for a loop's second iteration."""
    return unit.key.replace("@", ".")  # '@' is kept for bridge's own `@integration` branch


class Integration:
    """Worktrees, merges and landing for one run (a no-op outside git or without a base)."""

    def __init__(self, project: Path, playbook: Playbook, layout: RunLayout, ledger: Ledger,
                 emit: Emit, base: BaseInfo | None) -> None:
        self.project, self.playbook, self.layout, self.ledger = project, playbook, layout, ledger
        self.emit, self.base, self.run_id = emit, base, layout.run_id
        self.infos: dict[str, WorktreeInfo] = {}  # unit key -> its worktree
        self.in_project = 0  # attempts running in the project folder right now
        self.tips: dict[str, Path] = {}  # integration tip -> its detached checkout
        self.landing: Landing | None = None
        self.merged_any = False
        self.blocked: str | None = None  # why nothing may land any more (a conflict failed a stage)
        self.resolving: dict[str, WorktreeInfo] = {}  # resolution unit key -> the conflicting branch's worktree
        self._lock: asyncio.Lock | None = None  # made on the run's loop, at the first merge step

    # start -----------------------------------------------------------------------------------
    def announce(self) -> None:
        """Say where the run starts, and that uncommitted changes are not part of it."""
        if self.base is None or not uses_worktrees(self.playbook):
            return
        short = self.base.commit[:12]
        if self.base.dirty:
            n = len(self.base.dirty_files)
            self.emit(GitNote("dirty", f"your working tree has uncommitted changes ({n} file"
                              f"{'s' * (n != 1)}): the run starts from HEAD {short}; they are left "
                              "untouched", files=self.base.dirty_files))
        else:
            where = f"branch {self.base.branch}" if self.base.branch else "a detached HEAD"
            self.emit(GitNote("base", f"worktree stages start from HEAD {short} on {where}"))

    # where agents work -----------------------------------------------------------------------
    def workdir(self, unit: Unit) -> Path:
        """The folder the unit's agent works in; `release(unit)` must follow its attempt."""
        if self.base is None:
            return self.project
        if unit.key in self.resolving:  # a resolution stage works on the conflicting branch
            return self.resolving[unit.key].path
        if unit.stage.worktree is not None:
            return self._stage_worktree(unit).path
        tip = self._tip()
        if tip is None or self._head_contains(tip):
            self.in_project += 1
            return self.project
        return self._tip_checkout(tip)

    def release(self, unit: Unit, cwd: Path) -> None:
        if cwd == self.project:
            self.in_project = max(0, self.in_project - 1)

    def _stage_worktree(self, unit: Unit) -> WorktreeInfo:
        info = self.infos.get(unit.key)
        if info is not None and info.path.exists():
            return info
        assert self.base is not None and unit.stage.worktree is not None
        start = self._tip() or self.base.commit
        info = add_worktree(self.project, self.run_id, worktree_key(unit), start,
                            copy=unit.stage.worktree.copy_)
        self.infos[unit.key] = info
        self.ledger.upsert_worktree(self.run_id, unit.key, unit.stage_id, branch=info.branch,
                                    path=str(info.path), base=info.base, status="open")
        return info

    def _tip(self) -> str | None:
        """The integration branch's tip, when it holds merged work beyond the base."""
        repo = open_repo(self.project)
        try:
            tip = repo.git.rev_parse("--verify", "-q", integration_branch(self.run_id) + "^{commit}")
        except git.GitCommandError:
            return None
        return None if self.base is None or tip == self.base.commit else tip

    def _head_contains(self, commit: str) -> bool:
        repo = open_repo(self.project)
        try:
            repo.git.merge_base("--is-ancestor", commit, "HEAD")
            return True
        except git.GitCommandError:
            return False

    def _tip_checkout(self, tip: str) -> Path:
        """A detached checkout of the integration tip (the merged work the user's tree lacks)."""
        if tip in self.tips and self.tips[tip].exists():
            return self.tips[tip]
        repo = open_repo(self.project)
        path = worktree_path(self.project, self.run_id, f"@tip-{tip[:12]}")
        with worktree_lock(self.project):
            known = {Path(w["worktree"]).resolve() for w in registered_worktrees(repo)}
            if path.resolve() not in known:
                path.parent.mkdir(parents=True, exist_ok=True)
                run_git(repo, "worktree", "add", "--detach", str(path), tip)
        self.tips[tip] = path
        return path

    # the merge step --------------------------------------------------------------------------
    async def stage_done(self, result: StageResult, resolve: Resolve | None = None) -> StageResult:
        """Called by the runner once every unit of a stage has finished (see the module docstring).

        `resolve` runs a resolution stage for a conflict (`on_conflict: <stage id>`).
        """
        stage = self.playbook_stage(result)
        if self.base is None or stage is None or stage.worktree is None or not result.units:
            return result
        policy = stage.worktree.on_conflict
        # one merge step at a time: a resolution must meet the integration branch it merged
        async with self._merge_lock():
            result, conflicts, merged = await asyncio.to_thread(self._merge_step, result)
            why: dict[str, str] = {}
            if conflicts and policy not in ("fail", "continue") and resolve is not None:
                from bridge.resolution import resolve_conflicts

                conflicts, why = await resolve_conflicts(self, result, policy, conflicts, resolve)
            if conflicts:
                result = self._on_conflict(result, policy, conflicts, why)
            if merged:
                await asyncio.to_thread(self._land)
        return result

    def _merge_lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    def playbook_stage(self, result: StageResult) -> Any:
        return result.units[0].unit.stage if result.units else None

    def _known(self, unit: Unit) -> WorktreeInfo | None:
        """The unit's worktree: made in this session, or (a reused unit on resume) its branch."""
        if unit.key in self.infos:
            return self.infos[unit.key]
        key = worktree_key(unit)
        branch = branch_name(self.run_id, key)
        repo = open_repo(self.project)
        if not run_git(repo, "branch", "--list", branch).strip():
            return None
        path = checkout_of(repo, branch) or worktree_path(self.project, self.run_id, key)
        assert self.base is not None
        return WorktreeInfo(path=path, branch=branch, base=self.base.commit, repo=self.project,
                            run_id=self.run_id, stage_key=key)

    def _merge_step(self, result: StageResult) -> tuple[StageResult, list[MergeResult], bool]:
        """Finish, merge in order, remove the folders: (result, the conflicts, whether it merged)."""
        stage = self.playbook_stage(result)
        wt = stage.worktree
        ready: list[tuple[Unit, WorktreeInfo]] = []
        rows = {r["key"]: r for r in self.ledger.worktrees(self.run_id)}
        for ures in result.units:
            info = self._known(ures.unit)
            if info is None:
                continue
            if ures.unit.key not in self.infos and interrupted(rows.get(ures.unit.key), info.path):
                recover_interrupted(self, ures.unit, info, rows[ures.unit.key])  # a resume after a crash
            if info.path.exists():
                self._finish(ures.unit, info)
            if ures.status is Status.SUCCESS:
                ready.append((ures.unit, info))
            else:
                self._keep(ures.unit, info, f"{ures.unit.key} {ures.status.value}: its branch "
                                            f"{info.branch} is kept, not merged")
        if not result.ok_for_dependents:
            for unit, info in ready:
                self._keep(unit, info, f"stage {result.stage_id} {result.status.value}: branch "
                                       f"{info.branch} is kept, not merged")
            self._remove([info for _, info in ready])
            return result, [], False
        refused: dict[str, str] = {}
        for unit, info in list(ready):  # a branch bringing ignored files (a secret in .env) is not merged
            bad = forbidden_paths(self.project, info.base, info.branch, info.copied)
            if bad:
                refused[info.stage_key] = why = (
                    f"{unit.key} committed {', '.join(bad)}, which your repository ignores (or bridge copied "
                    f"into its worktree, such as a secret in .env); bridge does not merge it, so neither the "
                    f"file nor its content reaches your branch. The branch {info.branch} is kept: look at it, "
                    f"then merge it by hand, or `git branch -D {info.branch}` (a resume starts the stage "
                    f"afresh only once that branch is gone; it would be refused again)")
                self._keep(unit, info, why)
                self._remove([info])
                ready.remove((unit, info))
        if refused:
            self.blocked = f"stage {result.stage_id} failed: a branch held ignored files"
            result = self._fail_units(result, refused, "; ".join(refused.values()))
        by_key = {worktree_key(u.unit): u.unit for u in result.units}
        ordered = merge_order([i for _, i in ready], {i.stage_key: wt.order for _, i in ready})
        merges = merge_back(self.project, ordered, wt.merge, run_id=self.run_id, base=self.base)
        conflicts = [m for m in merges if not m.ok]
        for m in merges:
            self._record_merge(by_key[m.stage_key], m)
        self._remove(ordered)
        return result, conflicts, True

    def _finish(self, unit: Unit, info: WorktreeInfo) -> None:
        done = finish_worktree(info, self.run_id, info.stage_key, self.layout.shared / PATCHES)
        for path in (done.patch_path, done.diffstat_path):
            rel = path.relative_to(self.layout.shared).as_posix()
            data = path.read_bytes()
            self.ledger.add_artifact(self.run_id, unit.key, rel, len(data), hashlib.sha256(data).hexdigest())
        self.ledger.upsert_worktree(self.run_id, unit.key, unit.stage_id, branch=info.branch,
                                    path=str(info.path), base=info.base, status="finished",
                                    commit_sha=done.commit,
                                    message=done.diffstat.splitlines()[-1].strip() if done.diffstat
                                    else "no change")

    def _keep(self, unit: Unit, info: WorktreeInfo, why: str) -> None:
        self.ledger.upsert_worktree(self.run_id, unit.key, unit.stage_id, branch=info.branch,
                                    path=str(info.path), base=info.base, status="kept", message=why)
        self.emit(GitNote("kept", why, key=unit.key, branch=info.branch))

    def _record_merge(self, unit: Unit, m: MergeResult, resolved_by: str = "") -> None:
        status = "merged" if m.ok and m.commit else "unchanged" if m.ok else "conflict"
        if m.strategy == "none":
            status = "kept"
        if m.ok and resolved_by:
            status = "resolved"  # merged after resolution stage `resolved_by` resolved its conflict
        self.ledger.upsert_worktree(self.run_id, unit.key, unit.stage_id, branch=m.branch,
                                    path=str(worktree_path(self.project, self.run_id, m.stage_key)),
                                    base=self.base.commit if self.base else "", status=status,
                                    strategy=m.strategy, merged_commit=m.commit,
                                    conflicts=m.conflicts, message=m.message)
        self.merged_any = self.merged_any or bool(m.ok and m.commit)
        kind = "conflict" if not m.ok else "kept" if m.strategy == "none" else status
        kind = "merged" if kind == "unchanged" else kind
        self.emit(GitNote(kind, m.message, key=unit.key, branch=m.branch, files=m.conflicts))

    def _remove(self, infos: list[WorktreeInfo]) -> None:
        """Worktree folders go once their work is committed; branches stay until `bridge clean`."""
        for info in infos:
            if info.path.exists() and not remove_worktree(info):
                self.emit(GitNote("kept", f"{info.path} kept: it holds changes that are not on {info.branch} "
                                          "(uncommitted, or commits on no branch); `bridge clean` reports it"))
            for key, known in list(self.infos.items()):
                if known.path == info.path:
                    del self.infos[key]

    def _on_conflict(self, result: StageResult, policy: str, conflicts: list[MergeResult],
                     why: dict[str, str] | None = None) -> StageResult:
        """Conflicts left over (none resolved): fail the units, or only say so (`continue`)."""
        files = sorted({f for m in conflicts for f in m.conflicts})
        branches = ", ".join(m.branch for m in conflicts)
        text = (f"merge conflict in {', '.join(files) or '(no file reported)'}: {branches} could not be "
                f"merged into {conflicts[0].into}; the branch is kept — merge it by hand with "
                f"`git merge {conflicts[0].branch}`")
        if policy == "continue":
            return replace(result, reason=f"{text} (on_conflict: continue)")
        self.blocked = f"stage {result.stage_id} failed on a merge conflict"
        notes = [why[m.stage_key] for m in conflicts if why and m.stage_key in why]
        if notes:
            text += "; " + "; ".join(notes)
        elif policy != "fail":
            text += f"; resolution stage {policy} did not run"
        return self._fail_units(result, {m.stage_key: text for m in conflicts}, text)

    def _fail_units(self, result: StageResult, failed: dict[str, str], text: str) -> StageResult:
        """The units of `failed` (worktree key -> why) fail, and so does the stage (`text`)."""
        units = []
        for ures in result.units:
            if worktree_key(ures.unit) in failed:
                ures = replace(ures, status=Status.FAILURE, reason=failed[worktree_key(ures.unit)])
                self.ledger.upsert_unit(self.run_id, ures.key, ures.unit.stage_id, status="failure",
                                        reason=ures.reason, iteration=ures.unit.iteration, matrix=ures.unit.matrix)
                self.emit(UnitFinished(key=ures.key, stage_id=ures.unit.stage_id, status=Status.FAILURE,
                                       reason=ures.reason, attempts=ures.attempts, duration=ures.duration,
                                       tokens=ures.tokens, cost_usd=ures.cost_usd))
            units.append(ures)
        return replace(result, status=Status.FAILURE, reason=text, units=tuple(units))

    # landing ---------------------------------------------------------------------------------
    def _land(self, final: bool = False) -> None:
        """Bring merged work onto the user's branch — never under an agent working in the project."""
        tip = None if self.base is None else self._tip()
        if tip is None or (self.landing is not None and self.landing.landed and self.landing.commit == tip):
            return  # nothing merged, or already landed
        if self.in_project and not final:
            return  # an agent is working in the project folder: land at the next step or the end
        before = self.landing
        if self.blocked:
            into = integration_branch(self.run_id)
            if before is not None and not before.landed and not final:
                return
            self.landing = Landing(False, self.base.branch, into, tip,
                                   f"{self.blocked}, so nothing more lands on your branch; merged work "
                                   f"is on branch {into} — run `git merge {into}`")
        else:
            self.landing = land(self.project, self.run_id, self.base)
        self.ledger.set_landing(self.run_id, landed=self.landing.landed, branch=self.landing.branch,
                                integration_branch=self.landing.integration_branch,
                                commit=self.landing.commit, message=self.landing.message,
                                files=self.landing.files)
        repeated = (before is not None and not before.landed and not self.landing.landed
                    and before.message == self.landing.message)  # said already, at an earlier step
        if (final or self.landing.landed or before is None or before.landed) and not repeated:
            self.emit(GitNote("landed" if self.landing.landed else "not_landed", self.landing.message,
                              branch=self.landing.integration_branch, files=self.landing.files))

    def close(self) -> Landing | None:
        """At the run's end: land what is merged, remove the tip checkouts that hold no change."""
        if self.base is None:
            return None
        with contextlib.suppress(BridgeError):
            self._land(final=True)
        for tip, path in list(self.tips.items()):
            info = WorktreeInfo(path=path, branch="", base=tip, repo=self.project)
            if path.exists() and not remove_worktree(info):
                self.emit(GitNote("kept", f"{path} holds changes a stage made to the merged work (uncommitted, "
                                          "or commits on no branch); they are not merged back (give that stage "
                                          "`worktree:`)"))
        with contextlib.suppress(OSError):
            (worktrees_root(self.project) / self.run_id).rmdir()
        return self.landing
