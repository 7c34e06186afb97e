from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import threading
from pathlib import Path

import pytest

from bridge import workspace
from bridge.errors import BridgeError
from bridge.workspace import (
    RunLayout,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    new_run_id,
    stage_key,
)


def git_init(path: Path) -> Path:
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    return path


# -- layout ----------------------------------------------------------------------------------------

def test_layout_creates_the_documented_folders(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path, "20261121-142233-ab12").create()
    assert layout.shared == tmp_path / ".bridge/runs/20261121-142233-ab12/shared"
    assert layout.shared.is_dir() and layout.stages.is_dir() and layout.inbox.is_dir()
    assert layout.inbox == tmp_path / ".bridge/inbox"
    assert layout.summary == layout.run_dir / "summary.md"
    attempt = layout.attempt("audit-security", 2).create()
    assert attempt.dir == layout.stages / "audit-security" / "attempt-2"
    assert attempt.dir.is_dir()
    assert [p.name for p in (attempt.prompt, attempt.argv, attempt.stdout, attempt.stderr, attempt.result)] == [
        "prompt.md", "argv.json", "stdout.jsonl", "stderr.log", "result.json"]


def test_layout_excludes_bridge_from_git_without_touching_gitignore(tmp_path: Path) -> None:
    git_init(tmp_path)
    (tmp_path / ".gitignore").write_text("*.pyc\n")
    RunLayout(tmp_path, new_run_id()).create()
    RunLayout(tmp_path, new_run_id()).create()
    exclude = (tmp_path / ".git/info/exclude").read_text()
    assert exclude.count(".bridge/") == 1
    assert (tmp_path / ".gitignore").read_text() == "*.pyc\n"
    (tmp_path / ".bridge/runs/x").mkdir(parents=True)
    (tmp_path / ".bridge/runs/x/f.txt").write_text("hi")
    status = subprocess.run(["git", "status", "--porcelain"], cwd=tmp_path, capture_output=True, text=True)
    assert ".bridge" not in status.stdout


def test_layout_in_a_subfolder_of_a_repo_and_outside_git(tmp_path: Path) -> None:
    git_init(tmp_path / "repo")
    sub = tmp_path / "repo" / "pkg"
    sub.mkdir()
    RunLayout(sub, "r1").create()
    assert ".bridge/" in (tmp_path / "repo/.git/info/exclude").read_text()
    plain = tmp_path / "plain"
    plain.mkdir()
    RunLayout(plain, "r1").create()
    assert not (plain / ".git").exists()


def test_new_run_id_is_sortable_and_unique() -> None:
    ids = [new_run_id() for _ in range(50)]
    assert all(re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{4}", i) for i in ids)
    assert len(set(ids)) > 45  # random suffix; same-second ids only collide by chance


# -- stage keys ------------------------------------------------------------------------------------

def test_stage_key_plain_and_matrix() -> None:
    assert stage_key("audit") == "audit"
    assert stage_key("audit", None) == "audit"
    assert stage_key("audit", {}) == "audit"
    assert stage_key("audit", {"area": "security"}) == "audit-security"
    assert stage_key("test", {"os": "linux", "py": "3.12"}) == "test-linux-3.12"


def test_stage_key_is_filesystem_safe_and_distinct() -> None:
    values = ["a/b", "a_b", "A B", "a b", "../x", "", "x-y", "x", "é", "e", True, 1, 3.12, None, {"k": 1},
              "x" * 300, "x" * 299 + "y"]
    keys = [stage_key("audit", {"area": v}) for v in values]
    assert len(set(keys)) == len(values)
    for k in keys:
        assert re.fullmatch(r"[a-z0-9._-]+", k), k
        assert len(k) <= 80 and not k.startswith(".")
    # two keys whose joined values would read the same
    assert stage_key("s", {"a": "x-y", "b": "z"}) != stage_key("s", {"a": "x", "b": "y-z"})
    assert stage_key("Audit") != stage_key("audit")
    # scalars are keyed by their text, so 1 and "1" share a key (a matrix never lists both)
    assert stage_key("s", {"a": 1}) == stage_key("s", {"a": "1"}) == "s-1"


# -- atomic writes ---------------------------------------------------------------------------------

def test_atomic_writes_text_bytes_json(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "a" / "b.txt", "héllo")
    assert (tmp_path / "a/b.txt").read_text(encoding="utf-8") == "héllo"
    atomic_write_bytes(tmp_path / "c.bin", b"\x00\x01")
    assert (tmp_path / "c.bin").read_bytes() == b"\x00\x01"
    atomic_write_json(tmp_path / "d.json", {"p": Path("/x"), "n": [1, 2]})
    assert json.loads((tmp_path / "d.json").read_text()) == {"p": "/x", "n": [1, 2]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "c.bin", "d.json"]  # no temp left


def test_atomic_write_never_shows_a_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "big.txt"
    old, new = "A" * 2_000_000, "B" * 2_000_000
    atomic_write_text(target, old)
    seen: set[str] = set()
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            data = target.read_text()
            seen.add("old" if data == old else "new" if data == new else f"partial {len(data)}")

    t = threading.Thread(target=reader)
    t.start()
    try:
        for _ in range(10):
            atomic_write_text(target, new)
            atomic_write_text(target, old)
    finally:
        stop.set()
        t.join()
    assert seen <= {"old", "new"}


def test_atomic_write_keeps_mode_of_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "run.sh"
    target.write_text("old")
    target.chmod(0o755)
    atomic_write_text(target, "new")
    assert target.stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize("victim", ["write", "open"])
def test_full_disk_is_a_bridge_error_and_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, victim: str
) -> None:
    target = tmp_path / "out" / "report.json"
    target.parent.mkdir()
    target.write_text('{"old": true}')

    def full(*args: object, **kwargs: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, victim, full)
    with pytest.raises(BridgeError) as info:
        atomic_write_json(target, {"new": True})
    monkeypatch.undo()
    assert str(target) in str(info.value)
    assert "free some space" in str(info.value)
    assert target.read_text() == '{"old": true}'
    assert [p.name for p in target.parent.iterdir()] == ["report.json"]


def test_other_write_errors_name_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(BridgeError, match=re.escape(str(blocker / "x.txt"))):
        atomic_write_text(blocker / "x.txt", "y")


def test_module_stays_small() -> None:
    assert len(Path(workspace.__file__).read_text().splitlines()) < 420
