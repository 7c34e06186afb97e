"""The shared project folder: the run layout under .bridge/, atomic writes, safe output paths and checks."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import stat
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


from bridge.errors import BridgeError
from bridge.playbook import OutputSpec

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


# -- output paths and checks -----------------------------------------------------------------------

def resolve_output(shared: Path, rel: str) -> Path:
    """The absolute path of a declared output; raise if it could land outside the shared folder."""
    root = Path(os.path.realpath(shared))
    if not rel or not rel.strip():
        raise BridgeError("an output path is empty; give a path relative to the shared folder")
    if os.path.isabs(rel) or rel.startswith("~") or re.match(r"^[A-Za-z]:", rel):
        raise BridgeError(f"output {rel!r} is absolute; outputs are paths relative to the shared folder")
    parts = [p for p in re.split(r"[\\/]", rel) if p not in ("", ".")]
    if ".." in parts:
        raise BridgeError(f"output {rel!r} climbs out of the shared folder with '..'")
    if not parts:
        raise BridgeError(f"output {rel!r} names the shared folder itself, not a file in it")
    current = root
    for part in parts:
        current = current / part
        if current.is_symlink():
            target = Path(os.path.realpath(current))
            if not _inside(target, root):
                raise BridgeError(
                    f"output {rel!r} goes through the symlink {current}, which points outside the shared "
                    f"folder (to {target}); outputs must stay inside {root}"
                )
    if not _inside(Path(os.path.realpath(current)), root):
        raise BridgeError(f"output {rel!r} resolves outside the shared folder {root}")
    return current


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


@dataclass(frozen=True)
class OutputCheck:
    """Whether one declared output is there and valid; `data` is the parsed JSON for .json files."""

    ok: bool
    path: Path | None
    problem: str | None = None
    data: Any = None
    rel: str = ""
    required: bool = True
    exists: bool = False

    def __str__(self) -> str:
        return f"{self.rel}: {'ok' if self.ok else self.problem}"


def check_output(shared: Path, spec: OutputSpec) -> OutputCheck:
    """Exists, a regular file (not a symlink) inside the folder, non-empty, and valid JSON per its schema."""
    rel, required = spec.path, spec.required
    try:
        path = resolve_output(shared, rel)
    except BridgeError as exc:
        return OutputCheck(False, None, str(exc), rel=rel, required=required)

    def bad(problem: str, exists: bool = True) -> OutputCheck:
        return OutputCheck(False, path, problem, rel=rel, required=required, exists=exists)

    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if required:
            return bad("missing", exists=False)
        return OutputCheck(True, path, None, rel=rel, required=False)
    except OSError as exc:
        return bad(f"cannot be read ({exc.strerror})", exists=False)
    if stat.S_ISLNK(st.st_mode):
        return bad("is a symlink; write a regular file instead")
    if not stat.S_ISREG(st.st_mode):
        return bad("is not a regular file")
    if st.st_size == 0:
        return bad("is empty")
    if path.suffix.lower() != ".json":
        return OutputCheck(True, path, None, rel=rel, required=required, exists=True)
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        return bad("is not UTF-8 text")
    except json.JSONDecodeError as exc:
        return bad(f"is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})")
    except OSError as exc:
        return bad(f"cannot be read ({exc.strerror})")
    if spec.schema_ is not None:
        problem = _schema_problem(spec.schema_, data)
        if problem:
            return OutputCheck(False, path, problem, data, rel=rel, required=required, exists=True)
    return OutputCheck(True, path, None, data, rel=rel, required=required, exists=True)


def _schema_problem(schema: dict[str, Any], data: Any) -> str | None:
    import jsonschema  # ~50 ms to import: only when an output has a schema
    from jsonschema.exceptions import best_match

    validator_cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator_cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        return f"cannot be checked: its schema is itself invalid ({exc.message})"
    error = best_match(validator_cls(schema).iter_errors(data))
    if error is None:
        return None
    return f"does not match its schema at {error.json_path}: {error.message}"


def check_outputs(shared: Path, specs: Iterable[OutputSpec]) -> list[OutputCheck]:
    return [check_output(shared, spec) for spec in specs]


def output_problems(checks: Iterable[OutputCheck]) -> list[str]:
    """`rel: problem` for each failed check (the shape the architecture doc's check_outputs promises)."""
    return [str(c) for c in checks if not c.ok]


def missing_outputs_message(checks: Sequence[OutputCheck]) -> str:
    """One paragraph naming every missing or invalid output; empty when all are fine."""
    bad = [c for c in checks if not c.ok]
    if not bad:
        return ""
    n = len(bad)
    lines = [f"{n} declared output{'s' if n != 1 else ''} missing or invalid:"]
    lines += [f"  - {c.rel}: {c.problem}" + (f" ({c.path})" if c.path else "") for c in bad]
    return "\n".join(lines)


# -- hand-off caps and sizes -----------------------------------------------------------------------

def cap_summary(text: str, max_lines: int | None = None, max_bytes: int | None = None) -> str:
    """Keep whole lines within both caps (UTF-8 bytes), then add a "[… N more lines]" marker."""
    lines = text.splitlines()
    total = len(lines)
    fits_lines = max_lines is None or total <= max_lines
    fits_bytes = max_bytes is None or len(text.encode("utf-8")) <= max_bytes
    if fits_lines and fits_bytes:
        return text
    budget = None
    if max_bytes is not None:
        budget = max_bytes - len(f"\n[… {total} more lines]".encode("utf-8"))
    kept: list[str] = []
    used = 0
    for line in lines[: max_lines if max_lines is not None else total]:
        size = len(line.encode("utf-8")) + (1 if kept else 0)
        if budget is not None and used + size > budget:
            if not kept and budget > 0:  # a first line longer than the cap: keep what fits of it
                cut = line.encode("utf-8")[:budget].decode("utf-8", errors="ignore")
                return f"{cut}\n[… {total - 1} more lines]"
            break
        kept.append(line)
        used += size
    marker = f"[… {total - len(kept)} more lines]"
    return "\n".join([*kept, marker])


@dataclass(frozen=True)
class Handoff:
    """Bytes handed into a prompt vs bytes of the upstream transcripts they stand in for."""

    handed_bytes: int
    transcript_bytes: int

    @property
    def ratio(self) -> float | None:
        return self.handed_bytes / self.transcript_bytes if self.transcript_bytes else None

    def to_dict(self) -> dict[str, Any]:
        return {"handed_bytes": self.handed_bytes, "transcript_bytes": self.transcript_bytes,
                "ratio": self.ratio}


def text_bytes(texts: str | Iterable[str]) -> int:
    """UTF-8 size of a rendered prompt (or of the upstream pieces rendered into it)."""
    if isinstance(texts, str):
        texts = [texts]
    return sum(len(t.encode("utf-8")) for t in texts)


def transcript_bytes(logs: Iterable[Path]) -> int:
    """Total size of upstream stdout logs; a missing log counts as 0."""
    total = 0
    for log in logs:
        try:
            total += os.stat(log).st_size
        except OSError:
            pass
    return total


def handoff_size(handed: str | Iterable[str], transcripts: Iterable[Path]) -> Handoff:
    return Handoff(text_bytes(handed), transcript_bytes(transcripts))
