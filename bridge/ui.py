"""Everything bridge shows a person. The only module that imports rich."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TextIO

from bridge.figures import money, tokens  # the same figures as summary.md

if TYPE_CHECKING:
    from rich.console import Console


def console(stderr: bool = False) -> Console:
    """A console that respects NO_COLOR and plain pipes."""
    from rich.console import Console  # ~30 ms: a run's plain or JSON lines never need rich

    return Console(stderr=stderr, no_color=bool(os.environ.get("NO_COLOR")), highlight=False)


def print_error(message: str) -> None:
    """A user error: one paragraph naming the cause and the fix."""
    console(stderr=True).print(f"[bold red]error:[/] {message}", markup=True, soft_wrap=True)


def print_bug(exc: BaseException) -> None:
    """A bug in bridge: a short note to the user, the traceback kept in a file."""
    fd, path = tempfile.mkstemp(prefix="bridge-crash-", suffix=".log")
    with os.fdopen(fd, "w") as fh:
        fh.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    console(stderr=True).print(
        f"[bold red]bridge hit an internal error:[/] {type(exc).__name__}: {exc}\n"
        f"This is a bug in bridge, not in your playbook. The details are in {path}; "
        "please attach that file when you report it.",
        markup=True, soft_wrap=True,
    )
    sys.stderr.flush()


def print_clean_report(report: object) -> None:
    """`bridge clean`: what was (or, with --dry-run, would be) removed, pruned and kept, and why."""
    from rich.markup import escape

    out = console()
    would = "would remove" if getattr(report, "dry_run", False) else "removed"
    rows = [(f"{would} worktree", p) for p in getattr(report, "removed_worktrees", ())]
    rows += [(f"{would} branch", b) for b in getattr(report, "removed_branches", ())]
    rows += [("would prune" if getattr(report, "dry_run", False) else "pruned", f"{p} (folder gone)")
             for p in getattr(report, "pruned", ())]
    for what, text in rows:
        out.print(f"[green]{what}[/] {escape(text)}", markup=True, soft_wrap=True)
    for item, why in getattr(report, "kept", ()):
        out.print(f"[yellow]kept[/] {escape(item)}: {escape(why)}", markup=True, soft_wrap=True)
    for note in getattr(report, "notes", ()):
        out.print(note, markup=False, soft_wrap=True)
    if not rows and not getattr(report, "kept", ()):
        out.print("nothing to clean", markup=False)


def print_text(text: str, style: str | None = None, *, stderr: bool = False) -> None:
    """One line (or block) of plain text, never read as rich markup; `style` e.g. 'bold', 'red'."""
    console(stderr=stderr).print(text, style=style, markup=False, emoji=False, soft_wrap=True)


def print_raw(text: str) -> None:
    """Machine-readable output (JSON, YAML) exactly as given, with no styling or wrapping."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def print_schedule_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    """A table of schedules on stdout; the last column may wrap, the others never do."""
    from rich.table import Table

    out = console()
    if not out.is_terminal:
        out.width = max(out.width, 160)  # piped: keep one schedule per row for grep
    table = Table(title=title, title_justify="left", show_lines=True)
    for i, column in enumerate(columns):
        table.add_column(column, no_wrap=i < len(columns) - 1, overflow="fold")
    for row in rows:
        table.add_row(*row)
    out.print(table, markup=False)


def print_schedule_event(t: float, kind: str, playbook: str, message: str) -> None:
    """One timestamped line per scheduler event (stdout; problems on stderr)."""
    import time as _time

    stamp = _time.strftime("%Y-%m-%d %H:%M:%S", _time.localtime(t or None))
    problem = kind in ("broken", "failed", "missed")
    who = f" [{playbook}]" if playbook else ""
    console(stderr=problem).print(f"{stamp}{who} {message}", markup=False, highlight=False, soft_wrap=True)


def print_plain(text: str, *, stderr: bool = False) -> None:
    """Text exactly as given (no markup, no wrapping), e.g. generated files meant for redirection."""
    stream = sys.stderr if stderr else sys.stdout
    stream.write(text if text.endswith("\n") else text + "\n")
    stream.flush()


# ---------------------------------------------------------------- run progress
# The runner emits bridge.events values; one of these renderers shows them. `progress()` picks:
# JSON lines with --json, a rich Live table on a terminal, plain timestamped lines otherwise.

_MARKS = {"success": "✓", "failure": "✗", "skipped": "–", "cancelled": "■", "running": "▶",
          "waiting": "…", "pending": "·"}
_STYLES = {"success": "green", "failure": "red", "skipped": "dim", "cancelled": "yellow",
           "running": "cyan", "waiting": "magenta", "pending": "dim"}


def clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"




def _name(event: Any) -> str:
    from bridge.events import event_name

    return event_name(event)


def _val(value: Any) -> str:
    return getattr(value, "value", value)


def quiet_stdout() -> None:
    """stdout's reader is gone (`bridge ... | head`): send what is left to /dev/null, so neither later
    writes nor Python's flush at exit raise BrokenPipeError."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


