"""The scheduler alone, with an in-process fake executor: ordering, gates, matrix, loops, retries."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from bridge.agents.base import ErrorKind, Usage
from bridge.events import Status, UnitFinished, UnitRetrying, UnitWaiting
from bridge.playbook import Playbook
from bridge.runner import Runner, RunnerOptions
from bridge.unit import AttemptReport, Prior, Unit
from bridge.unit_runner import AttemptControl
from bridge.views import Contexts


def playbook(stages: dict[str, Any], **top: Any) -> Playbook:
    return Playbook.model_validate({"version": 1, "name": "t", "agents": {"a": {"cli": "codex"}},
                                    "stages": stages, **top})


def st(**kw: Any) -> dict[str, Any]:
    return {"agent": "a", "prompt": kw.pop("prompt", "go"), **kw}


class FakeExec:
    """Each unit's behaviour: a list of reports consumed per attempt (last one repeats)."""

    def __init__(self, script: dict[str, list[AttemptReport]] | None = None, delay: float = 0.01,
                 delays: dict[str, float] | None = None) -> None:
        self.script, self.delay, self.delays = script or {}, delay, delays or {}
        self.calls: list[tuple[str, int]] = []
        self.log: list[tuple[str, str, float]] = []
        self.running = 0
        self.peak = 0
        self.contexts: dict[str, dict[str, Any]] = {}

    async def __call__(self, unit: Unit, n: int, ctx: dict[str, Any], control: AttemptControl) -> AttemptReport:
        self.calls.append((unit.key, n))
        self.contexts[unit.key] = ctx
        self.running += 1
        self.peak = max(self.peak, self.running)
        self.log.append(("start", unit.key, time.monotonic()))
        try:
            end = time.monotonic() + self.delays.get(unit.stage_id, self.delay)
            while time.monotonic() < end:
                why = control.should_stop()
                if why:
                    return AttemptReport(Status.FAILURE, ErrorKind.CANCELLED, why)
                await asyncio.sleep(0.005)
            reports = self.script.get(unit.key) or self.script.get(unit.stage_id) or [AttemptReport(Status.SUCCESS)]
            return reports[min(n - 1, len(reports) - 1)]
        finally:
            self.running -= 1
            self.log.append(("end", unit.key, time.monotonic()))


def run(pb: Playbook, ex: FakeExec, tmp_path: Path, **opts: Any):
    events: list[Any] = []
    prior = opts.pop("prior", None)
    contexts = Contexts(pb, shared=tmp_path, inbox=tmp_path, run_id="r", vars=dict(pb.vars))
    runner = Runner(pb, "r", execute=ex, emit=events.append, contexts=contexts,
                    options=RunnerOptions(**opts), prior=prior)
    result = asyncio.run(runner.run())
    return result, events


def order(ex: FakeExec, what: str) -> list[str]:
    return [k for w, k, _ in ex.log if w == what]


def test_eager_start_not_layer_by_layer(tmp_path: Path) -> None:
    pb = playbook({"slow": st(), "fast": st(), "after_fast": st(needs="fast")})
    ex = FakeExec(delays={"slow": 0.4, "fast": 0.01, "after_fast": 0.01})
    result, _ = run(pb, ex, tmp_path)
    assert result.status is Status.SUCCESS
    ends = order(ex, "end")
    assert ends.index("after_fast") < ends.index("slow")


def test_needs_order(tmp_path: Path) -> None:
    pb = playbook({"c": st(needs=["a", "b"]), "a": st(), "b": st(needs="a")})
    ex = FakeExec()
    result, _ = run(pb, ex, tmp_path)
    starts = order(ex, "start")
    assert starts.index("a") < starts.index("b") < starts.index("c")
    assert result.status is Status.SUCCESS


def test_matrix_fanout_and_max_parallel(tmp_path: Path) -> None:
    pb = playbook({"m": st(matrix={"x": [1, 2, 3], "y": ["p", "q"]}, max_parallel=2)})
    ex = FakeExec(delay=0.05)
    result, _ = run(pb, ex, tmp_path)
    assert result.status is Status.SUCCESS
    assert len(result.stages["m"].units) == 6
    assert len({k for k, _ in ex.calls}) == 6
    assert ex.peak == 2


def test_global_max_parallel(tmp_path: Path) -> None:
    pb = playbook({f"s{i}": st() for i in range(6)}, max_parallel=3)
    ex = FakeExec(delay=0.05)
    run(pb, ex, tmp_path)
    assert ex.peak == 3
    ex = FakeExec(delay=0.05)
    run(pb, ex, tmp_path, max_parallel=1)
    assert ex.peak == 1


