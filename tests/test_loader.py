"""Malformed playbooks: every problem located (file, line, column), with its path and message.

Each fixture in tests/playbooks_bad/ is one mistake (or, for `multi`, several); EXPECTED lists every
problem it must produce: (line, column, dotted path, message prefix). A `# vars: k=v` line in a
fixture is passed as a --var override.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bridge.errors import PlaybookError
from bridge.loader import load_playbook, load_playbook_text

BAD = Path(__file__).parent / "playbooks_bad"
PLAYBOOKS = Path(__file__).resolve().parent.parent / "playbooks"

EXPECTED = {
    'bad_bool': [(9, 24, 'stages.s.continue_on_error', "expected true or false, got the text 'maybe'")],
    'bad_cron': [(8, 11, 'schedule[0].cron', "'0 3 * *' is not a cron expression (it has 4 fields); write five fields (minute hour day month weekday), e.g. '0 3 * * *', or @hourly, @daily, @weekly, @monthly, @yearly")],
    'bad_cron_alias': [(8, 11, 'schedule[0].cron', "'@fortnightly' is not a cron expression (no alias '@fortnightly'); write five fields (minute hour day month weekday), e.g. '0 3 * * *', or @hourly, @daily, @weekly, @monthly, @yearly")],
    'bad_duration': [(9, 14, 'stages.s.timeout', "'20 minutes' is not a duration; write it like 30s, 20m, 1h30m or 500ms")],
    'bad_if': [(10, 9, 'stages.b1.if', "template syntax error: unexpected 'end of template'")],
    'bad_matrix_not_list': [(9, 18, 'stages.s.matrix.os', "expected a list, got the text 'linux'")],
    'bad_max_parallel': [(9, 19, 'stages.s.max_parallel', 'expected a number >= 1, got int 0')],
    'bad_overlap': [(9, 14, 'schedule[0].overlap', "expected one of skip, queue, cancel, got the text 'skipp'; did you mean 'skip'?")],
    'bad_retry': [(9, 20, 'stages.s.retry.limit', 'expected a number >= 0, got int -1')],
    'bad_retry_backoff': [(9, 32, 'stages.s.retry.backoff', "'soon' is not a duration; write it like 30s, 20m, 1h30m or 500ms")],
    'bad_sandbox': [(4, 28, 'agents.a.sandbox', "expected one of read-only, workspace-write, full-access, got the text 'read_only'; did you mean 'read-only'?")],
    'several_cycles_and_ids': [
        (5, 3, 'agents.2bad', "'2bad' is not a valid id: an id starts with a letter or '_'"),
        (7, 29, 'stages.a1.needs', 'stages need each other in a cycle: a1 -> c1 -> b1 -> a1'),
        (10, 29, 'stages.d1.needs', 'stages need each other in a cycle: d1 -> e1 -> d1'),
        (12, 3, 'stages.1x', "'1x' is not a valid id"),
        (13, 3, 'stages.y.z', "'y.z' is not a valid id"),
        (19, 9, 'stages.l.loop.stages.m m', "'m m' is not a valid id")],
    'templates_beside_bad_values': [
        (7, 26, 'stages.s1.prompt', "no var 'nope'"),
        (7, 45, 'stages.s1.timout', "unknown key 'timout'; did you mean 'timeout'?"),
        (8, 26, 'stages.s2.prompt', "there is no stage 's9'"),
        (8, 60, 'stages.s2.retry.limit', 'expected a number >= 0')],
    'stage_view_typo': [(7, 41, 'stages.b.prompt', "stages.audit has no 'sumary'; did you mean 'summary'?")],
    'empty_prompt_file': [(6, 31, 'stages.s2.prompt_file', "prompt_file is empty")],
    'schedule_six_fields_and_vars': [
        (8, 12, 'schedule[0].cron', "'* * * * * *' is not a cron expression (it has 6 fields); write five fields"),
        (9, 12, 'schedule[1].cron', "'0 3 * * * 2030' is not a cron expression (it has 6 fields)"),
        (10, 44, 'schedule[2].vars.n', 'expected a whole number, like the declared default 1'),
        (10, 50, 'schedule[2].vars.nope', "this playbook declares no var 'nope' (declared: dept, n)")],
    'tasks_outside_shared': [(3, 8, 'tasks', "'../../../etc/passwd' climbs out of the shared folder with '..'")],
    'permission_mode_unknown': [
        (4, 37, 'agents.c.permission_mode', "claude has no permission mode 'yolo' (it takes: default, acceptEdits"),
        (5, 37, 'agents.g.permission_mode', "gemini has no permission mode 'auto-edit'; did you mean 'auto_edit'?")],
    'folded_prompts': [  # `>` and quoted text fold lines: the error is placed at what it names
        (12, 21, 'stages.s.prompt', "no var 'nope'"),
        (16, 26, 'stages.t.prompt', "there is no stage 'zz'"),
        (21, None, 'stages.u.prompt', "no var 'b'")],
    'bad_stage_id': [(6, 3, 'stages.bad id', "'bad id' is not a valid id: an id starts with a letter or '_', then letters, digits, '-' and '_'")],
    'bad_timezone': [(9, 15, 'schedule[0].timezone', "unknown timezone 'America/New_Yrok'; did you mean 'America/New_York'?")],
    'bad_version': [(1, 10, 'version', 'unsupported version 2; this bridge reads `version: 1`')],
    'both_prompts': [(6, 3, 'stages.s', 'give `prompt:` or `prompt_file:`, not both')],
    'command_template': [(6, 20, 'agents.a.command[1]', "undefined: 'promt' is undefined; did you mean 'prompt'?")],
    'command_without_argv': [(4, 3, 'agents.a', 'cli: command needs `command:`, the argv to run (a list of strings)')],
    'cycle': [(9, 5, 'stages.a1.needs', 'stages need each other in a cycle: a1 -> c1 -> b1 -> a1; remove one of these needs')],
    'dangling_needs': [(10, 13, 'stages.test.needs[0]', "needs 'biuld', which is not a stage; did you mean 'build'?")],
    'depends_on': [(10, 5, 'stages.t.depends_on', "unknown key 'depends_on'; did you mean 'needs'?")],
    'duplicate_id_finally': [(8, 3, 'finally.s', "stage id 's' is already used by stages.s; stage ids are global (loop members and finally stages included)")],
    'duplicate_id_in_loop': [(11, 9, 'stages.l.loop.stages.fix', "stage id 'fix' is already used by stages.fix; stage ids are global (loop members and finally stages included)")],
    'duplicate_key': [(9, 5, 'stages.s.prompt', "duplicate key 'prompt' (first given on line 8); YAML would silently keep only the last one, so remove one of them")],
    'duplicate_stage_key': [(7, 3, 'stages.s', "duplicate key 's' (first given on line 6); YAML would silently keep only the last one, so remove one of them")],
    'empty': [(1, 1, '', 'the file is empty; a playbook starts with `version: 1`')],
    'empty_matrix_values': [(6, 3, 'stages.s', "matrix key 'os' has no values")],
    'hidden_branch_ref': [(10, 13, 'stages.b1.prompt', "there is no stage 'zz'")],
    'loop_bad_until': [(8, 14, 'stages.l.loop.until', "there is no stage 'verfy'; did you mean 'verify'?")],
    'loop_max_iterations': [(9, 23, 'stages.l.loop.max_iterations', 'expected a number >= 1, got int 0')],
    'loop_member_needs_outside': [(14, 19, 'stages.l.loop.stages.fix.needs[0]', "loop members may only need stages of the same loop (fix); 'audit' is outside loop 'l': add it to the loop's own needs")],
    'loop_missing_until': [(7, 5, 'stages.l.loop.until', "missing required key 'until'")],
    'loop_with_agent': [(6, 3, 'stages.l', 'a loop stage groups other stages; it cannot also set agent')],
    'matrix_key_undefined': [(9, 13, 'stages.s.prompt', "no matrix key 'aera'; did you mean 'area'?")],
    'missing_agents': [(1, 1, 'agents', "missing required key 'agents'"), (4, 14, 'stages.s.agent', "unknown agent 'a'")],
    'missing_prompt_file': [(8, 18, 'stages.s.prompt_file', "prompt file 'prompts/nope.md.j2' not found")],
    'missing_version': [(1, 1, 'version', "missing required key 'version'")],
    'misspelled_agent': [(6, 14, 'stages.s.agent', "unknown agent 'reveiwer'; did you mean 'reviewer'?")],
    'multi': [(4, 12, 'agents.a.cli', "unknown cli 'codx'; did you mean 'codex'?"), (7, 12, 'stages.s.agent', "unknown agent 'b'"), (9, 14, 'stages.s.timeout', "'forever' is not a duration; write it like 30s, 20m, 1h30m or 500ms"), (10, 13, 'stages.s.needs[0]', "needs 'q', which is not a stage"), (11, 5, 'stages.s.retrys', "unknown key 'retrys'; did you mean 'retry'?"), (13, 11, 'schedule[0].cron', "'99 * * * *' is not a cron expression (Bad minute); write five fields (minute hour day month weekday), e.g. '0 3 * * *', or @hourly, @daily, @weekly, @monthly, @yearly")],
    'name_wrong_type': [(2, 1, 'name', 'expected text, got a list')],
    'needs_loop_member': [(14, 13, 'stages.after.needs[0]', "'fix' is a member of loop 'l'; need the loop 'l' instead")],
    'needs_string_dangling': [(9, 12, 'stages.test.needs', "needs 'nothing', which is not a stage")],
    'negative_duration': [(9, 19, 'stages.s.idle_timeout', 'a duration cannot be negative')],
    'nested_loop': [(11, 11, 'stages.outer.loop.stages.inner.loop', 'loops cannot be nested; move this loop to the top level')],
    'no_agent': [(6, 3, 'stages.s', 'a stage needs `agent:` (or `loop:` to group stages)')],
    'no_prompt': [(6, 3, 'stages.s', 'a stage needs `prompt:` or `prompt_file:`')],
    'not_mapping': [(1, 1, '', 'a playbook is a mapping of keys (version, name, agents, stages, ...), not a list')],
    'not_upstream': [(9, 13, 'stages.b1.prompt', "stages.a1 is not upstream of 'b1', so its results are not known when it runs; add 'a1' to needs")],
    'notify_bad_on': [(8, 9, 'notify[0].on[0]', "expected one of success, failure, got the text 'failed'; did you mean 'failure'?")],
    'notify_without_target': [(8, 5, 'notify[0]', 'a notify entry needs `webhook:` or `command:`')],
    'on_conflict': [(10, 44, 'stages.s.worktree.on_conflict', "on_conflict is fail, continue or the id of a stage that resolves the conflict; 'fixr' is none of these; did you mean 'fixer'?")],
    'on_is_not_bool': [(8, 9, 'notify[0].on[0]', "expected one of success, failure, got the text 'yes'")],
    'output_absolute': [(9, 15, 'stages.s.outputs[0].path', "'/etc/passwd' is absolute; an output path is relative to the shared folder")],
    'output_climbs_template': [(10, 15, 'stages.s.outputs[0]', "renders to '../x.md': '../x.md' climbs out of the shared folder with '..'")],
    'prompt_file_syntax': [(2, None, 'stages.s.prompt_file', "template syntax error: Expected an expression, got 'end of statement block'")],
    'prompt_file_undefined': [(1, None, 'stages.s.prompt_file', "no var 'nope'")],
    'self_need': [(9, 13, 'stages.s.needs[0]', "stage 's' cannot need itself")],
    'template_syntax': [(10, None, 'stages.s.prompt', "template syntax error: Expected an expression, got 'end of statement block'")],
    'undeclared_output': [(10, 13, 'stages.b1.prompt', "stage 'a1' declares no output 'report.md'; did you mean 'r.md'?")],
    'undefined_name': [(10, None, 'stages.s.prompt', "undefined: 'shraed' is undefined; did you mean 'shared'?")],
    'undefined_var': [(9, 13, 'stages.s.prompt', "no var 'targte'; did you mean 'target'?")],
    'unknown_agent': [(6, 14, 'stages.s.agent', "unknown agent 'b'")],
    'unknown_agent_key': [(4, 19, 'agents.a.sandbx', "unknown key 'sandbx'; did you mean 'sandbox'?")],
    'unknown_cli': [(4, 12, 'agents.a.cli', "unknown cli 'cladue'; did you mean 'claude'?")],
    'unknown_stage_key': [(9, 5, 'stages.s.timout', "unknown key 'timout'; did you mean 'timeout'?")],
    'unknown_stage_ref': [(10, 13, 'stages.b1.prompt', "there is no stage 'a2'")],
    'unknown_top_key': [(7, 1, 'stagse', "unknown key 'stagse'; did you mean 'stages'?")],
    'unknown_var_override': [(5, 1, 'vars', "--var tagret: this playbook declares no var 'tagret'; did you mean 'target'?")],
    'var_override_type': [(5, 8, 'vars.count', '--var count=many: expected a whole number, like the declared default 3')],
    'worktree_merge': [(9, 15, 'stages.s.worktree.merge', "expected one of merge, squash, rebase, none, got the text 'sqash'; did you mean 'squash'?")],
    'yaml_syntax': [(5, 7, '', "invalid YAML: while parsing a flow mapping, expected ',' or '}', but got ':'")],
    'yaml_tab': [(3, 1, '', "invalid YAML: while scanning for the next token, found character '\\t' that cannot start any token")],
}


def _problems(name: str) -> list:
    path = BAD / f"{name}.yaml"
    text = path.read_text()
    overrides = dict(m.split("=", 1) for m in re.findall(r"^# vars: (\S+)", text, re.M))
    with pytest.raises(PlaybookError) as info:
        load_playbook(path, overrides)
    return info.value.problems


def test_enough_fixtures() -> None:
    assert len(EXPECTED) >= 40
    assert {p.stem for p in BAD.glob("*.yaml")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_playbook(name: str) -> None:
    problems = _problems(name)
    got = [(p.line, p.column, p.path, p.message) for p in problems]
    expected = EXPECTED[name]
    assert len(got) == len(expected), got
    for (line, col, path, message), (gline, gcol, gpath, gmessage) in zip(expected, got):
        assert (gline, gcol, gpath) == (line, col, path), got
        assert gmessage.startswith(message), gmessage
    for p in problems:
        in_prompt_file = p.path.endswith("prompt_file") and "prompts" in p.file
        assert p.file == str(BAD / f"{name}.yaml") or in_prompt_file, p.file
        assert "Traceback" not in p.message


def test_problem_in_prompt_file_names_that_file() -> None:
    (problem,) = _problems("prompt_file_syntax")
    assert problem.file == str(BAD / "prompts" / "syntax.md.j2")
    assert problem.line == 2


def test_multi_error_file_reports_everything_sorted() -> None:
    problems = _problems("multi")
    assert [p.path for p in problems] == [
        "agents.a.cli", "stages.s.agent", "stages.s.timeout", "stages.s.needs[0]", "stages.s.retrys",
        "schedule[0].cron",
    ]
    assert [p.line for p in problems] == sorted(p.line for p in problems)


def test_error_text_lists_every_problem_with_location() -> None:
    with pytest.raises(PlaybookError) as info:
        load_playbook(BAD / "multi.yaml")
    text = str(info.value)
    assert text.startswith("6 problems found:")
    assert f"{BAD / 'multi.yaml'}:11:5: stages.s.retrys: unknown key 'retrys'; did you mean 'retry'?" in text


def test_missing_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    with pytest.raises(PlaybookError) as info:
        load_playbook(tmp_path / "nope.yaml")
    assert info.value.problems[0].message == "no such file"


GOOD = """\
version: 1
name: good
vars: {target: src, retries: 2, strict: false}
agents:
  a: {cli: codex}
