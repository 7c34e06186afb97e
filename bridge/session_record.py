"""A CLI's own record of an interactive session, read as it grows.

Claude Code's terminal UI shows no token counts a program can trust, but it appends every message
of a session, usage included, to `<config dir>/projects/<folder>/<session id>.jsonl` — the same
assistant lines `claude -p --output-format stream-json` prints. bridge picks the session id
(`--session-id`), finds that file, and feeds each new line to the CLI's own parser: the session's
usage counts for budgets as it runs, its tool calls show in the live view, and its last message is
the text the model wrote, not one read off the screen. What a CLI keeps where is data: the
`interactive.record` entry of configs/clis.yaml."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bridge.agents.base import AgentEvent, EventKind, Parser


def record_dir(record: dict[str, Any], env: dict[str, str]) -> Path:
    """The folder the record lives under, as the CLI finds it: `dir_env` when set, else `dir`
    with "~" as the CLI's own HOME (a rehearsal's isolated one)."""
    if record.get("dir_env") and env.get(record["dir_env"]):
        return Path(env[record["dir_env"]])
    home = env.get("HOME") or os.path.expanduser("~")
    text = str(record.get("dir", "~"))
    return Path(home + text[1:]) if text.startswith("~") else Path(text)


class SessionRecord:
    """The lines appended to one session's record since it was opened, parsed as they come.
    `poll()` is cheap and safe to call often: a file not there yet, or a line still being
    written, is simply read later."""

    def __init__(self, folder: Path, pattern: str, parser: Parser, session: str) -> None:
        self.folder, self.pattern, self.parser, self.session = folder, pattern, parser, session
        self.path: Path | None = None
        self.offset = 0
        self.last_text = ""  # the text of the newest assistant message
        self._find(at_end=True)  # a resumed session's file: only what this attempt adds counts

    def _find(self, at_end: bool = False) -> None:
        found = sorted(self.folder.glob(self.pattern)) if self.folder.is_dir() else []
        if found:
            self.path = found[0]
            self.offset = self.path.stat().st_size if at_end else 0

    def poll(self) -> list[AgentEvent]:
        if self.path is None:
            self._find()
            if self.path is None:
                return []
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except OSError:
            return []
        end = data.rfind(b"\n")
        if end == -1:  # nothing new, or a line not finished yet
            return []
        self.offset += end + 1
        events: list[AgentEvent] = []
        for line in data[:end].decode("utf-8", "replace").splitlines():
            for event in self.parser.feed(line):
                if event.kind is EventKind.MESSAGE:
                    self.last_text = event.text
                events.append(event)
        return events
