"""User-facing errors: every one carries a message that names the cause and the fix."""

from __future__ import annotations

import errno
from dataclasses import dataclass


class BridgeError(Exception):
    """An error the user can act on; the CLI prints it as one paragraph and exits 1."""

    exit_code = 1


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a playbook, located as precisely as we can."""

    file: str
    line: int | None
    column: int | None
    path: str  # dotted path to the bad value, e.g. "stages.audit.timeout"
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        at = f" {self.path}:" if self.path else ""
        return f"{where}:{at} {self.message}"


class PlaybookError(BridgeError):
    """A playbook failed to load; holds every problem found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        n = len(self.problems)
        head = f"{n} problem{'s' if n != 1 else ''} found"
        super().__init__(head + ":\n" + "\n".join(f"  {p}" for p in self.problems))


class AgentNotFound(BridgeError):
    """The CLI an agent profile names is not installed."""


class RunError(BridgeError):
    """A run could not start or continue (ledger, lock, missing run id...)."""


# errno values that are the machine's state, not a bug: the disk is full, the folder is read-only...
_ENV_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
_ENV_SQLITE = ("database or disk is full", "attempt to write a readonly database", "disk I/O error",
               "unable to open database file")


def environment_problem(exc: BaseException) -> str | None:
    """The one-paragraph message for an error the user's machine caused (a full disk, a read-only or
    unwritable folder), else None (then it is a bug in bridge)."""
    if isinstance(exc, OSError) and exc.errno in _ENV_ERRNOS:
        where = f" {exc.filename}" if exc.filename else ""
        cause = f"cannot write{where}: {exc.strerror or exc}"
    elif type(exc).__module__ == "sqlite3" and any(m in str(exc) for m in _ENV_SQLITE):
        cause = f"cannot write the run ledger (.bridge/ledger.db): {exc}"
    else:
        return None
    if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "full" in str(exc):
        fix = "free some space on that disk"
    else:
        fix = "make the project folder writable (bridge keeps its runs in PROJECT/.bridge), or use --dir"
    return (f"{cause}. Fix: {fix}, then try again; a run this stopped is listed by `bridge runs` and "
            "`bridge resume RUN` continues it (its finished stages are kept).")
