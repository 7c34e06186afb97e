"""The project folder bridge writes: the run layout under .bridge/, run ids and stage keys, atomic writes.

Declared outputs are checked by bridge.outputs; hand-off caps and sizes are bridge.handoff's."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import stat
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bridge.errors import BridgeError

BRIDGE_DIR = ".bridge"
_EXCLUDE_LINE = ".bridge/"
_FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True)
class AttemptPaths:
    """The files bridge writes for one attempt of one stage (agents never write here)."""

    dir: Path

    @property
    def prompt(self) -> Path:
        return self.dir / "prompt.md"

    @property
    def argv(self) -> Path:
        return self.dir / "argv.json"

    @property
    def stdout(self) -> Path:
        return self.dir / "stdout.jsonl"

    @property
    def stderr(self) -> Path:
        return self.dir / "stderr.log"

    @property
    def result(self) -> Path:
        return self.dir / "result.json"

    def create(self) -> AttemptPaths:
        self.dir.mkdir(parents=True, exist_ok=True)
        return self


@dataclass(frozen=True)
class RunLayout:
    """Where one run keeps its files: `.bridge/runs/<run_id>/{shared,stages,summary.md}`."""

    project: Path
    run_id: str

    @property
    def root(self) -> Path:
        return self.project / BRIDGE_DIR

    @property
    def inbox(self) -> Path:
        """Persistent across runs: drop files here to trigger `bridge watch`."""
        return self.root / "inbox"

    @property
    def run_dir(self) -> Path:
        return self.root / "runs" / self.run_id

    @property
    def shared(self) -> Path:
        """What agents read and write; templates see it as `{{ shared }}`."""
        return self.run_dir / "shared"

    @property
    def stages(self) -> Path:
        return self.run_dir / "stages"

    @property
    def summary(self) -> Path:
        return self.run_dir / "summary.md"

    def attempt(self, stage_key: str, attempt: int) -> AttemptPaths:
        return AttemptPaths(self.stages / stage_key / f"attempt-{attempt}")

    def create(self) -> RunLayout:
        """Make the folders and keep `.bridge/` out of git (via .git/info/exclude, never .gitignore)."""
        for folder in (self.shared, self.stages, self.inbox):
            folder.mkdir(parents=True, exist_ok=True)
        exclude_from_git(self.project)
        return self


def __getattr__(name: str) -> Any:
    # The task list lives in bridge.tasks (which imports this module); the architecture doc lists it
    # under workspace, so `from bridge.workspace import read_tasks` keeps working.
    if name in ("read_tasks", "tick", "parse_tasks", "Task", "TaskList"):
        from bridge import tasks

        return getattr(tasks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def new_run_id() -> str:
    """A sortable, unique-enough id: UTC timestamp + 4 random hex digits, e.g. 20261121-142233-ab12."""
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_run_id(run_id: str) -> str:
    """A run id given from outside (`bridge run --run-id`): safe as a folder and branch name, or BridgeError."""
    if not _RUN_ID.fullmatch(run_id) or ".." in run_id or run_id == "last":
        raise BridgeError(f"--run-id {run_id!r} is not a usable run id: use 1-64 letters, digits, '.', '_' "
                          "or '-', starting with a letter or digit (e.g. what `bridge runs` shows)")
    return run_id


_UNSAFE = re.compile(r"[^a-z0-9._]+")


def stage_key(stage_id: str, matrix_values: dict[str, Any] | None = None) -> str:
    """`audit` or `audit-security`: filesystem-safe, distinct for distinct matrix values."""
    base = _UNSAFE.sub("_", stage_id.lower()).strip("._") or "stage"
    if not matrix_values:
        return base if base == stage_id else f"{base}-{_digest(stage_id)}"
    texts = [v if isinstance(v, str) else json.dumps(v, sort_keys=True) for v in matrix_values.values()]
    slugs = [_UNSAFE.sub("_", t.lower()).strip("._") or "_" for t in texts]
    key = "-".join([base, *slugs])
    # The readable form is only trusted when it cannot collide: nothing lost, no ambiguous '-'.
    lossy = base != stage_id or any(s != t for s, t in zip(slugs, texts)) or len(key) > 80
    if lossy:
        canonical = json.dumps([stage_id, sorted(matrix_values.items())], default=str)
        key = f"{key[:70].rstrip('-_.')}-{_digest(canonical)}"
    return key


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:6]


def exclude_from_git(project: Path) -> Path | None:
    """Add `.bridge/` to the repository's info/exclude if `project` is in a git repo; return that file."""
    git_dir = _git_dir(project.resolve())
    if git_dir is None:
        return None
    exclude = git_dir / "info" / "exclude"
    current = exclude.read_text(encoding="utf-8", errors="replace") if exclude.exists() else ""
    if _EXCLUDE_LINE in (line.strip() for line in current.splitlines()):
        return exclude
    sep = "" if not current or current.endswith("\n") else "\n"
    atomic_write_text(exclude, f"{current}{sep}# bridge run folders\n{_EXCLUDE_LINE}\n")
    return exclude


def _git_dir(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        dot_git = folder / ".git"
        if dot_git.is_dir():
            return dot_git
        if dot_git.is_file():  # a worktree or submodule: "gitdir: <path>"; exclude lives in the common dir
            text = dot_git.read_text(encoding="utf-8", errors="replace").strip()
            if not text.startswith("gitdir:"):
                return None
            git_dir = (folder / text[len("gitdir:"):].strip()).resolve()
            common = git_dir / "commondir"
            if common.is_file():
                git_dir = (git_dir / common.read_text(encoding="utf-8").strip()).resolve()
            return git_dir
    return None


# -- atomic writes ---------------------------------------------------------------------------------

def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write to a temp file beside `path`, fsync, then os.replace: readers see the old or the new file."""
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, stat.S_IMODE(os.stat(path).st_mode) if path.exists() else 0o644)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        if exc.errno in _FULL_DISK:
            raise BridgeError(f"could not write {path}: the disk is full; free some space and try again") from None
        raise BridgeError(f"could not write {path}: {exc.strerror or exc}") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "to_dict"):
        return value.to_dict()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
