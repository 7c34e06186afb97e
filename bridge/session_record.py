"""A CLI's own record of a session, read as it grows.

Each vendor CLI appends a session to a JSONL file of its own as it goes, usage included: Claude
Code to `<config dir>/projects/<folder>/<id>.jsonl` (the assistant lines of its stream-json),
Gemini CLI to `~/.gemini/tmp/<project>/chats/session-…-<id>.jsonl`, Codex to its rollout file
`~/.codex/sessions/…/rollout-…-<thread id>.jsonl`. Their live streams say less: Gemini's and
Codex's report usage only when the turn ends, a terminal UI none at all. So bridge finds the
record (by the id it gave the session with the CLI's `flag`, the id it resumes, or the id the
stream announces) and feeds each new line to the adapter's record parser: budgets see a session's
tokens grow, a session stopped early keeps them, and an interactive session has its activity and
the exact last message. Where each CLI keeps what is data: `record:` in configs/clis.yaml."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from bridge.agents.base import AgentEvent, EventKind, Parser

POLL = 0.25  # seconds between two reads of a followed record
FIND_EVERY = 0.5  # seconds between two searches for a record not found yet (a glob over folders)


def record_dir(conf: dict[str, Any], env: dict[str, str]) -> Path:
    """The folder the record lives under, as the CLI finds it: `dir_env` when set, else `dir`
    with "~" as the CLI's own HOME (a rehearsal's isolated one)."""
    if conf.get("dir_env") and env.get(conf["dir_env"]):
        return Path(env[conf["dir_env"]])
    home = env.get("HOME") or os.path.expanduser("~")
    text = str(conf.get("dir", "~"))
    return Path(home + text[1:]) if text.startswith("~") else Path(text)


def given_session(conf: dict[str, Any], argv: tuple[str, ...], resume: str | None) -> str | None:
    """The session id known before the CLI starts: the one bridge gave it, or the one it resumes."""
    flag = conf.get("flag")
    if flag and flag in argv[:-1]:
        return argv[argv.index(flag) + 1]
    return resume


class SessionRecord:
    """The lines appended to one session's record since it was opened, parsed as they come.
    `poll()` is cheap and safe to call often: a file not there yet, or a line still being
    written, is simply read later."""

    def __init__(self, conf: dict[str, Any], env: dict[str, str], parser: Parser, session: str | None = None) -> None:
        self.folder, self.glob, self.parser = record_dir(conf, env), str(conf["glob"]), parser
        self.session: str | None = None
        self.path: Path | None = None
        self.offset = 0
        self.last_text = ""  # the text of the newest assistant message
        self.searched = 0.0  # when the record was last searched for (time.monotonic)
        if session:
            self.start(session)

    def start(self, session: str) -> None:
        """Follow the record of `session`; one that already exists (a resumed session) is read
        from its end: only what this attempt adds counts."""
        if self.session is None:
            self.session = session
            self._find(at_end=True)

    def _find(self, at_end: bool = False) -> None:
        self.searched = time.monotonic()
        pattern = self.glob.format(session=self.session)
        found = sorted(self.folder.glob(pattern)) if self.folder.is_dir() else []
        if found:
            self.path = found[0]
            self.offset = self.path.stat().st_size if at_end else 0

    def poll(self) -> list[AgentEvent]:
        if self.session is None:
            return []
        if self.path is None:
            if time.monotonic() - self.searched < FIND_EVERY:
                return []
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


def open_record(profile: Any, cmd: Any, inv: Any, project: Path | None) -> SessionRecord | None:
    """The record an attempt follows (`cmd`: its bridge.agents.base.Command), if its CLI keeps one
    worth reading in this mode; its session may be known only later (SessionRecord.start)."""
    from bridge import agents

    module, cli = agents.resolve(profile, project)
    conf = cli.get("record")
    if not isinstance(conf, dict) or not conf.get("glob") or not (cmd.interactive or conf.get("headless")) \
            or not hasattr(module, "new_record_parser"):
        return None
    env = {**(os.environ if getattr(cmd, "inherit_env", True) else {}), **cmd.env}
    return SessionRecord(conf, env, module.new_record_parser(cli), given_session(conf, cmd.argv, inv.resume_session))


@asynccontextmanager
async def following(record: SessionRecord | None, emit: Callable[[AgentEvent], None]) -> AsyncIterator[None]:
    """Read `record` every POLL seconds while the body runs, and once more at its end (what the
    CLI wrote last, before it exited); each event goes to `emit`."""
    if record is None:
        yield
        return

    def read() -> None:
        for event in record.poll():
            emit(event)

    async def loop() -> None:
        while True:
            await asyncio.sleep(POLL)
            read()

    task = asyncio.ensure_future(loop())
    try:
        yield
    finally:
        task.cancel()
        read()
