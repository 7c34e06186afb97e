"""The validate / plan / schema / init commands, through the real typer app."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from bridge.cli import app
from bridge.commands.init import PLAYBOOK
from bridge.commands.schema import playbook_schema
from bridge.worktrees import worktree_path

REPO = Path(__file__).resolve().parent.parent
BAD = REPO / "tests" / "playbooks_bad"
HELLO = REPO / "playbooks" / "hello.yaml"


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    out = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert "Traceback" not in out and "internal error" not in out, out
    return result.exit_code, out


def test_validate_ok_and_bad_files_together() -> None:
    code, out = invoke("validate", str(HELLO), str(BAD / "multi.yaml"), str(BAD / "missing.yaml"))
    assert code == 1
    assert f"ok: {HELLO}" in out
    assert f"{BAD / 'multi.yaml'}:4:12: agents.a.cli: unknown cli 'codx'; did you mean 'codex'?" in out
    assert f"{BAD / 'missing.yaml'}: no such file" in out
    assert "2 of 3 files have problems" in out


def test_validate_all_good_exits_zero() -> None:
    assert invoke("validate", str(HELLO)) == (0, f"ok: {HELLO}\n")


@pytest.mark.parametrize("name", ["yaml_syntax", "empty", "not_mapping", "cycle", "template_syntax"])
def test_validate_never_crashes(name: str) -> None:
    code, out = invoke("validate", str(BAD / f"{name}.yaml"))
    assert code == 1 and f"{name}.yaml:" in out


def test_plan_shows_layers_argv_and_prompt(tmp_path: Path) -> None:
    code, out = invoke("plan", str(HELLO), "--var", "who=bridge", "--dir", str(tmp_path))
    assert code == 0, out
    assert "layer 1: greet" in out and "layer 2: count" in out
    assert "agent echo (cli command)" in out and "agent word-count (cli command)" in out
    shared = tmp_path.resolve() / ".bridge" / "runs" / "RUN_ID" / "shared"
    assert f"argv: wc -w {shared}/hello/greeting.txt" in out
    assert "argv: echo 'hello, bridge'" in out and "| hello, bridge" in out
    assert not (tmp_path / ".bridge").exists()  # a plan starts and writes nothing


def test_plan_matrix_loop_finally(tmp_path: Path) -> None:
    pb = tmp_path / "pb.yaml"
    pb.write_text("""\
version: 1
name: pb
agents: {a: {cli: codex, model: gpt-x}}
stages:
  audit: {agent: a, prompt: "audit {{ matrix.area }}", matrix: {area: [sec, perf]}, max_parallel: 1}
  fix:
    needs: [audit]
    loop:
      until: "stages.check.status == 'success'"
      max_iterations: 5
      stages:
        check: {agent: a, prompt: "{% if loop.previous %}again{% else %}first{% endif %}"}
finally:
  tidy: {agent: a, prompt: bye}
