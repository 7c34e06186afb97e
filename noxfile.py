"""Developer tasks. `nox -s tests` is the README's test command and what CI runs (.ci/run)."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session(python=False)
def clis(session: nox.Session) -> None:
    """Install the pinned real vendor CLIs (tests/e2e/package-lock.json) from the npm registry."""
    session.run("npm", "ci", "--prefix", "tests/e2e", "--no-audit", "--no-fund", external=True)


@nox.session
def tests(session: nox.Session) -> None:
    """Install bridge with its test extra and the pinned CLIs, then run the whole suite."""
    session.install("-e", ".[test]")
    clis(session)
    session.run("pytest", *(session.posargs or ["-q"]))


@nox.session
def lint(session: nox.Session) -> None:
    """ruff on the code and the tests (rules in pyproject.toml)."""
    session.install("ruff")
    session.run("ruff", "check", "bridge", "tests", "benchmarks", "noxfile.py")


@nox.session
def bench(session: nox.Session) -> None:
    """Print the benchmark table (not a test: timings belong here, not in CI)."""
    session.install("-e", ".")
    clis(session)
    session.run("python", "benchmarks/bench.py", *session.posargs)
    session.run("python", "benchmarks/vs_shell.py")
