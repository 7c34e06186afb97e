"""templates: render / evaluate under StrictUndefined, the context values, and stub contexts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.loader import load_playbook_text
from bridge.context import OutputValue, StageView, build_context, stub_context
from bridge.templates import TemplateError, check_names, evaluate, render


def _ctx(tmp_path: Path, **stages: StageView) -> dict:
    return build_context(vars={"target": "src"}, shared=tmp_path / "shared", inbox=tmp_path / "inbox",
                         run_id="r1", playbook="pb", stage_id="me", stages=stages, known=["a", "b", "me"])


def test_render_keeps_trailing_newline_and_no_escaping(tmp_path: Path) -> None:
    assert render("<{{ vars.target }}>\n", _ctx(tmp_path), "w") == "<src>\n"


def test_undefined_name_names_where_and_suggests(tmp_path: Path) -> None:
    with pytest.raises(TemplateError) as info:
        render("a\n{{ varz.target }}", _ctx(tmp_path), "stages.x.prompt")
    assert info.value.where == "stages.x.prompt"
    assert info.value.line == 2
    assert "'varz' is undefined; did you mean 'vars'?" in info.value.detail
    assert str(info.value).startswith("stages.x.prompt (line 2): ")


def test_syntax_error_has_line(tmp_path: Path) -> None:
    with pytest.raises(TemplateError) as info:
        render("ok\nok\n{% if %}", _ctx(tmp_path), "w")
    assert info.value.line == 3 and "syntax" in info.value.detail


def test_not_upstream_and_unknown_stage_messages(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, a=StageView("a", "success"))
    with pytest.raises(TemplateError, match="stages.b is not upstream of 'me'.*add 'b' to needs"):
        render("{{ stages.b.status }}", ctx, "w")
    with pytest.raises(TemplateError, match="there is no stage 'zz'"):
        render("{{ stages.zz }}", ctx, "w")
    assert render("{{ stages.a.status }}", ctx, "w") == "success"


@pytest.mark.parametrize("expr", ["stages.a.status == 'success'", "{{ stages.a.status == 'success' }}",
                                  "  {{stages.a.cost_usd < 1}}  "])
def test_evaluate_bare_or_wrapped(tmp_path: Path, expr: str) -> None:
    assert evaluate(expr, _ctx(tmp_path, a=StageView("a", "success")), "w") is True


def test_evaluate_false_and_errors(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, a=StageView("a", "failure"))
    assert evaluate("stages.a.status == 'success'", ctx, "w") is False
    with pytest.raises(TemplateError, match="empty"):
        evaluate("{{ }}", ctx, "w")
    with pytest.raises(TemplateError, match="ZeroDivisionError"):
        evaluate("1 / 0", ctx, "w")
    with pytest.raises(TemplateError, match="no var 'nope'"):
        evaluate("vars.nope", ctx, "w")


def test_output_value_json_and_text(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    (shared / "v").mkdir(parents=True)
    (shared / "v" / "r.json").write_text(json.dumps({"status": "pass", "text": "json-text"}))
    (shared / "notes.md").write_text("hello")
    out = OutputValue.load(shared, "v/r.json")
    assert str(out) == str(shared / "v" / "r.json") and out.rel == "v/r.json"
    ctx = _ctx(tmp_path, a=StageView("a", "success", {"v/r.json": out, "notes.md": OutputValue.load(shared, "notes.md")}))
    assert render("{{ stages.a.outputs['v/r.json'].status }}", ctx, "w") == "pass"
    assert render("{{ stages.a.outputs['v/r.json']['text'] }}", ctx, "w") == "json-text"
    assert render("{{ stages.a.outputs['notes.md'].text }}", ctx, "w") == "hello"
    with pytest.raises(TemplateError, match="undefined"):
        render("{{ stages.a.outputs['v/r.json'].missing }}", ctx, "w")
    assert OutputValue.load(shared, "absent.json").text == ""


def test_check_names_sees_branches_not_taken(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, a=StageView("a"))
    render("{% if false %}{{ stages.b }}{% endif %}", ctx, "w")  # rendering alone cannot see it
    with pytest.raises(TemplateError, match="stages.b is not upstream"):
        check_names("{% if false %}{{ stages.b }}{% endif %}", ctx, "w")
    with pytest.raises(TemplateError, match="no var 'x'"):
        check_names("false and vars.x", ctx, "w", expression=True)
    check_names("{% for k, v in stages.items() %}{{ k }}{% endfor %}", ctx, "w")


PB = """\
version: 1
name: pb
vars: {v: 1}
agents: {a: {cli: codex}}
stages:
  audit: {agent: a, prompt: x, matrix: {area: [s, p]}, outputs: ["r/{{ matrix.area }}.json"]}
  fix:
    needs: [audit]
    loop:
      until: "true"
      max_iterations: 4
      stages:
        impl: {agent: a, prompt: x}
        verify: {agent: a, prompt: x, needs: [impl]}
