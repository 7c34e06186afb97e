"""Which file changes start a `bridge watch` run, and when: globs, debounce, coalesce or queue.

Pure logic with the clock passed in, so it is tested without threads or sleeps; the command feeds it
file events and asks it what to run next.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath


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


@dataclass(frozen=True)
class Trigger:
    path: Path
    seq: int  # 1, 2, 3... in the order triggers became ready


class TriggerQueue:
    """Debounce each file, then hand out triggers one run at a time.

    Coalesce (default): at most one pending trigger; a newer one replaces it (the latest file wins).
    Queue: every trigger is kept and handed out in order.
    """

    def __init__(self, debounce: float, *, queue_all: bool = False) -> None:
        if debounce < 0:
            raise ValueError("debounce cannot be negative")
        self.debounce = debounce
        self.queue_all = queue_all
        self._quiet_until: dict[Path, float] = {}
        self._pending: list[Trigger] = []
        self._seq = 0

    def notice(self, path: Path, now: float) -> None:
        """A matching file appeared or changed; (re)start its quiet period."""
        self._quiet_until[path] = now + self.debounce

    def due(self, now: float) -> list[tuple[Trigger, Trigger | None]]:
        """Promote files that have been quiet long enough; each new trigger with the one it replaced."""
        ready = sorted((t, p) for p, t in self._quiet_until.items() if t <= now)
        out: list[tuple[Trigger, Trigger | None]] = []
        for _, path in ready:
            del self._quiet_until[path]
            self._seq += 1
            trigger = Trigger(path, self._seq)
            replaced = None
            if not self.queue_all and self._pending:
                replaced = self._pending.pop()
            self._pending.append(trigger)
            out.append((trigger, replaced))
        return out

    def next_deadline(self) -> float | None:
        return min(self._quiet_until.values(), default=None)

    def pop(self) -> Trigger | None:
        """The next trigger to run, if any (call only when no run is in progress)."""
        return self._pending.pop(0) if self._pending else None

    @property
    def pending(self) -> tuple[Trigger, ...]:
        return tuple(self._pending)
