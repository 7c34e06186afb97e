"""`bridge show RUN [STAGE]`: a run's stages, or one stage's prompt, final message, usage and logs."""

from __future__ import annotations

import time
from pathlib import Path

from bridge.errors import RunError
from bridge.ledger import Ledger
from bridge.ledger_schema import AttemptRow, RunRow, UnitRow

PROMPT_HEAD = 40  # lines of the prompt shown


def units_for(ledger: Ledger, run: RunRow, stage: str) -> list[UnitRow]:
    """The units a STAGE argument names: a unit key exactly, else every unit of that stage id."""
    units = ledger.units(run.id)
    exact = [u for u in units if u.key == stage]
    found = exact or [u for u in units if u.stage_id == stage]
    if not found:
        keys = ", ".join(u.key for u in units) or "none yet"
        raise RunError(f"run {run.id} has no stage {stage!r}; its stages: {keys}")
    return found


def _stamp(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _run(ledger: Ledger, run: RunRow, project: Path) -> None:
    from bridge.commands.runs import live_status, run_end
    from bridge.ui import duration, money, print_run_table, print_text, tokens
    from bridge.workspace import RunLayout

    layout = RunLayout(project, run.id)
    status = live_status(run, project)
    end = run_end(ledger, run, status)
    lines = [f"run       {run.id}", f"playbook  {run.playbook} ({run.playbook_path})",
             f"status    {status}" + (f": {run.reason}" if run.reason else ""),
             f"started   {_stamp(run.started)}   duration {duration(end - run.started)}",
             f"usage     {tokens(run.tokens)} tokens, {money(run.cost_usd)}",
             f"folder    {layout.run_dir}"]
    snapshots = [data for name, data in ledger.events(run.id) if name == "tasks"]
    if snapshots:
        last = snapshots[-1]
        lines.append(f"tasks     {last['done']}/{last['total']} done, {last['open']} open")
    if layout.summary.exists():
        lines.append(f"summary   {layout.summary}")
    lines += _git_lines(ledger, run)
    print_text("\n".join(lines))
    rows = []
    for u in ledger.units(run.id):
        took = duration(u.ended - u.started) if u.ended and u.started else ""
        rows.append([u.key, u.status, str(u.attempts or ""), took, tokens(u.tokens), money(u.cost_usd),
                     u.reason[:80]])
    if rows:
        print_run_table("stages", ["stage", "status", "attempts", "duration", "tokens", "cost", "reason"], rows)


def _git_lines(ledger: Ledger, run: RunRow) -> list[str]:
    """The run's base, each worktree's branch and fate, and the landing on the user's branch."""
    base = run.options.get("base")
    lines = []
    if base:
        where = f"branch {base['branch']}" if base.get("branch") else "a detached HEAD"
        dirty = f" (uncommitted changes left out: {len(base.get('dirty_files') or [])} file(s))" \
            if base.get("dirty") else ""
        lines.append(f"base      {base['commit'][:12]} on {where}{dirty}")
    for wt in ledger.worktrees(run.id):
        conflicts = f" in {', '.join(wt['conflicts'])}" if wt["conflicts"] else ""
        lines.append(f"branch    {wt['branch']}: {wt['status']}{conflicts}")
    landing = ledger.landing(run.id)
    if landing:
        lines.append(f"landing   {'landed' if landing['landed'] else 'not landed'}: {landing['message']}")
    return lines


def _unit(ledger: Ledger, run: RunRow, unit: UnitRow) -> None:
    from bridge.ui import money, print_text, tokens

    attempts: list[AttemptRow] = ledger.attempts(run.id, unit.key)
    last = attempts[-1] if attempts else None
    lines = [f"stage     {unit.key}" + (f" (matrix {unit.matrix})" if unit.matrix else "")
             + (f" (iteration {unit.iteration})" if unit.iteration else ""),
             f"status    {unit.status}" + (f" [{unit.error}]" if unit.error else "")
             + (f": {unit.reason}" if unit.reason else ""),
             f"attempts  {unit.attempts}", f"usage     {tokens(unit.tokens)} tokens, {money(unit.cost_usd)}"]
    if unit.session_id:
        lines.append(f"session   {unit.session_id}")
    if last is not None:
        lines += [f"argv      {' '.join(last.argv)[:300]}",
                  f"exit      {last.exit_code} ({last.ended_by})" if last.ended_by else "exit      -",
                  f"hand-off  {last.handoff_bytes} bytes of upstream text in the prompt; upstream transcripts "
                  f"{last.upstream_transcript_bytes} bytes"]
        if last.dir:
            lines += [f"folder    {last.dir}", f"stdout    {last.stdout_path or Path(last.dir) / 'stdout.jsonl'}",
                      f"stderr    {last.stderr_path or Path(last.dir) / 'stderr.log'}"]
    for art in ledger.artifacts(run.id, unit.key):
        lines.append(f"output    {art['path']} ({art['size']} bytes, sha256 {art['sha256'][:12]})")
    print_text("\n".join(lines))
    if last is not None and last.dir and (Path(last.dir) / "prompt.md").exists():
        prompt = (Path(last.dir) / "prompt.md").read_text(errors="replace").splitlines()
        more = f"\n[… {len(prompt) - PROMPT_HEAD} more lines]" if len(prompt) > PROMPT_HEAD else ""
        print_text("\n--- prompt ---\n" + "\n".join(prompt[:PROMPT_HEAD]) + more)
    if unit.final_message:
        print_text("\n--- final message ---\n" + unit.final_message)


def run(run_id: str, stage: str | None, directory: Path | None) -> int:
    project = (directory or Path.cwd()).resolve()
    with Ledger(project) as ledger:
        run_row = ledger.find_run(run_id)
        if stage is None:
            _run(ledger, run_row, project)
        else:
            for unit in units_for(ledger, run_row, stage):
                _unit(ledger, run_row, unit)
    return 0
