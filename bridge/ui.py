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