finally:
  done: {agent: a, prompt: x}
"""


def test_stub_context_shape(tmp_path: Path) -> None:
    pb = load_playbook_text(PB, "pb.yaml")
    ctx = stub_context(pb, "verify", tmp_path / "shared")
    assert set(ctx) == {"vars", "matrix", "shared", "inbox", "run", "stage", "loop", "tasks", "trigger", "triggers",
                        "stages"}
    assert ctx["triggers"] == [ctx["trigger"]]  # validation: `triggers` holds the stub trigger
    assert list(ctx["stages"]) == ["audit", "impl"]
    audit = ctx["stages"]["audit"]
    assert [i.matrix["area"] for i in audit.items] == ["s", "p"]
    assert set(audit.outputs) == {"r/s.json", "r/p.json"}
    assert render("{{ stages.audit.outputs['r/s.json'].anything.deep }}", ctx, "w") == ""
    assert ctx["loop"]["iteration"] == 1 and ctx["loop"]["max_iterations"] == 4
    assert set(ctx["loop"]["previous"]) == {"impl", "verify"}
    assert stub_context(pb, "verify", tmp_path, first_iteration=True)["loop"]["previous"] is None
    assert stub_context(pb, "audit", tmp_path)["matrix"] == {"area": "s"}
    assert stub_context(pb, "audit", tmp_path, matrix={"area": "p"})["matrix"] == {"area": "p"}
    assert list(stub_context(pb, "fix", tmp_path, until=True)["stages"]) == ["audit", "impl", "verify"]
    assert list(stub_context(pb, "done", tmp_path)["stages"]) == ["audit", "fix", "impl", "verify"]
    assert stub_context(pb, "audit", tmp_path)["loop"] is None


def test_output_value_is_read_lazily_safely_and_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    import bridge.output_value as ov
    from bridge.shared_files import TEXT_CAP

    shared = tmp_path / "shared"
    shared.mkdir()
    reads: list[Path] = []
    real = ov.read_regular
    monkeypatch.setattr(ov, "read_regular", lambda path, limit: reads.append(path) or real(path, limit))

    (shared / "notes.md").write_text("hello")
    notes = OutputValue.load(shared, "notes.md")
    ctx = _ctx(tmp_path, a=StageView("a", "success", {"notes.md": notes}))
    assert render("{{ stages.a.outputs['notes.md'] }}", ctx, "w") == str(shared / "notes.md")
    assert reads == [] and not notes.loaded  # naming the path reads nothing
    assert render("{{ stages.a.outputs['notes.md'].text }}", ctx, "w") == "hello"
    render("{{ stages.a.outputs['notes.md'].text }}", ctx, "w")
    assert len(reads) == 1 and notes.loaded  # read once, when first used

    outside = tmp_path / "secret.txt"
    outside.write_text("SECRET=outside")
    (shared / "link.txt").symlink_to(outside)
    os.link(outside, shared / "hard.txt")
    os.mkfifo(shared / "fifo.json")
    for rel, why in (("link.txt", "symlink"), ("hard.txt", "hard links"), ("fifo.json", "FIFO")):
        value = OutputValue.load(shared, rel)
        assert value.text == "" and dict(value) == {} and value.parsed is None, rel
        assert why in value.problem, rel
    assert OutputValue.load(shared, "absent.json").problem is None

    big = shared / "big.md"
    with big.open("wb") as fh:
        fh.truncate(300 << 20)  # 300 MB (sparse): reading it all took 630 MB
    text = OutputValue.load(shared, "big.md").text
    assert len(text) < TEXT_CAP + 200
    assert text.endswith(f"bridge read the first {TEXT_CAP:,} of {300 << 20:,} bytes of this file; the rest "
                         f"is in {big}]")
