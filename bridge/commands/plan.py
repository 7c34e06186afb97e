"""`bridge plan FILE`: a dry run. Layers, agents, exact argv and rendered prompts; starts nothing."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from bridge import context, dag, templates
from bridge.agents import build_command
from bridge.agents.base import Invocation
from bridge.caveats import playbook_warnings
from bridge.errors import AgentNotFound
from bridge.loader import load_playbook, parse_vars
from bridge.playbook import Playbook, Stage, matrix_items
from bridge.process import which
from bridge.ui import print_text
from bridge.views import unit_key
from bridge.workspace import RunLayout
from bridge.worktrees import worktree_path

RUN_ID = "RUN_ID"


class _Plan:
    def __init__(self, playbook: Playbook, file: Path, project: Path) -> None:
        self.pb, self.file, self.project = playbook, file, project
        self.layout = RunLayout(project, RUN_ID)
        self.shared = self.layout.shared

    def show(self) -> None:
        pb = self.pb
        print_text(f"playbook {pb.name} ({self.file})", "bold")
        if pb.description:
            print_text(pb.description.strip())
        if pb.vars:
            print_text("vars: " + ", ".join(f"{k}={v!r}" for k, v in pb.vars.items()))
        limits = [f"{k}={getattr(pb, k)}" for k in ("max_parallel", "max_cost_usd", "max_tokens") if getattr(pb, k)]
        if limits:
            print_text("limits: " + ", ".join(limits))
        self.group(pb.stages, "")
        if pb.finally_:
            print_text("finally (always runs, after everything else)", "bold")
            self.group(pb.finally_, "  ")
        for s in pb.schedule:
            print_text(f"schedule: {s.cron} ({s.timezone}), overlap {s.overlap}, catch_up {s.catch_up}")
        for n in pb.notify:
            target = n.webhook or shlex.join(n.command or [])
            print_text(f"notify on {', '.join(n.on)}: {target}")
        for warning in playbook_warnings(pb, self.project):
            print_text(f"warning: {warning}", "yellow")
        print_text("nothing was started (plan is a dry run)", "dim")

    def group(self, stages: dict[str, Stage], indent: str) -> None:
        for n, layer in enumerate(dag.layers(dag.needs_of(stages)), 1):
            print_text(f"{indent}layer {n}: {', '.join(layer)}", "bold cyan")
            for sid in layer:
                self.stage(sid, stages[sid], indent + "  ")

    def stage(self, sid: str, stage: Stage, indent: str) -> None:
        facts = [f"needs {', '.join(stage.needs)}"] if stage.needs else []
        if stage.if_:
            facts.append(f"if {stage.if_}")
        for name in ("timeout", "idle_timeout"):
            if getattr(stage, name) is not None:
                facts.append(f"{name} {getattr(stage, name):g}s")
        if stage.retry.limit:
            facts.append(f"retry {stage.retry.limit}x")
        if stage.continue_on_error:
            facts.append("continue_on_error")
        served = dag.resolvers(self.pb).get(sid)
        if served:
            facts.append(f"resolution stage: runs only when merging {', '.join(served)} conflicts, "
                         "on the conflicting branch")
        if stage.loop is not None:
            print_text(f"{indent}{sid}: loop, at most {stage.loop.max_iterations} iterations, "
                       f"until {stage.loop.until}" + "".join(f"; {f}" for f in facts), "bold")
            self.group(stage.loop.stages, indent + "  ")
            return
        profile = self.pb.agents[stage.agent or ""]
        head = f"{indent}{sid}: agent {stage.agent} (cli {profile.cli}"
        head += f", model {profile.model})" if profile.model else ")"
        print_text(head + "".join(f"; {f}" for f in facts), "bold")
        if stage.worktree is not None:
            print_text(f"{indent}  worktree: merge {stage.worktree.merge}, on_conflict {stage.worktree.on_conflict}")
        items = matrix_items(stage.matrix)
        if stage.matrix:
            cap = f", max_parallel {stage.max_parallel}" if stage.max_parallel else ""
            print_text(f"{indent}  matrix: {len(items)} items{cap}, fail_fast {str(stage.fail_fast).lower()}")
        for item in items:
            self.item(sid, stage, item, indent + ("    " if stage.matrix else "  "))

    def item(self, sid: str, stage: Stage, item: dict[str, Any], indent: str) -> None:
        if item:
            print_text(indent[:-2] + "item " + ", ".join(f"{k}={v}" for k, v in item.items()))
        ctx = context.stub_context(self.pb, sid, self.shared, matrix=item, trigger=False,
                                     first_iteration=True)
        if stage.if_ is not None and not templates.evaluate(stage.if_, ctx, f"{sid}.if"):
            print_text(f"{indent}skipped: `if` is false here (upstream stages taken as succeeded)", "yellow")
        if stage.prompt is not None:
            prompt = templates.render(stage.prompt, ctx, f"{sid}.prompt")
        else:
            source = (self.file.parent / (stage.prompt_file or "")).read_text(encoding="utf-8")
            prompt = templates.render(source, ctx, f"{sid}.prompt_file")
        outputs = templates.output_paths(stage, ctx, sid)
        if outputs:
            print_text(f"{indent}outputs: {', '.join(outputs)}")
        for line in self.command(sid, stage, prompt, item):
            print_text(f"{indent}{line}")
        print_text(f"{indent}prompt:")
        for line in prompt.rstrip("\n").splitlines() or [""]:
            print_text(f"{indent}  | {line}", "dim")

    def command(self, sid: str, stage: Stage, prompt: str, item: dict[str, Any]) -> list[str]:
        """argv and cwd of the unit's first attempt, built exactly as `bridge run` builds them."""
        key = unit_key(sid, item, 1 if dag.places(self.pb)[sid].loop else None)
        cwd = worktree_path(self.project, RUN_ID, key.replace("@", ".")) if stage.worktree else self.project
        inv = Invocation(prompt=prompt, cwd=cwd, shared_dir=self.layout.shared, extra_dirs=(self.layout.inbox,),
                         stage_dir=self.layout.attempt(key, 1).dir, env=dict(stage.env),
                         output_schema=stage.output_schema)
        try:
            cmd = build_command(self.pb.agents[stage.agent or ""], inv, project=self.project)
        except Exception as exc:  # plan still shows everything else when an adapter cannot say
            return [f"argv unavailable: {exc}"]
        lines = [f"argv: {shlex.join(cmd.argv)}", f"cwd: {cmd.cwd or inv.cwd}"]
        try:
            lines.append(f"binary: {which(cmd.argv[0], cmd.env.get('PATH'))}")
        except AgentNotFound:
            lines.append(f"binary: {cmd.argv[0]} is not installed (`bridge doctor` says how to install it)")
        return lines


def run(file: Path, var: list[str], directory: Path | None = None) -> int:
    project = (directory or Path.cwd()).resolve()
    playbook = load_playbook(file, parse_vars(var), project=project)
    _Plan(playbook, file, project).show()
    return 0