stages:
  audit:
    agent: a
    matrix: {area: [security, speed]}
    prompt: "Audit {{ vars.target }} for {{ matrix.area }}; write {{ shared }}/audit/{{ matrix.area }}.md"
    outputs: ["audit/{{ matrix.area }}.md"]
  fix:
    needs: [audit]
    loop:
      until: "{{ stages.verify.outputs['v.json'].status == 'pass' }}"
      stages:
        implement:
          agent: a
          prompt: |
            {{ stages.audit.items[0].outputs['audit/security.md'] }}
            {% if loop.previous %}{{ loop.previous.verify.summary }}{% endif %}
        verify: {agent: a, needs: implement, prompt: "check {{ stages.implement.summary }}", outputs: [v.json]}
  report:
    needs: fix
    if: false
    agent: a
    prompt: "{{ stages.verify.status }} {{ stages.audit.outputs['audit/speed.md'] }}"
finally:
  tidy: {agent: a, prompt: "{{ stages.report.status }}"}
notify:
  - on: failure
    webhook: http://127.0.0.1:9/hook
schedule:
  - {cron: "@daily", timezone: Europe/Paris}
"""


def test_good_playbook_loads_with_aliases_and_shorthands() -> None:
    pb = load_playbook_text(GOOD, "good.yaml")
    assert pb.stages["report"].if_ == "false"
    assert pb.stages["report"].needs == ["fix"]
    assert pb.notify[0].on == ["failure"]
    assert pb.stages["audit"].outputs[0].path == "audit/{{ matrix.area }}.md"
    assert pb.finally_["tidy"].agent == "a"


def test_var_overrides_keep_declared_types() -> None:
    pb = load_playbook_text(GOOD, "good.yaml", {"target": "lib", "retries": "5", "strict": "true"})
    assert pb.vars == {"target": "lib", "retries": 5, "strict": True}


def test_loop_member_must_guard_previous_on_first_iteration() -> None:
    text = GOOD.replace("{% if loop.previous %}{{ loop.previous.verify.summary }}{% endif %}",
                        "{{ loop.previous.verify.summary }}")
    with pytest.raises(PlaybookError) as info:
        load_playbook_text(text, "good.yaml")
    (problem,) = info.value.problems
    assert problem.path == "stages.fix.loop.stages.implement.prompt"
    assert problem.line == 21
    assert "first iteration, loop.previous is None" in problem.message


def test_yaml_on_off_are_text_and_merge_keys_work() -> None:
    text = GOOD.replace("  - on: failure\n", "  - on: success\n") + "x-defaults: &d {cli: codex}\n"
    with pytest.raises(PlaybookError) as info:
        load_playbook_text(text, "good.yaml")
    assert [p.path for p in info.value.problems] == ["x-defaults"]
    merged = GOOD.replace("  a: {cli: codex}", "  base: &base {cli: codex, model: m1}\n  a: {<<: *base, model: m2}")
    pb = load_playbook_text(merged, "good.yaml")
    assert pb.agents["a"].model == "m2"


@pytest.mark.parametrize("path", sorted(PLAYBOOKS.glob("*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_playbooks_validate(path: Path) -> None:
    load_playbook(path)


def test_prompt_file_that_is_not_utf8_is_reported(tmp_path: Path) -> None:
    (tmp_path / "p.md").write_bytes(b"caf\xe9 {{ x }}")
    book = tmp_path / "b.yaml"
    book.write_text("version: 1\nname: t\nagents: {a: {cli: codex}}\nstages:\n  s: {agent: a, prompt_file: p.md}\n")
    with pytest.raises(PlaybookError) as info:
        load_playbook(book)
    [p] = info.value.problems
    assert (p.line, p.path) == (5, "stages.s.prompt_file")
    assert "is not UTF-8 text (byte 3)" in p.message


def test_stub_outputs_take_arithmetic_and_comparisons() -> None:
    # the JSON of an output is unknown at validation: maths and < on its keys must validate
    text = """version: 1
