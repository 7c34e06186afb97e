"""`bridge show RUN [STAGE]`: a run's stages, or one stage's prompt, final message, usage and logs."""

from __future__ import annotations

import time
from pathlib import Path

from bridge.errors import RunError
from bridge.ledger import Ledger
from bridge.ledger_schema import AttemptRow, RunRow, UnitRow

PROMPT_HEAD = 40  # lines of the prompt shown


def units_for(ledger: Ledger, run: RunRow, stage: str, members: bool = False) -> list[UnitRow]:
    """The units a STAGE argument names: a unit key exactly, else every unit of that stage id.
    members=True: a loop's id names its members' units (the loop's own row has no attempts)."""
    units = ledger.units(run.id)
    exact = [u for u in units if u.key == stage]
    if members and exact and exact[0].iterations is not None:
        return [u for u in units if u.loop_id == stage]
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
    units = ledger.units(run.id)
    ran = _time(ledger, run.id, units)
    rows = []
    for u in units:
        spent = _members(units, u) if u.is_loop else [u]  # a loop's figures: its iterations'
        rows.append([u.key, u.status, f"{u.iterations} it." if u.is_loop else str(u.attempts or ""),
                     duration(ran[u.key]) if ran.get(u.key) else "", tokens(sum(m.tokens for m in spent)),
                     money(sum(m.cost_usd for m in spent)), u.reason[:80]])
    if rows:
        print_run_table("stages", ["stage", "status", "attempts", "duration", "tokens", "cost", "reason"], rows)


def _members(units: list[UnitRow], loop: UnitRow) -> list[UnitRow]:
    """A loop's iterations' units, in order."""
    return sorted((u for u in units if u.loop_id == loop.key), key=lambda u: (u.iteration or 0, u.key))


def _time(ledger: Ledger, run_id: str, units: list[UnitRow]) -> dict[str, float]:
    """Per unit key: how long its agents ran, every attempt of it (a loop: its iterations')."""
    ran = ledger.attempt_time(run_id)
    for u in units:
        if u.is_loop:
            ran[u.key] = sum(ran.get(m.key, 0.0) for m in _members(units, u))
    return ran


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


def _loop(ledger: Ledger, run: RunRow, loop: UnitRow) -> None:
    """A loop stage: how it ended, and each iteration's units."""
    from bridge.ui import duration, money, print_run_table, print_text, tokens

    units = ledger.units(run.id)
    members = _members(units, loop)
    ran = _time(ledger, run.id, units)
    print_text("\n".join([
        f"stage     {loop.key} (loop)",
        f"status    {loop.status}" + (f": {loop.reason}" if loop.reason else ""),
        f"iterations {loop.iterations}",
        f"usage     {tokens(sum(m.tokens for m in members))} tokens, {money(sum(m.cost_usd for m in members))}"
        f" in {duration(ran.get(loop.key, 0.0))} of agent time"]))
    rows = [[m.key, str(m.iteration or ""), m.status, str(m.attempts or ""),
             duration(ran[m.key]) if ran.get(m.key) else "", tokens(m.tokens), money(m.cost_usd), m.reason[:80]]
            for m in members]
    if rows:
        print_run_table("iterations", ["stage", "iteration", "status", "attempts", "duration", "tokens", "cost",
                                       "reason"], rows)


def _attempts_line(attempts: list[AttemptRow], count: int) -> str:
    """How many attempts, and how many of them only met a usage limit (run again; not failures)."""
    waited = sum(1 for a in attempts if a.error == "rate_limit")
    note = f" ({waited} stopped by a usage limit and run again after the wait: not failures)" if waited else ""
    return f"attempts  {count}{note}"


def _unit(ledger: Ledger, run: RunRow, unit: UnitRow) -> None:
    from bridge.ui import duration, money, print_text, tokens

    if unit.is_loop:
        _loop(ledger, run, unit)
        return
    attempts: list[AttemptRow] = ledger.attempts(run.id, unit.key)
    last = attempts[-1] if attempts else None
    ran = ledger.attempt_time(run.id).get(unit.key)
    lines = [f"stage     {unit.key}" + (f" (matrix {unit.matrix})" if unit.matrix else "")
             + (f" (iteration {unit.iteration})" if unit.iteration else ""),
             f"status    {unit.status}" + (f" [{unit.error}]" if unit.error else "")
             + (f": {unit.reason}" if unit.reason else ""),
             _attempts_line(attempts, unit.attempts),
             f"usage     {tokens(unit.tokens)} tokens, {money(unit.cost_usd)}"
             + (f" in {duration(ran)} of agent time (every attempt)" if ran else "")]
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
