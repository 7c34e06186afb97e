"""Which file changes start a `bridge watch` run, and when: globs, debounce per burst, coalesce or queue.

Pure logic with the clock passed in, so it is tested without threads or sleeps; the command feeds it
file events and asks it what to run next.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from bridge.errors import BridgeError


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob over '/'-separated relative paths: `*` and `?` stay within a folder, `**` crosses them."""
    out, i = [], 0
    pattern = pattern.replace("\\", "/").lstrip("/")
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            start = i + 1 + (pattern[i + 1:i + 2] == "!")
            end = pattern.find("]", start + 1)  # a ']' right after '[' or '[!' is a member
            if end == -1:
                out.append(re.escape(c))
            else:
                body = pattern[start:end].replace("\\", "\\\\").replace("^", "\\^")
                out.append(f"[^/{body}]" if start > i + 1 else f"[{body}]")
                i = end + 1
                continue
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def matches(pattern: re.Pattern[str], rel: str) -> bool:
    """Hidden files and folders (a name starting with '.', e.g. an editor's or writer's temp file) never match."""
    parts = PurePosixPath(rel.replace("\\", "/")).parts
    if not parts or any(p.startswith(".") for p in parts) or rel.endswith("~"):
        return False
    return pattern.match("/".join(parts)) is not None


def check_glob(pattern: str) -> None:
    """A BridgeError saying what is wrong with a `--on` glob, before anything is watched."""
    text = pattern.replace("\\", "/")
    if not text.strip():
        raise BridgeError("--on needs a glob, e.g. 'audit/*.md' or '**/*.json'")
    if text.startswith("/") or re.match(r"^[A-Za-z]:", text) or text.startswith("~"):
        raise BridgeError(f"--on {pattern!r} is absolute; the glob is matched against paths inside the watched "
                          "folder, e.g. 'audit/*.md'")
    parts = text.split("/")
    if ".." in parts:
        raise BridgeError(f"--on {pattern!r} climbs out with '..'; the glob is matched against paths inside the "
                          "watched folder (choose the folder with --dir)")
    if any(p.startswith(".") and p not in (".", "..") for p in parts):
        raise BridgeError(f"--on {pattern!r} names a hidden file or folder, which never triggers (writers' temp "
                          "files are hidden); name visible files")
    i = 0
    while i < len(text):
        if text[i] == "[":
            start = i + 1 + (text[i + 1:i + 2] == "!")
            end = text.find("]", start + 1)
            if end == -1:
                raise BridgeError(f"--on {pattern!r}: the '[' at {i + 1} opens a character class that is never "
                                  "closed with ']'; write '[[]' for a literal '['")
            i = end
        i += 1


@dataclass(frozen=True)
class Trigger:
    """One run's worth of files: every matching file that appeared or changed in the burst (or bursts,
    when coalesced while a run was going), in the order they last changed."""

    paths: tuple[Path, ...]
    seq: int  # 1, 2, 3... in the order triggers became ready

    @property
    def path(self) -> Path:
        """The file that changed last (templates' `trigger`)."""
        return self.paths[-1]


def _merged(older: tuple[Path, ...], newer: tuple[Path, ...]) -> tuple[Path, ...]:
    """Both bursts' files, each once, in the order they last changed."""
    return tuple(p for p in older if p not in newer) + newer


class TriggerQueue:
    """Debounce each burst of file changes, then hand out triggers one run at a time.

    A burst ends once no matching file has changed for `debounce` seconds; it becomes one trigger
    holding all its files. Coalesce (default): at most one pending trigger; a newer burst merges into
    it (no file is dropped: the next run gets them all, the latest last). Queue: every burst is kept
    and handed out in order.
    """

    def __init__(self, debounce: float, *, queue_all: bool = False) -> None:
        if debounce < 0:
            raise ValueError("debounce cannot be negative")
        self.debounce = debounce
        self.queue_all = queue_all
        self._burst: dict[Path, None] = {}  # ordered: by last change
        self._quiet_until: float | None = None
        self._pending: list[Trigger] = []
        self._seq = 0

    def notice(self, path: Path, now: float) -> None:
        """A matching file appeared or changed: it joins the burst, whose quiet period restarts."""
        self._burst.pop(path, None)
        self._burst[path] = None
        self._quiet_until = now + self.debounce

    def due(self, now: float) -> list[tuple[Trigger, Trigger | None]]:
        """The burst as a trigger once it has been quiet long enough, with the pending one it absorbed."""
        if not self._burst or self._quiet_until is None or self._quiet_until > now:
            return []
        paths, self._burst, self._quiet_until = tuple(self._burst), {}, None
        self._seq += 1
        absorbed = None
        if not self.queue_all and self._pending:
            absorbed = self._pending.pop()
            paths = _merged(absorbed.paths, paths)
        trigger = Trigger(paths, self._seq)
        self._pending.append(trigger)
        return [(trigger, absorbed)]

    def next_deadline(self) -> float | None:
        return self._quiet_until if self._burst else None

    def pop(self) -> Trigger | None:
        """The next trigger to run, if any (call only when no run is in progress)."""
        return self._pending.pop(0) if self._pending else None

    @property
    def pending(self) -> tuple[Trigger, ...]:
        return tuple(self._pending)
