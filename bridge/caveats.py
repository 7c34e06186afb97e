"""What a valid playbook asks for that bridge cannot fully do: warnings `bridge validate`, `plan` and
`run` print (never errors: the playbook still runs)."""

from __future__ import annotations

from pathlib import Path

from bridge.config import cli_definition
from bridge.errors import BridgeError
from bridge.playbook import Playbook, iter_stages


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
    found += _stage_warnings(playbook, project)
    return found


def _stage_warnings(playbook: Playbook, project: Path | None) -> list[str]:
    """What a stage asks of its agent's CLI that the CLI cannot do."""
    found = []
    for sid, stage in [*iter_stages(playbook.stages), *iter_stages(playbook.finally_)]:
        profile = playbook.agents.get(stage.agent or "")
        try:
            adapter = cli_definition(profile.cli, project).get("adapter") if profile else None
        except BridgeError:
            continue
        if profile is None or adapter is None:
            continue
        if stage.output_schema is not None and adapter not in ("codex", "claude"):
            found.append(f"stages.{sid}: output_schema is not enforced by {profile.cli} (only Codex and Claude "
                         "Code take one); its answer is still checked against an output's own `schema`")
        written = [o.path for o in stage.outputs if o.from_ == "agent"]
        # Codex ignores --add-dir under its read-only sandbox
        if adapter == "codex" and written and profile.sandbox == "read-only" and not profile.permission_mode:
            found.append(f"stages.{sid}: agent {stage.agent} is a read-only Codex, which cannot write "
                         f"{', '.join(written)} into the shared folder: give the output `from: final_message` "
                         "(bridge writes the agent's answer) or the agent `sandbox: workspace-write`")
    return found


# profile field -> the CLI definition key that carries it; a CLI without the key cannot honour it
# (a system_prompt without a flag is put before the prompt; a model without one is {{ model }})
IGNORED_WITHOUT_FLAG = (("permission_mode", "permission_mode_flag"), ("allowed_tools", "allowed_tools_flag"),
                        ("disallowed_tools", "disallowed_tools_flag"))
