"""`bridge doctor`: for each CLI in configs — installed?, version, supported?, credentials?"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.config import cli_definitions
from bridge.errors import AgentNotFound
from bridge.process import cli_dirs, cli_install_dir, run_quick, which

VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")
TIMEOUT = 15.0


@dataclass(frozen=True)
class Check:
    name: str
    path: str | None
    version: str | None
    version_ok: bool
    credentials: str | None  # what was found (a variable or file name), None when nothing
    problems: tuple[str, ...]  # one-line fixes
    optional: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems or (self.optional and self.path is None)


def parse_version(text: str) -> tuple[int, ...] | None:
    m = VERSION.search(text or "")
    return tuple(int(g or 0) for g in m.groups()) if m else None


def _expand(pattern: str) -> Path | None:
    """~ and $VARS expanded; None when a variable is unset (that location does not apply)."""
    if re.search(r"\$\{?(\w+)", pattern) and any(
            not os.environ.get(v) for v in re.findall(r"\$\{?(\w+)\}?", pattern)):
        return None
    return Path(os.path.expandvars(os.path.expanduser(pattern)))


def find_credentials(cli: dict[str, Any]) -> str | None:
    creds = cli.get("credentials") or {}
    for var in creds.get("env") or []:
        if os.environ.get(var):
            return f"${var}"
    for pattern in creds.get("files") or []:
        path = _expand(str(pattern))
        if path is not None and path.is_file():
            return str(path)
    return None


def check_cli(name: str, cli: dict[str, Any]) -> Check:
    binary = str(cli.get("binary") or name)
    install = cli.get("install") or f"install {binary} and put it on PATH"
    optional = bool(cli.get("optional"))
    try:
        path = which(binary)
    except AgentNotFound:
        return Check(name, None, None, False, None, (f"not installed: {install}",), optional)
    problems: list[str] = []
    version_text: str | None = None
    version_ok = True
    if not cli.get("version_command") and cli.get("adapter") == "command":
        # a script or tool of the user's: running it with --version could start real work
        credentials = find_credentials(cli) if cli.get("credentials") else "none needed"
        return Check(name, path, "not checked (no version_command)", True, credentials, (), optional)
    command = list(cli.get("version_command") or [binary, "--version"])
    code, out = run_quick([path, *command[1:]], timeout=float(cli.get("version_timeout", TIMEOUT)))
    found = parse_version(out) if code == 0 else None
    if found is None:
        version_ok = False
        why = "timed out" if code is None else f"exited {code}"
        problems.append(f"`{' '.join(command)}` {why} without a version: reinstall it ({install})")
    else:
        version_text = ".".join(map(str, found))
        minimum = parse_version(str(cli.get("min_version") or ""))
        if minimum and found < minimum:
            version_ok = False
            problems.append(f"version {version_text} is older than {cli['min_version']}: upgrade ({install})")
    credentials = find_credentials(cli) if cli.get("credentials") else "none needed"
    if credentials is None:
        login = (cli.get("credentials") or {}).get("login") or "log in"
        problems.append(f"no credentials found: {login}")
    return Check(name, path, version_text, version_ok, credentials, tuple(problems), optional)


def check_all(project: Path | None = None) -> list[Check]:
    return [check_cli(name, cli) for name, cli in sorted(cli_definitions(project).items())
            if isinstance(cli, dict) and cli.get("binary")]


def run(project: Path | None = None) -> int:
    from bridge import ui

    checks = check_all(project)
    rows = []
    for c in checks:
        installed = c.path or ("not installed (optional)" if c.optional else "not installed")
        version = c.version or "-"
        if c.version and not c.version_ok:
            version += " (too old)"
        rows.append([c.name, installed, version, c.credentials or ("-" if c.path is None else "none found"),
                     "ok" if not c.problems else ("skipped" if c.ok else "problem")])
    ui.print_check_table("Agent CLIs", ["CLI", "installed", "version", "credentials", "status"], rows,
                         [not c.problems or c.ok for c in checks])
    fixes = [(c.name, p) for c in checks if not c.ok for p in c.problems]
    for name, fix in fixes:
        ui.print_text(f"{name}: {fix}")
    if any(c.path is None and not c.optional for c in checks):
        dirs = os.pathsep.join(cli_dirs()) or "nowhere else ($BRIDGE_CLI_PATH is empty)"
        ui.print_text(f"bridge looks for agent CLIs on PATH, then in {dirs} ($BRIDGE_CLI_PATH replaces that "
                      "folder); `bridge demo --yes` installs the pinned codex, claude and gemini into "
                      f"{cli_install_dir() / 'node_modules' / '.bin'}.")
    if not fixes:
        ui.print_text("All agent CLIs are ready.")
    return 1 if fixes else 0
