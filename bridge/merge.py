"""Merging stage branches back: into the run's integration branch, then onto the user's branch.

Every merge happens in a temporary integration worktree on `bridge/<run>/@integration`, never in
the user's tree. `land` then fast-forwards the user's branch only when that cannot disturb
anything (see docs/worktrees.md, "Landing rule"); otherwise the work waits on the integration
branch.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import git

from bridge.branchguard import clobbered_by_landing
from bridge.errors import BridgeError
from bridge.shared_files import open_regular
from bridge.worktrees import (
    BRANCH_PREFIX, BaseInfo, WorktreeInfo, commit_env, git_argv, open_repo, prune_stale,
    registered_worktrees, run_git, status_entries, worktree_lock, worktree_path,
)

STRATEGIES = ("merge", "squash", "rebase", "none")
INTEGRATION = "@integration"  # '@' cannot appear in a stage id, so no stage branch can collide
MAX_CONFLICT_DIFF = 200_000


@dataclass(frozen=True)
class MergeResult:
    stage_key: str
    ok: bool
    strategy: str
    commit: str | None  # the commit the work landed as on the integration branch
    conflicts: tuple[str, ...] = ()
    message: str = ""
    branch: str = ""  # the stage's branch, always kept on a conflict
    into: str = ""  # the integration branch
    conflict_diff: str = ""


@dataclass(frozen=True)
class Landing:
    """What happened to the user's branch after the merges."""

    landed: bool
    branch: str | None  # the user's branch (None: detached HEAD at the start)
    integration_branch: str
    commit: str | None  # the integration tip
    message: str
    files: tuple[str, ...] = field(default_factory=tuple)


def integration_branch(run_id: str) -> str:
    return f"{BRANCH_PREFIX}/{run_id}/{INTEGRATION}"


def integration_tip(repo_path: Path, run_id: str, base: BaseInfo | str) -> str:
    """Where a later stage of the run should start: the merged work so far, else the base."""
    repo = open_repo(repo_path)
    try:
        return repo.git.rev_parse("--verify", "-q", integration_branch(run_id) + "^{commit}")
    except git.GitCommandError:
        return base.commit if isinstance(base, BaseInfo) else base


def merge_order(infos: Iterable[WorktreeInfo], order: Mapping[str, int] | None = None
                ) -> list[WorktreeInfo]:
    """The stated merge order: the `order` field (lower first), then the order given — a matrix
    stage's items as the playbook declares them (`[zeta, alpha, mid]` merges zeta first), not sorted."""
    order = order or {}
    return sorted(infos, key=lambda i: order.get(i.stage_key, 0))  # stable: ties keep the given order


@contextlib.contextmanager
def _integration(repo: git.Repo, run_id: str, start: str) -> Iterator[git.Repo]:
    """A temporary worktree on the integration branch (created at `start` if new)."""
    root = Path(repo.working_tree_dir or ".").resolve()
    path = worktree_path(root, run_id, INTEGRATION)
    branch = integration_branch(run_id)
    with worktree_lock(root):
        prune_stale(repo, root)
        if any(Path(w["worktree"]).resolve() == path.resolve() for w in registered_worktrees(repo)):
            run_git(repo, "worktree", "remove", "--force", str(path))  # a crash's; all committed
        path.parent.mkdir(parents=True, exist_ok=True)
        if repo.git.branch("--list", branch).strip():
            run_git(repo, "worktree", "add", str(path), branch)
        else:
            run_git(repo, "worktree", "add", "-b", branch, str(path), start)
    try:
        yield open_repo(path)
    finally:
        with worktree_lock(root):
            run_git(repo, "worktree", "remove", "--force", str(path))


def _conflict_state(wt: git.Repo) -> tuple[tuple[str, ...], str]:
    files = tuple(run_git(wt, "diff", "--name-only", "--diff-filter=U").splitlines())
    diff = run_git(wt, "diff")[:MAX_CONFLICT_DIFF]
    return files, diff


def _try(wt: git.Repo, *args: str, env: dict[str, str] | None = None) -> bool:
    return _attempt(wt, *args, env=env) is None


def _attempt(wt: git.Repo, *args: str, env: dict[str, str] | None = None) -> str | None:
    """None when `git <args>` succeeds, else the last line git said."""
    try:
        wt.git.execute(git_argv(*args), env=env)
        return None
    except git.GitCommandError as exc:
        lines = (exc.stderr or exc.stdout or "").strip().splitlines()
        return lines[-1].strip() if lines else f"exit {exc.status}"


