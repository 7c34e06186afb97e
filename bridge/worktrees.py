"""Git worktree lifecycle: one worktree per stage on its own branch, commit-back, patch artifacts.

The user's working tree, index, HEAD and uncommitted changes are never touched here: worktrees live
outside it, under `worktrees_root(repo)/<run>/<stage_key>` (bridge's cache folder, one folder per
repository). Stage keys come from `bridge.workspace.stage_key`. Merging back is
`bridge.merge`; removing what finished runs left is `bridge.cleanup`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import git

from bridge.errors import BridgeError
from bridge.workspace import exclude_from_git

try:
    import fcntl
except ImportError:  # Windows: the in-process lock still holds
    fcntl = None  # type: ignore[assignment]

BRANCH_PREFIX = "bridge"
LEGACY_WORKTREES = Path(".bridge") / "worktrees"  # where bridge before 0.2 made them, inside the repo
IDENTITY = ("bridge", "bridge@localhost")
# Bridge's own git calls run no user hooks (they may prompt, be slow, or reject agent commits) and
# never sign (gpg may ask for a passphrase on a terminal nobody watches).
GIT_OPTIONS = ["core.hooksPath=" + os.devnull, "commit.gpgsign=false"]
_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_LOCK = threading.Lock()


@dataclass(frozen=True)
class BaseInfo:
    """Where a run starts: HEAD of the user's tree, and whether uncommitted work was left out."""

    commit: str
    branch: str | None  # None on a detached HEAD
    dirty: bool
    dirty_files: tuple[str, ...] = ()


@dataclass(frozen=True)
class WorktreeInfo:
    path: Path
    branch: str
    base: str  # the commit the branch started from
    repo: Path = Path()
    run_id: str = ""
    stage_key: str = ""
    copied: tuple[str, ...] = ()
    not_copied: tuple[tuple[str, str], ...] = ()  # (path, why): tracked, or not ignored


@dataclass(frozen=True)
class FinishInfo:
    commit: str | None  # the branch tip, or None when the stage changed nothing
    diffstat: str
    patch_path: Path
    diffstat_path: Path
    committed_leftovers: bool = False  # bridge committed what the agent left uncommitted
    files: tuple[str, ...] = field(default_factory=tuple)


