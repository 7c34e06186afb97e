"""What a terminal shows: the screen text a person reads out of a TUI's output, its window
titles, the agent's last message, and ScreenLog, which keeps all of it as pexpect reads."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import IO

from bridge.redact import Redactor

# CSI, OSC, charset designations (ESC ( B), two-byte escapes (ESC 7 / 8 / M ...), other controls
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()*+][0-~]"
                  r"|\x1b[0-?@-Z\\^-~]|[\x00-\x08\x0b-\x1a\x1c-\x1f\x7f]")
# TUIs (Claude Code's Ink) move the cursor instead of printing spaces: on screen, a space
CURSOR_RIGHT = re.compile(r"\x1b\[\d*[CG]")
# ... and go to the next line by a carriage return and a cursor move down ("\r\x1b[2B"): a new line
CURSOR_DOWN = re.compile(r"\x1b\[(\d*)[BE]")  # n lines down: n new lines (a blank line between)
# a move right then down ("\x1b[2C\x1b[1B- item"): the text lands indented on the next line
RIGHT_THEN_DOWN = re.compile(r"((?:\x1b\[\d*C)+)(\x1b\[\d*B)")
BLANKS = re.compile(r"[ \t\xa0]+")
TITLE = re.compile(r"\x1b\][02];([^\x07\x1b]*)(?:\x07|\x1b\\)")  # OSC 0 / 2: set the window title


def screen_text(raw: str) -> str:
    """Terminal output as the text a person reads: escape sequences gone, cursor moves to the
    right as one space, n lines down as n new lines, runs of blanks as one space (so a rule says
    "Yes, I trust this folder")."""
    raw = RIGHT_THEN_DOWN.sub(r"\2\1", raw)
    raw = CURSOR_DOWN.sub(lambda m: "\n" * min(int(m.group(1) or 1), 50), CURSOR_RIGHT.sub(" ", raw))
    return BLANKS.sub(" ", ANSI.sub("", raw))


def last_message(transcript: str, pattern: str | None) -> str:
    """The agent's last message in a session's screen text: group 1 of the last match of the CLI's
    `message` pattern (Claude Code marks a message with "●", Gemini CLI with "✦"), its lines
    stripped and runs of blank lines made one; without a pattern or a match, the whole transcript."""
    found = re.findall(pattern, transcript) if pattern else []
    if not found:
        return transcript.strip()
    last = found[-1] if isinstance(found[-1], str) else found[-1][0]
    lines = [line.strip() for line in last.strip().splitlines()]
    return "\n".join(line for i, line in enumerate(lines) if line or (i and lines[i - 1]))


class ScreenLog:
    """pexpect's logfile_read: keeps the transcript, marks activity, writes redacted text."""

    def __init__(self, fh: IO[str] | None, redact: Redactor, on_text: Callable[[str], None] | None) -> None:
        self.fh, self.redact, self.on_text = fh, redact, on_text
        # a secret cut in two by a read must not reach the file: hold back a secret's length
        self.keep = max((len(v) for v in redact.secrets), default=1) - 1
        self.secret = re.compile("|".join(map(re.escape, redact.secrets))) if redact.secrets else None
        self.unwritten = ""
        self.screen = ""  # screen_text of everything read so far
        self.pending = ""  # an escape sequence cut in two by a read
        self.last = time.monotonic()
        self.titles: list[str] = []  # the window titles set so far, repeats dropped
        self.title_at = self.last  # when the latest title was set

    def write(self, text: str) -> None:
        self.last = time.monotonic()
        data, self.pending = self.pending + text, ""
        esc = data.rfind("\x1b")
        if esc != -1 and len(data) - esc < 256 and _unfinished(data[esc:]):
            data, self.pending = data[:esc], data[esc:]
        for m in TITLE.finditer(data):
            title = m.group(1).strip()
            if not self.titles or self.titles[-1] != title:
                self.titles.append(title)
                self.title_at = self.last
        text_now = screen_text(data)
        if self.screen.endswith(" ") and text_now.startswith(" "):  # one run of blanks across reads
            text_now = text_now.lstrip(" ")
        self.screen += text_now
        self._to_file(text)
        if self.on_text is not None:
            self.on_text(text)

    def _to_file(self, text: str, final: bool = False) -> None:
        if self.fh is None:
            return
        buf = self.unwritten + text
        cut = len(buf) if final or self.secret is None else max(0, len(buf) - self.keep)
        for m in self.secret.finditer(buf) if self.secret is not None else ():
            if m.start() < cut < m.end():
                cut = m.start()
        self.fh.write(self.redact(buf[:cut]))
        self.fh.flush()
        self.unwritten = buf[cut:]

    def back_to(self, title: re.Pattern[str], settle: float) -> bool:
        """The title came back to `title` after another one and has stayed `settle` seconds."""
        return (len(self.titles) > 1 and title.search(self.titles[-1]) is not None
                and any(title.search(t) is None for t in self.titles[:-1])
                and time.monotonic() - self.title_at >= settle)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self._to_file("", final=True)
        if self.fh is not None:
            self.fh.close()


def _unfinished(tail: str) -> bool:
    """Whether `tail` (from an ESC to the end of what was read) is an incomplete escape sequence."""
    if tail.startswith("\x1b]"):
        return "\x07" not in tail and "\x1b\\" not in tail
    return ANSI.match(tail) is None
