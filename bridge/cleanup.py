"""Removing what finished runs left in git (worktrees, branches), never unmerged work."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import git

from bridge.worktrees import (
    BRANCH_PREFIX, WORKTREES, open_repo, prune_stale, registered_worktrees, run_git, status_entries,
    worktree_lock,
)


@dataclass(frozen=True)
class CleanReport:
    removed_worktrees: tuple[str, ...] = ()
    removed_branches: tuple[str, ...] = ()
    kept: tuple[tuple[str, str], ...] = ()  # (branch or folder, why it was kept)
    pruned: tuple[str, ...] = ()  # stale worktree entries whose folder was gone
    dry_run: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)


def _bridge_branches(repo: git.Repo) -> dict[str, list[str]]:
    """Run id -> its branches (`bridge/<run>/<key>`)."""
    out = run_git(repo, "for-each-ref", "--format=%(refname:short)", f"refs/heads/{BRANCH_PREFIX}/")
    runs: dict[str, list[str]] = {}
    for name in out.splitlines():
        parts = name.split("/")
        if len(parts) >= 3:
            runs.setdefault(parts[1], []).append(name)
    return runs


def _user_branches(repo: git.Repo) -> list[str]:
    out = run_git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/")
    return [b for b in out.splitlines() if not b.startswith(f"{BRANCH_PREFIX}/")]


def _contained(repo: git.Repo, branch: str, user: list[str]) -> str | None:
    """Why `branch` holds no unmerged work (None if it does): reachable, or its content is in."""
    count = run_git(repo, "rev-list", "--count", branch, "--not", *user, "--") if user else "1"
    if count == "0":
        return "merged"
    for target in user:
        # Squash and rebase copy the work instead of its commits: the branch is "merged" when
        # merging it would change nothing (git >= 2.38; older git keeps the branch).
        try:
            tree = repo.git.merge_tree("--write-tree", target, branch).splitlines()[0]
        except git.GitCommandError:
            continue
        if tree == repo.git.rev_parse(f"{target}^{{tree}}"):
            return f"its changes are already on {target}"
    return None


def clean(repo_path: Path, run_id: str | None = None, dry_run: bool = False,
          finished_runs: set[str] | None = None) -> CleanReport:
    """Remove worktrees and branches of finished runs (`finished_runs`; None: all are finished).

    A branch is deleted only when its work is on one of the user's (non-bridge) branches; a worktree
    only when it holds no uncommitted change. Everything kept is reported with the reason.
    """
    repo = open_repo(repo_path)
    root = Path(repo.working_tree_dir or repo_path).resolve()
    with worktree_lock(root):
        return _clean(repo, root, run_id, dry_run, finished_runs)


def _clean(repo: git.Repo, root: Path, run_id: str | None, dry_run: bool,
           finished_runs: set[str] | None) -> CleanReport:
    pruned = prune_stale(repo, root, dry_run)
    branches = _bridge_branches(repo)
    folders = {p.name for p in (root / WORKTREES).glob("*") if p.is_dir()}
    runs = sorted(set(branches) | folders) if run_id is None else [run_id]
    registered = [w for w in registered_worktrees(repo)[1:] if Path(w["worktree"]).exists()]
    user = _user_branches(repo)
    removed_wt: list[str] = []
    removed_br: list[str] = []
    kept: list[tuple[str, str]] = []
    notes: list[str] = []
    if run_id is not None and run_id not in branches and run_id not in folders:
        notes.append(f"run {run_id} has no worktree or branch left")
    for run in runs:
        if finished_runs is not None and run not in finished_runs:
            kept.append((f"{BRANCH_PREFIX}/{run}/*", "the run is not finished"))
            continue
        run_dir = root / WORKTREES / run
        busy: set[str] = set()
        for w in registered:
            path = Path(w["worktree"]).resolve()
            if run_dir.resolve() not in path.parents:
                continue
            why = None
            if "locked" in w:
                why = f"locked — `git worktree unlock {path}` to allow removing it"
            elif status_entries(repo, path):
                why = "uncommitted changes in the worktree; commit or discard them, then clean"
            if why:
                kept.append((str(path), why))
                busy.add(w.get("branch", "").removeprefix("refs/heads/"))
                continue
            if not dry_run:
                run_git(repo, "worktree", "remove", "--force", str(path))
            removed_wt.append(str(path))
        for branch in sorted(branches.get(run, [])):
            if branch in busy:
                kept.append((branch, "checked out in a kept worktree"))
                continue
            if _contained(repo, branch, user) is None:
                n = run_git(repo, "rev-list", "--count", branch, "--not", *user, "--")
                kept.append((branch, f"{n} commit(s) on no branch of yours: `git merge {branch}` "
                                     f"to keep the work, or `git branch -D {branch}` to drop it"))
                continue
            if not dry_run:
                run_git(repo, "branch", "-D", "-q", branch)
            removed_br.append(branch)
        if not dry_run:
            for leftover in sorted(run_dir.glob("*"), reverse=True) if run_dir.exists() else []:
                with contextlib.suppress(OSError):
                    leftover.rmdir()  # empty folders only
            with contextlib.suppress(OSError):
                run_dir.rmdir()
    return CleanReport(tuple(removed_wt), tuple(removed_br), tuple(kept), tuple(pruned), dry_run,
                       tuple(notes))