name: t
agents: {a: {cli: codex}}
stages:
  fix:
    loop:
      until: "stages.v.outputs['r.json'].failures < 1 and stages.v.outputs['r.json'].count + 1 > 3"
      max_iterations: 2
      stages:
        v:
          agent: a
          prompt: "{{ (loop.previous.v.outputs['r.json'].score * 2) if loop.previous else '' }} {{ 1 + stages_n }}"
          outputs: [r.json]
"""
    with pytest.raises(PlaybookError) as info:  # an undefined name is still caught beside them
        load_playbook_text(text, "b.yaml")
    assert [p.path for p in info.value.problems] == ["stages.fix.loop.stages.v.prompt"]
    assert "stages_n" in info.value.problems[0].message
    assert load_playbook_text(text.replace(" {{ 1 + stages_n }}", ""), "b.yaml").name == "t"


def test_matrix_include_and_exclude_as_in_github_actions() -> None:
    from bridge.playbook import matrix_items

    # GitHub's documented example: include extends matching items, or adds its own
    got = matrix_items({"fruit": ["apple", "pear"], "animal": ["cat", "dog"], "include": [
        {"color": "green"}, {"color": "pink", "animal": "cat"}, {"fruit": "apple", "shape": "circle"},
        {"fruit": "banana"}, {"fruit": "banana", "animal": "cat"}]})
    assert got == [{"fruit": "apple", "animal": "cat", "color": "pink", "shape": "circle"},
                   {"fruit": "apple", "animal": "dog", "color": "green", "shape": "circle"},
                   {"fruit": "pear", "animal": "cat", "color": "pink"},
                   {"fruit": "pear", "animal": "dog", "color": "green"},
                   {"fruit": "banana"}, {"fruit": "banana", "animal": "cat"}]
    assert matrix_items({"os": ["a", "b"], "v": [1, 2], "exclude": [{"os": "a", "v": 2}]}) == [
        {"os": "a", "v": 1}, {"os": "b", "v": 1}, {"os": "b", "v": 2}]


@pytest.mark.parametrize("matrix, message", [
    ("{x: [1, '1']}", "matrix items {x: 1} and {x: '1'} are the same item to bridge"),
    ("{x: [a, a]}", "matrix items {x: 'a'} and {x: 'a'} are the same item"),
    ("{x: [a], exclude: [{y: 1}]}", "matrix.exclude names 'y', which is not a matrix key"),
    ("{x: [a], exclude: [{x: a}]}", "the matrix has no items left after `exclude`"),
    ("{x: [a], include: [b]}", "matrix.include is a list of mappings"),
])
def test_bad_matrix_is_reported_at_the_matrix(matrix: str, message: str) -> None:
    text = f"version: 1\nname: t\nagents: {{a: {{cli: codex}}}}\nstages:\n  s:\n    agent: a\n    prompt: x\n" \
           f"    matrix: {matrix}\n"
    with pytest.raises(PlaybookError) as info:
        load_playbook_text(text, "b.yaml")
    [p] = info.value.problems
    assert p.path.startswith("stages.s") and p.line in (5, 8), (p.path, p.line)
    assert message in p.message


def test_outputs_of_matrix_items_must_differ_and_schemas_must_be_valid() -> None:
    text = """version: 1
