"""The adapter registry: one module per vendor CLI, all exposing the same names.

Every adapter module has `build_command(profile, inv, cli) -> Command` and `new_parser(cli) -> Parser`,
where `cli` is the CLI's definition from configs/clis.yaml; its `adapter:` key picks the module.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

from bridge.agents import claude, codex, command, gemini
from bridge.agents.base import Command, Invocation, Parser, home_setting, wiring_parts
from bridge.config import cli_definition
from bridge.errors import BridgeError

ADAPTERS: dict[str, ModuleType] = {"codex": codex, "claude": claude, "gemini": gemini, "command": command}


def resolve(profile: Any, project: Path | None = None) -> tuple[ModuleType, dict[str, Any]]:
    """The adapter module and the CLI definition of a profile."""
    cli = cli_definition(profile.cli, project)
    name = cli.get("adapter", profile.cli)
    if name not in ADAPTERS:
        raise BridgeError(f"CLI {profile.cli!r} names adapter {name!r}; valid adapters: {', '.join(ADAPTERS)}")
    return ADAPTERS[name], cli


def build_command(profile: Any, inv: Invocation, wiring: Any = None, project: Path | None = None) -> Command:
    """The argv, env and files for one stage attempt, a rehearsal Wiring merged in when given.

    env, later wins: the CLI definition's, the profile's (both from the adapter), the stage's, then a
    rehearsal's wiring, so a rehearsal never leaks to a vendor."""
    module, cli = resolve(profile, project)
    env, args, files, model = wiring_parts(wiring)
    if wiring is not None:
        cli = {**cli, "extra_args": [*cli.get("extra_args", ()), *args]}
        if any(a in ("-m", "--model") for a in args):  # the wiring names the model itself
            profile = profile.model_copy(update={"model": None})
        elif model:  # the rehearsal model accepts only the name its wiring gives (Codex: its catalog)
            profile = profile.model_copy(update={"model": model})
    cmd = module.build_command(profile, inv, cli)
    cmd = _with_session_id(cmd, cli.get("record") or {}, inv)
    if wiring is None and not inv.env:
        return cmd
    env = {**cmd.env, **inv.env, **env}
    files = home_setting(cli, "max_turns_setting", profile.max_turns, env, {**cmd.files, **files})
    return Command(argv=cmd.argv, env=env, files=files, interactive=cmd.interactive, stdin=cmd.stdin,
                   cwd=cmd.cwd, inherit_env=wiring is None)


def _with_session_id(cmd: Command, record: dict[str, Any], inv: Invocation) -> Command:
    """A new session gets an id of bridge's choosing when the CLI takes one (`record.flag`), so
    bridge knows which record of the CLI's to read (bridge.session_record)."""
    if not record.get("flag") or inv.resume_session or not (cmd.interactive or record.get("headless")):
        return cmd
    return replace(cmd, argv=(*cmd.argv, record["flag"], str(uuid.uuid4())))


def new_parser(profile: Any, project: Path | None = None) -> Parser:
    module, cli = resolve(profile, project)
    return module.new_parser(cli)
