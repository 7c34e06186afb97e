"""User-facing errors: every one carries a message that names the cause and the fix."""

from __future__ import annotations

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
