"""The typer app: options in, a command function called, an exit code out. No logic lives here."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import List, Optional

import typer

from bridge import __version__

app = typer.Typer(
    name="bridge",
    help="Run YAML playbooks that drive coding-agent CLIs (Codex, Claude Code, Gemini CLI, any CLI).",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
model_app = typer.Typer(help="The scripted local model used for rehearsals.", no_args_is_help=True)
schedule_app = typer.Typer(help="Cron-scheduled playbooks.", no_args_is_help=True)
app.add_typer(model_app, name="model")
app.add_typer(schedule_app, name="schedule")

VarOpt = typer.Option(None, "--var", help="Override a playbook variable: --var key=value (repeatable).")
RUN_HELP = "A run id (a unique prefix is enough), or `last`."
DIR_HELP = "Folder of playbooks (default: the project's playbooks/)."
DirOpt = typer.Option(None, "--dir", "-C", help="Project folder (default: the current folder).")


def _call(command: str, **kwargs: object) -> None:
    """Run bridge.commands.<command>.run(**kwargs) and exit with its code; errors become one paragraph."""
    from bridge.errors import BridgeError

    try:
        module = importlib.import_module(f"bridge.commands.{command}")
        code = module.run(**kwargs)
    except BridgeError as exc:
        from bridge.ui import print_error

        print_error(str(exc))
        code = exc.exit_code
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:  # stdout's reader went away (`bridge logs ... | head`): stop quietly, as git does
        from bridge.ui import quiet_stdout

        quiet_stdout()
        code = 141
    except Exception as exc:  # a bug in bridge: say so, keep the traceback in a file
        from bridge.errors import environment_problem
        from bridge.ui import print_bug, print_error

        if (problem := environment_problem(exc)) is not None:  # a full disk, a read-only folder
            print_error(problem)
            code = 1
        else:
            print_bug(exc)
            code = 3
    raise typer.Exit(code or 0)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bridge {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """bridge: one playbook, many coding agents."""


@app.command()
def validate(files: List[Path] = typer.Argument(..., help="Playbook files to check.")) -> None:
    """Check playbooks; list every problem with file:line:column. Exit 0 if all are valid."""
    _call("validate", files=files)


@app.command()
def plan(
    file: Path = typer.Argument(..., help="The playbook."),
    var: Optional[List[str]] = VarOpt,
    directory: Optional[Path] = DirOpt,
) -> None:
    """Dry run: execution layers, each stage's agent, exact argv and rendered prompt. Starts nothing."""
    _call("plan", file=file, var=var or [], directory=directory)


@app.command()
def schema() -> None:
    """Print the JSON Schema of the playbook format (for yaml-language-server)."""
    _call("schema")


@app.command()
def init(
    directory: Optional[Path] = DirOpt,
    force: bool = typer.Option(False, "--force", help="Overwrite existing files."),
) -> None:
    """Scaffold a starter playbook, a prompt template and agent profiles in this repo."""
    _call("init", directory=directory, force=force)


@app.command()
def doctor() -> None:
    """Check each agent CLI: installed, version, credentials. One-line fix for each problem."""
    _call("doctor")


@app.command()
def run(
    playbook: Path = typer.Argument(..., help="The playbook to run."),
    var: Optional[List[str]] = VarOpt,
    only: Optional[List[str]] = typer.Option(None, "--only", help="Run only these stages."),
    from_stage: Optional[str] = typer.Option(None, "--from", help="Start at this stage (earlier ones reused)."),
    max_parallel: Optional[int] = typer.Option(None, "--max-parallel", min=1,
                                               help="Agents running at once (default: the playbook's max_parallel, "
                                               "else 4)."),
    rehearse: bool = typer.Option(False, "--rehearse", help="Run the real CLIs against the scripted local model."),
    script: Optional[Path] = typer.Option(None, "--script", help="Rehearsal script (default: the playbook's own)."),
    json_out: bool = typer.Option(False, "--json", help="One JSON event per line on stdout."),
    trigger: Optional[List[Path]] = typer.Option(None, "--trigger", hidden=True,
                                                 help="File that triggered this run (repeated: every file of "
                                                 "the burst, the last changed last)."),
    run_id: Optional[str] = typer.Option(None, "--run-id", hidden=True,
                                         help="Use this (new) run id; the scheduler and `bridge watch` choose it."),
    directory: Optional[Path] = DirOpt,
) -> None:
    """Run a playbook."""
    _call(
        "run", playbook=playbook, var=var or [], only=only or [], from_stage=from_stage,
        max_parallel=max_parallel, rehearse=rehearse, script=script, json_out=json_out,
        trigger=trigger or [], run_id=run_id, directory=directory,
    )


