"""`bridge schedule run [DIR]`: the long-lived scheduler over a folder of playbooks."""

from __future__ import annotations

from pathlib import Path

from bridge.errors import BridgeError
from bridge.ledger import Ledger
from bridge.scheduler import Scheduler, SchedulerEvent, project_dir_for
from bridge.ui import print_schedule_event


def playbook_folder(directory: Path | None) -> Path:
    """DIR (default ./playbooks), resolved; raises if it is not a folder."""
    folder = (directory or Path("playbooks")).resolve()
    if not folder.is_dir():
        raise BridgeError(f"{folder} is not a folder of playbooks (the default is ./playbooks); pass the "
                          "folder that holds yours: bridge schedule run|list|export DIR")
    return folder


def _show(event: SchedulerEvent) -> None:
    print_schedule_event(event.t, event.kind, event.playbook, event.message)


def run(directory: Path | None = None, rehearse: bool = False) -> int:
    folder = playbook_folder(directory)
    project = project_dir_for(folder)
    with Ledger(project) as ledger:
        scheduler = Scheduler(folder, project, ledger, on_event=_show, rehearse=rehearse)
        mode = "; every run rehearsed (--rehearse: the scripted local model)" if rehearse else ""
        print_schedule_event(0.0, "start", "", f"scheduling playbooks in {folder} (project {project}){mode}; "
                             "Ctrl-C or SIGTERM stops")
        with scheduler.handle_signals():
            scheduler.run_forever()
    return 0