name: t
agents: {a: {cli: codex}}
stages:
  s:
    agent: a
    prompt: x
    matrix: {x: [a, b]}
    outputs: [same.md, {path: "r-{{ matrix.x }}.json", schema: {type: objct}}]
"""
    with pytest.raises(PlaybookError) as info:
        load_playbook_text(text, "b.yaml")
    got = [(p.line, p.path, p.message) for p in info.value.problems]
    assert got[0][:2] == (9, "stages.s.outputs[0]") and "both write 'same.md'" in got[0][2]
    assert got[1][:2] == (9, "stages.s.outputs[1].schema")
    assert "this JSON Schema is itself invalid: 'objct' is not valid" in got[1][2]


def test_a_loop_stage_rejects_what_only_its_members_can_do() -> None:
    text = """version: 1
name: t
agents: {a: {cli: codex}}
stages:
  fix:
    timeout: 1s
    retry: 5
    loop:
      until: "true"
      stages:
        v: {agent: a, prompt: x}
"""
    with pytest.raises(PlaybookError) as info:
        load_playbook_text(text, "b.yaml")
    [p] = info.value.problems
    assert p.path == "stages.fix" and "cannot also set retry, timeout (set them on its member stages" in p.message


def test_hostile_yaml_is_a_located_problem_not_a_crash(tmp_path: Path) -> None:
    # an "alias bomb" (9 levels of 9 aliases: 9**9 values) and 600 nested lists
    bomb = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        bomb.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    for text, message in (("\n".join(bomb), "not read: it holds more than 200,000 values once its aliases"),
                          ("version: 1\nname: " + "[" * 600 + "]" * 600, "not read: it nests values more than")):
        with pytest.raises(PlaybookError) as info:
            load_playbook_text(text, "hostile.yaml")
        [p] = info.value.problems
        assert (p.line, p.column) == (1, 1) and p.message.startswith(message), p.message


def test_an_invalid_output_schema_is_reported_at_it() -> None:
    text = "version: 1\nname: t\nagents: {a: {cli: codex}}\nstages:\n  s:\n    agent: a\n    prompt: x\n" \
           "    output_schema: {type: objekt}\n"
    with pytest.raises(PlaybookError) as info:
        load_playbook_text(text, "b.yaml")
    [p] = info.value.problems
    assert (p.line, p.path) == (8, "stages.s.output_schema") and "is itself invalid" in p.message
