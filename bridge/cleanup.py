"""Removing what finished runs left in git (worktrees, branches), never unmerged work.

Nothing an agent committed is lost: a worktree whose HEAD holds commits on no branch (the agent
detached it) has them saved on `bridge/<run>/<key>@rescued` before the folder goes, and branches an
agent made in a run's worktree (`git checkout -b agent-side`) are named in the report, never deleted.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import git

from bridge.errors import BridgeError
from bridge.worktrees import (
    BRANCH_PREFIX, LEGACY_WORKTREES, open_repo, prune_stale, registered_worktrees, run_folders, run_git,
    status_entries, worktree_lock, worktrees_root,
)

RESCUED = "@rescued"  # '@' never occurs in a stage key: `bridge/<run>/<key>@rescued` names no stage's branch


@dataclass(frozen=True)
class CleanReport:
    removed_worktrees: tuple[str, ...] = ()
    removed_branches: tuple[str, ...] = ()
    kept: tuple[tuple[str, str], ...] = ()  # (branch or folder, why it was kept)
    pruned: tuple[str, ...] = ()  # stale worktree entries whose folder was gone
    dry_run: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)
    rescued: tuple[str, ...] = ()  # branches made to hold commits a removed worktree had on no branch
    agent_branches: tuple[str, ...] = ()  # branches made (or checked out) in a run's worktrees, left alone


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


def _reflog(repo: git.Repo, ref: str) -> list[tuple[str, str]]:
    """(sha, subject) of `ref`'s reflog, newest first; [] when it has none."""
    try:
        out = run_git(repo, "reflog", "show", "--format=%H %gs", ref, "--")
    except BridgeError:
        return []
    return [(line[:40], line[41:]) for line in out.splitlines() if len(line) >= 40]


def _rescue(repo: git.Repo, run: str, w: dict[str, str], dry_run: bool) -> tuple[str, int] | None:
    """Save a worktree's HEAD on a branch when it holds commits no branch has: (branch, count)."""
    head = w.get("HEAD", "")
    if not head or set(head) == {"0"}:
        return None
    n = int(run_git(repo, "rev-list", "--count", head, "--not", "--branches", "--"))
    if n == 0:
        return None
    name, i = f"{BRANCH_PREFIX}/{run}/{Path(w['worktree']).name}{RESCUED}", 1
    while run_git(repo, "branch", "--list", name).strip():
        i += 1
        name = f"{BRANCH_PREFIX}/{run}/{Path(w['worktree']).name}{RESCUED}{i}"
    if not dry_run:
        run_git(repo, "branch", name, head)
    return name, n


def _agent_branches(repo: git.Repo, run: str, trees: list[dict[str, str]], own: list[str],
                    user: list[str]) -> list[str]:
    """The user-namespace branches an agent made in this run's worktrees: checked out there (now or
    earlier, per the worktree's HEAD reflog), or created at a commit the run's branches went through."""
    made: set[str] = set()
    switched: set[str] = set()
    for w in trees:
        if w.get("branch", "").startswith("refs/heads/"):
            switched.add(w["branch"].removeprefix("refs/heads/"))
        log = _reflog(git.Repo(w["worktree"]), "HEAD")
        made |= {sha for sha, _ in log} - {sha for sha, _ in log[-1:]}  # not where it started
        switched |= {subject.rsplit(" to ", 1)[1] for _, subject in log if subject.startswith("checkout: moving")}
    for branch in own:
        log = _reflog(repo, f"refs/heads/{branch}")
        made |= {sha for sha, _ in log} - {sha for sha, _ in log[-1:]}  # its start is the user's commit
    found = []
    for branch in user:
        log = _reflog(repo, f"refs/heads/{branch}")
        if branch in switched or (log and log[-1][0] in made):
            found.append(branch)
    return found


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


def _work_in(repo: git.Repo, path: Path) -> list[str]:
    """The worktree's uncommitted changes, less the untracked files your repository ignores: those
    are bridge's copies of your ignored files (the .env), where the branch's rules do not ignore them."""
    entries = status_entries(repo, path)
    untracked = [p for xy, p in entries if xy == "??"]
    ignored: set[str] = set()
    for rel in untracked:
        try:
            repo.git.check_ignore("-q", "--no-index", rel)  # by your repository's rules, not the branch's
            ignored.add(rel)
        except git.GitCommandError:
            pass
    return [p for xy, p in entries if not (xy == "??" and p in ignored)]


