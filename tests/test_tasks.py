from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.errors import BridgeError
from bridge.tasks import Task, TaskList, parse_tasks, read_tasks, tick

CHECKLIST = """\
# Tasks for the implementation

Some prose that is not a task.
- [ ] Fix the SQL injection in store.py (claude)
- [x] Write the audit report @codex
  - [ ] nested: add a regression test
    * [X] deeper still
- [ ] Speed up dedupe, ask @gemini about it
1. [ ] numbered item
- plain bullet, not a task
- [] broken checkbox
-[ ] no space
- [ ]
"""


def test_parse_items_owners_nesting() -> None:
    tasks = parse_tasks(CHECKLIST)
    assert [t.text for t in tasks.items] == [
        "Fix the SQL injection in store.py", "Write the audit report", "nested: add a regression test",
        "deeper still", "Speed up dedupe, ask @gemini about it", "numbered item", ""]
    assert [t.done for t in tasks.items] == [False, True, False, True, False, False, False]
    assert [t.owner for t in tasks.items] == ["claude", "codex", None, None, "gemini", None, None]
    assert [t.depth for t in tasks.items] == [0, 0, 1, 2, 0, 0, 0]
    assert tasks.items[0].line == 4 and tasks.items[3].line == 7
    assert (tasks.done_count, tasks.done, tasks.total, tasks.open) == (2, 2, 7, 5)


def test_json_shape_for_ledger_and_templates() -> None:
    data = json.loads(json.dumps(parse_tasks(CHECKLIST).to_dict()))
    assert set(data) == {"items", "done", "total", "open"}
    assert data["items"][1] == {"text": "Write the audit report", "done": True, "owner": "codex", "line": 5,
                                "depth": 0}


def test_missing_file_and_garbage(tmp_path: Path) -> None:
    assert read_tasks(tmp_path / "nope.md") == TaskList()
    assert read_tasks(tmp_path / "nope.md").total == 0
    (tmp_path / "junk.md").write_bytes(b"\xff\xfe garbage\n\x00\x01\n- [x] survives\n")
    assert [t.text for t in read_tasks(tmp_path / "junk.md").items] == ["survives"]
    assert read_tasks(tmp_path).total == 0  # a folder where the file should be


def test_tick_by_text_and_index_preserves_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "tasks.md"
    path.write_text(CHECKLIST.replace("\n", "\r\n"))
    task = tick(path, "fix the sql injection in store.py")
    assert task == Task("Fix the SQL injection in store.py", True, "claude", 4, 0)
    tick(path, 2)  # "nested: add a regression test"
    after = path.read_bytes().decode()
    assert "- [x] Fix the SQL injection in store.py (claude)\r\n" in after
    assert "  - [x] nested: add a regression test\r\n" in after
    assert after.replace("[x]", "[ ]").replace("[X]", "[ ]") == \
        CHECKLIST.replace("\n", "\r\n").replace("[x]", "[ ]").replace("[X]", "[ ]")
    assert read_tasks(path).done_count == 4
    tick(path, "audit report", done=False)
    assert not read_tasks(path).items[1].done
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tasks.md"]


def test_tick_errors(tmp_path: Path) -> None:
    path = tmp_path / "tasks.md"
    with pytest.raises(BridgeError, match="does not exist"):
        tick(path, 0)
    path.write_text("- [ ] add tests for a\n- [ ] add tests for b\n")
    with pytest.raises(BridgeError, match="matches 2 tasks"):
        tick(path, "add tests")
    with pytest.raises(BridgeError, match="no task"):
        tick(path, "deploy")
    with pytest.raises(BridgeError, match="no task number 5"):
        tick(path, 5)
    assert tick(path, "tests for b").line == 2


def test_list_of_dicts_and_the_workspace_alias(tmp_path: Path) -> None:
    from bridge.workspace import read_tasks as via_workspace

    path = tmp_path / "tasks.md"
    path.write_text("- [x] a\n- [ ] b (claude)\n")
    tasks = via_workspace(path)
    assert len(tasks) == 2
    assert list(tasks) == [t.to_dict() for t in tasks.items]
    assert list(tasks)[1]["owner"] == "claude"


def test_the_task_list_is_read_safely(tmp_path: Path) -> None:
    """tasks.md is agent-written: never followed outside the shared folder, never a blocking FIFO."""
    import os

    from bridge.shared_files import UnsafeFile

    shared = tmp_path / "shared"
    shared.mkdir()
    outside = tmp_path / "private-checklist.md"
    outside.write_text("- [ ] the user's private plan\n")
    (shared / "tasks.md").symlink_to(outside)
    with pytest.raises(BridgeError, match="points outside the shared folder"):
        read_tasks(Path("tasks.md"), shared)
    with pytest.raises(UnsafeFile, match="symlink"):  # without the folder: never through a link either
        read_tasks(shared / "tasks.md")
    (shared / "sub").symlink_to(tmp_path)  # a folder link out of the shared folder
    with pytest.raises(BridgeError, match="outside the shared folder"):
        read_tasks(Path("sub/private-checklist.md"), shared)
    (shared / "tasks.md").unlink()
    os.mkfifo(shared / "tasks.md")  # no writer ever comes: a plain open() would wait for good
    with pytest.raises(UnsafeFile, match="FIFO"):
        read_tasks(Path("tasks.md"), shared)
    with pytest.raises(UnsafeFile, match="FIFO"):
        tick(shared / "tasks.md", 0)
    (shared / "tasks.md").unlink()
    os.link(outside, shared / "tasks.md")
    with pytest.raises(UnsafeFile, match="hard links"):
        read_tasks(Path("tasks.md"), shared)
    (shared / "tasks.md").unlink()
    (shared / "tasks.md").write_text("- [ ] ours\n")
    assert [t.text for t in read_tasks(Path("tasks.md"), shared).items] == ["ours"]
    assert read_tasks(Path("absent.md"), shared) == TaskList()
