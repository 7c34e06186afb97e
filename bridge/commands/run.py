"""`bridge run PLAYBOOK`: run a playbook to its end, showing progress; exit 0 on success."""

from __future__ import annotations

from pathlib import Path

from bridge.events import Status

EXIT_CODES = {Status.SUCCESS: 0, Status.FAILURE: 1, Status.CANCELLED: 130}


def run(playbook: Path, var: list[str], only: list[str], from_stage: str | None, max_parallel: int | None,
        rehearse: bool, script: Path | None, json_out: bool, trigger: Path | list[Path] | None,
        directory: Path | None, run_id: str | None = None) -> int:
    from bridge.launch import RunSpec, start_run
    from bridge.loader import parse_vars
    from bridge.ui import progress

    triggers = [] if trigger is None else [trigger] if isinstance(trigger, Path) else list(trigger)
    spec = RunSpec(playbook_path=playbook, project=directory or Path.cwd(), vars=parse_vars(var),
                   only=tuple(only), from_stage=from_stage, max_parallel=max_parallel, rehearse=rehearse,
                   script=script, trigger=triggers[-1] if triggers else None, run_id=run_id, triggers=tuple(triggers))
    with progress(json_out) as emit:
        result = start_run(spec, emit)
    return EXIT_CODES.get(result.status, 1)