def test_if_skips_and_dependents(tmp_path: Path) -> None:
    pb = playbook({"a": st(**{"if": "vars.go == 'yes'"}), "b": st(needs="a"),
                   "c": st(), "d": st(needs="c", **{"if": "stages.c.status == 'success'"})},
                  vars={"go": "no"})
    ex = FakeExec()
    result, _ = run(pb, ex, tmp_path)
    assert result.stages["a"].status is Status.SKIPPED
    assert result.stages["b"].status is Status.SUCCESS  # skipped-by-condition passes the gate
    assert result.stages["d"].status is Status.SUCCESS
    assert result.status is Status.SUCCESS


def test_failure_skips_dependents_but_not_others(tmp_path: Path) -> None:
    pb = playbook({"a": st(), "b": st(needs="a"), "c": st(),
                   "on_fail": st(needs="a", **{"if": "stages.a.status == 'failure'"})})
    ex = FakeExec({"a": [AttemptReport(Status.FAILURE, ErrorKind.CRASHED, "boom")]})
    result, _ = run(pb, ex, tmp_path)
    assert result.stages["b"].status is Status.SKIPPED and "needs a" in result.stages["b"].reason
    assert result.stages["c"].status is Status.SUCCESS
    assert result.stages["on_fail"].status is Status.SUCCESS
    assert result.status is Status.FAILURE and "boom" in result.reason


def test_continue_on_error(tmp_path: Path) -> None:
    pb = playbook({"a": st(continue_on_error=True), "b": st(needs="a")})
    ex = FakeExec({"a": [AttemptReport(Status.FAILURE, ErrorKind.CRASHED, "boom")]})
    result, _ = run(pb, ex, tmp_path)
    assert result.stages["a"].status is Status.FAILURE
    assert result.stages["b"].status is Status.SUCCESS
    assert result.status is Status.SUCCESS


def test_retry_with_backoff(tmp_path: Path) -> None:
    pb = playbook({"a": st(retry={"limit": 2, "backoff": "10ms", "factor": 2})})
    fail = AttemptReport(Status.FAILURE, ErrorKind.CRASHED, "flaky")
    ex = FakeExec({"a": [fail, fail, AttemptReport(Status.SUCCESS)]})
    result, events = run(pb, ex, tmp_path)
    assert result.status is Status.SUCCESS
    assert ex.calls == [("a", 1), ("a", 2), ("a", 3)]
    delays = [e.delay for e in events if isinstance(e, UnitRetrying)]
    assert delays == [pytest.approx(0.01), pytest.approx(0.02)]


def test_retry_exhausted(tmp_path: Path) -> None:
    pb = playbook({"a": st(retry={"limit": 1, "backoff": "1ms"})})
    ex = FakeExec({"a": [AttemptReport(Status.FAILURE, ErrorKind.CRASHED, "flaky")]})
    result, _ = run(pb, ex, tmp_path)
    assert result.status is Status.FAILURE and len(ex.calls) == 2


def test_rate_limit_wait_not_counted(tmp_path: Path) -> None:
    pb = playbook({"a": st()})  # no retries at all
    limited = AttemptReport(Status.FAILURE, ErrorKind.RATE_LIMIT, "usage limit", reset_at=time.time() + 0.05)
    ex = FakeExec({"a": [limited, AttemptReport(Status.SUCCESS)]})
    result, events = run(pb, ex, tmp_path)
    assert result.status is Status.SUCCESS
    assert [e for e in events if isinstance(e, UnitWaiting)]


def test_after_a_rate_limit_only_a_session_that_got_somewhere_is_resumed(tmp_path: Path) -> None:
    # a limit on the first model call leaves nothing to resume (Gemini CLI has not saved it at all);
    # one hit after some work resumes that session
    pb = playbook({"a": st(), "b": st()})
    soon = time.time() + 0.05
    ex = FakeExec({"a": [AttemptReport(Status.FAILURE, ErrorKind.RATE_LIMIT, "limit", session_id="s-a",
                                       reset_at=soon), AttemptReport(Status.SUCCESS)],
                   "b": [AttemptReport(Status.FAILURE, ErrorKind.RATE_LIMIT, "limit", session_id="s-b",
                                       usage=Usage(100, 20), reset_at=soon), AttemptReport(Status.SUCCESS)]})
    resumed: dict[tuple[str, int], str | None] = {}
    inner = ex.__call__

    async def spy(unit: Unit, n: int, ctx: dict[str, Any], control: AttemptControl) -> AttemptReport:
        resumed[(unit.key, n)] = control.resume_session
        return await inner(unit, n, ctx, control)

    result, _ = run(pb, spy, tmp_path)
    assert result.status is Status.SUCCESS
    assert resumed == {("a", 1): None, ("a", 2): None, ("b", 1): None, ("b", 2): "s-b"}


def test_rate_limit_waits_bounded(tmp_path: Path) -> None:
    pb = playbook({"a": st()})
    limited = AttemptReport(Status.FAILURE, ErrorKind.RATE_LIMIT, "usage limit")
    ex = FakeExec({"a": [limited]})
    result, _ = run(pb, ex, tmp_path, rate_limit_waits=2, rate_limit_backoff=0.01)
    assert result.status is Status.FAILURE and len(ex.calls) == 3