class _Lines:
    """A line sink that outlives its reader: when the pipe it writes to closes, the run goes on and
    its progress lines are dropped (the ledger, logs and summary.md still have everything)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.gone = False

    def _write(self, text: str) -> None:
        if self.gone:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except BrokenPipeError:
            self.gone = True
            if self.stream is sys.stdout:
                quiet_stdout()

    def close(self) -> None:
        pass


class JsonLines(_Lines):
    """--json: one JSON object per event on stdout."""

    def __call__(self, event: Any) -> None:
        from bridge.events import to_dict

        self._write(json.dumps(to_dict(event), default=str) + "\n")

    def close(self) -> None:
        pass


def loop_line(event: Any) -> str:
    """How an iteration ended: it continues, the loop is done, or it failed / was cancelled (with why)."""
    status = getattr(event, "status", "") or ("success" if event.done else "running")
    words = {"running": "continues", "success": "done", "failure": "failed", "cancelled": "cancelled"}
    what = words.get(status, status)
    why = f": {event.reason}" if getattr(event, "reason", "") else ""
    return f"⟳ {event.stage_id} iteration {event.iteration} {what}{why}"


def describe(event: Any) -> str | None:
    """One plain line for an event (None for events too chatty for plain output)."""
    kind = _name(event)
    if kind == "run_started":
        verb = "resuming" if event.resumed else "starting"
        return "\n  warning: ".join([f"{verb} run {event.run_id} of {event.playbook} ({event.run_dir})",
                                     *getattr(event, "warnings", ())])
    if kind == "unit_started":
        again = f", attempt {event.attempt}" if event.attempt > 1 else ""
        if getattr(event, "after_wait", False):
            return f"▶ {event.key} started again after the usage-limit wait ({event.agent}{again}; not a retry)"
        return f"▶ {event.key} started ({event.agent}{again})"
    if kind == "unit_waiting":
        return f"… {event.key} waiting until {clock(event.until)}: {event.reason}"
    if kind == "unit_retrying":
        return f"↻ {event.key} attempt {event.attempt} failed ({event.reason}); retrying in {duration(event.delay)}"
    if kind == "unit_finished":
        status = _val(event.status)
        mark = _MARKS.get(status, "?")
        if event.reused:
            source = f"run {event.reused_from}" if getattr(event, "reused_from", "") else "an earlier session"
            return f"{mark} {event.key} {status} (reused from {source})"
        figures = [duration(event.duration)] if event.attempts else []
        if event.tokens:
            figures.append(f"{tokens(event.tokens)} tok")
        if event.cost_usd:
            figures.append(money(event.cost_usd))
        tail = f" [{', '.join(figures)}]" if figures else ""
        why = f": {event.reason}" if event.reason and status != "success" else ""
        return f"{mark} {event.key} {status}{tail}{why}"
    if kind == "loop_iteration":
        return loop_line(event)
    if kind == "tasks_updated":
        after = f" (after {event.after})" if event.after else ""
        return f"☑ tasks {event.done}/{event.total} done{after}"
    if kind == "git_note":
        return f"⎇ {event.message}"
    if kind == "run_cancelling":
        return f"■ {'killing agents' if event.force else 'stopping agents'}: {event.reason}"
    if kind == "run_warning":
        return f"warning: {event.message}"
    if kind == "run_finished":
        status = _val(event.status)
        line = (f"{_MARKS.get(status, '?')} run {event.run_id} {status} in {duration(event.duration)}"
                f" [{tokens(event.tokens)} tok, {money(event.cost_usd)}]")
        if event.reason:
            line += f": {event.reason}"
        if event.summary_path:
            line += f"\n  summary: {event.summary_path}"
        if event.resumable:
            line += f"\n  continue with: bridge resume {event.run_id}"
        return line
    return None


class PlainLines(_Lines):
    """Off a terminal: timestamped lines, no colour, no cursor tricks."""

    def __call__(self, event: Any) -> None:
        text = describe(event)
        if text is None:
            return
        stamp = clock(event.t)
        self._write("".join(f"{stamp} {line}\n" if i == 0 else f"{line}\n"
                            for i, line in enumerate(text.split("\n"))))


class _Row:
    def __init__(self, key: str) -> None:
        self.key, self.status, self.agent, self.attempt = key, "pending", "", 0
        self.started: float | None = None
        self.ended: float | None = None
        self.tokens, self.cost, self.activity = 0, 0.0, ""


class LiveView:
    """On a terminal: one row per unit (stage, matrix item, loop iteration), refreshed in place."""

    def __init__(self) -> None:
        from rich.live import Live

        self.rows: dict[str, _Row] = {}
        self.header = ""
        self.tasks = ""
        self.notes: list[str] = []
        self.console = console()
        self.live = Live(get_renderable=self._table, console=self.console, refresh_per_second=4,
                         transient=False)
        self.live.start()

    def _row(self, key: str) -> _Row:
        if key not in self.rows:
            self.rows[key] = _Row(key)
        return self.rows[key]

    def __call__(self, event: Any) -> None:
        kind = _name(event)
        if kind == "run_started":
            self.header = describe(event) or ""
            for key in event.units:
                self._row(key)
        elif kind == "unit_started":
            row = self._row(event.key)
            row.status, row.agent, row.attempt, row.started, row.ended = "running", event.agent, event.attempt, \
                event.t, None
            row.activity = ""
        elif kind == "unit_activity":
            row = self._row(event.key)
            if event.text:
                row.activity = event.text
            row.tokens, row.cost = max(row.tokens, event.tokens), max(row.cost, event.cost_usd)
        elif kind == "unit_waiting":
            row = self._row(event.key)
            row.status, row.activity = "waiting", f"waiting until {clock(event.until)}: {event.reason}"
        elif kind == "unit_retrying":
            self._row(event.key).activity = f"retry in {duration(event.delay)}: {event.reason}"
        elif kind == "unit_finished":
            row = self._row(event.key)
            row.status, row.ended = _val(event.status), event.t
            row.tokens, row.cost = event.tokens or row.tokens, event.cost_usd or row.cost
            row.attempt = event.attempts or row.attempt
            row.activity = "reused" if event.reused else (event.reason if row.status != "success" else "")
        elif kind == "tasks_updated":
            self.tasks = f"tasks {event.done}/{event.total}"
        elif kind in ("run_cancelling", "run_finished", "loop_iteration", "git_note", "run_warning"):
            text = describe(event)
            if text and kind != "loop_iteration":
                self.notes.append(text)
            if kind == "run_finished":
                self.close()
                return
        # no refresh per event: Live repaints 4 times a second on its own thread, and a repaint of a
        # 64-row table costs ~30 ms — once per event it made a 64 x 2 s fan-out take 14 s

    def _table(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        table = Table(box=None, pad_edge=False, expand=False, show_edge=False)
        for col in ("stage", "status", "agent", "try", "elapsed", "tokens", "cost", "activity"):
            table.add_column(col, no_wrap=col != "activity", overflow="ellipsis",
                             max_width=60 if col == "activity" else None)
        now = time.time()
        for row in list(self.rows.values()):  # Live's thread renders while the run adds rows
            elapsed = "" if row.started is None else duration((row.ended or now) - row.started)
            style = _STYLES.get(row.status, "")
            table.add_row(row.key, Text(f"{_MARKS.get(row.status, '?')} {row.status}", style=style), row.agent,
                          str(row.attempt or ""), elapsed, tokens(row.tokens), money(row.cost),
                          Text(row.activity.replace("\n", " "), style="dim"))
        header = "  ".join(h for h in (self.header, self.tasks) if h)
        parts: list[Any] = [Text(header, style="bold")] if header else []
        parts.append(table)
        parts += [Text(n) for n in list(self.notes)]
        return Group(*parts)

    def close(self) -> None:
        if self.live.is_started:
            self.live.refresh()
            self.live.stop()


@contextmanager
def progress(json_out: bool = False, stream: TextIO | None = None) -> Iterator[Any]:
    """The event callback for a run: JSON lines, a Live view on a terminal, or plain lines."""
    out = stream or sys.stdout
    if json_out:
        renderer: Any = JsonLines(out)
    elif out.isatty() and os.environ.get("TERM") != "dumb":
        renderer = LiveView()
    else:
        renderer = PlainLines(out)
    try:
        yield renderer
    finally:
        renderer.close()


def print_run_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    """The tables of `bridge runs` / `bridge show`: compact, no borders (easy to grep and copy)."""
    from rich.table import Table

    out = console()
    if not out.is_terminal:  # a pipe or a file: one row per line, for grep and scripts
        out.width = max(out.width, 240)
    table = Table(title=title, title_justify="left", box=None, pad_edge=False, show_edge=False)
    for i, column in enumerate(columns):  # the first column (run id, stage key) is copied: never folded
        table.add_column(column, overflow="fold", no_wrap=i == 0)
    for row in rows:
        table.add_row(*row)
    if out.is_terminal:
        out.print(table, markup=False)
        return
    with out.capture() as captured:
        out.print(table, markup=False)
    out.file.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def print_check_table(title: str, columns: list[str], rows: list[list[str]], ok: list[bool]) -> None:
    """A table of checks (e.g. `bridge doctor`): rows that failed are shown in red."""
    from rich.table import Table

    out = console()
    if not out.is_terminal:
        out.width = max(out.width, 160)
    table = Table(title=title, title_justify="left")
    for i, column in enumerate(columns):
        table.add_column(column, no_wrap=i < len(columns) - 1, overflow="fold")
    for row, good in zip(rows, ok):
        table.add_row(*row, style=None if good else "red")
    out.print(table, markup=False)