def _merge_one(wt: git.Repo, info: WorktreeInfo, strategy: str, run_id: str) -> MergeResult:
    env = commit_env(wt)
    into = integration_branch(run_id)
    tip = wt.git.rev_parse(info.branch)
    done = dict(stage_key=info.stage_key, strategy=strategy, branch=info.branch, into=into)
    if wt.git.rev_list("--count", f"HEAD..{tip}") == "0":
        return MergeResult(ok=True, commit=None, message=f"{info.branch}: nothing new to merge",
                           **done)
    title = f"bridge: {info.stage_key} (run {run_id})"
    if strategy == "merge":
        ok = _try(wt, "merge", "--no-ff", "--no-edit", "-m", f"{title}: merge {info.branch}",
                  info.branch, env=env)
        abort = ("merge", "--abort")
    elif strategy == "squash":
        ok = _try(wt, "merge", "--squash", info.branch, env=env)
        if ok and not _try(wt, "diff", "--cached", "--quiet"):
            msg = f"{title}\n\nSquashed from {info.branch}:\n\n" + wt.git.log(
                "--format=* %s", f"HEAD..{tip}")
            ok = _try(wt, "commit", "-q", "--no-verify", "-m", msg, env=env)
        elif ok:
            return MergeResult(ok=True, commit=None, message=f"{info.branch}: already present",
                               **done)
        abort = ("reset", "--hard", "-q", "HEAD")  # a squash leaves no MERGE_HEAD to abort
    else:  # rebase: replay the branch's commits on top, leaving the stage branch itself untouched
        ok = _try(wt, "checkout", "-q", "--detach", tip, env=env) and _try(
            wt, "rebase", "-q", into, env=env)
        if ok:
            run_git(wt, "checkout", "-q", "-B", into, "HEAD")
        abort = ("rebase", "--abort")
    if ok:
        return MergeResult(ok=True, commit=wt.head.commit.hexsha,
                           message=f"{info.branch} merged ({strategy}) into {into}", **done)
    files, diff = _conflict_state(wt)
    _try(wt, *abort, env=env)
    if strategy == "rebase":
        run_git(wt, "checkout", "-q", "-f", into)
    run_git(wt, "reset", "-q", "--hard", "HEAD")  # nothing half-merged stays behind
    names = ", ".join(files) or "(no file reported)"
    return MergeResult(ok=False, commit=None, conflicts=files, conflict_diff=diff,
                       message=f"{info.branch} conflicts with {into} in {names}; the merge was "
                               f"aborted and the branch kept", **done)


def merge_back(repo_path: Path, infos_in_order: Iterable[WorktreeInfo], strategy: str, *,
               run_id: str, base: BaseInfo | str) -> list[MergeResult]:
    """Merge each stage branch, in the given order, into `bridge/<run>/@integration`.

    A conflict aborts that one merge (nothing half-merged anywhere) and the next one is tried;
    whether the stage fails is the caller's decision. Call `land` afterwards.
    """
    if strategy not in STRATEGIES:
        raise BridgeError(f"unknown merge strategy {strategy!r}; "
                          f"use one of {', '.join(STRATEGIES)}")
    infos = list(infos_in_order)
    if strategy == "none":
        return [MergeResult(stage_key=i.stage_key, ok=True, strategy="none", commit=None,
                            branch=i.branch, message=f"left on {i.branch} for review")
                for i in infos]
    repo = open_repo(repo_path)
    start = base.commit if isinstance(base, BaseInfo) else base
    with _integration(repo, run_id, start) as wt:
        return [_merge_one(wt, info, strategy, run_id) for info in infos]


def _rebasing(repo: git.Repo, ref: str) -> bool:
    """Whether some worktree is in the middle of rebasing `ref` (its HEAD is detached meanwhile)."""
    gitdirs = [Path(repo.common_dir)] + list((Path(repo.common_dir) / "worktrees").glob("*"))
    for d in gitdirs:
        for sub in ("rebase-merge", "rebase-apply"):
            head = d / sub / "head-name"
            if head.exists() and head.read_text().strip() == ref:
                return True
    return False