""")
    code, out = invoke("plan", str(pb), "-C", str(tmp_path))
    assert code == 0, out
    assert "matrix: 2 items, max_parallel 1" in out
    assert "item area=sec" in out and "item area=perf" in out and "| audit perf" in out
    assert "fix: loop, at most 5 iterations, until stages.check.status == 'success'" in out
    assert "| first" in out  # the plan shows iteration 1
    assert "finally (always runs" in out and "tidy: agent a (cli codex, model gpt-x)" in out
    assert "argv: codex exec" in out and "audit sec" in out


def test_plan_bad_var_and_bad_file() -> None:
    code, out = invoke("plan", str(HELLO), "--var", "whom=x")
    assert code == 1 and "declares no var 'whom'; did you mean 'who'?" in out
    code, out = invoke("plan", str(HELLO), "--var", "novalue")
    assert code == 1 and "write it as key=value" in out
    code, out = invoke("plan", str(BAD / "cycle.yaml"))
    assert code == 1 and "a1 -> c1 -> b1 -> a1" in out


def test_schema_is_valid_draft7_and_accepts_shipped_playbooks() -> None:
    code, out = invoke("schema")
    assert code == 0
    schema = json.loads(out)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["$id"].endswith("playbook.schema.json") and schema["title"]
    jsonschema.Draft7Validator.check_schema(schema)
    assert "$defs" not in out
    stage = schema["definitions"]["Stage"]["properties"]
    assert {"if", "needs", "matrix", "max_parallel", "fail_fast", "continue_on_error"} <= set(stage)
    assert "finally" in schema["properties"]
    validator = jsonschema.Draft7Validator(schema)
    from bridge.yamlpos import parse

    for path in [*(REPO / "playbooks").glob("*.yaml")]:
        # YAML 1.2 as editors read it: `on:` is a key, not the boolean PyYAML's 1.1 makes of it.
        assert not list(validator.iter_errors(parse(path.read_text(), str(path)).data)), path
    bad = {"version": 1, "name": "x", "agents": {}, "stages": {"s": {"agent": "a", "prompt": "p", "timout": 1}}}
    assert list(validator.iter_errors(bad))


def test_schema_file_in_docs_is_current() -> None:
    assert json.loads((REPO / "docs" / "playbook.schema.json").read_text()) == playbook_schema()


def test_init_scaffolds_a_valid_playbook_and_refuses_to_overwrite(tmp_path: Path) -> None:
    code, out = invoke("init", "--dir", str(tmp_path))
    assert code == 0, out
    playbook = tmp_path / PLAYBOOK
    assert playbook.read_text().startswith("# yaml-language-server: $schema=./playbook.schema.json")
    assert (playbook.parent / "playbook.schema.json").is_file()
    assert (playbook.parent / "prompts" / "implement.md.j2").is_file()
    assert not (tmp_path / ".bridge").exists()
    assert invoke("validate", str(playbook)) == (0, f"ok: {playbook}\n")
    code, out = invoke("plan", str(playbook), "--dir", str(tmp_path))
    assert code == 0 and "layer 2: build" in out

    playbook.write_text("mine")
    code, out = invoke("init", "--dir", str(tmp_path))
    assert code == 1 and "already exist" in out and "--force" in out
    assert playbook.read_text() == "mine"
    code, out = invoke("init", "--dir", str(tmp_path), "--force")
    assert code == 0 and "overwrote playbooks/bridge.yaml" in out
    assert playbook.read_text() != "mine"


def test_docs_describe_every_field() -> None:
    from bridge.loader import field_names
    from bridge import playbook as m

    doc = (REPO / "docs" / "playbooks.md").read_text()
    models = (m.Playbook, m.AgentProfile, m.Stage, m.Loop, m.OutputSpec, m.Summary, m.Retry, m.Worktree,
              m.Schedule, m.Notify)
    missing = [f"{model.__name__}.{name}" for model in models for name in field_names(model)
               if f"| `{name}` |" not in doc]
    assert not missing


def test_plan_shows_what_run_would_run(tmp_path: Path) -> None:
    # the argv run builds: the inbox folder too, loop members' `<id>@1` folders and worktrees;
    # a finally stage may need a main stage; a false `if` is shown
    pb = tmp_path / "pb.yaml"
    pb.write_text("""\
version: 1
name: pb
agents: {a: {cli: codex}}
stages:
  s1: {agent: a, prompt: hi, idle_timeout: 90s}
  off: {agent: a, prompt: no, if: "false"}
  fix:
    loop:
      until: "true"
      stages:
        v: {agent: a, prompt: again, worktree: true}
finally:
  f1: {agent: a, needs: [s1], prompt: "{{ stages.s1.status }}"}
""")
    code, out = invoke("plan", str(pb), "-C", str(tmp_path))
    assert code == 0, out
    run = tmp_path / ".bridge" / "runs" / "RUN_ID"
    assert f"--add-dir {run / 'shared'} --add-dir {tmp_path / '.bridge' / 'inbox'}" in out
    assert f"-o {run / 'stages' / 'v@1' / 'attempt-1' / 'last_message.txt'}" in out
    assert f"cwd: {worktree_path(tmp_path, 'RUN_ID', 'v.1')}" in out
    assert "s1: agent a (cli codex); idle_timeout 90s" in out
    assert "skipped: `if` is false here" in out
    assert "f1: agent a (cli codex); needs s1" in out and "| success" in out


def test_every_option_and_argument_says_what_it_is_for() -> None:
    from typer.main import get_command

    missing = []

    def walk(command, path: str) -> None:
        for param in command.params:
            if param.name != "help" and not getattr(param, "help", None) and not getattr(param, "hidden", False):
                missing.append(f"{path} {param.name}")
        for name, sub in (getattr(command, "commands", None) or {}).items():
            walk(sub, f"{path} {name}")

    walk(get_command(app), "bridge")
    assert missing == []
