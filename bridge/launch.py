"""Starting runs: the run folder, lock, ledger, signals and rehearsal server around a Runner.

`start_run` is what `bridge run` calls; `bridge.resume.resume_run` continues a run with the same
Session. They never print; they emit events (bridge.events) to the callback they are given and
return the RunResult.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge import dag
from bridge.errors import BridgeError, RunError
from bridge.events import (Emit, GitNote, LoopIteration, RunFinished, RunStarted, TasksUpdated, UnitFinished,
                           UnitRetrying, UnitWaiting, to_dict)
from bridge.ledger import Ledger
from bridge.outputs import ends_early
from bridge.playbook import Playbook, iter_stages, matrix_items, uses_worktrees
from bridge.runner import Runner, RunnerOptions, parallel_limit
from bridge.selection import Reuse, reuse_earlier, selected_stages
from bridge.tasks import TaskList, read_tasks
from bridge.unit import Prior, RunResult
from bridge.views import Contexts, unit_key
from bridge.workspace import RunLayout, check_run_id, new_run_id

RECORDED_EVENTS = (RunStarted, RunFinished, UnitFinished, UnitRetrying, UnitWaiting, GitNote, LoopIteration)


@dataclass(frozen=True)
class RunSpec:
    """What `bridge run` was asked to do."""

    playbook_path: Path
    project: Path
    vars: dict[str, str] = field(default_factory=dict)
    only: tuple[str, ...] = ()
    from_stage: str | None = None
    max_parallel: int | None = None
    rehearse: bool = False
    script: Path | None = None
    trigger: Path | None = None
    run_id: str | None = None  # chosen by the caller (the scheduler, `bridge watch`); else a new one
    triggers: tuple[Path, ...] = ()  # under `bridge watch`: every file of the burst (`trigger` is the last)


def rehearsal_script(playbook_path: Path, script: Path | None) -> Path:
    """--script, else `rehearsals/<playbook file name>` beside the playbook."""
    if script is not None:
        return script
    default = playbook_path.parent / "rehearsals" / playbook_path.name
    if default.is_file():
        return default
    raise RunError(f"--rehearse needs a script: give --script FILE or create {default} "
                   "(the format is in docs/rehearsal.md)")


@contextlib.contextmanager
def run_lock(layout: RunLayout) -> Iterator[None]:
    """An exclusive flock on the run folder's run.lock: two bridges never drive one run."""
    layout.run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(layout.run_dir / "run.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(f"run {layout.run_id} is being driven by another bridge right now; "
                           f"stop it with `bridge cancel {layout.run_id}` first") from None
        os.set_inheritable(fd, False)
        yield
    finally:
        os.close(fd)


def lock_held(layout: RunLayout) -> bool:
    """Is some bridge driving this run right now?"""
    path = layout.run_dir / "run.lock"
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def stop_leftovers(ledger: Ledger, run_id: str) -> int:
    """Stop agent processes of `run_id` that outlived the bridge driving them; mark their attempts."""
    from bridge.proctable import kill_group, kill_leftovers, run_processes

    stopped = 0
    for row in ledger.open_attempts(run_id):
        if row.pgid and kill_leftovers(row.pgid, run_id):
            stopped += 1
        ledger.finish_attempt(row.id, "interrupted", reason="bridge stopped while this attempt ran")
    for pid in run_processes(run_id):  # groups whose pgid was not recorded yet
        with contextlib.suppress(ProcessLookupError):
            stopped += 1
            kill_group(os.getpgid(pid), run_id, grace=1.0)
    return stopped