def open_repo(path: Path) -> git.Repo:
    """The repository holding `path`, with bridge's git options set on every call."""
    try:
        repo = git.Repo(path, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise BridgeError(f"{path} is not inside a git repository; worktree stages need one "
                          "(run `git init` and make a first commit)") from None
    repo.git.set_persistent_git_options(c=GIT_OPTIONS)
    return repo


def toplevel(path: Path) -> Path:
    """The root of the working tree holding `path`."""
    return Path(open_repo(path).working_tree_dir or path).resolve()


def git_argv(*args: str) -> list[str]:
    """`git <args>` with bridge's options (no hooks, no signing) in front."""
    return ["git", *(x for opt in GIT_OPTIONS for x in ("-c", opt)), *args]


def worktrees_base() -> Path:
    """The folder holding every repository's bridge worktrees: $BRIDGE_WORKTREES, else
    $XDG_CACHE_HOME/bridge/worktrees (~/.cache/bridge/worktrees)."""
    if os.environ.get("BRIDGE_WORKTREES"):
        return Path(os.environ["BRIDGE_WORKTREES"]).expanduser().absolute()
    cache = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(cache):  # unset, or relative: ignored, as the XDG spec says
        cache = str(Path.home() / ".cache")
    return Path(cache) / "bridge" / "worktrees"


def worktrees_root(repo_root: Path) -> Path:
    """One repository's worktrees, outside its working tree: `<base>/<repo name>-<hash of its path>`."""
    real = Path(os.path.realpath(repo_root))
    digest = hashlib.sha256(str(real).encode()).hexdigest()[:10]
    return worktrees_base() / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', real.name) or 'repo'}-{digest}"


def owned(root: Path, path: Path) -> bool:
    """Whether `path` is under a folder where bridge makes worktrees of the repository at `root`."""
    resolved = Path(os.path.realpath(path))
    return any(Path(os.path.realpath(base)) in resolved.parents
               for base in (worktrees_root(root), root / LEGACY_WORKTREES))


def run_folders(root: Path) -> set[str]:
    """Run ids with a worktree folder of the repository at `root` (old runs' inside it included)."""
    return {p.name for base in (worktrees_root(root), root / LEGACY_WORKTREES) if base.is_dir()
            for p in base.iterdir() if p.is_dir()}


@contextlib.contextmanager
def worktree_lock(root: Path) -> Iterator[None]:
    """Serialise adding / removing / pruning worktrees of one repository, across threads and runs.

    Concurrent `git worktree add` calls read each other's half-made entries and fail
    ("failed to read .git/worktrees/x/commondir"). Not re-entrant: take it once, at the top.
    """
    exclude_from_git(root)  # before .bridge/ appears, so it never shows in `git status`
    path = worktrees_root(root) / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with _LOCK, path.open("a") as fh:
        if fcntl is not None:
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def run_git(repo: git.Repo, *args: str, env: dict[str, str] | None = None, **kw: object) -> str:
    """`git <args>` in `repo`; a failure is a BridgeError showing the command and git's words."""
    try:
        return repo.git.execute(git_argv(*args), env=env, **kw)  # type: ignore[call-overload]
    except git.GitCommandError as exc:
        raise BridgeError(f"`git {' '.join(args)}` failed in {repo.working_tree_dir}: "
                          f"{(exc.stderr or exc.stdout or '').strip()}") from None


def commit_env(repo: git.Repo) -> dict[str, str]:
    """Author/committer env for bridge's commits when the repository has no identity of its own."""
    reader = repo.config_reader()
    have = all(reader.get_value("user", k, "") or os.environ.get(f"GIT_AUTHOR_{k.upper()}")
               for k in ("name", "email"))
    if have:
        return {}
    name, email = IDENTITY
    return {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email}


def branch_name(run_id: str, key: str) -> str:
    for what, value in (("run id", run_id), ("stage key", key)):
        if not _KEY.match(value) or ".." in value or value.endswith((".lock", ".")):
            raise BridgeError(f"{what} {value!r} cannot name a git branch: use letters, digits, "
                              "'_', '-' and '.'")
    return f"{BRANCH_PREFIX}/{run_id}/{key}"


def worktree_path(repo_root: Path, run_id: str, key: str) -> Path:
    return worktrees_root(repo_root) / run_id / key


def status_entries(repo: git.Repo, cwd: Path | None = None) -> list[tuple[str, str]]:
    """(XY, path) for every change, untracked files included; never refreshes the index."""
    target = repo if cwd is None else git.Repo(cwd)
    out = run_git(target, "--no-optional-locks", "status", "--porcelain=v1", "-z",
                  "--untracked-files=all", strip_newline_in_stdout=False)
    entries, parts, i = [], out.split("\0"), 0
    while i < len(parts):
        item = parts[i]
        i += 1
        if len(item) < 4:
            continue
        entries.append((item[:2], item[3:]))
        if item[0] in "RC":
            i += 1  # the rename's source path follows
    return [(xy, p) for xy, p in entries if not p.startswith(".bridge/")]


def base_commit(repo_path: Path) -> BaseInfo:
    """HEAD of the user's tree, its branch, and the uncommitted files the run will not see."""
    repo = open_repo(repo_path)
    try:
        commit = repo.head.commit.hexsha
    except ValueError:
        raise BridgeError(f"{repo.working_tree_dir} has no commits yet; worktree stages start from "
                          "HEAD — make a first commit") from None
    exclude_from_git(Path(repo.working_tree_dir or repo_path))
    branch = None if repo.head.is_detached else repo.head.ref.name
    files = tuple(p for _, p in status_entries(repo))
    return BaseInfo(commit=commit, branch=branch, dirty=bool(files), dirty_files=files)


def registered_worktrees(repo: git.Repo) -> list[dict[str, str]]:
    """`git worktree list --porcelain` as dicts (worktree, HEAD, branch, locked, prunable...)."""
    out, items, cur = run_git(repo, "worktree", "list", "--porcelain"), [], {}
    for line in out.splitlines() + [""]:
        if not line:
            if cur:
                items.append(cur)
            cur = {}
            continue
        key, _, value = line.partition(" ")
        cur[key] = value
    return items


def prune_stale(repo: git.Repo, root: Path, dry_run: bool = False) -> list[str]:
    """Registered worktrees whose folder is gone; bridge's own locked ones are unlocked first."""
    stale = []
    for w in registered_worktrees(repo)[1:]:
        path = Path(w["worktree"])
        if path.exists():
            continue
        if "locked" in w:
            if not owned(root, path):
                continue  # someone else's lock on purpose (removable media): not ours to undo
            if not dry_run:
                run_git(repo, "worktree", "unlock", str(path))
        stale.append(str(path))
    if stale and not dry_run:
        run_git(repo, "worktree", "prune")
    return stale


def _branch_exists(repo: git.Repo, branch: str) -> bool:
    return bool(run_git(repo, "branch", "--list", branch).strip())


def _is_ancestor(repo: git.Repo, older: str, newer: str) -> bool:
    try:
        repo.git.merge_base("--is-ancestor", older, newer)
        return True
    except git.GitCommandError:
        return False


def _copy_ignored(repo: git.Repo, root: Path, dest: Path, patterns: Iterable[str]
                  ) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """Copy the user's ignored files matching `patterns` (globs) into the worktree `dest`."""
    copied: list[str] = []
    skipped: list[tuple[str, str]] = []
    tracked = set(run_git(repo, "ls-files", "-z", strip_newline_in_stdout=False).split("\0"))
    for pattern in patterns:
        if Path(pattern).is_absolute() or ".." in Path(pattern).parts:
            skipped.append((pattern, "outside the repository"))
            continue
        for src in sorted(root.glob(pattern)):
            rel = src.relative_to(root).as_posix()
            if rel.split("/")[0] in (".git", ".bridge"):
                continue
            if rel in tracked:
                skipped.append((rel, "tracked: the worktree has the committed version"))
                continue
            try:
                repo.git.check_ignore("-q", "--no-index", rel)
            except git.GitCommandError:
                # Not ignored: the stage's commit would pick it up (a secret in .env).
                skipped.append((rel, "not ignored by git, so it could end up in a commit"))
                continue
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            # the contents, never a link: through a symlinked .env the agent would write the user's file
            if src.is_dir():
                shutil.copytree(src, target, symlinks=False, ignore_dangling_symlinks=True, dirs_exist_ok=True)
            else:
                shutil.copy2(src, target)
            copied.append(rel)
    return tuple(copied), tuple(skipped)


def add_worktree(repo_path: Path, run_id: str, key: str, base: BaseInfo | str,
                 copy: Iterable[str] = (".env",)) -> WorktreeInfo:
    """A worktree on `bridge/<run>/<key>` from `base`, with the user's ignored `copy` files in it.

    A stale entry (folder deleted by a crash) is pruned first. An existing branch holding work is
    reused, never reset, so a resumed run continues where it stopped.
    """
    repo = open_repo(repo_path)
    root = Path(repo.working_tree_dir or repo_path).resolve()
    commit = base.commit if isinstance(base, BaseInfo) else base
    branch = branch_name(run_id, key)
    path = worktree_path(root, run_id, key)
    with worktree_lock(root):
        prune_stale(repo, root)
        registered = {Path(w["worktree"]).resolve(): w for w in registered_worktrees(repo)}
        # the branch already checked out elsewhere (a run started under another cache folder, or by
        # an older bridge inside the repository): that checkout is the unit's, resumed where it is
        path = checkout_of(repo, branch) or path
        if path.resolve() in registered:
            if registered[path.resolve()].get("branch") != f"refs/heads/{branch}":
                raise BridgeError(f"{path} is a worktree of another branch; "
                                  "run `bridge clean` first")
        else:
            if path.exists():
                raise BridgeError(f"{path} exists but is not a git worktree (left by an "
                                  "interrupted removal?); move it away or delete it, then "
                                  "run again")
            path.parent.mkdir(parents=True, exist_ok=True)
            if _branch_exists(repo, branch):
                if _is_ancestor(repo, branch, commit):  # holds nothing the base lacks: start afresh
                    run_git(repo, "branch", "-f", branch, commit)
                run_git(repo, "worktree", "add", str(path), branch)
            else:
                run_git(repo, "worktree", "add", "-b", branch, str(path), commit)
    copied, skipped = _copy_ignored(repo, root, path, copy)
    return WorktreeInfo(path=path, branch=branch, base=commit, repo=root, run_id=run_id,
                        stage_key=key, copied=copied, not_copied=skipped)


def checkout_of(repo: git.Repo, branch: str) -> Path | None:
    """Where `branch` is checked out in a worktree that still exists, or None."""
    for w in registered_worktrees(repo)[1:]:
        if w.get("branch") == f"refs/heads/{branch}" and Path(w["worktree"]).exists():
            return Path(w["worktree"])
    return None


def unreachable_commits(repo: git.Repo, path: Path) -> int:
    """How many commits the worktree at `path` has checked out that no branch holds (a detached HEAD)."""
    try:
        head = git.Repo(path).git.rev_parse("--verify", "-q", "HEAD")
    except git.GitCommandError:
        return 0
    return int(run_git(repo, "rev-list", "--count", head, "--not", "--branches", "--"))


def remove_worktree(info: WorktreeInfo, force: bool = False) -> bool:
    """Remove the worktree folder (the branch stays); False, and kept, on uncommitted work or on
    commits only its (detached) HEAD holds."""
    repo = open_repo(info.repo)
    # bridge's own copies (the .env it copied in) are no work of the agent's, even where the branch's
    # .gitignore does not ignore them (the user's ignore rule still uncommitted)
    copies = {c.rstrip("/") for c in info.copied}
    work = [p for _, p in status_entries(repo, info.path)
            if p.rstrip("/") not in copies and not any(p.startswith(c + "/") for c in copies)] \
        if info.path.exists() else []
    if info.path.exists() and not force and (work or unreachable_commits(repo, info.path)):
        return False
    with worktree_lock(info.repo):
        if not info.path.exists():
            prune_stale(repo, info.repo)
            return True
        # --force: ignored files (the copied .env, build output) would otherwise block the removal.
        run_git(repo, "worktree", "remove", "--force", str(info.path))
    with contextlib.suppress(OSError):
        info.path.parent.rmdir()
    return True


@contextlib.contextmanager
def worktree(repo_path: Path, run_id: str, key: str, base: BaseInfo | str,
             copy: Iterable[str] = (".env",)) -> Iterator[WorktreeInfo]:
    """add_worktree, then remove the folder on exit unless work was left uncommitted in it."""
    info = add_worktree(repo_path, run_id, key, base, copy)
    try:
        yield info
    finally:
        remove_worktree(info)


def _merging(wt: git.Repo) -> bool:
    """A merge in progress (MERGE_HEAD set) or paths still unmerged in the index."""
    try:
        wt.git.rev_parse("-q", "--verify", "MERGE_HEAD")
        return True
    except git.GitCommandError:
        return bool(run_git(wt, "diff", "--name-only", "--diff-filter=U").strip())


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def finish_worktree(info: WorktreeInfo, run_id: str, key: str, artifacts: Path) -> FinishInfo:
    """Commit what the agent left, write `<key>.patch` and `<key>.diffstat` (against the base)."""
    wt = open_repo(info.path)
    if wt.head.is_detached or wt.head.ref.name != info.branch:
        raise BridgeError(f"stage {key} switched its worktree {info.path} away from "
                          f"{info.branch}; bridge commits only on the stage's branch — check out "
                          f"{info.branch} there")
    if _merging(wt):
        raise BridgeError(f"stage {key} left a merge in progress in its worktree {info.path}; bridge never "
                          "commits a half-done merge — finish it there (`git commit`) or drop it (`git merge "
                          f"--abort`), then run again; the branch {info.branch} is kept as it is")
    leftovers = bool(status_entries(wt))
    if leftovers:
        run_git(wt, "add", "-A")
        if info.copied:  # in case the worktree does not ignore them (an uncommitted .gitignore)
            run_git(wt, "reset", "-q", "--", *(f":(literal){p}" for p in info.copied))
        staged = run_git(wt, "diff", "--cached", "--name-only").strip()
        if staged:
            run_git(wt, "commit", "-q", "--no-verify", "-m",
                    f"bridge: {key} (run {run_id})\n\nWork left uncommitted by stage {key} of run "
                    f"{run_id}, committed by bridge.", env=commit_env(wt))
        else:
            leftovers = False
    tip = wt.head.commit.hexsha
    # the files bridge copied in (a secret in .env) stay out of the artifacts even if the agent committed them
    spec = ["--", ".", *(f":(exclude,literal){p}" for p in info.copied)]
    diffstat = run_git(wt, "diff", "--stat", info.base, tip, *spec) if tip != info.base else ""
    files = tuple(run_git(wt, "diff", "--name-only", info.base, tip).splitlines())
    patch = run_git(wt, "diff", "--binary", info.base, tip, *spec, stdout_as_string=False,
                    strip_newline_in_stdout=False)
    patch_path, stat_path = artifacts / f"{key}.patch", artifacts / f"{key}.diffstat"
    _write(patch_path, patch)
    _write(stat_path, (diffstat + "\n" if diffstat else "").encode())
    return FinishInfo(commit=tip if tip != info.base else None, diffstat=diffstat,
                      patch_path=patch_path, diffstat_path=stat_path,
                      committed_leftovers=leftovers, files=files)
