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