class Session:
    """One bridge process driving one run: built by start_run / resume_run, driven by `drive`."""

    def __init__(self, playbook: Playbook, spec: RunSpec, layout: RunLayout, ledger: Ledger,
                 emit: Emit, prior: dict[str, Prior], selected: frozenset[str] | None,
                 resumed: bool, base: Any = None, notes: tuple[str, ...] = ()) -> None:
        self.playbook, self.spec, self.layout, self.ledger = playbook, spec, layout, ledger
        self.notes = notes  # warnings of this session (e.g. the playbook was edited before a resume)
        self.prior, self.selected, self.resumed = prior, selected, resumed
        self._emit = emit
        self.signals = 0
        self.runner: Runner | None = None
        self.base = base  # bridge.worktrees.BaseInfo of a run in a git repository, else None
        self._task_counts: tuple[int, int] | None = None

    def emit(self, event: Any) -> None:
        if isinstance(event, RECORDED_EVENTS):
            data = to_dict(event)
            self.ledger.add_event(self.layout.run_id, data.pop("event"), data)
        self._emit(event)
        if self.playbook.tasks and isinstance(event, (RunStarted, UnitFinished)):
            self._snapshot_tasks(getattr(event, "key", ""))

    def _snapshot_tasks(self, after: str) -> None:
        """Agents tick the task list by editing it: re-read it after every unit, record it, show changes."""
        snapshot = self._tasks()
        self.ledger.add_event(self.layout.run_id, "tasks", {"after": after, **snapshot})
        counts = (snapshot["done"], snapshot["total"])
        if counts != self._task_counts and (snapshot["total"] or self._task_counts):
            self._emit(TasksUpdated(snapshot["done"], snapshot["total"], after))
        self._task_counts = counts

    def record(self, key: str, stage_id: str, *, status: str, iteration: int | None = None,
               matrix: dict[str, Any] | None = None, **values: Any) -> None:
        self.ledger.upsert_unit(self.layout.run_id, key, stage_id, status=status, iteration=iteration,
                                matrix=matrix, **values)

    def _all_keys(self) -> tuple[str, ...]:
        keys = []
        places, resolvers = dag.places(self.playbook), dag.resolvers(self.playbook)
        for sid, stage in [*iter_stages(self.playbook.stages), *iter_stages(self.playbook.finally_)]:
            if stage.loop is None and not places[sid].loop and sid not in resolvers:  # those: on demand
                keys += [unit_key(sid, item, None) for item in matrix_items(stage.matrix)]
        return tuple(keys)

    def _on_signal(self) -> None:
        self.signals += 1
        if self.runner is None:
            return
        if self.signals == 1:
            self.runner.cancel("interrupted; `bridge resume " + self.layout.run_id + "` continues it")
        else:
            self.runner.cancel("interrupted twice: agents killed", force=True)
            from bridge.proctable import run_processes

            for pid in run_processes(self.layout.run_id):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(os.getpgid(pid), signal.SIGKILL)

    def drive(self) -> RunResult:
        return asyncio.run(self._main())

    async def _main(self) -> RunResult:
        from bridge.stage_exec import StageExecutor

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, RuntimeError):  # not the main thread
                loop.add_signal_handler(sig, self._on_signal)
        layout, playbook = self.layout, self.playbook
        started = time.time()
        contexts = Contexts(playbook, shared=layout.shared.resolve(), inbox=layout.inbox.resolve(),
                            run_id=layout.run_id, vars=dict(playbook.vars), tasks=self._tasks,
                            trigger=str(self.spec.trigger) if self.spec.trigger else None,
                            triggers=tuple(str(t) for t in self.spec.triggers))
        from bridge.caveats import playbook_warnings

        foreign = self._foreign_rehearsal()
        warnings = (*self.notes, *(() if self.spec.rehearse else playbook_warnings(playbook, self.spec.project)),
                    *((foreign,) if foreign else ()))
        self.emit(RunStarted(layout.run_id, playbook.name, str(layout.run_dir), self._all_keys(), self.resumed,
                             warnings))
        git = None
        if uses_worktrees(playbook):  # git (and gitpython's import) only for playbooks that need it
            from bridge.mergeback import Integration

            git = Integration(self.spec.project, playbook, layout, self.ledger, self.emit, self.base)
            if foreign:  # the demo's scripted fixes never land on the user's branch
                git.blocked = "this rehearsal plays the demo's script on a repository that is not the demo's sample"
            git.announce()
        with contextlib.ExitStack() as stack:
            watcher = None
            if any(ends_early(stage.outputs) for _, stage in [*iter_stages(playbook.stages),
                                                              *iter_stages(playbook.finally_)]):
                from bridge.watcher import OutputWatcher  # watchdog and its inotify thread: only when used

                watcher = stack.enter_context(OutputWatcher(layout.shared))
            wiring = self._rehearsal(stack)
            executor = StageExecutor(playbook, playbook_dir=self.spec.playbook_path.parent.resolve(),
                                     project=self.spec.project, layout=layout, ledger=self.ledger,
                                     contexts=contexts, watcher=watcher, wiring=wiring,
                                     workdir=git and git.workdir, release=git and git.release)
            self.runner = Runner(
                playbook, layout.run_id, execute=executor, emit=self.emit, contexts=contexts,
                options=RunnerOptions(max_parallel=self.spec.max_parallel, selected=self.selected),
                prior=self.prior, record=self.record, stage_done=git and git.stage_done)
            result = await self.runner.run()
        if git is not None:
            await asyncio.to_thread(git.close)  # land the merged work, remove bridge's checkouts
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(sig)
        self.ledger.finish_run(layout.run_id, result.status.value, result.reason, tokens=result.tokens,
                               cost_usd=result.cost_usd)
        summary_path = self._summarise(result, started)
        self.emit(RunFinished(layout.run_id, result.status, result.reason, result.duration, result.tokens,
                              result.cost_usd, str(summary_path),
                              resumable=result.resumable))
        return result

    def _tasks(self) -> dict[str, Any]:
        """The task list as templates and the ledger see it: items, done, total, open."""
        if not self.playbook.tasks:
            return TaskList().to_dict()
        try:
            return read_tasks(Path(self.playbook.tasks), self.layout.shared).to_dict()  # safely: agents write it
        except Exception:  # a half-written or unreadable task list must not fail a stage's prompt
            return TaskList().to_dict()

    def _foreign_rehearsal(self) -> str | None:
        """The warning when bridge's shipped rehearsal script, written for the demo's sample, would write
        its files into a repository that is not that sample (bridge.demo.foreign_rehearsal)."""
        if not self.spec.rehearse:
            return None
        from bridge.demo import foreign_rehearsal

        return foreign_rehearsal(rehearsal_script(self.spec.playbook_path, self.spec.script), self.spec.project)

    def _rehearsal(self, stack: contextlib.ExitStack) -> Any:
        if not self.spec.rehearse:
            return lambda profile: None
        from bridge.agents import resolve
        from bridge.rehearsal import ModelServer, load_script, wiring

        script = load_script(rehearsal_script(self.spec.playbook_path, self.spec.script))
        server = stack.enter_context(ModelServer(script))
        home = self.layout.run_dir / "home"
        cache: dict[str, Any] = {}

        def wire(profile: Any) -> Any:
            module, cli = resolve(profile, self.spec.project)
            kind = cli.get("adapter", profile.cli)
            if kind not in ("codex", "claude", "gemini"):
                return None
            if kind not in cache:
                cache[kind] = wiring(kind, server.url, home / kind)
            return cache[kind]

        return wire

    def _summarise(self, result: RunResult, started: float) -> Path:
        """summary.md and the notifications; "Started" is the run's first start, even after a resume."""
        from bridge.run_report import tell

        row = self.ledger.run(self.layout.run_id)
        first = row.started if row is not None else started
        return tell(self.ledger, self.layout, playbook=self.playbook.name, notifies=self.playbook.notify,
                    status=result.status.value, reason=result.reason, started=first, ended=time.time(),
                    tokens=result.tokens, cost_usd=result.cost_usd, emit=self._emit,
                    resumed_at=started if self.resumed else None)


