"""The SQLite run ledger: rows written as things happen, lookups, schedule fires, concurrency."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from bridge.errors import RunError
from bridge.ledger import Ledger


def start(ledger: Ledger, run_id: str, project: Path) -> None:
    ledger.start_run(run_id, "pb", project / "pb.yaml", project, vars={"x": "1"}, options={"only": []}, pid=123)


def test_run_unit_attempt_rows(tmp_path: Path) -> None:
    with Ledger(tmp_path) as ledger:
        start(ledger, "20260101-000000-aaaa", tmp_path)
        ledger.upsert_unit("20260101-000000-aaaa", "m-1", "m", status="running", matrix={"x": 1}, attempts=1)
        ledger.upsert_unit("20260101-000000-aaaa", "m-1", "m", status="success", tokens=30, cost_usd=0.5)
        aid = ledger.start_attempt("20260101-000000-aaaa", "m-1", 1, dir=tmp_path)
        ledger.update_attempt(aid, argv=["claude", "-p", "x"], pid=99, pgid=99)
        ledger.finish_attempt(aid, "success", input_tokens=20, output_tokens=10, cost_usd=0.5)
        ledger.add_artifact("20260101-000000-aaaa", "m-1", "out.txt", 3, "ab" * 32)
        ledger.finish_run("20260101-000000-aaaa", "success", "", tokens=30, cost_usd=0.5)
    with Ledger(tmp_path) as ledger:  # a fresh connection sees everything
        run = ledger.find_run("last")
        assert run.status == "success" and run.vars == {"x": "1"} and run.ended is not None
        (unit,) = ledger.units(run.id)
        assert unit.status == "success" and unit.matrix == {"x": 1} and unit.attempts == 1 and unit.tokens == 30
        (attempt,) = ledger.attempts(run.id, "m-1")
        assert attempt.argv == ["claude", "-p", "x"] and attempt.pgid == 99 and attempt.ended is not None
        assert ledger.open_attempts(run.id) == []
        assert ledger.artifacts(run.id)[0]["path"] == "out.txt"
        mode = ledger._db.execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"


def test_find_run_by_prefix(tmp_path: Path) -> None:
    with Ledger(tmp_path) as ledger:
        start(ledger, "20260101-000000-aaaa", tmp_path)
        start(ledger, "20260101-000000-abbb", tmp_path)
        start(ledger, "20260202-000000-cccc", tmp_path)
        assert ledger.find_run("20260202").id == "20260202-000000-cccc"
        assert ledger.find_run("20260101-000000-ab").id == "20260101-000000-abbb"
        with pytest.raises(RunError, match="matches 2 runs"):
            ledger.find_run("20260101")
        with pytest.raises(RunError, match="no run matches"):
            ledger.find_run("2027")


def test_no_runs_yet(tmp_path: Path) -> None:
    with Ledger(tmp_path) as ledger, pytest.raises(RunError, match="no runs"):
        ledger.find_run("last")


def test_schedule_fires(tmp_path: Path) -> None:
    with Ledger(tmp_path) as ledger:
        assert ledger.last_fire("nightly") is None
        ledger.record_fire("nightly", 1000.0, 1001.0, "started", "r1")
        ledger.record_fire("nightly", 2000.0, 2000.5, "skipped", None, detail="overlap")
        ledger.record_fire("other", 5000.0, 5000.0, "started", "r2")
        assert ledger.last_fire("nightly") == 2000.0
        assert [f["action"] for f in ledger.fires("nightly")] == ["started", "skipped"]


def test_concurrent_writers(tmp_path: Path) -> None:
    """Two processes' worth of connections writing at once: nothing lost, no 'database is locked'."""
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            with Ledger(tmp_path) as ledger:
                run_id = f"run-{n}"
                start(ledger, run_id, tmp_path)
                for i in range(50):
                    ledger.upsert_unit(run_id, f"s{i}", f"s{i}", status="success")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with Ledger(tmp_path) as ledger:
        assert sorted(len(ledger.units(f"run-{n}")) for n in range(4)) == [50] * 4


def test_unreadable_ledger_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / ".bridge").mkdir()
    (tmp_path / ".bridge" / "ledger.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(RunError, match="Move the file aside"):
        Ledger(tmp_path)


def test_a_ledger_of_an_older_bridge_gets_the_new_columns(tmp_path: Path) -> None:
    """A version-2 ledger (no stages.loop_id / iterations) is upgraded in place when opened, rows kept."""
    import sqlite3

    from bridge.ledger_schema import SCHEMA, SCHEMA_VERSION

    path = tmp_path / ".bridge" / "ledger.db"
    path.parent.mkdir(parents=True)
    old = SCHEMA.replace("    loop_id TEXT,\n    iterations INTEGER,\n", "")
    assert old != SCHEMA
    db = sqlite3.connect(path)
    db.executescript(old + "PRAGMA user_version = 2;")
    db.execute("INSERT INTO runs (id, playbook, playbook_path, project, status, started) "
               "VALUES ('r1', 'pb', '/pb.yaml', '/p', 'success', 1.0)")
    db.execute("INSERT INTO stages (run_id, key, stage_id, status) VALUES ('r1', 'a', 'a', 'success')")
    db.commit()
    db.close()
    with Ledger(tmp_path) as ledger:
        (unit,) = ledger.units("r1")
        assert unit.key == "a" and unit.loop_id is None and not unit.is_loop
        ledger.upsert_unit("r1", "fix", "fix", status="failure", iterations=2)
        ledger.upsert_unit("r1", "impl@1", "impl", status="success", iteration=1, loop_id="fix")
        assert ledger.unit("r1", "fix").is_loop and ledger.unit("r1", "impl@1").loop_id == "fix"  # type: ignore
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
