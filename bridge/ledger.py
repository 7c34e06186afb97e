"""The run ledger (.bridge/ledger.db): one method per question or change, each one short transaction.

The file, its tables and its row types are bridge.ledger_schema's.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import fields
from pathlib import Path
from typing import Any, Iterator

from bridge.errors import RunError
from bridge.ledger_schema import AttemptRow, RunRow, UnitRow, open_db, row

# a run's tokens and cost are always the sum of what its attempts recorded: read so, whatever the
# runs row says (a bridge killed before its end never wrote them there)
_TOKENS = "(SELECT COALESCE(SUM(a.input_tokens + a.output_tokens), 0) FROM attempts a WHERE a.run_id = runs.id)"
_COST = "(SELECT COALESCE(SUM(a.cost_usd), 0.0) FROM attempts a WHERE a.run_id = runs.id)"
RUNS = ("SELECT " + ", ".join(f.name for f in fields(RunRow) if f.name not in ("tokens", "cost_usd"))
        + f", {_TOKENS} AS tokens, {_COST} AS cost_usd FROM runs")


class Ledger:
    """One connection to .bridge/ledger.db; every write is its own short transaction."""

    def __init__(self, project_dir: Path, *, timeout: float = 30.0) -> None:
        self.path = Path(project_dir) / ".bridge" / "ledger.db"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = open_db(self.path, timeout)
        except sqlite3.DatabaseError as exc:
            raise RunError(f"cannot open the run ledger {self.path}: {exc}. "
                           "Move the file aside to start a fresh ledger.") from exc

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def _exec(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, args)

    def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # runs -----------------------------------------------------------------------------------
    def start_run(self, run_id: str, playbook: str, playbook_path: Path, project: Path, *,
                  vars: dict[str, Any], options: dict[str, Any], pid: int,
                  trigger: str | None = None) -> None:
        try:
            self._exec(
                "INSERT INTO runs (id, playbook, playbook_path, project, status, started, pid, vars_json,"
                " options_json, trigger) VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?, ?)",
                (run_id, playbook, str(playbook_path), str(project), time.time(), pid,
                 json.dumps(vars, default=str), json.dumps(options, default=str), trigger),
            )
        except sqlite3.IntegrityError:
            raise RunError(f"run {run_id} already exists in the ledger; a new run needs a new id") from None

    def reopen_run(self, run_id: str, pid: int) -> None:
        """A resumed run: running again, driven by this process."""
        self._exec("UPDATE runs SET status = 'running', reason = '', ended = NULL, pid = ? WHERE id = ?",
                   (pid, run_id))

    def finish_run(self, run_id: str, status: str, reason: str, *, tokens: int, cost_usd: float) -> None:
        self._exec("UPDATE runs SET status = ?, reason = ?, ended = ?, tokens = ?, cost_usd = ?"
                   " WHERE id = ?", (status, reason, time.time(), tokens, cost_usd, run_id))

    def mark_run(self, run_id: str, status: str, reason: str, *, ended: float | None = None) -> None:
        """Set a run's status from outside its bridge (`bridge cancel` of a run whose bridge is gone):
        it ended at `ended` (default: now) unless an end is recorded; its totals are its attempts'."""
        self._exec(f"UPDATE runs SET status = ?, reason = ?, ended = COALESCE(ended, ?), tokens = {_TOKENS},"
                   f" cost_usd = {_COST} WHERE id = ?", (status, reason, ended or time.time(), run_id))

    def last_recorded(self, run_id: str) -> float | None:
        """When the run last recorded anything (a unit, an attempt, an event): where a killed run ended."""
        rows = self._all(
            "SELECT MAX(t) AS t FROM (SELECT MAX(MAX(started, COALESCE(ended, 0))) AS t FROM attempts WHERE run_id = ?"
            " UNION ALL SELECT MAX(MAX(COALESCE(started, 0), COALESCE(ended, 0))) FROM stages WHERE run_id = ?"
            " UNION ALL SELECT MAX(t) FROM events WHERE run_id = ?"
            " UNION ALL SELECT started FROM runs WHERE id = ?)", (run_id, run_id, run_id, run_id))
        return rows[0]["t"] if rows else None

    def run(self, run_id: str) -> RunRow | None:
        rows = self._all(f"{RUNS} WHERE id = ?", (run_id,))
        return row(RunRow, rows[0]) if rows else None

    def runs(self, limit: int = 20) -> list[RunRow]:
        rows = self._all(f"{RUNS} ORDER BY started DESC, id DESC LIMIT ?", (limit,))
        return [row(RunRow, r) for r in rows]

    def find_run(self, ref: str) -> RunRow:
        """A run by id, unique id prefix, or `last`; raises RunError naming the choices."""
        if ref == "last":
            rows = self._all(f"{RUNS} ORDER BY started DESC, id DESC LIMIT 1")
            if not rows:
                raise RunError("there are no runs in this project yet; start one with `bridge run PLAYBOOK`")
            return row(RunRow, rows[0])
        rows = self._all(f"{RUNS} WHERE substr(id, 1, ?) = ? ORDER BY started DESC",
                         (len(ref), ref))
        exact = [r for r in rows if r["id"] == ref]
        if exact:
            return row(RunRow, exact[0])
        if not rows:
            raise RunError(f"no run matches {ref!r}; `bridge runs` lists them")
        if len(rows) > 1:
            ids = ", ".join(r["id"] for r in rows[:5])
            raise RunError(f"{ref!r} matches {len(rows)} runs ({ids}); give more of the id")
        return row(RunRow, rows[0])

    # units (stages, matrix items, loop iterations) -------------------------------------------
    def upsert_unit(self, run_id: str, key: str, stage_id: str, *, status: str,
                    iteration: int | None = None, matrix: dict[str, Any] | None = None,
                    **values: Any) -> None:
        """Create or update one unit's row; `values` are column names of `stages`."""
        cols = {"status": status, **values}
        sets = ", ".join(f"{c} = excluded.{c}" for c in cols)
        names = ["run_id", "key", "stage_id", "iteration", "matrix_json", *cols]
        args = (run_id, key, stage_id, iteration, json.dumps(matrix or {}, default=str), *cols.values())
        self._exec(f"INSERT INTO stages ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
                   f" ON CONFLICT (run_id, key) DO UPDATE SET {sets}", args)

    def update_unit(self, run_id: str, key: str, **values: Any) -> None:
        """Set columns of an existing unit row (e.g. handoff_bytes, the latest attempt's)."""
        sets = ", ".join(f"{c} = ?" for c in values)
        self._exec(f"UPDATE stages SET {sets} WHERE run_id = ? AND key = ?", (*values.values(), run_id, key))

    def units(self, run_id: str) -> list[UnitRow]:
        rows = self._all("SELECT * FROM stages WHERE run_id = ? ORDER BY started IS NULL, started, key",
                         (run_id,))
        return [row(UnitRow, r) for r in rows]

    def unit(self, run_id: str, key: str) -> UnitRow | None:
        rows = self._all("SELECT * FROM stages WHERE run_id = ? AND key = ?", (run_id, key))
        return row(UnitRow, rows[0]) if rows else None

    # attempts -----------------------------------------------------------------------------
    def start_attempt(self, run_id: str, key: str, n: int, *, dir: Path | None = None) -> int:
        cur = self._exec("INSERT INTO attempts (run_id, key, n, status, started, dir)"
                         " VALUES (?, ?, ?, 'running', ?, ?)",
                         (run_id, key, n, time.time(), str(dir) if dir else None))
        return int(cur.lastrowid or 0)

    def update_attempt(self, attempt_id: int, **values: Any) -> None:
        """Set columns of one attempt (pid, pgid, argv_json, session_id, ...)."""
        if "argv" in values:
            values["argv_json"] = json.dumps(list(values.pop("argv")))
        sets = ", ".join(f"{c} = ?" for c in values)
        self._exec(f"UPDATE attempts SET {sets} WHERE id = ?", (*values.values(), attempt_id))

    def finish_attempt(self, attempt_id: int, status: str, **values: Any) -> None:
        self.update_attempt(attempt_id, status=status, ended=time.time(), **values)

    def attempts(self, run_id: str, key: str | None = None) -> list[AttemptRow]:
        if key is None:
            rows = self._all("SELECT * FROM attempts WHERE run_id = ? ORDER BY id", (run_id,))
        else:
            rows = self._all("SELECT * FROM attempts WHERE run_id = ? AND key = ? ORDER BY id",
                             (run_id, key))
        return [row(AttemptRow, r) for r in rows]

    def attempt_totals(self, run_id: str) -> dict[str, tuple[int, int, float]]:
        """Per unit key: its highest attempt number, and the tokens and cost of all its attempts."""
        rows = self._all("SELECT key, MAX(n) AS n, SUM(input_tokens + output_tokens) AS tokens,"
                         " SUM(COALESCE(cost_usd, 0)) AS cost FROM attempts WHERE run_id = ? GROUP BY key",
                         (run_id,))
        return {r["key"]: (int(r["n"]), int(r["tokens"] or 0), float(r["cost"] or 0.0)) for r in rows}

    def attempt_time(self, run_id: str) -> dict[str, float]:
        """Per unit key: the time its ended attempts ran, all of them (retries and resumed sessions too)."""
        rows = self._all("SELECT key, SUM(ended - started) AS t FROM attempts WHERE run_id = ? AND ended IS NOT NULL"
                         " GROUP BY key", (run_id,))
        return {r["key"]: float(r["t"] or 0.0) for r in rows}

    def open_attempts(self, run_id: str) -> list[AttemptRow]:
        """Attempts still marked running: after a crash, their process groups may have survived."""
        rows = self._all("SELECT * FROM attempts WHERE run_id = ? AND status = 'running' ORDER BY id",
                         (run_id,))
        return [row(AttemptRow, r) for r in rows]

    # artifacts and events ------------------------------------------------------------------
    def add_artifact(self, run_id: str, key: str, path: str, size: int, sha256: str) -> None:
        self._exec("INSERT OR REPLACE INTO artifacts (run_id, key, path, size, sha256, recorded)"
                   " VALUES (?, ?, ?, ?, ?, ?)", (run_id, key, path, size, sha256, time.time()))

    def artifacts(self, run_id: str, key: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM artifacts WHERE run_id = ?" + (" AND key = ?" if key else "") + " ORDER BY path"
        return [dict(r) for r in self._all(sql, (run_id, key) if key else (run_id,))]

    def add_event(self, run_id: str, name: str, data: dict[str, Any]) -> None:
        self._exec("INSERT INTO events (run_id, t, name, json) VALUES (?, ?, ?, ?)",
                   (run_id, time.time(), name, json.dumps(data, default=str)))

    def events(self, run_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        for r in self._all("SELECT name, json FROM events WHERE run_id = ? ORDER BY id", (run_id,)):
            yield r["name"], json.loads(r["json"])

    # worktrees and landing (bridge.mergeback) ----------------------------------------------
    def upsert_worktree(self, run_id: str, key: str, stage_id: str, **values: Any) -> None:
        """Create or update a unit's worktree row; `values` are column names of `worktrees`."""
        if "conflicts" in values:
            values["conflicts_json"] = json.dumps(list(values.pop("conflicts")))
        cols = {**values, "updated": time.time()}
        sets = ", ".join(f"{c} = excluded.{c}" for c in cols)
        names = ["run_id", "key", "stage_id", *cols]
        self._exec(f"INSERT INTO worktrees ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
                   f" ON CONFLICT (run_id, key) DO UPDATE SET {sets}", (run_id, key, stage_id, *cols.values()))

    def worktrees(self, run_id: str) -> list[dict[str, Any]]:
        rows = self._all("SELECT * FROM worktrees WHERE run_id = ? ORDER BY key", (run_id,))
        return [{**dict(r), "conflicts": json.loads(r["conflicts_json"])} for r in rows]

    def set_landing(self, run_id: str, *, landed: bool, branch: str | None, integration_branch: str,
                    commit: str | None, message: str, files: tuple[str, ...] = ()) -> None:
        self._exec("INSERT OR REPLACE INTO landings (run_id, landed, branch, integration_branch, commit_sha,"
                   " message, files_json, t) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   (run_id, int(landed), branch, integration_branch, commit, message,
                    json.dumps(list(files)), time.time()))

    def landing(self, run_id: str) -> dict[str, Any] | None:
        rows = self._all("SELECT * FROM landings WHERE run_id = ?", (run_id,))
        return {**dict(rows[0]), "files": json.loads(rows[0]["files_json"])} if rows else None

    # schedule fires (for bridge.scheduler) ---------------------------------------------------
    def record_fire(self, playbook: str, scheduled_for: float, fired_at: float, action: str,
                    run_id: str | None, detail: str = "") -> None:
        self._exec("INSERT INTO schedule_fires (playbook, scheduled_for, fired_at, action, run_id, detail)"
                   " VALUES (?, ?, ?, ?, ?, ?)", (playbook, scheduled_for, fired_at, action, run_id, detail))

    def last_fire(self, playbook: str) -> float | None:
        """The latest scheduled time that fired (or was deliberately skipped) for a playbook."""
        rows = self._all("SELECT MAX(scheduled_for) AS t FROM schedule_fires WHERE playbook = ?", (playbook,))
        return rows[0]["t"] if rows and rows[0]["t"] is not None else None

    def fires(self, playbook: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self._all(
            "SELECT * FROM schedule_fires WHERE playbook = ? ORDER BY scheduled_for, id", (playbook,))]