@app.command()
def runs(directory: Optional[Path] = DirOpt,
         limit: int = typer.Option(20, "--limit", "-n", help="Show at most this many runs, newest first.")) -> None:
    """List runs: id, playbook, status, started, duration, cost."""
    _call("runs", directory=directory, limit=limit)


@app.command()
def show(
    run_id: str = typer.Argument(..., metavar="RUN", help=RUN_HELP),
    stage: Optional[str] = typer.Argument(None, help="A stage id (or unit key, e.g. audit-security): its details."),
    directory: Optional[Path] = DirOpt,
) -> None:
    """Show a run, or one stage of it: status, prompt, final message, usage, where the logs are."""
    _call("show", run_id=run_id, stage=stage, directory=directory)


LOGS_HELP = (
    "Print a stage's agent output (redacted).\n\n"
    "STAGE is a unit key (audit, review-security, verify@2) or a stage id; a matrix or loop stage's id "
    "names all its items. With --follow, each line of such a stage is prefixed with its item's key "
    "(\\[review-security]), and following ends when every item has ended (a loop stage's: when the run ends)."
)


@app.command(help=LOGS_HELP)
def logs(
    run_id: str = typer.Argument(..., metavar="RUN", help=RUN_HELP),
    stage: str = typer.Argument(..., help="The stage id or unit key whose agent output to show."),
    follow: bool = typer.Option(False, "--follow", "-f",
                                help="Keep printing until the stage ends; wait for it to start while the run is live."),
    directory: Optional[Path] = DirOpt,
) -> None:
    """Print a stage's agent output (redacted)."""  # the full help: LOGS_HELP
    _call("logs", run_id=run_id, stage=stage, follow=follow, directory=directory)


@app.command()
def cancel(run_id: str = typer.Argument(..., metavar="RUN", help=RUN_HELP),
           directory: Optional[Path] = DirOpt) -> None:
    """Cancel a running run: its agents are stopped and its state saved (resumable)."""
    _call("cancel", run_id=run_id, directory=directory)


@app.command()
def resume(
    run_id: str = typer.Argument(..., metavar="RUN", help=RUN_HELP),
    json_out: bool = typer.Option(False, "--json", help="One JSON event per line on stdout."),
    directory: Optional[Path] = DirOpt,
) -> None:
    """Continue an interrupted run; finished stages are never run again."""
    _call("resume", run_id=run_id, json_out=json_out, directory=directory)


@app.command()
def watch(
    playbook: Path = typer.Argument(..., help="The playbook file."),
    on: str = typer.Option(..., "--on", help="Glob of files that trigger a run, e.g. 'audit/*.md'."),
    watch_dir: Optional[Path] = typer.Option(None, "--watch-dir", hidden=True,
                                             help="Old name: a folder to watch, relative to the project."),
    queue: bool = typer.Option(False, "--queue", help="Queue every trigger instead of coalescing them."),
    debounce: float = typer.Option(1.0, "--debounce", help="Seconds of quiet before a trigger fires."),
    var: Optional[List[str]] = VarOpt,
    directory: Optional[Path] = typer.Option(None, "--dir", help="Folder to watch (default: the project's "
                                             ".bridge/inbox)."),
    project: Optional[Path] = typer.Option(None, "--project", "-C", help="Project folder (default: the nearest "
                                           "folder at or above --dir, else the current one, holding .bridge or .git)."),
) -> None:
    """Run a playbook whenever files matching a glob appear or change in a folder."""
    _call("watch", playbook=playbook, on=on, watch_dir=watch_dir, queue=queue, debounce=debounce,
          var=var or [], directory=directory, project=project)


