"""The shared task list: a Markdown checklist in the shared folder that agents and bridge both tick."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.errors import BridgeError
from bridge.outputs import resolve_output
from bridge.shared_files import read_regular
from bridge.workspace import atomic_write_text

TASKS_CAP = 1 << 20  # a task list is read up to 1 MiB (whole lines)

# "- [ ] text", "* [x] text", "1. [X] text", indented for nesting
_ITEM = re.compile(r"^(?P<indent>[ \t]*)(?:[-*+]|\d+[.)])[ \t]+\[(?P<mark>[ xX])\](?:[ \t]+(?P<text>.*?))?[ \t]*$")
_OWNER_PAREN = re.compile(r"[ \t]*\((?P<owner>@?[\w.-]+)\)$")
_OWNER_AT = re.compile(r"(?:^|(?<=\s))@(?P<owner>[A-Za-z0-9_][\w.-]*)")


@dataclass(frozen=True)
class Task:
    text: str
    done: bool
    owner: str | None
    line: int  # 1-based line in the file
    depth: int = 0  # nesting level: 0 for top-level items

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "done": self.done, "owner": self.owner, "line": self.line,
                "depth": self.depth}


@dataclass(frozen=True)
class TaskList:
    items: tuple[Task, ...] = ()

    @property
    def done_count(self) -> int:
        return sum(t.done for t in self.items)

    @property
    def total(self) -> int:
        return len(self.items)

    @property
    def done(self) -> int:
        """Same as done_count; the name templates use (`tasks.done`)."""
        return self.done_count

    @property
    def open(self) -> int:
        return self.total - self.done_count

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """The items as plain (JSON-ready) dicts, so `list(read_tasks(path))` is a list of dicts."""
        return (t.to_dict() for t in self.items)

    def __len__(self) -> int:
        return self.total

    def to_dict(self) -> dict[str, Any]:
        """The shape the ledger stores and templates see: items, done, total, open."""
        return {"items": [t.to_dict() for t in self.items], "done": self.done, "total": self.total,
                "open": self.open}


def parse_tasks(text: str) -> TaskList:
    """Checklist items from Markdown; every other line is ignored."""
    items: list[Task] = []
    indents: list[int] = []  # indentation of the enclosing items, for depth
    for number, raw in enumerate(text.splitlines(), start=1):
        m = _ITEM.match(raw)
        if not m:
            continue
        indent = len(m["indent"].expandtabs(4))
        while indents and indents[-1] >= indent:
            indents.pop()
        depth = len(indents)
        indents.append(indent)
        body = m["text"] or ""
        owner = None
        paren = _OWNER_PAREN.search(body)
        if paren:
            owner, body = paren["owner"].lstrip("@"), body[: paren.start()]
        else:
            at = _OWNER_AT.search(body)
            if at:
                owner = at["owner"].rstrip(".")
                if body.rstrip().endswith(at.group(0)):  # a trailing @owner is a tag, not prose
                    body = body[: at.start()]
        items.append(Task(body.strip(), m["mark"] != " ", owner, number, depth))
    return TaskList(tuple(items))


def read_tasks(path: Path, shared: Path | None = None) -> TaskList:
    """The task list at `path` (relative to the shared folder `shared` when given); a missing file is an
    empty list. It is read as agents' outputs are (bridge.shared_files): never through a symlink (one
    could point at a checklist outside the shared folder), never a FIFO (its open would block for
    good), never a hard link, at most TASKS_CAP bytes; UnsafeFile says why one is refused."""
    try:
        target = resolve_output(shared, str(path)) if shared is not None else Path(path)
        read = read_regular(target, TASKS_CAP)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return TaskList()
    text = read.data[:TASKS_CAP].decode("utf-8", errors="replace")
    if read.truncated:
        text = text.rsplit("\n", 1)[0]  # whole lines only
    return parse_tasks(text)


def tick(path: Path, which: str | int, *, done: bool = True) -> Task:
    """Mark one item done (or open again) in place, atomically; `which` is its text or 0-based index."""
    path = Path(path)
    try:
        read = read_regular(path, TASKS_CAP + 1)
    except FileNotFoundError:
        raise BridgeError(f"cannot tick {which!r}: the task list {path} does not exist") from None
    if read.truncated:
        raise BridgeError(f"cannot tick {which!r}: the task list {path} is larger than {TASKS_CAP:,} bytes")
    text = read.data.decode("utf-8", errors="replace")  # the file's own line endings are kept
    task = _find(parse_tasks(text), which, path)
    lines = text.splitlines(keepends=True)
    line = lines[task.line - 1]
    lines[task.line - 1] = re.sub(r"\[[ xX]\]", "[x]" if done else "[ ]", line, count=1)
    atomic_write_text(path, "".join(lines))
    return Task(task.text, done, task.owner, task.line, task.depth)


def _find(tasks: TaskList, which: str | int, path: Path) -> Task:
    if isinstance(which, int) and not isinstance(which, bool):
        if not 0 <= which < tasks.total:
            raise BridgeError(f"{path} has {tasks.total} tasks; there is no task number {which}")
        return tasks.items[which]
    wanted = " ".join(str(which).split()).casefold()
    exact = [t for t in tasks.items if " ".join(t.text.split()).casefold() == wanted]
    if len(exact) == 1:
        return exact[0]
    partial = exact or [t for t in tasks.items if wanted and wanted in t.text.casefold()]
    if len(partial) == 1:
        return partial[0]
    if not partial:
        raise BridgeError(f"no task in {path} matches {which!r}")
    lines = ", ".join(f"line {t.line}: {t.text!r}" for t in partial)
    raise BridgeError(f"{which!r} matches {len(partial)} tasks in {path} ({lines}); give more of the text")
