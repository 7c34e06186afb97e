"""What a stage hands the next one: summaries capped to size, and hand-off bytes vs transcript bytes."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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
