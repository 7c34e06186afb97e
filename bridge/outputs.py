"""A stage's declared outputs in the shared folder: safe paths, and whether each is there and valid."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.errors import BridgeError
from bridge.playbook import OutputSpec
from bridge.shared_files import JSON_CAP, UnsafeFile, read_regular, unsafe


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
    why = unsafe(st)  # a symlink, a FIFO, a hard link to a file outside: never read, never an output
    if why:
        return bad(why)
    if st.st_size == 0:
        return bad("is empty")
    if path.suffix.lower() != ".json":
        return OutputCheck(True, path, None, rel=rel, required=required, exists=True)
    if st.st_size > JSON_CAP:
        return bad(f"is {st.st_size:,} bytes of JSON, more than the {JSON_CAP:,} bridge parses; write a smaller "
                   "JSON file (and put bulk data in a file that is not .json)")
    try:
        read = read_regular(path, JSON_CAP + 1)
        if read.truncated:
            return bad(f"grew past the {JSON_CAP:,} bytes of JSON bridge parses")
        data = json.loads(read.data.decode("utf-8"))
    except UnicodeDecodeError:
        return bad("is not UTF-8 text")
    except json.JSONDecodeError as exc:
        return bad(f"is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})")
    except UnsafeFile as exc:
        return bad(str(exc).removeprefix(f"{path} "))
    except OSError as exc:
        return bad(f"cannot be read ({exc.strerror})")
    if spec.schema_ is not None:
        problem = _schema_problem(spec.schema_, data)
        if problem:
            return OutputCheck(False, path, problem, data, rel=rel, required=required, exists=True)
    return OutputCheck(True, path, None, data, rel=rel, required=required, exists=True)


def invalid_schema(schema: dict[str, Any]) -> str | None:
    """What is wrong with an output's JSON Schema itself, or None."""
    import jsonschema  # ~50 ms to import: only when an output has a schema

    validator_cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator_cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in exc.path)
        return f"{exc.message}" + (f" (at schema{where})" if where else "")
    return None


def _schema_problem(schema: dict[str, Any], data: Any) -> str | None:
    import jsonschema
    from jsonschema.exceptions import best_match

    bad = invalid_schema(schema)
    if bad:
        return f"cannot be checked: its schema is itself invalid ({bad})"
    validator_cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
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


WORKTREE_GRACE = 30.0  # an interactive worktree agent's time to end its turn once its outputs are complete


def ends_early(specs: Sequence[OutputSpec]) -> bool:
    """Whether these outputs, once complete, may end the attempt before the agent exits: the agent
    writes them (an output bridge writes from the final message needs the agent's end) and one is required."""
    return not any(s.from_ == "final_message" for s in specs) and any(s.required for s in specs)


def early_stop_grace(specs: Sequence[OutputSpec], *, worktree: bool, interactive: bool) -> float | None:
    """How long after its outputs are complete an attempt is stopped; None: never (it ends by itself).

    In a worktree, what the agent leaves is committed and merged, so stopping it the moment its report
    exists could commit a half-made edit: a headless agent there is never stopped early (it ends with
    its own result), and an interactive one — a TUI never exits by itself — gets WORKTREE_GRACE
    seconds to end its turn (its done pattern / title) before it is stopped. Elsewhere: at once.
    """
    if not ends_early(specs):
        return None
    if not worktree:
        return 0.0
    return WORKTREE_GRACE if interactive else None