def land(repo_path: Path, run_id: str, base: BaseInfo) -> Landing:
    """Fast-forward the user's branch to the integration branch when nothing can be disturbed."""
    repo = open_repo(repo_path)
    into = integration_branch(run_id)
    try:
        tip = repo.git.rev_parse("--verify", "-q", into + "^{commit}")
    except git.GitCommandError:
        return Landing(False, base.branch, into, None, "no work to bring back")
    files = tuple(repo.git.diff("--name-only", base.commit, tip).splitlines())
    waiting = f"merged work is on branch {into} — run `git merge {into}`"

    def kept(why: str) -> Landing:
        return Landing(False, base.branch, into, tip, f"{why}; {waiting}", files)

    if base.branch is None:
        return kept("the run started on a detached HEAD, so there is no branch to update")
    ref = f"refs/heads/{base.branch}"
    try:
        current = repo.git.rev_parse("--verify", "-q", ref)
    except git.GitCommandError:
        return kept(f"branch {base.branch} no longer exists")
    if current == tip:
        return Landing(True, base.branch, into, tip, f"{base.branch} already has the work", files)
    if repo.git.merge_base(current, tip) != current:
        return kept(f"{base.branch} has moved on since the run started")
    if _rebasing(repo, ref):
        return kept(f"{base.branch} is being rebased")
    holder = next((Path(w["worktree"]) for w in registered_worktrees(repo)
                   if w.get("branch") == ref), None)
    if holder is None:  # checked out nowhere: move the ref, no working tree involved
        run_git(repo, "update-ref", "-m", f"bridge: land run {run_id}", ref, tip, current)
        return Landing(True, base.branch, into, tip, f"{base.branch} fast-forwarded to {into}",
                       files)
    if any(xy != "??" for xy, _ in status_entries(repo, holder)):
        return kept("your tree had uncommitted changes")
    clobbered = clobbered_by_landing(repo_path, holder, current, tip)
    if clobbered:  # git would replace an ignored file (your .env) without asking
        return kept(f"landing would overwrite {', '.join(clobbered)} in your tree, which git does not track "
                    "there (untracked or ignored)")
    refused = _attempt(git.Repo(holder), "merge", "--ff-only", "-q", tip)
    if refused:
        return kept(f"git refused to fast-forward {base.branch} ({refused})")
    return Landing(True, base.branch, into, tip, f"{base.branch} fast-forwarded to {into}", files)


def conflict_prompt_context(result: MergeResult) -> dict[str, object]:
    """What a resolution stage needs: the files, the branches and the conflict diff.

    `result` is best the one `open_resolution` returns: its diff shows the markers as they are in
    the resolution worktree.
    """
    files = ", ".join(result.conflicts) or "the conflicting files"
    return {
        "stage": result.stage_key,
        "strategy": result.strategy,
        "files": list(result.conflicts),
        "branch": result.branch,
        "into": result.into,
        "diff": result.conflict_diff,
        "how": f"The current folder is a worktree on {result.branch} in the middle of `git merge "
               f"{result.into}`; the conflict markers are in {files} (between <<<<<<< HEAD and ======= "
               f"is {result.branch}'s side, between ======= and >>>>>>> {result.into}'s side). Edit "
               "them so that both sides' changes survive and no marker is left; do not commit, abort "
               "or reset: bridge commits the merge and merges the branch again.",
    }


MARKERS = ("<<<<<<< ", ">>>>>>> ")


def open_resolution(path: Path, info: WorktreeInfo, run_id: str) -> MergeResult:
    """In the worktree at `path` (on the stage's branch), merge the integration branch in and leave
    the conflict for a resolution stage; ok=True when it merged cleanly after all (committed)."""
    wt = open_repo(path)
    into = integration_branch(run_id)
    done = dict(stage_key=info.stage_key, strategy="merge", branch=info.branch, into=into)
    env = commit_env(wt)
    if _try(wt, "merge", "--no-ff", "--no-edit", "-m",
            f"bridge: {info.stage_key} (run {run_id}): merge {into}", into, env=env):
        return MergeResult(ok=True, commit=wt.head.commit.hexsha, message=f"{into} merged cleanly "
                           f"into {info.branch}", **done)
    files, diff = _conflict_state(wt)
    return MergeResult(ok=False, commit=None, conflicts=files, conflict_diff=diff,
                       message=f"{info.branch} conflicts with {into} in {', '.join(files)}", **done)


def conclude_resolution(path: Path, info: WorktreeInfo, run_id: str, resolver: str,
                        files: Iterable[str] = ()) -> str | None:
    """Commit the resolved merge in the worktree at `path`; the problem, as text, if it is not resolved.

    `files` are the paths that conflicted: whoever committed (bridge, or the resolver itself), none
    of them may hold a conflict marker in the resulting commit.
    """
    wt = open_repo(path)
    if wt.head.is_detached or wt.head.ref.name != info.branch:
        return f"the resolution left {path} off {info.branch}"
    run_git(wt, "add", "-A")
    if info.copied:
        run_git(wt, "reset", "-q", "--", *(f":(literal){p}" for p in info.copied))
    unmerged = run_git(wt, "diff", "--cached", "--name-only", "--diff-filter=U").split()
    marked = [f for f in run_git(wt, "diff", "--cached", "--name-only", "HEAD").splitlines()
              if _has_markers(path / f)]
    if unmerged or marked:
        return f"conflict markers are left in {', '.join(sorted(set(unmerged + marked)))}"
    merging = _try(wt, "rev-parse", "-q", "--verify", "MERGE_HEAD")
    into = integration_branch(run_id)
    if merging:
        run_git(wt, "commit", "-q", "--no-verify", "--no-edit", env=commit_env(wt))
    elif run_git(wt, "diff", "--cached", "--name-only").strip():
        run_git(wt, "commit", "-q", "--no-verify", "-m", f"bridge: {resolver} resolved {info.stage_key} "
                f"(run {run_id})", env=commit_env(wt))
    if not _try(wt, "merge-base", "--is-ancestor", into, "HEAD"):
        return f"the resolution did not keep the merge of {into} (was it aborted?)"
    committed = committed_markers(wt, "HEAD", files)
    if committed:
        return f"conflict markers were committed in {', '.join(committed)}"
    return None


