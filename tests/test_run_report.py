"""What a run leaves when it ends (bridge.run_report): summary.md from the ledger and the notifications,
driven through real runs of the fake agent."""

from __future__ import annotations

import re
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest

from bridge.events import RunWarning, Status
from bridge.ledger import Ledger
from tests.runhelp import bridge, make_project, run_inproc, write_playbook


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path)


def test_a_failed_notification_is_a_warning_in_output_summary_and_ledger(project: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "T000-B000-do-not-write-me"
    monkeypatch.setenv("BRIDGE_TEST_CHAT_URL", f"http://127.0.0.1:1/services/{secret}")
    (project / "scripts").mkdir()
    ok = project / "scripts" / "ok.sh"
    ok.write_text("#!/bin/sh\necho \"$BRIDGE_RUN_STATUS\" > notified.txt\n")
    ok.chmod(0o755)
    write_playbook(project, """
        stages:
          s: {agent: f, prompt: "FAKE: message=done"}
        notify:
          - webhook: "${BRIDGE_TEST_CHAT_URL}"
          - command: [./scripts/ok.sh]
          - command: [./scripts/missing.sh]
    """)
    done = bridge(project, "run", "pb.yaml")  # from the project, as a user runs it (cwd and --dir)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out  # a notification never changes the run's result
    warnings = [line for line in out.splitlines() if "warning: notification" in line]
    assert len(warnings) == 2, out
    assert "webhook ${BRIDGE_TEST_CHAT_URL}: unreachable" in warnings[0]
    assert "command ./scripts/missing.sh" in warnings[1]
    assert (project / "notified.txt").read_text().strip() == "success"
    with Ledger(project) as ledger:
        [run] = ledger.runs()
        recorded = [data["message"] for name, data in ledger.events(run.id) if name == "run_warning"]
    assert len(recorded) == 2 and "unreachable" in recorded[0]
    summary = (project / ".bridge" / "runs" / run.id / "summary.md").read_text()
    section = summary.split("## Notifications", 1)[1]
    assert "- warning: webhook ${BRIDGE_TEST_CHAT_URL}: unreachable" in section and "missing.sh" in section
    for path in (project / ".bridge").rglob("*"):  # the expanded URL is in no file bridge wrote
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_summary_tells_each_loop_round(project: Path) -> None:
    pb = write_playbook(project, """
        stages:
          fix:
            loop:
              max_iterations: 3
              until: "stages.verify.outputs['verdict.json'].ok"
              stages:
                verify:
                  agent: f
                  prompt: "FAKE: respond_first=1; write={{ shared }}/verdict.json={\\"ok\\": {{ 'true' if loop.iteration == 2 else 'false' }}}; message={{ 'PASS: 4 tests' if loop.iteration == 2 else 'FAIL: 2 of 4 tests failed' }}"
                  outputs: [verdict.json]
    """)
    result, _ = run_inproc(project, pb)
    assert result.status is Status.SUCCESS, result.reason
    text = (project / ".bridge" / "runs" / result.run_id / "summary.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| verify@")}
    assert rows["verify@1"].rstrip().endswith("| FAIL: 2 of 4 tests failed |")  # round 1 was red
    assert rows["verify@2"].rstrip().endswith("| PASS: 4 tests |")
    # the one file both rounds wrote is listed once, saying whose it is
    [report] = [line for line in text.splitlines() if "verdict.json](" in line]
    assert report.startswith("- verify@1, verify@2: ") and "last of them" in report
    assert "- fix: round 1 until not met, round 2 until held" in text.split("## Loops")[1]


def test_summary_of_a_resumed_run_starts_at_the_first_start(project: Path) -> None:
    (project / "gate").write_text("closed")
    write_playbook(project, """
        stages:
          s: {agent: f, prompt: "FAKE: message=ok; exit={{ 1 if 'closed' in vars.gate else 0 }}; result={{ 'error' if 'closed' in vars.gate else 'success' }}"}
        vars: {gate: closed}
    """)
    first = bridge(project, "run", "pb.yaml")
    assert first.returncode == 1, first.stdout + first.stderr
    with Ledger(project) as ledger:
        [run] = ledger.runs()
    text = (project / ".bridge" / "runs" / run.id / "summary.md").read_text()
    assert "| Resumed |" not in text
    with sqlite3.connect(project / ".bridge" / "ledger.db") as db:  # as if it had started 2 hours ago
        db.execute("UPDATE runs SET started = started - 7200 WHERE id = ?", (run.id,))
    again = bridge(project, "resume", run.id)
    assert again.returncode == 1, again.stdout + again.stderr  # still failing: it is the same run
    text = (project / ".bridge" / "runs" / run.id / "summary.md").read_text()
    first = datetime.fromtimestamp(run.started - 7200, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert f"| Started | {first} |" in text
    resumed = re.search(r"\| Resumed \| (.+?) \|", text).group(1)
    assert resumed != first and resumed >= datetime.fromtimestamp(run.started, timezone.utc).strftime("%Y-%m-%d")
    assert "| Duration | 2h 00m |" in text  # from the first start
    assert "| s | failure |" in text and "| Note |" in text


def test_run_warning_reads_as_a_warning_line() -> None:
    from bridge.ui import describe

    assert describe(RunWarning("notification webhook x: HTTP 500")) == "warning: notification webhook x: HTTP 500"
