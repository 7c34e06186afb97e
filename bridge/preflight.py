"""Before a run starts anything: every agent CLI its stages need is found, or one error lists them all
(so a missing `gemini` is said at once, not after an hour of Codex and Claude stages)."""

from __future__ import annotations

import os
from pathlib import Path
from bridge.errors import AgentNotFound, BridgeError
from bridge.playbook import Playbook, iter_stages


def needed_binaries(playbook: Playbook, selected: frozenset[str] | None,
                    project: Path) -> dict[tuple[str, str | None], tuple[str | None, list[str]]]:
    """(binary, extra PATH) -> (install hint, stage ids) for every stage that may run. A `command`
    CLI whose program is a template (`{{ ... }}`) is left to its attempt."""
    from bridge import agents

    needed: dict[tuple[str, str | None], tuple[str | None, list[str]]] = {}
    for sid, stage in [*iter_stages(playbook.stages), *iter_stages(playbook.finally_)]:
        if stage.agent is None or (selected is not None and sid not in selected):
            continue
        profile = playbook.agents[stage.agent]
        try:
            _, cli = agents.resolve(profile, project)
        except BridgeError:
            continue  # validation reports it; the attempt fails with the same message
        binary: str | None = cli.get("binary")
        if profile.command is not None or cli.get("adapter", profile.cli) == "command":
            template = list(profile.command or cli.get("command") or [])
            if not template or "{" in template[0]:
                continue
            binary = binary if binary and template[0] == Path(binary).name else template[0]
        if not binary:
            continue
        path = {**cli.get("env", {}), **profile.env, **stage.env}.get("PATH")
        hint, stages = needed.setdefault((binary, path), (cli.get("install"), []))
        stages.append(sid)
    return needed


def still_to_run(playbook: Playbook, selected: frozenset[str] | None, succeeded: set[str]) -> frozenset[str]:
    """The stage ids a resume may still run: every selected one except a stage scheduled once per run
    (not in a loop, not a conflict resolver) whose every unit already succeeded (`succeeded`: unit keys)."""
    from bridge import dag
    from bridge.playbook import matrix_items
    from bridge.views import unit_key

    places, resolvers = dag.places(playbook), dag.resolvers(playbook)
    out = set()
    for sid, stage in [*iter_stages(playbook.stages), *iter_stages(playbook.finally_)]:
        if selected is not None and sid not in selected:
            continue
        once = stage.loop is None and not places[sid].loop and sid not in resolvers
        if not (once and all(unit_key(sid, item, None) in succeeded for item in matrix_items(stage.matrix))):
            out.add(sid)
    return frozenset(out)


def check_clis(playbook: Playbook, selected: frozenset[str] | None, project: Path) -> None:
    """AgentNotFound naming every missing CLI and the stages that need it; nothing has started yet."""
    from bridge.process import which

    missing: list[tuple[str, str, list[str], str]] = []
    for (binary, path), (hint, stages) in needed_binaries(playbook, selected, project).items():
        try:
            which(binary, path)
        except AgentNotFound as exc:
            missing.append((binary, hint or f"install {binary} and make sure it is on PATH", stages, str(exc)))
    if len(missing) == 1:
        _, _, stages, why = missing[0]
        raise AgentNotFound(f"nothing was started: {_stages(stages)} {'needs' if len(stages) == 1 else 'need'} "
                            f"a CLI that is missing: {why}")
    if missing:
        lines = "; ".join(f"{b} (for {_stages(s)}; install: {h})" for b, h, s, _ in missing)
        raise AgentNotFound(f"nothing was started: {len(missing)} agent CLIs this playbook needs are not found "
                            f"(searched: PATH, then {_folders()}): {lines}. Install them, or point "
                            "BRIDGE_CLI_PATH at the folder that holds them (`bridge doctor` checks every CLI).")


def _stages(ids: list[str]) -> str:
    return f"stage{'s' if len(ids) > 1 else ''} {', '.join(ids)}"


def _folders() -> str:
    from bridge.process import cli_dirs

    return os.pathsep.join(str(d) for d in cli_dirs()) or "nothing else ($BRIDGE_CLI_PATH is empty)"
