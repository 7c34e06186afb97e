"""`bridge logs RUN STAGE [--follow]`: a stage's agent output (stdout then stderr), secrets masked.

With --follow, a stage that has not started yet is waited for while the run is live; a STAGE that
names several units (a matrix or loop stage id) follows all of them, each line prefixed `[KEY] `.
An interactive attempt's output is a terminal's: it is shown as the screen read (bridge.screen),
with --follow each row as it is drawn anew, never as escape sequences.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, TextIO

from bridge.errors import RunError
from bridge.ledger import Ledger
from bridge.ledger_schema import RunRow, UnitRow
from bridge.screen import Terminal, screen_text

POLL = 0.2
DONE = ("success", "failure", "skipped", "cancelled")


def _paths(ledger: Ledger, run_id: str, key: str) -> list[tuple[int, Path, Path]]:
    out = []
    for a in ledger.attempts(run_id, key):
        base = Path(a.dir) if a.dir else None
        out_p = Path(a.stdout_path) if a.stdout_path else (base / "stdout.jsonl" if base else None)
        err_p = Path(a.stderr_path) if a.stderr_path else (base / "stderr.log" if base else None)
        if out_p is not None and err_p is not None:
            out.append((a.n, out_p, err_p))
    return out


def run(run_id: str, stage: str, follow: bool, directory: Path | None) -> int:
    from bridge.commands.show import units_for
    from bridge.redact import Redactor

    redact = Redactor.for_env()
    project = (directory or Path.cwd()).resolve()
    out = sys.stdout
    with Ledger(project) as ledger:
        run_row = ledger.find_run(run_id)
        if follow:
            return _follow(ledger, run_row, stage, out, redact)
        for unit in units_for(ledger, run_row, stage, members=True):
            for n, stdout, stderr in _paths(ledger, run_row.id, unit.key):
                out.write(f"==> {unit.key} attempt {n}: {stdout} <==\n")
                if stdout.exists() and _terminal(stdout):
                    out.write(redact(screen_text(_raw(stdout))) + "\n")
                elif stdout.exists():
                    out.write(redact(stdout.read_text(errors="replace")))
                if stderr.exists() and stderr.stat().st_size:
                    out.write(f"==> {unit.key} attempt {n}: {stderr} <==\n")
                    out.write(redact(stderr.read_text(errors="replace")))
        out.flush()
        return 0


def _terminal(stdout: Path) -> bool:
    """Whether the attempt ran in a terminal (its argv.json says interactive)."""
    try:
        return bool(json.loads((stdout.parent / "argv.json").read_text()).get("interactive"))
    except (OSError, ValueError, AttributeError):
        return False


def _raw(path: Path, start: int = 0) -> str:
    """Terminal output as written ("\r" kept: text mode would make each one a new line)."""
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        fh.seek(start)
        return fh.read()


def _live(ledger: Ledger, run_id: str) -> bool:
    """Marked running by a bridge process that still exists (a killed bridge's run is not live)."""
    row = ledger.run(run_id)
    if row is None or row.status != "running" or not row.pid:
        return False
    try:
        os.kill(row.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _expected(run_row: RunRow, stage: str) -> tuple[set[str] | None, set[str] | None]:
    """From the run's playbook: the names STAGE may be (stage ids, their once-per-run unit keys) and,
    for a stage id run once per run (not in a loop), all its unit keys; None where it cannot say."""
    from bridge import dag
    from bridge.loader import load_playbook
    from bridge.playbook import iter_stages, matrix_items
    from bridge.views import unit_key

    try:
        playbook = load_playbook(Path(run_row.playbook_path), run_row.vars, project=Path(run_row.project))
    except Exception:  # edited or removed since: follow without the checks it allows
        return None, None
    places, resolvers = dag.places(playbook), dag.resolvers(playbook)
    names: set[str] = set()
    keys_of: dict[str, set[str]] = {}
    for sid, st in [*iter_stages(playbook.stages), *iter_stages(playbook.finally_)]:
        keys = {unit_key(sid, item, None) for item in matrix_items(st.matrix)}
        names |= {sid, *keys}
        if st.loop is None and not places[sid].loop and sid not in resolvers:
            keys_of[sid] = keys
    return names, keys_of.get(stage)


def _follow(ledger: Ledger, run_row: RunRow, stage: str, out: TextIO, redact: Callable[[str], str]) -> int:
    from bridge.commands.show import units_for

    names, expected = _expected(run_row, stage)
    if names is not None and stage not in names and stage.split("@")[0] not in names:
        raise RunError(f"run {run_row.id}'s playbook has no stage {stage!r}; its stages: "
                       f"{', '.join(sorted(names))}")
    offsets: dict[Path, int] = {}
    screens: dict[Path, Terminal] = {}  # an interactive attempt's output played on an emulator
    while True:
        live = _live(ledger, run_row.id)  # before reading: output written until the end is still read
        try:
            units: list[UnitRow] = units_for(ledger, run_row, stage, members=True)
        except RunError:
            if not live:
                raise
            units = []  # not started yet: wait for it while the run goes on
        exact = len(units) == 1 and units[0].key == stage
        for unit in units:
            _copy_new(ledger, run_row.id, unit.key, "" if exact else f"[{unit.key}] ", offsets, out, redact,
                      screens)
        out.flush()
        if not live:
            return 0
        covered = exact or (expected is not None and expected <= {u.key for u in units})
        if units and covered and all(u.status in DONE for u in units):
            return 0
        time.sleep(POLL)


def _copy_new(ledger: Ledger, run_id: str, key: str, prefix: str, offsets: dict[Path, int], out: TextIO,
              redact: Callable[[str], str], screens: dict[Path, Terminal]) -> None:
    for n, stdout, _ in _paths(ledger, run_id, key):
        if stdout not in offsets:
            offsets[stdout] = 0
            out.write(f"==> {key} attempt {n} <==\n")
        if not stdout.exists():
            continue
        if stdout in screens or _terminal(stdout):  # rows as the screen draws them anew
            term = screens.setdefault(stdout, Terminal())
            chunk = _raw(stdout, offsets[stdout])
            offsets[stdout] += len(chunk.encode())
            term.feed(chunk)
            text = redact(term.changed())
        else:
            with open(stdout, errors="replace") as fh:
                fh.seek(offsets[stdout])
                chunk = fh.read()
            # only whole lines: a half-written line is printed when it is complete
            cut = chunk.rfind("\n") + 1
            text = redact(chunk[:cut])
            offsets[stdout] += len(chunk[:cut].encode())
        if text:
            out.write("".join(prefix + line for line in text.splitlines(keepends=True)) if prefix else text)
