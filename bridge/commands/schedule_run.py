"""`bridge schedule run [DIR]`: the long-lived scheduler over a folder of playbooks."""

from __future__ import annotations

from pathlib import Path

from bridge.errors import BridgeError
from bridge.ledger import Ledger
from bridge.scheduler import Scheduler, SchedulerEvent, project_dir_for
from bridge.ui import print_schedule_event


def playbook_folder(directory: Path | None, project: Path | None = None) -> tuple[Path, Path]:
    """(the folder of playbooks, the project): DIR (default PROJECT/playbooks, PROJECT defaulting to
    the current folder) and --dir (default: the nearest folder at or above DIR holding .bridge or .git)."""
    base = project.resolve() if project is not None else Path.cwd()
    folder = (directory or base / "playbooks").resolve()
    if project is not None and not project.is_dir():
        raise BridgeError(f"--dir {project}: no such folder; give the project folder (where .bridge/ lives)")
    if not folder.is_dir():
        raise BridgeError(f"{folder} is not a folder of playbooks (the default is PROJECT/playbooks); pass the "
                          "folder that holds yours: bridge schedule run|list|export DIR [--dir PROJECT]")
    return folder, project.resolve() if project is not None else project_dir_for(folder)


def _show(event: SchedulerEvent) -> None:
    print_schedule_event(event.t, event.kind, event.playbook, event.message)


def run(directory: Path | None = None, rehearse: bool = False, project: Path | None = None) -> int:
    folder, project = playbook_folder(directory, project)
    with Ledger(project) as ledger:
        scheduler = Scheduler(folder, project, ledger, on_event=_show, rehearse=rehearse)
        mode = "; every run rehearsed (--rehearse: the scripted local model)" if rehearse else ""
        print_schedule_event(0.0, "start", "", f"scheduling playbooks in {folder} (project {project}){mode}; "
                             "Ctrl-C or SIGTERM stops")
        with scheduler.handle_signals():
            scheduler.run_forever()
    return 0
