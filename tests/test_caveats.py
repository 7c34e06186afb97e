"""Warnings for what a valid playbook asks that bridge cannot do: max_turns where a CLI has no flag."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from bridge.caveats import playbook_warnings
from bridge.cli import app
from bridge.loader import load_playbook_text
from bridge.ui import describe
from tests.runhelp import make_project, run_inproc, write_playbook

PLAYBOOK = """version: 1
name: turns
agents:
  g: {cli: gemini, max_turns: 5}
  c: {cli: codex, max_turns: 5}
  k: {cli: claude, max_turns: 5}
  free: {cli: gemini}
stages:
  a: {agent: g, prompt: hi}
"""
GEMINI = ("agents.g: max_turns is not enforced for gemini outside rehearsals: set model.maxSessionTurns "
          "in ~/.gemini/settings.json")


def test_max_turns_without_a_flag_is_a_warning():
    warnings = playbook_warnings(load_playbook_text(PLAYBOOK, "turns.yaml"))
    assert warnings == [GEMINI, "agents.c: max_turns is not applied to codex (it has no such option): "
                                "bound the stage with timeout or a budget instead"]


def test_validate_and_plan_print_it_and_still_succeed(tmp_path: Path):
    path = tmp_path / "turns.yaml"
    path.write_text(PLAYBOOK)
    for args in (["validate", str(path)], ["plan", str(path), "--dir", str(tmp_path)]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert GEMINI in " ".join(result.output.split()), result.output  # rich may wrap the line


def test_run_reports_it_in_run_started(tmp_path: Path):
    project = make_project(tmp_path)
    pb = write_playbook(project, "  g: {cli: gemini, max_turns: 2}\nstages:\n  a: {agent: f, prompt: 'FAKE: message=hi'}\n")
    _, events = run_inproc(project, pb)
    assert events[0].warnings == (GEMINI,)
    assert describe(events[0]).splitlines()[1] == f"  warning: {GEMINI}"
    _, rehearsed = run_inproc(project, pb, rehearse=True, script=write_script(project))
    assert rehearsed[0].warnings == ()  # a rehearsal writes the setting itself


def write_script(project: Path) -> Path:
    path = project / "script.yaml"
    path.write_text("replies: []\n")
    return path


def test_fields_a_cli_cannot_honour_are_warnings():
    text = """version: 1
name: ignored
agents:
  g: {cli: gemini, allowed_tools: [x]}
  x: {cli: codex, permission_mode: plan, command: [a]}
  k: {cli: claude, permission_mode: plan, allowed_tools: [Read]}
stages:
  a: {agent: k, prompt: hi}
"""
    assert playbook_warnings(load_playbook_text(text, "i.yaml")) == [
        "agents.g: allowed_tools is ignored: gemini has no option for it (no `allowed_tools_flag` in its CLI definition)",
        "agents.x: permission_mode is ignored: codex has no option for it (no `permission_mode_flag` in its CLI "
        "definition)",
        "agents.x: command is ignored: it is for `cli: command` CLIs; codex builds its own argv"]


def test_a_read_only_codex_asked_to_write_an_output_is_warned():
    text = """version: 1
name: ro
agents:
  auditor: {cli: codex}
  writer: {cli: codex, sandbox: workspace-write}
stages:
  a: {agent: auditor, prompt: hi, outputs: [a.md, {path: b.md, from: final_message}]}
  b: {agent: writer, prompt: hi, outputs: [c.md]}
"""
    assert playbook_warnings(load_playbook_text(text, "ro.yaml")) == [
        "stages.a: agent auditor is a read-only Codex, which cannot write a.md into the shared folder: give "
        "the output `from: final_message` (bridge writes the agent's answer) or the agent `sandbox: workspace-write`"]