@app.command()
def clean(
    run_id: Optional[str] = typer.Argument(None, metavar="[RUN]",
                                           help="Only this run: its id, a unique prefix of it, or 'last'."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be removed and kept; remove nothing."),
    directory: Optional[Path] = DirOpt,
) -> None:
    """Remove worktrees and branches of finished runs; never deletes unmerged commits."""
    _call("clean", run_id=run_id, dry_run=dry_run, directory=directory)


@app.command()
def demo(
    yes: bool = typer.Option(False, "--yes", "-y", help="Install missing CLIs (pinned, locally) without asking."),
    keep: Optional[Path] = typer.Option(None, "--keep", help="Build the sample repo here and keep it."),
) -> None:
    """Rehearse audit-then-implement on a sample repo with seeded bugs (real CLIs, scripted model)."""
    _call("demo", yes=yes, keep=keep)


@model_app.command("serve")
def model_serve(
    script: Optional[Path] = typer.Option(None, "--script", help="Script file (default: answer 'ok')."),
    port: int = typer.Option(0, "--port", help="Port on 127.0.0.1 (0 picks a free one)."),
) -> None:
    """Serve the scripted model on 127.0.0.1 (Anthropic, OpenAI Responses, Gemini wire protocols)."""
    _call("model_serve", script=script, port=port)


ScheduleDirOpt = typer.Option(None, "--dir", "-C",
                              help="Project folder (default: the nearest folder above DIR holding .bridge or .git); "
                                   "DIR defaults to its playbooks/.")


@schedule_app.command("run")
def schedule_run(
    directory: Optional[Path] = typer.Argument(None, metavar="[DIR]", help=DIR_HELP),
    rehearse: bool = typer.Option(False, "--rehearse", help="Start every run with --rehearse (scripted local model)."),
    project: Optional[Path] = ScheduleDirOpt,
) -> None:
    """Long-lived scheduler over a folder of playbooks (default: ./playbooks)."""
    _call("schedule_run", directory=directory, rehearse=rehearse, project=project)


@schedule_app.command("list")
def schedule_list(
    directory: Optional[Path] = typer.Argument(None, metavar="[DIR]", help=DIR_HELP),
    count: int = typer.Option(3, "--count", "-n", help="How many next fire times to show."),
    project: Optional[Path] = ScheduleDirOpt,
) -> None:
    """Show each scheduled playbook's next fire times."""
    _call("schedule_list", directory=directory, count=count, project=project)


@schedule_app.command("export")
def schedule_export(
    directory: Optional[Path] = typer.Argument(None, metavar="[DIR]", help=DIR_HELP),
    systemd: bool = typer.Option(False, "--systemd", help="Print a systemd .service and .timer per schedule."),
    crontab: bool = typer.Option(False, "--crontab", help="Print crontab lines (with the PATH the CLIs need)."),
    project: Optional[Path] = ScheduleDirOpt,
) -> None:
    """Print systemd units or crontab lines for the OS scheduler."""
    _call("schedule_export", directory=directory, systemd=systemd, crontab=crontab, project=project)


@schedule_app.command("fire", hidden=True)
def schedule_fire(
    playbook: Path = typer.Argument(..., help="The playbook file."),
    number: int = typer.Option(1, "--schedule", help="Which of the playbook's schedules fired (1-based)."),
    directory: Optional[Path] = DirOpt,
) -> None:
    """One fire of a schedule, as the exported crontab lines and systemd units start it."""
    _call("schedule_fire", playbook=playbook, number=number, directory=directory)


def main() -> None:
    app(prog_name="bridge")


if __name__ == "__main__":
    sys.exit(main())