def test_fail_fast_stops_siblings(tmp_path: Path) -> None:
    pb = playbook({"m": st(matrix={"x": ["bad", "slow1", "slow2", "later"]}, max_parallel=3)})
    ex = FakeExec({"m-bad": [AttemptReport(Status.FAILURE, ErrorKind.CRASHED, "bad item")]},
                  delays={"m": 5.0})
    ex.delays = {}
    ex.delay = 0.0

    async def fake(unit: Unit, n: int, ctx: dict[str, Any], control: AttemptControl) -> AttemptReport:
        if unit.matrix["x"] == "bad":
            await asyncio.sleep(0.05)
            return AttemptReport(Status.FAILURE, ErrorKind.CRASHED, "bad item")
        while not control.should_stop():
            await asyncio.sleep(0.01)
        return AttemptReport(Status.FAILURE, ErrorKind.CANCELLED, "stopped")

    result, _ = run(pb, fake, tmp_path)  # type: ignore[arg-type]
    statuses = {u.key: u.status for u in result.stages["m"].units}
    assert statuses["m-bad"] is Status.FAILURE
    assert statuses["m-slow1"] is Status.CANCELLED and statuses["m-later"] is Status.CANCELLED
    assert result.status is Status.FAILURE


def test_loop_until_second_iteration_sees_previous(tmp_path: Path) -> None:
    loop = {"until": "stages.verify.final_message == 'ok'", "max_iterations": 4,
            "stages": {"impl": st(prompt="{{ loop.iteration }} {{ loop.previous.verify.final_message if loop.previous else '' }}"),
                       "verify": st(needs="impl")}}
    pb = playbook({"fix": {"loop": loop}, "after": st(needs="fix")})
    ex = FakeExec({"verify@1": [AttemptReport(Status.SUCCESS, final_message="nope")],
                   "verify@2": [AttemptReport(Status.SUCCESS, final_message="ok")]})
    result, _ = run(pb, ex, tmp_path)
    assert result.stages["fix"].status is Status.SUCCESS and result.stages["fix"].iterations == 2
    assert [k for k, _ in ex.calls] == ["impl@1", "verify@1", "impl@2", "verify@2", "after"]
    ctx = ex.contexts["impl@2"]
    assert ctx["loop"]["iteration"] == 2
    assert ctx["loop"]["previous"]["verify"].final_message == "nope"
    assert result.status is Status.SUCCESS


def test_loop_max_iterations_exhausted(tmp_path: Path) -> None:
    loop = {"until": "false", "max_iterations": 2, "stages": {"impl": st()}}
    pb = playbook({"fix": {"loop": loop}, "after": st(needs="fix")})
    ex = FakeExec()
    result, _ = run(pb, ex, tmp_path)
    assert result.stages["fix"].status is Status.FAILURE and "2 iterations" in result.stages["fix"].reason
    assert result.stages["after"].status is Status.SKIPPED
    assert [k for k, _ in ex.calls] == ["impl@1", "impl@2"]


def test_finally_runs_after_failure(tmp_path: Path) -> None:
    pb = playbook({"a": st(), "b": st(needs="a")}, **{"finally": {"cleanup": st(prompt="{{ stages.a.status }}")}})
    ex = FakeExec({"a": [AttemptReport(Status.FAILURE, ErrorKind.CRASHED, "boom")]})
    result, _ = run(pb, ex, tmp_path)
    assert result.stages["cleanup"].status is Status.SUCCESS
    assert ex.calls[-1][0] == "cleanup"
    assert result.status is Status.FAILURE


def test_budget_run_limit_stops(tmp_path: Path) -> None:
    pb = playbook({"a": st(), "b": st(needs="a"), "c": st(needs="b")}, max_cost_usd=0.5)
    ex = FakeExec({"a": [AttemptReport(Status.SUCCESS, usage=Usage(10, 10), cost_usd=0.4)],
                   "b": [AttemptReport(Status.SUCCESS, usage=Usage(10, 10), cost_usd=0.4)]})
    result, _ = run(pb, ex, tmp_path)
    assert result.status is Status.FAILURE
    assert "budget exceeded" in result.reason and "0.8" in result.reason
    assert result.stages["c"].status is Status.CANCELLED
    assert [k for k, _ in ex.calls] == ["a", "b"]


def test_prior_success_reused(tmp_path: Path) -> None:
    pb = playbook({"a": st(), "b": st(needs="a")})
    ex = FakeExec()
    result, events = run(pb, ex, tmp_path, prior={"a": Prior("success", 1, "done")})
    assert [k for k, _ in ex.calls] == ["b"]
    assert ex.contexts["b"]["stages"]["a"].final_message == "done"
    assert any(isinstance(e, UnitFinished) and e.reused for e in events)
