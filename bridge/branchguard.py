"""What a stage's branch may not bring back into the user's repository, and what landing may not overwrite.

An agent can commit files git ignores (`git add -f .env`): the secret bridge copied into its worktree,
or its own `.env` that a fast-forward would write over the user's (git replaces ignored files without
asking). `forbidden_paths` finds such paths in every commit of a branch's range, so the merge step
refuses that branch (kept, never merged); `clobbered_by_landing` finds the untracked or ignored files
of the user's tree that moving their branch would overwrite, so landing stays put instead.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path

import git

from bridge.worktrees import open_repo, run_git


def _ignored(repo: git.Repo, paths: list[str]) -> set[str]:
    """Which of `paths` the user's repository ignores (its .gitignore files, info/exclude, global)."""
    if not paths:
        return set()
    with tempfile.TemporaryFile() as fh:  # NUL-separated on stdin: any name, no quoting
        fh.write("\0".join(paths).encode() + b"\0")
        fh.seek(0)
        try:
            out = repo.git.check_ignore("--no-index", "--stdin", "-z", istream=fh, strip_newline_in_stdout=False)
        except git.GitCommandError as exc:
            if exc.status == 1:  # none of them is ignored
                return set()
            raise
    return {p for p in out.split("\0") if p}


def _tracked(repo: git.Repo, rev: str) -> set[str]:
    out = run_git(repo, "ls-tree", "-r", "-z", "--name-only", rev, strip_newline_in_stdout=False)
    return {p for p in out.split("\0") if p}


def forbidden_paths(repo_path: Path, base: str, tip: str, copied: Iterable[str] = ()) -> tuple[str, ...]:
    """Paths that some commit in `base..tip` adds or changes and that must not reach the user's branch:
    files bridge copied into the worktree (`copied`, e.g. `.env`) and files the user's repository
    ignores, unless `base` already tracks them."""
    repo = open_repo(repo_path)
    if base == tip:
        return ()
    out = run_git(repo, "log", "-m", "--no-renames", "--format=", "--name-only", "-z", "--diff-filter=ACMRT",
                  f"{base}..{tip}", strip_newline_in_stdout=False)
    touched = sorted({p.strip("\n") for p in out.split("\0") if p.strip("\n")})
    if not touched:
        return ()
    known = _tracked(repo, base)
    copied = set(copied)
    new = [p for p in touched if p not in known]
    return tuple(sorted({p for p in new if p in copied} | _ignored(repo, new)))


def clobbered_by_landing(repo_path: Path, tree: Path, current: str, tip: str) -> tuple[str, ...]:
    """Files in the working tree `tree` (on `current`) that moving it to `tip` would overwrite or
    remove although git does not track them there: untracked or ignored files of the user."""
    repo = open_repo(repo_path)
    out = run_git(repo, "diff", "--no-renames", "-z", "--name-only", current, tip, strip_newline_in_stdout=False)
    changed = [p for p in out.split("\0") if p]
    known = _tracked(repo, current)
    hit = []
    for rel in changed:
        if rel in known:
            continue
        path = tree / rel
        # the file itself, or a file where tip needs a folder of its parents
        parents = [tree / Path(rel).parents[i] for i in range(len(Path(rel).parents) - 1)]
        if path.is_symlink() or path.exists() or any(p.is_file() or p.is_symlink() for p in parents):
            hit.append(rel)
    return tuple(sorted(hit))
