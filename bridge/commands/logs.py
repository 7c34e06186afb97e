"""`bridge logs RUN STAGE [--follow]`: a stage's agent output (stdout then stderr), secrets masked."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from bridge.ledger import Ledger

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
        units = units_for(ledger, run_row, stage)
        if not follow:
            for unit in units:
                for n, stdout, stderr in _paths(ledger, run_row.id, unit.key):
                    out.write(f"==> {unit.key} attempt {n}: {stdout} <==\n")
                    if stdout.exists():
                        out.write(redact(stdout.read_text(errors="replace")))
                    if stderr.exists() and stderr.stat().st_size:
                        out.write(f"==> {unit.key} attempt {n}: {stderr} <==\n")
                        out.write(redact(stderr.read_text(errors="replace")))
            out.flush()
            return 0
        key = units[0].key
        offsets: dict[Path, int] = {}
        while True:
            unit = ledger.unit(run_row.id, key)
            for n, stdout, _ in _paths(ledger, run_row.id, key):
                if stdout not in offsets:
                    offsets[stdout] = 0
                    out.write(f"==> {key} attempt {n} <==\n")
                if stdout.exists():
                    with open(stdout, errors="replace") as fh:
                        fh.seek(offsets[stdout])
                        chunk = fh.read()
                        # only whole lines: a half-written line is printed when it is complete
                        cut = chunk.rfind("\n") + 1
                        if cut:
                            out.write(redact(chunk[:cut]))
                            offsets[stdout] += len(chunk[:cut].encode())
            out.flush()
            run_now = ledger.run(run_row.id)
            if (unit is not None and unit.status in DONE) or (run_now is not None and run_now.status != "running"):
                return 0
            time.sleep(POLL)