def _clean(repo: git.Repo, root: Path, run_id: str | None, dry_run: bool,
           finished_runs: set[str] | None) -> CleanReport:
    pruned = prune_stale(repo, root, dry_run)
    branches = _bridge_branches(repo)
    folders = run_folders(root)
    runs = sorted(set(branches) | folders) if run_id is None else [run_id]
    registered = [w for w in registered_worktrees(repo)[1:] if Path(w["worktree"]).exists()]
    user = _user_branches(repo)
    removed_wt: list[str] = []
    removed_br: list[str] = []
    kept: list[tuple[str, str]] = []
    notes: list[str] = []
    rescued: list[str] = []
    agent_branches: list[str] = []
    if run_id is not None and run_id not in branches and run_id not in folders:
        notes.append(f"run {run_id} has no worktree or branch left")
    for run in runs:
        if finished_runs is not None and run not in finished_runs:
            kept.append((f"{BRANCH_PREFIX}/{run}/*", "the run is not finished"))
            continue
        run_dirs = [(base / run).resolve() for base in (worktrees_root(root), root / LEGACY_WORKTREES)]
        busy: set[str] = set()
        mine = [w for w in registered if any(d in Path(w["worktree"]).resolve().parents for d in run_dirs)
                or str(w.get("branch", "")).startswith(f"refs/heads/{BRANCH_PREFIX}/{run}/")]
        found = _agent_branches(repo, run, mine, branches.get(run, []), user)
        agent_branches += found
        notes += [f"branch {b} was made or checked out in a worktree of run {run} (by an agent?); bridge "
                  f"leaves it — `git branch -D {b}` if you do not want it" for b in found]
        for w in mine:
            path = Path(w["worktree"]).resolve()
            why = None
            if "locked" in w:
                why = f"locked — `git worktree unlock {path}` to allow removing it"
            elif _work_in(repo, path):
                why = "uncommitted changes in the worktree; commit or discard them, then clean"
            if why:
                kept.append((str(path), why))
                busy.add(w.get("branch", "").removeprefix("refs/heads/"))
                continue
            saved = _rescue(repo, run, w, dry_run)
            if saved is not None:
                rescued.append(saved[0])
                kept.append((saved[0], f"{saved[1]} commit(s) made in {path} on no branch (its HEAD was "
                                       f"{'detached' if 'detached' in w else 'moved'}) {'would be ' * dry_run}"
                                       f"saved on this branch before the folder goes: `git merge {saved[0]}` to "
                                       f"keep the work, or `git branch -D {saved[0]}` to drop it"))
            if not dry_run:
                run_git(repo, "worktree", "remove", "--force", str(path))
            removed_wt.append(str(path))
        for branch in sorted(branches.get(run, [])):
            if branch in busy:
                kept.append((branch, "checked out in a kept worktree"))
                continue
            theirs = [b for b in user if b not in found]  # an agent's branch is not where your work is
            if _contained(repo, branch, theirs) is None:
                n = run_git(repo, "rev-list", "--count", branch, "--not", *theirs, "--") if theirs else "all"
                kept.append((branch, f"{n} commit(s) on no branch of yours: `git merge {branch}` "
                                     f"to keep the work, or `git branch -D {branch}` to drop it"))
                continue
            if not dry_run:
                run_git(repo, "branch", "-D", "-q", branch)
            removed_br.append(branch)
        for run_dir in run_dirs if not dry_run else []:
            for leftover in sorted(run_dir.glob("*"), reverse=True) if run_dir.exists() else []:
                with contextlib.suppress(OSError):
                    leftover.rmdir()  # empty folders only
            with contextlib.suppress(OSError):
                run_dir.rmdir()
    return CleanReport(tuple(removed_wt), tuple(removed_br), tuple(kept), tuple(pruned), dry_run,
                       tuple(notes), tuple(rescued), tuple(agent_branches))
