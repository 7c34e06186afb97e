"""The DAG scheduler: stages in, results out, events emitted. Scheduling only; never prints.

Each stage is an asyncio task that waits for its needs, so a stage starts the moment its own needs
are met, not when a whole layer is. Agent runs are bounded by one global semaphore plus one per
stage (matrix `max_parallel`). A unit, once it may start, is run to its end (attempts, retries,
usage-limit waits) by bridge.unit_runner.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from bridge import dag
from bridge.agents.base import ErrorKind
from bridge.budget import BudgetTracker, Spend
from bridge.errors import RunError
from bridge.events import Emit, LoopIteration, RunCancelling, Status, UnitFinished
from bridge.playbook import Playbook, Stage, iter_stages, matrix_items
from bridge.unit import Prior, Resolve, RunResult, StageResult, Unit, UnitResult
from bridge.unit_runner import Execute, RetryOptions, UnitRunner
from bridge.views import Contexts, evaluate, unit_key

# agents running at once when neither --max-parallel nor the playbook says: each is a CLI process
# (a Node runtime, often hundreds of MB) and all draw on the same vendor accounts' rate limits
DEFAULT_MAX_PARALLEL = 4
# an `if:` that looks at statuses replaces the default "needs went well" gate, as in GitHub Actions
_STATUS_AWARE = re.compile(r"\bstatus\b")


def parallel_limit(option: int | None, playbook: Playbook) -> int:
    """How many agents run at once: --max-parallel, else the playbook's max_parallel, else the default."""
    limit = option if option is not None else playbook.max_parallel or DEFAULT_MAX_PARALLEL
    if limit < 1:
        raise RunError(f"--max-parallel must be at least 1 (got {limit}): it is how many agents run at once")
    return limit


@dataclass(frozen=True)
class RunnerOptions(RetryOptions):
    """The retry options of every unit, plus which stages run and how many agents at once."""

    max_parallel: int | None = None
    selected: frozenset[str] | None = None  # --only / --from; None runs everything


class Scope:
    """One level of stage results: the run, or one iteration of a loop."""

    def __init__(self, parent: Scope | None = None, *, loop_id: str | None = None,
                 iteration: int | None = None, previous: dict[str, StageResult] | None = None) -> None:
        self.parent, self.loop_id, self.iteration, self.previous = parent, loop_id, iteration, previous
        self.results: dict[str, StageResult] = {}
        self.done: dict[str, asyncio.Event] = {}

    def event(self, sid: str) -> asyncio.Event:
        return self.done.setdefault(sid, asyncio.Event())

    def finish(self, result: StageResult) -> None:
        self.results[result.stage_id] = result
        self.event(result.stage_id).set()

    def all_results(self) -> dict[str, StageResult]:
        outer = self.parent.all_results() if self.parent else {}
        return {**outer, **self.results}


