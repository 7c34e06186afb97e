"""outputs: declared output paths stay inside the shared folder; each output is checked (exists, regular, non-empty, JSON, schema)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.errors import BridgeError
from bridge.outputs import check_output, check_outputs, missing_outputs_message, output_problems, resolve_output
from bridge.playbook import OutputSpec


# -- output paths ----------------------------------------------------------------------------------

@pytest.fixture
def shared(tmp_path: Path) -> Path:
    folder = tmp_path / "shared"
    folder.mkdir()
    return folder


def test_resolve_output_accepts_nested_paths(shared: Path) -> None:
    assert resolve_output(shared, "audit/security/report.md") == shared.resolve() / "audit/security/report.md"
    assert resolve_output(shared, "./a.json") == shared.resolve() / "a.json"


@pytest.mark.parametrize("rel", ["../x.md", "a/../../x.md", "a/..", "/etc/passwd", "~/x", "", "  ", ".",
                                 "..\\x.md"])
def test_resolve_output_rejects_escapes(shared: Path, rel: str) -> None:
    with pytest.raises(BridgeError):
        resolve_output(shared, rel)


def test_resolve_output_rejects_symlinks_pointing_outside(shared: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text("x")
    (shared / "link.md").symlink_to(outside / "secret.md")
    (shared / "dirlink").symlink_to(outside, target_is_directory=True)
    (shared / "dangling.md").symlink_to(outside / "nope.md")
    (shared / "sub").mkdir()
    (shared / "sub" / "up").symlink_to("../..")
    for rel in ("link.md", "dirlink/secret.md", "dirlink/new/x.md", "dangling.md", "sub/up/outside/secret.md"):
        with pytest.raises(BridgeError, match="outside"):
            resolve_output(shared, rel)


def test_resolve_output_allows_symlinks_that_stay_inside(shared: Path) -> None:
    (shared / "real").mkdir()
    (shared / "alias").symlink_to("real", target_is_directory=True)
    assert resolve_output(shared, "alias/x.md") == shared.resolve() / "alias/x.md"


def test_shared_folder_itself_behind_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    assert resolve_output(tmp_path / "link", "a.md") == real / "a.md"


# -- output checks ---------------------------------------------------------------------------------

SCHEMA = {
    "type": "object",
    "required": ["findings"],
    "properties": {"findings": {"type": "array", "items": {
        "type": "object", "required": ["severity"],
        "properties": {"severity": {"enum": ["low", "high"]}}}}},
}


def spec(path: str, schema: dict | None = None, required: bool = True) -> OutputSpec:
    return OutputSpec.model_validate({"path": path, "schema": schema, "required": required})


def test_check_output_missing_empty_and_valid(shared: Path) -> None:
    check = check_output(shared, spec("audit/report.md"))
    assert not check.ok and check.problem == "missing" and not check.exists
    (shared / "audit").mkdir()
    (shared / "audit/report.md").write_text("")
    assert check_output(shared, spec("audit/report.md")).problem == "is empty"
    (shared / "audit/report.md").write_text("# Findings\n")
    check = check_output(shared, spec("audit/report.md"))
    assert check.ok and check.problem is None and check.path == shared.resolve() / "audit/report.md"
    assert check.data is None


def test_check_output_json(shared: Path) -> None:
    f = shared / "report.json"
    f.write_text('{"findings": [')
    check = check_output(shared, spec("report.json", SCHEMA))
    assert not check.ok and "not valid JSON" in check.problem and "line 1" in check.problem
    f.write_text('{"findings": [{"severity": "low"}, {"severity": "urgent"}]}')
    check = check_output(shared, spec("report.json", SCHEMA))
    assert not check.ok
    assert "$.findings[1].severity" in check.problem and "urgent" in check.problem
    f.write_text('{"findings": [{"severity": "high"}]}')
    check = check_output(shared, spec("report.json", SCHEMA))
    assert check.ok and check.data == {"findings": [{"severity": "high"}]}
    f.write_text('[1]')  # no schema: any JSON is fine
    assert check_output(shared, spec("report.json")).data == [1]


def test_check_output_rejects_non_regular_and_symlinks(shared: Path, tmp_path: Path) -> None:
    (shared / "dir.md").mkdir()
    assert check_output(shared, spec("dir.md")).problem == "is not a regular file"
    (shared / "real.md").write_text("x")
    (shared / "alias.md").symlink_to("real.md")
    assert "symlink" in check_output(shared, spec("alias.md")).problem
    (tmp_path / "out.md").write_text("x")
    (shared / "escape.md").symlink_to(tmp_path / "out.md")
    check = check_output(shared, spec("escape.md"))
    assert not check.ok and "outside" in check.problem


def test_optional_outputs_and_the_missing_message(shared: Path) -> None:
    (shared / "bad.json").write_text("{")
    checks = check_outputs(shared, [spec("a.md"), spec("opt.md", required=False), spec("bad.json")])
    assert [c.ok for c in checks] == [False, True, False]
    message = missing_outputs_message(checks)
    assert "2 declared outputs missing or invalid" in message
    assert "a.md: missing" in message and "bad.json: is not valid JSON" in message
    assert "opt.md" not in message
    assert output_problems(checks) == [str(checks[0]), str(checks[2])]
    assert missing_outputs_message(checks[1:2]) == ""


def test_check_output_rejects_hard_links_fifos_and_oversized_json(shared: Path, tmp_path: Path) -> None:
    import os

    outside = tmp_path / "secret.txt"
    outside.write_text("SECRET=outside\n")
    os.link(outside, shared / "out.txt")  # `ln /outside/secret.txt $shared/out.txt`
    check = check_output(shared, spec("out.txt"))
    assert not check.ok and "has 2 hard links" in check.problem and "write a new file" in check.problem
    os.mkfifo(shared / "pipe.md")
    assert "is a FIFO" in check_output(shared, spec("pipe.md")).problem
    os.mkfifo(shared / "pipe.json")  # never opened: it would block until a writer came
    assert "is a FIFO" in check_output(shared, spec("pipe.json")).problem
    from bridge.shared_files import JSON_CAP

    big = shared / "big.json"
    with big.open("w") as fh:
        fh.write('{"a": "' + "x" * JSON_CAP + '"}')
    check = check_output(shared, spec("big.json"))
    assert not check.ok and f"more than the {JSON_CAP:,} bridge parses" in check.problem
