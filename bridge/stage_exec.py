"""One attempt of one unit: render the prompt, run the agent, check its outputs, record it all.

The runner decides *when* (scheduling); this module decides nothing about order. It turns a unit and
its template context into an Invocation, hands it to `bridge.attempt.run_attempt` with a stop
condition wired to the OutputWatcher (a stage is done once its outputs are complete and valid, even
if the agent still talks), and reports back an AttemptReport.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from bridge.agents.base import ErrorKind, Invocation, Outcome
from bridge.attempt import Stop, StopKind, run_attempt, write_private
from bridge.errors import BridgeError
from bridge.events import Status
from bridge.ledger import Ledger
from bridge.playbook import AgentProfile, OutputSpec, Playbook, Stage
from bridge.redact import Redactor
from bridge.templates import render
from bridge.unit import AttemptReport, Unit
from bridge.unit_runner import AttemptControl
from bridge.views import Contexts, handed_bytes, handed_pieces
from bridge.handoff import cap_summary, transcript_bytes
from bridge.outputs import check_outputs, early_stop_grace, missing_outputs_message, resolve_output
from bridge.shared_files import TEXT_CAP, decode_capped, read_regular
from bridge.workspace import RunLayout, atomic_write_text


Wiring = Callable[[AgentProfile], Any]  # profile -> rehearsal Wiring, or None outside rehearsals
Workdir = Callable[[Unit], Path]  # unit -> the folder the agent works in (project or its worktree)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # an agent's file: no link, no FIFO wait
    with os.fdopen(fd, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class StageExecutor:
    """Runs attempts for one run; `__call__` matches bridge.unit_runner.Execute."""

    def __init__(self, playbook: Playbook, *, playbook_dir: Path, project: Path, layout: RunLayout,
                 ledger: Ledger, contexts: Contexts, watcher: Any = None,
                 wiring: Wiring = lambda profile: None, workdir: Workdir | None = None,
                 release: Callable[[Unit, Path], None] | None = None) -> None:
        self.playbook, self.playbook_dir, self.project = playbook, playbook_dir, project
        self.layout, self.ledger, self.contexts, self.watcher = layout, ledger, contexts, watcher
        self.wiring, self.workdir = wiring, workdir or (lambda unit: project)
        self.release = release or (lambda unit, cwd: None)  # the attempt no longer works in cwd
        self.run_id = layout.run_id
        self.redact = Redactor.for_env()
        self.transcripts: dict[str, Path] = {}  # unit key -> stdout log of its latest attempt
        self._prompts: dict[str, str] = {}

    def _prompt_text(self, sid: str, stage: Stage) -> str:
        if stage.prompt is not None:
            return stage.prompt
        if sid not in self._prompts:
            path = (self.playbook_dir / (stage.prompt_file or "")).resolve()
            try:
                self._prompts[sid] = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise BridgeError(f"stages.{sid}.prompt_file: cannot read {path} ({exc.strerror})") from exc
        return self._prompts[sid]

    def _transcript(self, key: str) -> Path | None:
        if key in self.transcripts:
            return self.transcripts[key]
        rows = self.ledger.attempts(self.run_id, key)
        return Path(rows[-1].stdout_path) if rows and rows[-1].stdout_path else None

    async def __call__(self, unit: Unit, n: int, context: dict[str, Any],
                       control: AttemptControl) -> AttemptReport:

        stage, sid = unit.stage, unit.stage_id
        profile = self.playbook.agents[stage.agent or ""]
        prompt = render(self._prompt_text(sid, stage), context, f"stages.{sid}.prompt")
        paths = self.layout.attempt(unit.key, n).create()  # run_attempt writes prompt.md and argv.json
        specs = [spec.model_copy(update={"path": rel})
                 for spec, rel in zip(stage.outputs, self.contexts.output_rels(stage, unit.matrix))]
        cwd = self.workdir(unit)  # the project, the unit's worktree, or the merged work's checkout
        inv = Invocation(prompt=prompt, cwd=cwd, shared_dir=self.layout.shared,
                         extra_dirs=(self.layout.inbox,), resume_session=control.resume_session,
                         stage_dir=paths.dir, env=dict(stage.env), output_schema=stage.output_schema)
        attempt_id = self.ledger.start_attempt(self.run_id, unit.key, n, dir=paths.dir)
        completed: list[float] = []  # when the watcher found every output complete and valid
        watch_key = f"{unit.key}#{n}"
        by_bridge = [s for s in specs if s.from_ == "final_message"]  # written at the agent's end
        grace = early_stop_grace(specs, worktree=stage.worktree is not None, interactive=profile.interactive)
        if self.watcher is not None and grace is not None:
            # off the loop: a new output folder waits for its inotify watch (ms, up to 2 s), and 64
            # units registering one after another delayed the last agents' start
            await asyncio.to_thread(self.watcher.watch, watch_key, specs,
                                    lambda key, checks: completed.append(time.monotonic()))

        def outputs_complete() -> bool:  # in a worktree, only after a grace to end by itself (outputs.py)
            return bool(completed) and time.monotonic() - completed[0] >= (grace or 0.0)

        runner_stop: list[str] = []

        def should_stop() -> str | None:
            why = control.should_stop()
            if why:
                runner_stop.append(why)
            return why

        def spawned(pid: int, pgid: int) -> None:  # recorded at once: `bridge resume` after a crash
            self.ledger.update_attempt(attempt_id, pid=pid, pgid=pgid)

        upstream = [p for k in control.upstream if (p := self._transcript(k)) is not None]
        start = time.monotonic()
        try:
            res = await run_attempt(
                profile, inv, timeout=stage.timeout, idle_timeout=stage.idle_timeout,
                on_event=control.on_event, should_stop=should_stop, outputs_complete=outputs_complete,
                on_spawn=spawned, cancel=control.cancel,
                wiring=self.wiring(profile), run_id=self.run_id, stage_key=unit.key, project=self.project,
            )
        finally:
            self.release(unit, cwd)
            if self.watcher is not None:
                self.watcher.unwatch(watch_key)
        self.transcripts[unit.key] = Path(res.stdout_path)
        res = self._redacted(res)
        if by_bridge and res.outcome.success and not runner_stop:
            self._write_final_message(by_bridge, res.outcome.final_message)
        report = self._judge(unit, specs, res.outcome, res.process, runner_stop[0] if runner_stop else None, upstream,
                             time.monotonic() - start, res.stop)
        report = replace(report, handoff_bytes=handed_bytes(prompt, handed_pieces(context)))
        self._record(attempt_id, unit, specs, res, report, paths.result, upstream)
        return report

    @staticmethod
    def _redacted(res: Any) -> Any:
        """Secrets out of what the agent said before it is stored (ledger, result.json, the outputs
        bridge writes) or handed downstream: the attempt's own (bridge.attempt.redactor)."""
        redact = res.redact
        outcome = res.outcome
        return replace(res, outcome=replace(outcome, final_message=redact(outcome.final_message),
                                            reason=redact(outcome.reason)))

    def _judge(self, unit: Unit, specs: list[OutputSpec], outcome: Outcome, process: Any,
               stopped_by_runner: str | None, upstream: list[Path], duration: float,
               stop: Stop | None = None) -> AttemptReport:
        common: dict[str, Any] = dict(final_message=outcome.final_message, session_id=outcome.session_id,
                                      usage=outcome.usage, cost_usd=outcome.cost_usd or 0.0,
                                      duration=duration)
        if process is None:  # nothing started (the CLI is not installed...)
            return AttemptReport(Status.FAILURE, outcome.error or ErrorKind.NOT_FOUND, outcome.reason, **common)
        if stopped_by_runner or process.ended_by == "cancelled":
            # the runner knows why (cancel, budget, fail_fast) and says so itself
            return AttemptReport(Status.CANCELLED, ErrorKind.CANCELLED, stopped_by_runner or "cancelled", **common)
        checks = check_outputs(self.layout.shared, specs)
        missing = missing_outputs_message(checks)
        early = stop is not None and stop.kind is StopKind.OUTPUTS_COMPLETE
        if (outcome.success or early) and not missing:
            summary = self._summary(unit.stage, outcome.final_message, checks)
            cut_short = early and outcome.reason.startswith("stopped")  # no result event of its own
            return AttemptReport(Status.SUCCESS, None, "outputs complete; agent stopped" if cut_short else "",
                                 summary=summary, **common)
        if outcome.success:
            return AttemptReport(Status.FAILURE, ErrorKind.OUTPUTS, missing, **common)
        error = outcome.error or ErrorKind.CRASHED
        return AttemptReport(Status.FAILURE, error, outcome.reason or error.value, reset_at=outcome.reset_at,
                             **common)

    def _write_final_message(self, specs: list[OutputSpec], message: str) -> None:
        """`from: final_message` outputs: bridge writes them, so a read-only agent stays read-only."""
        if not message.strip():
            return  # the output check reports it as missing
        for spec in specs:
            try:
                path = resolve_output(self.layout.shared, spec.path)
            except BridgeError:
                continue  # the output check names the problem
            if path.is_symlink():
                path.unlink()  # never write through a link an agent left in its place
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, message if message.endswith("\n") else message + "\n")

    def _summary(self, stage: Stage, final_message: str, checks: list[Any]) -> str:
        text = final_message
        if stage.summary.source == "outputs":
            parts = []
            for c in checks:
                if c.ok and c.path is not None and c.exists:
                    with contextlib.suppress(OSError, BridgeError):  # safe and capped, as templates read it
                        parts.append(f"## {c.rel}\n{decode_capped(read_regular(c.path, TEXT_CAP), c.path)}")
            text = "\n\n".join(parts)
        return cap_summary(self.redact(text), stage.summary.max_lines, stage.summary.max_bytes)

    def _record(self, attempt_id: int, unit: Unit, specs: list[OutputSpec], res: Any,
                report: AttemptReport, result_path: Path, upstream: list[Path]) -> None:
        outcome, process = res.outcome, res.process
        for spec in specs:
            path = self.layout.shared / spec.path
            if path.is_file() and not path.is_symlink():
                with contextlib.suppress(OSError):  # swapped for a link or a FIFO meanwhile: no record
                    self.ledger.add_artifact(self.run_id, unit.key, spec.path, path.stat().st_size, _sha256(path))
        self.ledger.finish_attempt(
            attempt_id, report.status.value, argv=[res.redact(a) for a in res.argv],
            session_id=outcome.session_id, pid=process and process.pid, pgid=process and process.pid,
            exit_code=process and process.exit_code, ended_by=process and process.ended_by,
            input_tokens=outcome.usage.input_tokens, output_tokens=outcome.usage.output_tokens,
            cached_tokens=outcome.usage.cached_tokens, cost_usd=outcome.cost_usd,
            error=report.error.value if report.error else None, reason=report.reason,
            handoff_bytes=report.handoff_bytes, upstream_transcript_bytes=transcript_bytes(upstream),
            stdout_path=str(res.stdout_path), stderr_path=str(res.stderr_path),
        )
        # the unit's figure is its latest attempt's (a retry hands on the same upstream text again)
        self.ledger.update_unit(self.run_id, unit.key, handoff_bytes=report.handoff_bytes)
        # result.json is a record for people, not a hand-off: no fsync on the hot path
        write_private(result_path, json.dumps({
            "status": report.status.value, "error": report.error.value if report.error else None,
            "reason": report.reason, "session_id": outcome.session_id, "final_message": outcome.final_message,
            "usage": {"input_tokens": outcome.usage.input_tokens, "output_tokens": outcome.usage.output_tokens,
                      "cached_tokens": outcome.usage.cached_tokens},
            "cost_usd": outcome.cost_usd, "exit_code": process and process.exit_code,
            "signal": process and process.signal, "ended_by": process and process.ended_by,
            "duration": report.duration, "handoff_bytes": report.handoff_bytes,
        }, indent=2))
