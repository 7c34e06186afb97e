"""Progress renderers: plain timestamped lines, JSON lines, and the live view's rows."""

from __future__ import annotations

import io
import json
import re

from bridge.events import (RunFinished, RunStarted, Status, UnitActivity, UnitFinished, UnitStarted,
                           UnitWaiting)
from bridge.ui import JsonLines, PlainLines, describe, progress

EVENTS = [
    RunStarted("r1", "pb", "/p/.bridge/runs/r1", ("a", "b")),
    UnitStarted("a", "a", "claude", 1),
    UnitActivity("a", "command", "ls -la", tokens=10),
    UnitWaiting("a", 0.0, "usage limit"),
    UnitFinished("a", "a", Status.SUCCESS, attempts=1, duration=1.5, tokens=120, cost_usd=0.25),
    UnitFinished("b", "b", Status.FAILURE, reason="boom", attempts=2, duration=3.0),
    RunFinished("r1", Status.CANCELLED, "interrupted", 4.0, 120, 0.25, "/p/summary.md", resumable=True),
]


def test_plain_lines() -> None:
    out = io.StringIO()
    render = PlainLines(out)
    for event in EVENTS:
        render(event)
    text = out.getvalue()
    lines = text.splitlines()
    assert all(re.match(r"^(\d\d:\d\d:\d\d |  )", line) for line in lines)
    assert "ls -la" not in text  # activity is for the live view only
    assert "✓ a success [1.5s, 120 tok, $0.2500]" in text
    assert "✗ b failure [3.0s]: boom" in text
    assert "waiting until" in text
    assert "continue with: bridge resume r1" in text


def test_json_lines() -> None:
    out = io.StringIO()
    render = JsonLines(out)
    for event in EVENTS:
        render(event)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["event"] for r in rows][:3] == ["run_started", "unit_started", "unit_activity"]
    assert rows[4]["status"] == "success" and rows[-1]["resumable"] is True


def test_progress_picks_plain_off_a_terminal() -> None:
    out = io.StringIO()
    with progress(False, out) as render:
        assert isinstance(render, PlainLines)
    with progress(True, out) as render:
        assert isinstance(render, JsonLines)


def test_live_view_rows(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from bridge import ui

    monkeypatch.setenv("NO_COLOR", "1")
    view = ui.LiveView()
    try:
        for event in EVENTS[:-1]:
            view(event)
        a = view.rows["a"]
        assert a.status == "success" and a.tokens == 120 and a.cost == 0.25
        assert view.rows["b"].activity == "boom"
        view._table()  # renders without error
    finally:
        view.close()


def test_describe_ignores_activity() -> None:
    assert describe(UnitActivity("a", "message", "hi")) is None
