"""`bridge resume RUN`: continue an interrupted run; succeeded stages are never run again."""

from __future__ import annotations

from pathlib import Path

from bridge.commands.run import EXIT_CODES


def run(run_id: str, json_out: bool, directory: Path | None) -> int:
    from bridge.resume import resume_run
    from bridge.ui import progress

    with progress(json_out) as emit:
        result = resume_run(directory or Path.cwd(), run_id, emit)
    return EXIT_CODES.get(result.status, 1)