def committed_markers(repo: git.Repo, rev: str, files: Iterable[str]) -> list[str]:
    """Which of `files` hold a conflict marker line in commit `rev` (a deleted file holds none)."""
    try:
        tree = repo.commit(rev).tree
    except (ValueError, git.BadName):
        return []
    marked = []
    for rel in files:
        try:
            blob = tree / rel
        except KeyError:
            continue
        if blob.type == "blob" and any(line.startswith(m.encode()) for line in
                                       blob.data_stream.read().splitlines() for m in MARKERS):
            marked.append(rel)
    return sorted(marked)


def drop_interrupted_resolution(repo_path: Path, info: WorktreeInfo, tip: str, patch: Path) -> tuple[str, ...]:
    """Undo a resolution an earlier session started and never concluded (bridge was killed while its
    resolver ran): `info.branch` goes back to `tip` (where the stage left it) and the resolution's
    worktree is removed. Whatever it held beyond `tip` — the markers, the resolver's edits, commits,
    even made after bridge died — is saved to `patch` first (binary-safe, against `tip`); returns
    the paths it touched (empty: nothing was saved)."""
    repo = open_repo(repo_path)
    root = Path(repo.working_tree_dir or repo_path).resolve()
    try:
        head = repo.git.rev_parse("--verify", "-q", info.branch + "^{commit}")
    except git.GitCommandError:
        head = tip
    tree = f"{head}^{{tree}}"
    registered = {Path(w["worktree"]).resolve() for w in registered_worktrees(repo)}
    live = info.path.exists() and info.path.resolve() in registered
    if live:  # everything in the folder as it is, through a throwaway index (the real one may be mid-merge)
        wt = open_repo(info.path)
        index = Path(wt.git_dir) / "bridge-snapshot.index"
        env = {"GIT_INDEX_FILE": str(index)}
        try:
            run_git(wt, "read-tree", "HEAD", env=env)
            run_git(wt, "add", "-A", env=env)
            tree = run_git(wt, "write-tree", env=env)
        finally:
            with contextlib.suppress(OSError):
                index.unlink()
    files = tuple(run_git(repo, "diff", "--name-only", tip, tree).splitlines())
    if files:
        data = run_git(repo, "diff", "--binary", tip, tree, stdout_as_string=False,
                       strip_newline_in_stdout=False)
        patch.parent.mkdir(parents=True, exist_ok=True)
        tmp = patch.with_name(f".{patch.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, patch)
    with worktree_lock(root):
        if live:
            run_git(repo, "worktree", "remove", "--force", str(info.path))
        prune_stale(repo, root)
        holder = next((w["worktree"] for w in registered_worktrees(repo)
                       if w.get("branch") == f"refs/heads/{info.branch}"), None)
        if holder is not None:
            raise BridgeError(f"{info.branch} is checked out in {holder}, so bridge cannot put it back "
                              f"where the stage left it ({tip[:12]}); remove that worktree, then resume")
        run_git(repo, "update-ref", "-m", "bridge: drop an interrupted resolution", f"refs/heads/{info.branch}", tip)
    return files


def abandon_resolution(path: Path, tip: str) -> None:
    """Undo a resolution that did not succeed: the stage's branch goes back to `tip`, as it was."""
    wt = open_repo(path)
    _try(wt, "merge", "--abort")
    run_git(wt, "reset", "-q", "--hard", tip)
    run_git(wt, "clean", "-q", "-fd")


def _has_markers(file: Path) -> bool:
    """Conflict markers in a file the resolver left (never through a link, never a FIFO's endless open)."""
    try:
        with open_regular(file) as fh:
            return any(line.startswith(m.encode()) for line in fh for m in MARKERS)
    except (OSError, BridgeError):
        return False  # not a regular file: its committed content is checked (committed_markers)