class Runner:
    """Drives one run of a playbook to its end; `cancel()` stops it gracefully, then by force."""

    def __init__(self, playbook: Playbook, run_id: str, *, execute: Execute, emit: Emit,
                 contexts: Contexts, options: RunnerOptions = RunnerOptions(),
                 prior: dict[str, Prior] | None = None,
                 record: Callable[..., None] | None = None,
                 stage_done: Callable[[StageResult, Resolve], Awaitable[StageResult]] | None = None) -> None:
        self.playbook, self.run_id, self.execute, self.emit = playbook, run_id, execute, emit
        self.contexts, self.options = contexts, options
        # a finally stage runs again at the end of every session, success or not: it must see the
        # state this session ends with (its earlier attempts still count: numbers, tokens, cost)
        finals = {sid for sid, _ in iter_stages(playbook.finally_)}
        self.prior = {key: replace(p, status="rerun") if p.stage_id in finals and p.status == "success" else p
                      for key, p in (prior or {}).items()}
        base_record = record or (lambda *a, **k: None)

        def record_unit(key: str, stage_id: str, **values: Any) -> None:  # a member's row names its loop
            base_record(key, stage_id, loop_id=self.home.get(stage_id), **values)

        self.record = record_unit
        self.stage_done = stage_done  # the merge step of worktree stages (bridge.mergeback)
        # resolution stages run only when the merge step asks (a conflict), never in the DAG
        self.resolvers = {rid: dag.places(playbook)[rid].stage for rid in dag.resolvers(playbook)
                          if rid in dag.places(playbook)}
        self.resolutions: dict[str, list[UnitResult]] = {rid: [] for rid in self.resolvers}
        self.slots = asyncio.Semaphore(parallel_limit(options.max_parallel, playbook))
        self.budget = BudgetTracker(playbook)
        for earlier in self.prior.values():  # a resumed run's spend includes its earlier sessions'
            if earlier.status != "success" and (earlier.tokens or earlier.cost_usd):
                self.budget.add_settled(earlier.stage_id, Spend(earlier.tokens, earlier.cost_usd))
        self.root = Scope()
        self.home: dict[str, str | None] = {}  # stage id -> id of the loop it belongs to
        self.stage_stop: dict[str, str] = {}  # stage id -> why its running units must stop (fail_fast)
        self.cancel_reason: str | None = None
        self.cancel_phase: str | None = None
        self.phase = "main"
        self.force = asyncio.Event()
        self.units = UnitRunner(execute=execute, emit=emit, record=self.record, budget=self.budget,
                                prior=self.prior, slots=self.slots, force=self.force,
                                stop_reason=self._stop_reason, options=options)
        self._index(playbook.stages, None)
        self._index(playbook.finally_, None)

    def _index(self, stages: dict[str, Stage], loop_id: str | None) -> None:
        for sid, stage in stages.items():
            self.home[sid] = loop_id
            if stage.loop is not None:
                self._index(stage.loop.stages, sid)

    # public ----------------------------------------------------------------------------------
    def cancel(self, reason: str = "cancelled", force: bool = False) -> None:
        """First call: stop agents, start nothing new (finally stages still run). With force: kill."""
        if self.cancel_reason is None:
            self.cancel_reason, self.cancel_phase = reason, self.phase
        self.emit(RunCancelling(reason=reason, force=force))
        if force:
            self.force.set()

    async def run(self) -> RunResult:
        start = time.monotonic()
        await self._run_group(self.playbook.stages, self.root)
        self._settle_resolvers()
        if self.playbook.finally_:
            # after a forced stop or with the run budget gone, the gate records each as not started
            self.phase = "finally"
            await self._run_group(self.playbook.finally_, self.root)
        results = self.root.results
        status, reason = self._verdict(results)
        spend = self.budget.run_spend()
        return RunResult(self.run_id, status, reason, dict(results), time.monotonic() - start,
                         spend.tokens, spend.cost_usd, resumable=self._resumable(status, results))

    def _verdict(self, results: dict[str, StageResult]) -> tuple[Status, str]:
        if self.cancel_reason is not None:
            return Status.CANCELLED, self.cancel_reason
        over = self.budget.run_exceeded()
        if over:
            return Status.FAILURE, over
        for sid, res in results.items():
            if res.status is Status.FAILURE and not res.continue_on_error:
                return Status.FAILURE, f"stage {sid} failed: {res.reason}"
            if res.status is Status.CANCELLED:
                return Status.FAILURE, f"stage {sid} was stopped: {res.reason}"
        return Status.SUCCESS, ""

    def _resumable(self, status: Status, results: dict[str, StageResult]) -> bool:
        """Could `bridge resume` change how the run ended? Only by running again a unit that failed or
        was stopped: not when every unit succeeded (a loop whose `until` never held), nor past a budget."""
        if status is Status.SUCCESS or self.budget.run_exceeded():
            return False
        if self.cancel_reason is not None:
            return True
        return any(u.status in (Status.FAILURE, Status.CANCELLED) and u.error is not ErrorKind.BUDGET
                   for res in results.values() for u in res.units)

    # stop conditions -------------------------------------------------------------------------
    def _cancelled(self) -> str | None:
        if self.force.is_set():
            return self.cancel_reason or "cancelled"
        if self.cancel_reason is not None and (self.phase == "main" or self.cancel_phase == "finally"):
            return self.cancel_reason
        return None

    def _stop_reason(self, unit: Unit) -> tuple[Status, ErrorKind, str] | None:
        why = self._cancelled()
        if why:
            return Status.CANCELLED, ErrorKind.CANCELLED, why
        over = self.budget.exceeded(unit.stage_id)
        if over:
            return Status.FAILURE, ErrorKind.BUDGET, over
        sibling = self.stage_stop.get(unit.stage_id)
        if sibling:
            return Status.CANCELLED, ErrorKind.CANCELLED, sibling
        return None

    # stages ----------------------------------------------------------------------------------
    async def _run_group(self, stages: dict[str, Stage], scope: Scope) -> None:
        stages = {sid: st for sid, st in stages.items() if sid not in self.resolvers}
        for sid in stages:
            scope.event(sid)
        await asyncio.gather(*(self._run_stage(sid, st, scope) for sid, st in stages.items()))

    def _scope_of(self, sid: str, scope: Scope) -> Scope:
        s: Scope | None = scope
        while s is not None:
            if self.home.get(sid) == s.loop_id:
                return s
            s = s.parent
        return self.root

    async def _run_stage(self, sid: str, stage: Stage, scope: Scope) -> None:
        try:
            result = await self._stage(sid, stage, scope)
        except Exception as exc:  # a template error or a bug: this stage fails, the run goes on
            result = StageResult(sid, Status.FAILURE, f"{type(exc).__name__}: {exc}"
                                 if not hasattr(exc, "problems") else str(exc))
            self.record(sid, sid, status=Status.FAILURE.value, reason=result.reason)
            self.emit(UnitFinished(key=sid, stage_id=sid, status=Status.FAILURE, reason=result.reason))
        scope.finish(result)

    async def _stage(self, sid: str, stage: Stage, scope: Scope) -> StageResult:
        needs = {}
        for need in stage.needs:
            home = self._scope_of(need, scope)
            await home.event(need).wait()
            needs[need] = home.results[need]
        # a stage whose units all succeeded in an earlier session is final: reused, never re-gated
        # (a cancel during a resume must not turn it into `cancelled` and so run it again later)
        skip = None if self._all_prior_succeeded(sid, stage, scope) else self._gate(sid, stage, needs, scope)
        if skip is not None:
            return self._skip(sid, stage, scope, *skip)
        if self.options.selected is not None and sid not in self.options.selected \
                and not self._all_prior_succeeded(sid, stage, scope):
            return self._skip(sid, stage, scope, "not selected (--only / --from)", True)
        if stage.loop is not None:
            return await self._run_loop(sid, stage, scope)
        return await self._run_matrix(sid, stage, scope)

    def _gate(self, sid: str, stage: Stage, needs: dict[str, StageResult],
              scope: Scope) -> tuple[str, bool] | None:
        """(why, by_condition) when the stage must be skipped, else None."""
        why = self._cancelled()
        if why:
            return f"not started: {why}", False
        over = self.budget.exceeded(sid)
        if over:
            return f"not started: {over}", False
        custom = stage.if_ is not None and _STATUS_AWARE.search(stage.if_)
        if not custom:
            bad = [f"{n} ({r.status.value})" for n, r in needs.items() if not r.ok_for_dependents]
            if bad:
                return f"needs {', '.join(bad)}", False
        if stage.if_ is not None and not stage.matrix:
            if not evaluate(stage.if_, self._context(sid, scope, {}), f"stages.{sid}.if"):
                return f"condition is false: {stage.if_}", True
        return None

    def _skip(self, sid: str, stage: Stage, scope: Scope, reason: str, by_condition: bool) -> StageResult:
        status = Status.CANCELLED if reason.startswith("not started") else Status.SKIPPED
        units = tuple(self._units(sid, stage, scope)) if stage.loop is None else ()
        loop = {"iterations": 0} if stage.loop is not None else {}  # a loop's own row: none ran
        for unit in units or (Unit(unit_key(sid, {}, scope.iteration), sid, stage,
                                   iteration=scope.iteration, loop_id=scope.loop_id),):
            self.record(unit.key, sid, status=status.value, reason=reason, iteration=unit.iteration,
                        matrix=unit.matrix, **loop)
            self.emit(UnitFinished(key=unit.key, stage_id=sid, status=status, reason=reason))
        results = tuple(UnitResult(u, status, reason=reason) for u in units)
        return StageResult(sid, status, reason, results, by_condition=by_condition,
                           continue_on_error=stage.continue_on_error)

    def _units(self, sid: str, stage: Stage, scope: Scope) -> list[Unit]:
        if not stage.matrix:
            return [Unit(unit_key(sid, {}, scope.iteration), sid, stage, {}, scope.iteration, scope.loop_id)]
        return [Unit(unit_key(sid, item, scope.iteration), sid, stage, item, scope.iteration, scope.loop_id)
                for item in matrix_items(stage.matrix)]

    def _all_prior_succeeded(self, sid: str, stage: Stage, scope: Scope) -> bool:
        if stage.loop is not None:  # its own row says how it ended (its members' rows are reused as it runs)
            return self.prior.get(sid, Prior("")).status == "success"
        units = self._units(sid, stage, scope)
        return bool(units) and all(self.prior.get(u.key, Prior("")).status == "success" for u in units)

    async def _run_matrix(self, sid: str, stage: Stage, scope: Scope) -> StageResult:
        units = self._units(sid, stage, scope)
        local = asyncio.Semaphore(stage.max_parallel or len(units))
        results = await asyncio.gather(*(self._unit(u, scope, local) for u in units))
        ran = [r for r in results if r.status is not Status.SKIPPED]
        if not ran:
            return StageResult(sid, Status.SKIPPED, results[0].reason, tuple(results), by_condition=True,
                               continue_on_error=stage.continue_on_error)
        failed = [r for r in ran if r.status is Status.FAILURE]
        stopped = [r for r in ran if r.status is Status.CANCELLED]
        status = Status.FAILURE if failed else Status.CANCELLED if stopped else Status.SUCCESS
        reason = "; ".join(f"{r.key}: {r.reason}" for r in failed or stopped)
        result = StageResult(sid, status, reason, tuple(results), continue_on_error=stage.continue_on_error)
        if self.stage_done is not None:  # once every item has finished: merge them back in order
            result = await self.stage_done(result, functools.partial(self._resolve, scope))
        return result

    async def _run_loop(self, sid: str, stage: Stage, scope: Scope) -> StageResult:
        """Run the loop, its own ledger row (status, reason, iterations) kept up to date as it goes."""
        self.record(sid, sid, status=Status.RUNNING.value, reason="", started=time.time(), ended=None, iterations=0)
        result = await self._iterate(sid, stage, scope)
        self.record(sid, sid, status=result.status.value, reason=result.reason, ended=time.time(),
                    iterations=result.iterations)
        return result

    def _iteration_done(self, sid: str, i: int, status: Status, reason: str = "") -> None:
        self.emit(LoopIteration(sid, i, done=status is not Status.RUNNING, status=status.value, reason=reason))
        self.record(sid, sid, status=Status.RUNNING.value, iterations=i)  # _run_loop records how it ends

    async def _iterate(self, sid: str, stage: Stage, scope: Scope) -> StageResult:
        assert stage.loop is not None
        previous: dict[str, StageResult] | None = None
        units: list[UnitResult] = []
        for i in range(1, stage.loop.max_iterations + 1):
            inner = Scope(scope, loop_id=sid, iteration=i, previous=previous)
            await self._run_group(stage.loop.stages, inner)
            for res in inner.results.values():
                units.extend(res.units)
            scope.results.update(inner.results)  # the latest iteration is what `stages.<member>` shows
            bad = [r for r in inner.results.values() if r.status in (Status.FAILURE, Status.CANCELLED)
                   and not r.ok_for_dependents]
            if bad:
                status = Status.CANCELLED if all(r.status is Status.CANCELLED for r in bad) else Status.FAILURE
                reason = f"iteration {i}: {bad[0].stage_id}: {bad[0].reason}"
                self._iteration_done(sid, i, status, reason)
                return StageResult(sid, status, reason, tuple(units), iterations=i,
                                   continue_on_error=stage.continue_on_error)
            if self._went_past(stage, i):
                # an earlier session went on to iteration i+1, so `until` did not hold; judged again
                # now it could hold wrongly: reused outputs are read back as later iterations left them
                held = False
            else:
                ctx = self.contexts.context(sid, inner.all_results(), iteration=i, previous=previous, until=True)
                held = evaluate(stage.loop.until, ctx, f"stages.{sid}.loop.until")
            if held:
                self._iteration_done(sid, i, Status.SUCCESS, "until held")
                return StageResult(sid, Status.SUCCESS, f"until held after iteration {i}", tuple(units),
                                   iterations=i, continue_on_error=stage.continue_on_error)
            if i == stage.loop.max_iterations:
                reason = f"until never held in {i} iteration{'s' * (i != 1)}"
                self._iteration_done(sid, i, Status.FAILURE, reason)
                return StageResult(sid, Status.FAILURE, reason, tuple(units), iterations=i,
                                   continue_on_error=stage.continue_on_error)
            self._iteration_done(sid, i, Status.RUNNING, f"until not met ({stage.loop.until.strip()}), "
                                                          f"iteration {i + 1} next")
            previous = dict(inner.results)
        raise AssertionError("unreachable: a loop has at least one iteration")

    # resolution stages -----------------------------------------------------------------------
    async def _resolve(self, scope: Scope, resolver: str, key: str, conflict: Mapping[str, Any],
                       client: Unit) -> UnitResult:
        """Run resolution stage `resolver` as unit `key` for `client`'s merge conflict (Resolve)."""
        unit = Unit(key, resolver, self.resolvers[resolver], {}, client.iteration, None, conflict)
        prior = self.prior.get(key)
        if prior is not None:  # each conflict is resolved afresh; a resume never reuses a resolution
            self.prior[key] = Prior("rerun", prior.attempts)
        result = await self._unit(unit, scope, asyncio.Semaphore(1))
        self.resolutions[resolver].append(result)
        return result

    def _settle_resolvers(self) -> None:
        """Once the main stages are done: each resolver's result (skipped when nothing conflicted)."""
        for rid, stage in self.resolvers.items():
            ran = self.resolutions[rid]
            earlier = [UnitResult(Unit(k, rid, stage), Status.SUCCESS, reason="reused", attempts=p.attempts,
                                  final_message=p.final_message, summary=p.summary, reused=True)
                       for k, p in self.prior.items() if p.stage_id == rid and p.status == "success"]
            if not ran and earlier:  # a resumed run: it resolved in an earlier session
                result = StageResult(rid, Status.SUCCESS, "", tuple(earlier), continue_on_error=True)
            elif not ran:
                key = unit_key(rid, {}, None)
                self.record(key, rid, status=Status.SKIPPED.value, reason="no conflict")
                self.emit(UnitFinished(key=key, stage_id=rid, status=Status.SKIPPED, reason="no conflict"))
                unit = Unit(key, rid, stage)
                result = StageResult(rid, Status.SKIPPED, "no conflict", (UnitResult(unit, Status.SKIPPED,
                                     reason="no conflict"),), by_condition=True)
            else:
                bad = [r for r in ran if r.status is not Status.SUCCESS]
                status = (Status.SUCCESS if not bad else Status.CANCELLED
                          if all(r.status is Status.CANCELLED for r in bad) else Status.FAILURE)
                reason = "; ".join(f"{r.key}: {r.reason}" for r in bad)
                # a failed resolution fails the stage it served; that failure is the one that counts
                result = StageResult(rid, status, reason, tuple(ran), continue_on_error=True)
            self.root.finish(result)

    def _went_past(self, stage: Stage, iteration: int) -> bool:
        """Did an earlier session of this run start iteration `iteration + 1` of loop `stage`?"""
        assert stage.loop is not None
        after = Scope(iteration=iteration + 1)
        return any(u.key in self.prior for sid, member in stage.loop.stages.items()
                   for u in self._units(sid, member, after))

    # units -----------------------------------------------------------------------------------
    async def _unit(self, unit: Unit, scope: Scope, local: asyncio.Semaphore) -> UnitResult:
        context = functools.partial(self._context, unit.stage_id, scope, unit.matrix, unit.conflict)
        result = await self.units.run(unit, local, context, self._upstream_keys(unit, scope))
        if result.status is Status.FAILURE and unit.stage.fail_fast and unit.stage.matrix \
                and not unit.stage.continue_on_error:
            self.stage_stop.setdefault(unit.stage_id, f"fail_fast: {unit.key} failed")
        return result

    def _upstream_keys(self, unit: Unit, scope: Scope) -> tuple[str, ...]:
        """The units whose transcripts this one's hand-off stands in for: its needs' and, inside a loop,
        the needs of every loop around it (what its templates can see from outside the loop)."""
        results = scope.all_results()
        needs, loop = list(unit.stage.needs), self.home.get(unit.stage_id)
        while loop is not None:
            needs += self.contexts.places[loop].stage.needs
            loop = self.home.get(loop)
        return tuple(u.key for need in dict.fromkeys(needs) if need in results for u in results[need].units)

    # template context ------------------------------------------------------------------------
    def _context(self, sid: str, scope: Scope, matrix: dict[str, Any],
                 conflict: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return self.contexts.context(sid, scope.all_results(), matrix=matrix, iteration=scope.iteration,
                                     previous=scope.previous, conflict=conflict)
