"""What a valid playbook asks for that bridge cannot fully do: warnings `bridge validate`, `plan` and
`run` print (never errors: the playbook still runs)."""

from __future__ import annotations

from pathlib import Path

from bridge.config import cli_definition
from bridge.errors import BridgeError
from bridge.playbook import Playbook


def playbook_warnings(playbook: Playbook, project: Path | None = None) -> list[str]:
    """One line per caveat, naming the agent profile and what to do instead."""
    found = []
    for name, profile in playbook.agents.items():
        try:
            cli = cli_definition(profile.cli, project)
        except BridgeError:
            continue  # an unknown CLI is a problem the loader reports
        if profile.max_turns is not None and not cli.get("max_turns_flag"):
            setting = cli.get("max_turns_setting")
            if setting:  # Gemini: bridge writes the setting only in a rehearsal's isolated HOME
                found.append(f"agents.{name}: max_turns is not enforced for {profile.cli} outside rehearsals: "
                             f"set {setting['key']} in ~/{setting['file']}")
            else:
                found.append(f"agents.{name}: max_turns is not applied to {profile.cli} (it has no such option): "
                             "bound the stage with timeout or a budget instead")
        for field, flag in IGNORED_WITHOUT_FLAG:
            if getattr(profile, field) and not cli.get(flag):
                found.append(f"agents.{name}: {field} is ignored: {profile.cli} has no option for it "
                             f"(no `{flag}` in its CLI definition)")
        if profile.command and cli.get("adapter") != "command":
            found.append(f"agents.{name}: command is ignored: it is for `cli: command` CLIs; "
                         f"{profile.cli} builds its own argv")
    return found


# profile field -> the CLI definition key that carries it; a CLI without the key cannot honour it
# (a system_prompt without a flag is put before the prompt; a model without one is {{ model }})
IGNORED_WITHOUT_FLAG = (("permission_mode", "permission_mode_flag"), ("allowed_tools", "allowed_tools_flag"),
                        ("disallowed_tools", "disallowed_tools_flag"))
