"""`bridge clean [--dry-run] [RUN]`: remove what finished runs left in git, keep unmerged work.

RUN is an id, a unique prefix of one, or `last`, as `bridge show` takes it."""

from __future__ import annotations

import os
from pathlib import Path

from bridge.cleanup import clean
from bridge.worktrees import BRANCH_PREFIX, open_repo, run_folders, run_git


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _run_ids(root: Path) -> set[str]:
    repo = open_repo(root)
    refs = run_git(repo, "for-each-ref", "--format=%(refname:short)",
                   f"refs/heads/{BRANCH_PREFIX}/")
    ids = {r.split("/")[1] for r in refs.splitlines() if r.count("/") >= 2}
    return ids | run_folders(root)


def finished_runs(root: Path) -> set[str]:
    """Runs whose worktrees may go: not marked running in the ledger by a process still alive.

    A run the ledger does not know (its database deleted) counts as finished; a run marked running
    whose process died (a crash) counts as finished too.
    """
    ids = _run_ids(root)
    if not (root / ".bridge" / "ledger.db").exists():
        return ids
    from bridge.ledger import Ledger

    with Ledger(root) as ledger:
        live = set()
        for run_id in ids:
            row = ledger.run(run_id)
            if row is not None and row.status == "running" and _alive(row.pid):
                live.add(run_id)
    return ids - live


def resolve_run(root: Path, ref: str) -> str:
    """RUN as `bridge show` takes it (an id, a unique prefix, `last`) through the ledger; an exact id
    the ledger does not know (its database deleted) still names what git holds of that run."""
    if not (root / ".bridge" / "ledger.db").exists():
        return ref
    from bridge.errors import RunError
    from bridge.ledger import Ledger

    with Ledger(root) as ledger:
        try:
            return ledger.find_run(ref).id
        except RunError:
            if ref in _run_ids(root):
                return ref
            raise


def run(run_id: str | None = None, dry_run: bool = False, directory: Path | None = None) -> int:
    from bridge.ui import print_clean_report

    root = Path(open_repo(directory or Path.cwd()).working_tree_dir or ".").resolve()
    if run_id is not None:
        run_id = resolve_run(root, run_id)
    report = clean(root, run_id=run_id, dry_run=dry_run, finished_runs=finished_runs(root))
    print_clean_report(report)
    return 0
