"""What a terminal shows: a TUI's output played on a terminal emulator (pyte), read as a person
reads it — the rows it drew, its window titles, the agent's last message — and ScreenLog, which
keeps all of it as pexpect reads.

A TUI does not print its text in order: Claude Code's renderer moves the cursor to absolute
columns and leaves alone every cell that already shows the right character, so only an emulator
knows that "the a\\x1b[27Gwer" on top of an earlier "…tokens" reads "the answer"."""

from __future__ import annotations

import inspect
import re
import time
from collections import deque
from collections.abc import Callable
from typing import IO

import pyte

from bridge.redact import Redactor

ROWS, COLS = 50, 200  # the size of the pseudo-terminal bridge gives a TUI
SCROLLBACK = 20_000  # rows kept after they scroll off the top
BLANKS = re.compile(r"[ \t\xa0]+")
# CSI sequences whose parameters pyte cannot parse (it takes "<", "=" or ":" for the final byte and
# prints the rest): kitty keyboard protocol ("\x1b[<u"), colon colours ("\x1b[38:5:1m"). None moves
# the cursor or shows text, so they go before pyte sees them.
UNPARSED = re.compile(r"\x1b\[[0-?]*[<=:][0-?]*[ -/]*[@-~]")
CUT = re.compile(r"\x1b(?:\[[0-?]*[ -/]*)?$")  # a CSI sequence cut by the end of a read


def _row(line: dict, columns: int) -> str:
    """One row as text: a wide character's second cell is "", runs of blanks are one space."""
    return BLANKS.sub(" ", "".join(line[x].data for x in range(columns))).rstrip()


def _tolerant(name: str, takes_private: bool) -> Callable[..., None]:
    """A CSI handler of pyte that ignores what it cannot take instead of raising: the private form
    of a sequence it only knows in public ("\x1b[>4;0m" is xterm's modifyOtherKeys, not a colour),
    more parameters than it expects ("\x1b[;;;;;H")."""
    base = getattr(pyte.Screen, name)

    def handler(self: pyte.Screen, *params: int, private: bool = False) -> None:
        if private and not takes_private:
            return
        try:
            base(self, *params, **({"private": True} if private else {}))
        except (TypeError, ValueError):
            pass
    return handler


class _Screen(pyte.Screen):
    """pyte's screen, keeping the rows that scroll off the top and every window title set."""

    def __init__(self, columns: int, lines: int, on_title: Callable[[str], None] | None = None) -> None:
        super().__init__(columns, lines)
        self.scrolled: deque[str] = deque(maxlen=SCROLLBACK)
        self.scrolls = 0  # rows scrolled off so far: row y now is row y + scrolls of the whole output
        self.on_title = on_title
        self.set_mode(pyte.modes.LNM)  # "\n" starts a new line, as a pty (onlcr) makes it "\r\n"

    def index(self) -> None:
        top, bottom = self.margins or pyte.screens.Margins(0, self.lines - 1)
        if self.cursor.y == bottom and top == 0:
            self.scrolled.append(_row(self.buffer[top], self.columns))
            self.scrolls += 1
        super().index()

    def set_title(self, param: str) -> None:
        super().set_title(param)
        if self.on_title is not None:
            self.on_title(param)


for _name in set(pyte.Stream.csi.values()):
    setattr(_Screen, _name, _tolerant(_name, "private" in inspect.signature(getattr(pyte.Screen, _name)).parameters))


class Terminal:
    """A terminal emulator fed a TUI's output: `text()` is what a person reads on it now (the rows
    scrolled off, then the screen), `changed()` the rows redrawn since the last call."""

    def __init__(self, rows: int = ROWS, cols: int = COLS, on_title: Callable[[str], None] | None = None) -> None:
        self.screen = _Screen(cols, rows, on_title)
        self.stream = pyte.Stream(self.screen)
        self.shown: dict[int, str] = {}  # row of the whole output -> its text when changed() last ran
        self.pending = ""  # the start of a CSI sequence the last read cut

    def feed(self, data: str) -> None:
        data, self.pending = self.pending + data, ""
        if cut := CUT.search(data):
            data, self.pending = data[:cut.start()], data[cut.start():]
        try:
            self.stream.feed(UNPARSED.sub("", data))
        except Exception:  # noqa: BLE001 - garbage must not stop the session: read on, parser anew
            self.stream = pyte.Stream(self.screen)

    def rows(self) -> list[str]:
        return [_row(self.screen.buffer[y], self.screen.columns) for y in range(self.screen.lines)]

    def text(self) -> str:
        return "\n".join([*self.screen.scrolled, *self.rows()]).strip("\n")

    def changed(self) -> str:
        """The rows redrawn with new text since the last call, top to bottom, each ending in "\\n"."""
        out, first = [], self.screen.scrolls
        for y in sorted(self.screen.dirty):
            row = _row(self.screen.buffer[y], self.screen.columns)
            if row and self.shown.get(first + y) != row:  # a row that only scrolled up is not new
                out.append(row + "\n")
            self.shown[first + y] = row
        self.screen.dirty.clear()
        for gone in [k for k in self.shown if k < first]:
            del self.shown[gone]
        return "".join(out)


def screen_text(raw: str, rows: int = ROWS, cols: int = COLS) -> str:
    """Terminal output as the text a person reads once it has all been shown. Read a log of it
    with newline="": text mode makes every lone "\r" (a TUI's return to the line's start) a new line."""
    term = Terminal(rows, cols)
    term.feed(raw)
    return term.text()


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
    """pexpect's logfile_read: plays the output on a Terminal, keeps `screen` (every row as it was
    drawn, in order: what patterns are searched in), marks activity, writes the raw output redacted."""

    def __init__(self, fh: IO[str] | None, redact: Redactor, on_text: Callable[[str], None] | None,
                 rows: int = ROWS, cols: int = COLS) -> None:
        self.fh, self.redact, self.on_text = fh, redact, on_text
        # a secret cut in two by a read must not reach the file: hold back a secret's length
        self.keep = max((len(v) for v in redact.secrets), default=1) - 1
        self.secret = re.compile("|".join(map(re.escape, redact.secrets))) if redact.secrets else None
        self.unwritten = ""
        self.term = Terminal(rows, cols, self._titled)
        self.screen = ""  # the rows drawn so far, each time one showed new text
        self.last = time.monotonic()
        self.titles: list[str] = []  # the window titles set so far, repeats dropped
        self.title_at = self.last  # when the latest title was set

    def _titled(self, title: str) -> None:
        title = title.strip()
        if not self.titles or self.titles[-1] != title:
            self.titles.append(title)
            self.title_at = time.monotonic()

    def write(self, text: str) -> None:
        self.last = time.monotonic()
        self.term.feed(text)
        rows = self.term.changed()
        self.screen += rows
        self._to_file(text)
        if self.on_text is not None and rows:
            self.on_text(rows)

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
