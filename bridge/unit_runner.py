"""One unit to its end: an earlier success reused, else attempts, retries with backoff, usage-limit waits.

The runner (bridge.runner) decides when a unit may start; this runs it under the run's slots, turns
its agent events into activity, spend and session ids, and records and emits how it ended. Running
one attempt is delegated to an `Execute` callable (bridge.stage_exec.StageExecutor in real runs; a
fake in scheduler tests). Never prints.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from bridge.agents.base import AgentEvent, ErrorKind, EventKind
from bridge.budget import BudgetTracker, Spend, spend_from_event
from bridge.events import Emit, Status, UnitActivity, UnitFinished, UnitRetrying, UnitStarted, UnitWaiting
from bridge.unit import AttemptReport, Prior, Unit, UnitResult
from bridge.views import evaluate

NOT_RETRIED = (ErrorKind.AUTH, ErrorKind.NOT_FOUND, ErrorKind.BUDGET, ErrorKind.CANCELLED, ErrorKind.CONFIG)

# why a unit must stop now: (status it ends with, error kind, reason), or None to go on
StopReason = Callable[[Unit], "tuple[Status, ErrorKind, str] | None"]


@dataclass
class AttemptControl:
    """What the runner hands an attempt: when to stop, how to report activity."""

    should_stop: Callable[[], str | None]
    cancel: asyncio.Event
    on_event: Callable[[AgentEvent], None]
    resume_session: str | None = None
    upstream: tuple[str, ...] = ()  # unit keys of the needs (for transcript-size accounting)


class Execute(Protocol):
    def __call__(self, unit: Unit, attempt: int, context: dict[str, Any],
                 control: AttemptControl) -> Awaitable[AttemptReport]: ...


@dataclass(frozen=True)
class RetryOptions:
    rate_limit_waits: int = 5  # at most this many usage-limit waits per unit
    rate_limit_backoff: float = 60.0  # wait when the CLI gives no reset time (doubles each time)
    rate_limit_cap: float = 6 * 3600.0  # never wait longer than this for one reset


class UnitRunner:
    """Runs units for one run; `run(unit, ...)` returns once the unit has ended and been recorded."""

    def __init__(self, *, execute: Execute, emit: Emit, record: Callable[..., None], budget: BudgetTracker,
                 prior: dict[str, Prior], slots: asyncio.Semaphore, force: asyncio.Event,
                 stop_reason: StopReason, options: RetryOptions = RetryOptions()) -> None:
        self.execute, self.emit, self.record, self.budget = execute, emit, record, budget
        self.prior, self.slots, self.force, self.stop_reason = prior, slots, force, stop_reason
        self.options = options

    async def run(self, unit: Unit, local: asyncio.Semaphore, context: Callable[[], dict[str, Any]],
                  upstream: tuple[str, ...] = ()) -> UnitResult:
        """Run `unit` (under `local`, its stage's slots, and the run's); `context()` renders its templates."""
        result = await self._attempts(unit, local, context, upstream)
        # a unit reused from an earlier session keeps the times it ran at (its row has them)
        when = {} if result.reused and unit.key in self.prior and not result.reused_from else {"ended": time.time()}
        self.record(unit.key, unit.stage_id, status=result.status.value, reason=result.reason,
                    error=result.error.value if result.error else None, attempts=result.attempts,
                    **when, tokens=result.tokens, cost_usd=result.cost_usd,
                    final_message=result.final_message, summary=result.summary,
                    session_id=result.session_id, iteration=unit.iteration, matrix=unit.matrix)
        self.emit(UnitFinished(key=unit.key, stage_id=unit.stage_id, status=result.status,
                               reason=result.reason, error=result.error.value if result.error else None,
                               attempts=result.attempts, duration=result.duration, tokens=result.tokens,
                               cost_usd=result.cost_usd, reused=result.reused, reused_from=result.reused_from))
        return result

    async def _sleep(self, seconds: float, unit: Unit) -> None:
        """Sleep, but wake early when the unit must stop."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0 and self.stop_reason(unit) is None:
            await asyncio.sleep(min(left, 0.05))

    async def _attempts(self, unit: Unit, local: asyncio.Semaphore, context: Callable[[], dict[str, Any]],
                        upstream: tuple[str, ...]) -> UnitResult:
        stage = unit.stage
        prior = self.prior.get(unit.key)
        if prior is not None and prior.status == "success":
            self.budget.add_settled(unit.stage_id, Spend(prior.tokens, prior.cost_usd))
            return UnitResult(unit, Status.SUCCESS, reason=f"reused from run {prior.from_run}" if prior.from_run
                              else "reused", attempts=prior.attempts, final_message=prior.final_message,
                              summary=prior.summary, session_id=prior.session_id, tokens=prior.tokens,
                              cost_usd=prior.cost_usd, reused=True, reused_from=prior.from_run)
        if stage.if_ is not None and stage.matrix and not evaluate(stage.if_, context(), f"stages.{unit.stage_id}.if"):
            return UnitResult(unit, Status.SKIPPED, reason=f"condition is false: {stage.if_}")
        n = prior.attempts if prior else 0
        resume = prior.session_id if prior and prior.status in ("running", "waiting") else None
        failures = waits = 0
        after_wait = False  # the next attempt follows a usage-limit wait, not a failure
        # an earlier session's attempts count towards the unit (the budget has them already)
        spend = Spend(prior.tokens, prior.cost_usd) if prior else Spend()
        start = time.monotonic()
        report = AttemptReport(Status.CANCELLED)

        def done(status: Status, error: ErrorKind | None, reason: str) -> UnitResult:
            return UnitResult(unit, status, error, reason, n, time.monotonic() - start,
                              report.final_message, report.summary, report.session_id,
                              spend.tokens, spend.cost_usd)

        while True:
            stop = self.stop_reason(unit)
            if stop:
                return done(stop[0], stop[1], f"not started: {stop[2]}" if n == 0 else stop[2])
            async with local, self.slots:
                stop = self.stop_reason(unit)
                if stop:
                    return done(stop[0], stop[1], f"not started: {stop[2]}" if n == 0 else stop[2])
                n += 1
                report = await self._attempt(unit, n, context(), upstream, resume, after_wait)
            after_wait = False
            spend = spend + Spend(report.usage.total, report.cost_usd)
            stop = self.stop_reason(unit)
            # a budget overrun fails even a finished attempt (the run must say so); a cancel or a
            # sibling's failure arriving as the attempt succeeded does not undo its work
            if stop and (report.status is not Status.SUCCESS or stop[1] is ErrorKind.BUDGET):
                return done(*stop)
            if report.status is Status.SUCCESS:
                return done(Status.SUCCESS, None, report.reason)
            if report.status is Status.CANCELLED:
                return done(Status.CANCELLED, report.error or ErrorKind.CANCELLED, report.reason)
            if report.error is ErrorKind.RATE_LIMIT and waits < self.options.rate_limit_waits:
                waits += 1
                await self._wait_for_reset(unit, report, waits)
                # go on with the session only if it got anywhere: a limit hit on its first model
                # call leaves nothing to resume (and Gemini CLI has not even saved it)
                resume = report.session_id if report.session_id and report.usage.total else resume
                after_wait = True
                continue
            failures += 1
            if failures > stage.retry.limit or report.error in NOT_RETRIED:
                return done(Status.FAILURE, report.error, report.reason)
            delay = stage.retry.backoff * stage.retry.factor ** (failures - 1)
            self.emit(UnitRetrying(unit.key, n, delay, report.reason))
            await self._sleep(delay, unit)
            resume = None

    async def _wait_for_reset(self, unit: Unit, report: AttemptReport, waits: int) -> None:
        now = time.time()
        until = report.reset_at or now + self.options.rate_limit_backoff * 2 ** (waits - 1)
        until = min(max(until, now), now + self.options.rate_limit_cap)
        self.record(unit.key, unit.stage_id, status=Status.WAITING.value, reason=report.reason,
                    iteration=unit.iteration, matrix=unit.matrix)
        self.emit(UnitWaiting(unit.key, until, report.reason or "usage limit reached"))
        await self._sleep(until - now, unit)

    async def _attempt(self, unit: Unit, n: int, context: dict[str, Any], upstream: tuple[str, ...],
                       resume: str | None, after_wait: bool = False) -> AttemptReport:
        self.record(unit.key, unit.stage_id, status=Status.RUNNING.value, reason="", attempts=n,
                    started=time.time(), iteration=unit.iteration, matrix=unit.matrix)
        self.emit(UnitStarted(unit.key, unit.stage_id, unit.stage.agent or "", n, unit.iteration,
                              dict(unit.matrix), after_wait=after_wait))
        live = [Spend()]

        def on_event(event: AgentEvent) -> None:
            if event.kind is EventKind.SESSION and event.text:  # kept so a resume can continue it
                self.record(unit.key, unit.stage_id, status=Status.RUNNING.value, session_id=event.text,
                            iteration=unit.iteration, matrix=unit.matrix)
            if event.kind is EventKind.USAGE:
                spend = spend_from_event(event.data)
                if spend is not None:
                    live[0] = spend
                    self.budget.set_live(unit.key, unit.stage_id, spend)
            text = event.text.strip().splitlines()[-1] if event.text.strip() else ""
            if text or event.kind is EventKind.USAGE:
                self.emit(UnitActivity(unit.key, event.kind.value, text[:200], live[0].tokens,
                                       live[0].cost_usd))

        def should_stop() -> str | None:
            stop = self.stop_reason(unit)
            return stop[2] if stop else None

        control = AttemptControl(should_stop, self.force, on_event, resume, upstream=upstream)
        try:
            report = await self.execute(unit, n, context, control)
        except Exception as exc:  # rendering errors and the like fail this attempt, not the run
            report = AttemptReport(Status.FAILURE, ErrorKind.CRASHED, f"{type(exc).__name__}: {exc}")
        self.budget.settle(unit.key, unit.stage_id, Spend(report.usage.total, report.cost_usd))
        return report
