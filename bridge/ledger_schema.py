"""The run ledger's SQLite file: its tables, their Python rows, and opening it (WAL, schema set up).

WAL mode with synchronous=NORMAL survives the writer being SIGKILLed at any moment (only a power
loss can drop the last commits), and lets `bridge runs` read while a run writes. The questions and
changes are bridge.ledger's.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 3  # 2: worktrees and landings (new tables only); 3: stages.loop_id and stages.iterations

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    playbook TEXT NOT NULL,
    playbook_path TEXT NOT NULL,
    project TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    started REAL NOT NULL,
    ended REAL,
    pid INTEGER,
    vars_json TEXT NOT NULL DEFAULT '{}',
    options_json TEXT NOT NULL DEFAULT '{}',
    tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    trigger TEXT
);
CREATE TABLE IF NOT EXISTS stages (
    run_id TEXT NOT NULL REFERENCES runs(id),
    key TEXT NOT NULL,
    stage_id TEXT NOT NULL,
    iteration INTEGER,
    matrix_json TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    started REAL,
    ended REAL,
    tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    final_message TEXT NOT NULL DEFAULT '',
    summary TEXT NOT NULL DEFAULT '',
    session_id TEXT,
    handoff_bytes INTEGER NOT NULL DEFAULT 0,
    loop_id TEXT,
    iterations INTEGER,
    PRIMARY KEY (run_id, key)
);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    n INTEGER NOT NULL,
    status TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    argv_json TEXT NOT NULL DEFAULT '[]',
    session_id TEXT,
    pid INTEGER,
    pgid INTEGER,
    exit_code INTEGER,
    ended_by TEXT,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cached_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL,
    error TEXT,
    reason TEXT NOT NULL DEFAULT '',
    handoff_bytes INTEGER NOT NULL DEFAULT 0,
    upstream_transcript_bytes INTEGER NOT NULL DEFAULT 0,
    dir TEXT,
    stdout_path TEXT,
    stderr_path TEXT
);
CREATE INDEX IF NOT EXISTS attempts_by_unit ON attempts (run_id, key, n);
CREATE TABLE IF NOT EXISTS artifacts (
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    recorded REAL NOT NULL,
    PRIMARY KEY (run_id, key, path)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    t REAL NOT NULL,
    name TEXT NOT NULL,
    json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS schedule_fires (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    playbook TEXT NOT NULL,
    scheduled_for REAL NOT NULL,
    fired_at REAL NOT NULL,
    action TEXT NOT NULL,
    run_id TEXT,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS fires_by_playbook ON schedule_fires (playbook, scheduled_for);
CREATE TABLE IF NOT EXISTS worktrees (
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    stage_id TEXT NOT NULL,
    branch TEXT NOT NULL,
    path TEXT NOT NULL,
    base TEXT NOT NULL,
    status TEXT NOT NULL,
    commit_sha TEXT,
    strategy TEXT,
    merged_commit TEXT,
    conflicts_json TEXT NOT NULL DEFAULT '[]',
    message TEXT NOT NULL DEFAULT '',
    updated REAL NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE TABLE IF NOT EXISTS landings (
    run_id TEXT PRIMARY KEY,
    landed INTEGER NOT NULL,
    branch TEXT,
    integration_branch TEXT NOT NULL,
    commit_sha TEXT,
    message TEXT NOT NULL,
    files_json TEXT NOT NULL DEFAULT '[]',
    t REAL NOT NULL
);
"""


# columns added to tables of an older ledger when it is opened (table, column, declaration)
ADDED_COLUMNS = (
    ("stages", "loop_id", "TEXT"),  # a loop member's unit: the loop's id (3)
    ("stages", "iterations", "INTEGER"),  # a loop's own row: the iterations it ran; NULL for a unit (3)
)


@dataclass(frozen=True)
class RunRow:
    id: str
    playbook: str
    playbook_path: str
    project: str
    status: str
    reason: str
    started: float
    ended: float | None
    pid: int | None
    vars_json: str
    options_json: str
    tokens: int
    cost_usd: float
    trigger: str | None

    @property
    def vars(self) -> dict[str, Any]:
        return json.loads(self.vars_json)

    @property
    def options(self) -> dict[str, Any]:
        return json.loads(self.options_json)


@dataclass(frozen=True)
class UnitRow:
    run_id: str
    key: str
    stage_id: str
    iteration: int | None
    matrix_json: str
    status: str
    reason: str
    error: str | None
    attempts: int
    started: float | None
    ended: float | None
    tokens: int
    cost_usd: float
    final_message: str
    summary: str
    session_id: str | None
    handoff_bytes: int
    loop_id: str | None = None  # the loop a member's unit belongs to
    iterations: int | None = None  # set on a loop stage's own row only: the iterations it ran

    @property
    def matrix(self) -> dict[str, Any]:
        return json.loads(self.matrix_json)

    @property
    def is_loop(self) -> bool:
        return self.iterations is not None


@dataclass(frozen=True)
class AttemptRow:
    id: int
    run_id: str
    key: str
    n: int
    status: str
    started: float
    ended: float | None
    argv_json: str
    session_id: str | None
    pid: int | None
    pgid: int | None
    exit_code: int | None
    ended_by: str | None
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_usd: float | None
    error: str | None
    reason: str
    handoff_bytes: int
    upstream_transcript_bytes: int
    dir: str | None
    stdout_path: str | None
    stderr_path: str | None

    @property
    def argv(self) -> list[str]:
        return json.loads(self.argv_json)


def row(cls: type, values: sqlite3.Row) -> Any:
    """One table row as its frozen dataclass (RunRow, UnitRow, AttemptRow)."""
    return cls(**{f.name: values[f.name] for f in fields(cls)})


def open_db(path: Path, timeout: float) -> sqlite3.Connection:
    """Connect in autocommit mode (each statement its own transaction), WAL on, the schema in place."""
    db = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    db.row_factory = sqlite3.Row
    db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
    _setup(db, timeout)
    return db


def _setup(db: sqlite3.Connection, timeout: float) -> None:
    """WAL mode and the schema. Two bridges may open a new ledger at once: SQLite does not call
    the busy handler for some lock upgrades (it reports 'locked' at once), so retry here."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                db.executescript(f"BEGIN IMMEDIATE; {SCHEMA} COMMIT;")
                _add_columns(db)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            return
        except sqlite3.OperationalError as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _add_columns(db: sqlite3.Connection) -> None:
    """ADDED_COLUMNS a ledger written by an older bridge lacks (another bridge may add them meanwhile)."""
    for table, column, decl in ADDED_COLUMNS:
        if column in {r[1] for r in db.execute(f"PRAGMA table_info({table})")}:
            continue
        try:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):
                raise
