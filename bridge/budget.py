"""Cost and token budgets, per stage and per run, counted from what the agents report."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridge.playbook import Playbook, iter_stages


@dataclass(frozen=True)
class Spend:
    tokens: int = 0
    cost_usd: float = 0.0

    def __add__(self, other: Spend) -> Spend:
        return Spend(self.tokens + other.tokens, self.cost_usd + other.cost_usd)


def spend_from_event(data: dict[str, Any]) -> Spend | None:
    """Running figures from a USAGE agent event's data, if it carries any we understand."""
    usage = data.get("usage", data)
    if not isinstance(usage, dict) and hasattr(usage, "total"):
        tokens = int(usage.total)
    elif isinstance(usage, dict):
        tokens = int(usage.get("input_tokens") or 0) + int(usage.get("output_tokens") or 0)
    else:
        return None
    cost = data.get("cost_usd") or data.get("total_cost_usd") or 0.0
    return Spend(tokens, float(cost))


class BudgetTracker:
    """Settled spend per stage plus the live spend of running attempts; says when a limit is hit."""

    def __init__(self, playbook: Playbook) -> None:
        self.run_limit = (playbook.max_tokens, playbook.max_cost_usd)
        self.stage_limits = {sid: (s.max_tokens, s.max_cost_usd) for sid, s in
                             [*iter_stages(playbook.stages), *iter_stages(playbook.finally_)]}
        self.settled: dict[str, Spend] = {}
        self.live: dict[str, tuple[str, Spend]] = {}  # unit key -> (stage id, spend so far)

    def add_settled(self, stage_id: str, spend: Spend) -> None:
        self.settled[stage_id] = self.settled.get(stage_id, Spend()) + spend

    def set_live(self, key: str, stage_id: str, spend: Spend) -> None:
        self.live[key] = (stage_id, spend)

    def settle(self, key: str, stage_id: str, spend: Spend) -> None:
        """An attempt ended: its final figures replace its live ones."""
        self.live.pop(key, None)
        self.add_settled(stage_id, spend)

    def stage_spend(self, stage_id: str) -> Spend:
        total = self.settled.get(stage_id, Spend())
        for sid, spend in self.live.values():
            if sid == stage_id:
                total = total + spend
        return total

    def run_spend(self) -> Spend:
        total = Spend()
        for spend in self.settled.values():
            total = total + spend
        for _, spend in self.live.values():
            total = total + spend
        return total

    def run_exceeded(self) -> str | None:
        return _over("the run", self.run_spend(), *self.run_limit)

    def stage_exceeded(self, stage_id: str) -> str | None:
        limits = self.stage_limits.get(stage_id, (None, None))
        return _over(f"stage {stage_id}", self.stage_spend(stage_id), *limits)

    def exceeded(self, stage_id: str) -> str | None:
        """Why `stage_id` must stop (its own budget or the run's), or None."""
        return self.run_exceeded() or self.stage_exceeded(stage_id)


def _over(what: str, spend: Spend, max_tokens: int | None, max_cost: float | None) -> str | None:
    if max_cost is not None and spend.cost_usd > max_cost:
        return f"budget exceeded: {what} cost ${spend.cost_usd:.4f} > max_cost_usd ${max_cost:g}"
    if max_tokens is not None and spend.tokens > max_tokens:
        return f"budget exceeded: {what} used {spend.tokens} tokens > max_tokens {max_tokens}"
    return None
