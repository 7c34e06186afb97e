"""Everything bridge shows a person. The only module that imports rich."""

from __future__ import annotations

import os
import sys
import tempfile
import traceback

from rich.console import Console


def console(stderr: bool = False) -> Console:
    """A console that respects NO_COLOR and plain pipes."""
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


def print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    """A plain table on stdout; cells may hold several lines."""
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_lines=True)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    console().print(table, markup=False)


def print_schedule_event(t: float, kind: str, playbook: str, message: str) -> None:
    """One timestamped line per scheduler event (stdout; problems on stderr)."""
    import time as _time

    stamp = _time.strftime("%Y-%m-%d %H:%M:%S", _time.localtime(t or None))
    problem = kind in ("broken", "failed", "missed")
    who = f" [{playbook}]" if playbook else ""
    console(stderr=problem).print(f"{stamp}{who} {message}", markup=False, highlight=False, soft_wrap=True)


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