def load(path: Path, vars: dict[str, str], project: Path) -> Playbook:
    from bridge.loader import load_playbook

    return load_playbook(path, vars, project=project)


def start_run(spec: RunSpec, emit: Emit) -> RunResult:
    """A new run of a playbook, to its end (or until interrupted)."""
    project = spec.project.resolve()
    spec = RunSpec(**{**spec.__dict__, "project": project, "playbook_path": spec.playbook_path.resolve()})
    if spec.run_id is not None:
        _check_new_id(project, check_run_id(spec.run_id))
    try:
        playbook = load(spec.playbook_path, spec.vars, project)
        selected = selected_stages(playbook, spec.only, spec.from_stage)
        parallel_limit(spec.max_parallel, playbook)  # a bad --max-parallel fails before the run exists
        if spec.rehearse:
            rehearsal_script(spec.playbook_path, spec.script)  # fail before anything is created
        from bridge.preflight import check_clis

        check_clis(playbook, selected, project)  # every agent CLI is found, or one error lists the missing
        base = base_json = None
        if uses_worktrees(playbook):  # git (and gitpython's import) only for playbooks that need it
            from bridge.mergeback import base_to_json, take_base

            base = take_base(project, playbook)  # once, before anything of the run exists
            base_json = base_to_json(base)
    except BridgeError as exc:
        if spec.run_id is not None:  # the caller (a scheduler, `bridge watch`) has promised a record of this id
            from bridge.run_report import tell_not_started

            tell_not_started(spec, run_options(spec, None), exc, emit)
        raise
    layout = RunLayout(project, spec.run_id or new_run_id())
    if spec.run_id is not None:
        _check_new_id(project, spec.run_id)  # again: another bridge may have taken it meanwhile
    layout.create()
    with Ledger(project) as ledger, run_lock(layout):
        ledger.start_run(layout.run_id, playbook.name, spec.playbook_path, project, vars=spec.vars,
                         options=run_options(spec, base_json), pid=os.getpid(),
                         trigger=str(spec.trigger) if spec.trigger else None)
        reuse = Reuse() if selected is None else reuse_earlier(ledger, spec.playbook_path, spec.vars, layout,
                                                                 selected)
        return Session(playbook, spec, layout, ledger, emit, reuse.prior, selected, resumed=False, base=base,
                       notes=() if selected is None else reuse.note(spec.playbook_path)).drive()


def run_options(spec: RunSpec, base_json: Any) -> dict[str, Any]:
    """The run's options as the ledger keeps them (what `bridge resume` reads back)."""
    return {"only": list(spec.only), "from_stage": spec.from_stage, "max_parallel": spec.max_parallel,
            "rehearse": spec.rehearse, "script": str(spec.script) if spec.script else None,
            "base": base_json, "playbook_sha256": playbook_digest(spec.playbook_path),
            "triggers": [str(t) for t in spec.triggers]}


def _check_new_id(project: Path, run_id: str) -> None:
    """A chosen run id must be new: neither in the ledger nor a run folder on disk."""
    taken = RunLayout(project, run_id).run_dir.exists()
    if not taken and (project / ".bridge" / "ledger.db").exists():
        with Ledger(project) as ledger:
            taken = ledger.run(run_id) is not None
    if taken:
        raise RunError(f"run {run_id} already exists (`bridge show {run_id}`); give --run-id a new id, "
                       f"or continue that run with `bridge resume {run_id}`")


def playbook_digest(path: Path) -> str | None:
    """The sha256 of the playbook file as a run starts (a resume says when it changed)."""
    import hashlib

    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
