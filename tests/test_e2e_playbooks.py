"""The shipped playbooks, rehearsed end to end: the real codex, claude and gemini CLIs against their
rehearsal scripts (playbooks/rehearsals/<name>.yaml), each on a fresh git copy of bridge/demo/sample.
Outcomes are checked on disk: reports in the shared folder, merged fixes on the user's branch, the
sample's real test suite, the ledger, and no process left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.demo import SAMPLE, build_sample
from bridge.events import Status
from bridge.launch import RunSpec, start_run
from bridge.ledger import Ledger
from bridge.proctable import run_processes
from bridge.rehearsal import load_script
from bridge.tasks import read_tasks
from bridge.workspace import RunLayout

PLAYBOOKS = Path(__file__).resolve().parent.parent / "playbooks"


@pytest.fixture
def repo(tmp_path: Path, real_clis: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PATH", f"{real_clis}{os.pathsep}{os.environ['PATH']}")
    return build_sample(tmp_path / "repo")


def rehearse(repo: Path, name: str):
    events: list = []
    result = start_run(RunSpec(playbook_path=PLAYBOOKS / f"{name}.yaml", project=repo, rehearse=True),
                       events.append)
    assert run_processes(result.run_id) == [], "an agent process of the run is still running"
    return result, RunLayout(repo, result.run_id).shared, events


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout


def unittest_in(repo: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "unittest", "-q"], cwd=repo, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})


def units(repo: Path, run_id: str) -> dict[str, object]:
    with Ledger(repo) as ledger:
        assert ledger.run(run_id).status in ("success", "failure")
        return {u.key: u for u in ledger.units(run_id)}


def test_rehearsal_scripts_parse_and_pair_with_a_playbook() -> None:
    scripts = sorted((PLAYBOOKS / "rehearsals").glob("*.yaml"))
    assert {p.name for p in scripts} >= {"audit-then-implement.yaml", "nightly-verify.yaml", "role-split.yaml"}
    for script in scripts:
        load_script(script)
        assert (PLAYBOOKS / script.name).is_file()


def test_the_sample_fails_two_of_its_four_tests(tmp_path: Path) -> None:
    done = unittest_in(build_sample(tmp_path / "s"))
    assert done.returncode == 1 and "Ran 4 tests" in done.stderr and "failures=2" in done.stderr
    assert SAMPLE.is_dir()


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_audit_then_implement(repo: Path) -> None:
    assert unittest_in(repo).returncode == 1
    result, shared, _ = rehearse(repo, "audit-then-implement")
    assert result.status is Status.SUCCESS, result.reason
    assert result.stages["fix"].iterations == 2

    # the read-only auditors' final messages, written into the shared folder by bridge
    for area, finding in (("security", "SQL injection"), ("performance", "dedupe"), ("test-gaps", "dedupe([])")):
        assert finding in (shared / "audit" / f"{area}.md").read_text()
    argv = json.loads((RunLayout(repo, result.run_id).run_dir / "stages" / "audit-security" / "attempt-1"
                       / "argv.json").read_text())["argv"]
    assert argv[argv.index("--sandbox") + 1] == "read-only"
    tasks = read_tasks(shared / "tasks.md")
    assert tasks.total == 4 and "total_value" in tasks.items[3].text and tasks.items[3].owner == "one"
    assert json.loads((shared / "verify" / "result.json").read_text()) == {"status": "pass"}
    assert "OK" in (shared / "verify" / "tests.log").read_text()

    # the user's branch holds both teammates' merged work and round 2's fix; the tree is clean
    assert git(repo, "branch", "--show-current").strip() == "main"
    store, util = git(repo, "show", "main:inventory/store.py"), git(repo, "show", "main:inventory/util.py")
    assert "WHERE name = ?" in store and "price * quantity" in store and "dict.fromkeys" in util
    assert "test_dedupe_empty" in git(repo, "show", "main:tests/test_store.py")
    assert git(repo, "status", "--porcelain") == ""
    done = unittest_in(repo)  # the sample's real suite, run here again
    assert done.returncode == 0 and "Ran 5 tests" in done.stderr, done.stderr

    got = units(repo, result.run_id)
    assert {k for k in got if k.startswith("verify@")} == {"verify@1", "verify@2"}
    assert got["implement-two@2"].status == "skipped"  # no open task of its own in round 2
    assert all(got[k].status == "success" for k in ("plan@1", "implement-one@1", "implement-two@1", "verify@1",
                                                    "plan@2", "implement-one@2", "verify@2"))
    assert json.loads((shared / "verify" / "result.json").read_text())["status"] == "pass"
    for key in (k for k in got if k.startswith("audit-")):  # hand-offs capped at 5 lines (+ a "more" marker)
        assert 0 < len([ln for ln in got[key].summary.splitlines() if not ln.startswith("[…")]) <= 5
    assert len(got["audit-security"].summary) < len((shared / "audit" / "security.md").read_text())
    assert "FAIL: test_total_value_counts_quantity" in (
        RunLayout(repo, result.run_id).run_dir / "stages" / "plan@2" / "attempt-1" / "prompt.md").read_text()


def _fix_the_sample(repo: Path) -> None:
    store = repo / "inventory" / "store.py"
    text = store.read_text()
    text = text.replace("f\"SELECT name, price, quantity FROM items WHERE name = '{name}'\")",
                        "\"SELECT name, price, quantity FROM items WHERE name = ?\", (name,))")
    text = text.replace("sum(price for _, price, _ in", "sum(price * quantity for _, price, quantity in")
    store.write_text(text)
    git(repo, "commit", "-qam", "fix the seeded bugs")
    assert unittest_in(repo).returncode == 0


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_nightly_verify_failure_path_triages_and_fails_the_run(repo: Path) -> None:
    result, shared, _ = rehearse(repo, "nightly-verify")
    assert result.status is Status.FAILURE
    assert json.loads((shared / "nightly" / "result.json").read_text()) == {"status": "fail", "failed": 2}
    triage = (shared / "nightly" / "triage.md").read_text()
    assert "test_find_does_not_inject" in triage and "test_total_value_counts_quantity" in triage
    got = units(repo, result.run_id)
    assert (got["test"].status, got["triage"].status, got["verdict"].status) == ("success", "success", "failure")
    assert "triage.md" in got["verdict"].reason
    log = (repo / ".bridge" / "nightly-verify.log").read_text().split()
    assert log[:2] == [result.run_id, "failure"]  # the command notification ran


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_nightly_verify_pass_path_skips_triage(repo: Path) -> None:
    _fix_the_sample(repo)
    result, shared, _ = rehearse(repo, "nightly-verify")
    assert result.status is Status.SUCCESS, result.reason
    assert json.loads((shared / "nightly" / "result.json").read_text()) == {"status": "pass"}
    assert not (shared / "nightly" / "triage.md").exists()
    got = units(repo, result.run_id)
    assert (got["test"].status, got["triage"].status, got["verdict"].status) == ("success", "skipped", "success")
    assert (repo / ".bridge" / "nightly-verify.log").read_text().split()[:2] == [result.run_id, "success"]


def test_nightly_verify_is_scheduled_and_rehearsal_scripts_are_not_playbooks() -> None:
    from bridge.loader import load_playbook
    from bridge.scheduler import playbook_files

    assert all(p.parent == PLAYBOOKS for p in playbook_files(PLAYBOOKS))
    assert "audit-then-implement.yaml" in {p.name for p in playbook_files(PLAYBOOKS)}
    (schedule,) = load_playbook(PLAYBOOKS / "nightly-verify.yaml").schedule
    assert (schedule.cron, schedule.overlap, schedule.catch_up) == ("0 3 * * *", "skip", "last")


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_role_split_with_all_three_clis(repo: Path) -> None:
    result, shared, _ = rehearse(repo, "role-split")
    assert result.status is Status.SUCCESS, result.reason
    assert "## Goal" in (shared / "brief.md").read_text()
    assert "report_rows(store)" in (shared / "parts" / "architecture.md").read_text()
    assert "render_report" in (shared / "parts" / "ui.md").read_text()
    assert (shared / "review.md").read_text().startswith("Verdict: approve")

    assert git(repo, "branch", "--show-current").strip() == "main"
    tracked = git(repo, "ls-files").split()
    assert "inventory/report.py" in tracked and "inventory/page.py" in tracked
    assert git(repo, "status", "--porcelain") == ""
    page = subprocess.run(
        [sys.executable, "-c", "from inventory.store import Store; from inventory.page import render_report\n"
         "s = Store(); s.add('apple', 0.5, 10); s.add('<b>pear</b>', 2.0, 1); print(render_report(s))"],
        cwd=repo, capture_output=True, text=True, timeout=30, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert page.returncode == 0, page.stderr
    assert "&lt;b&gt;pear&lt;/b&gt;" in page.stdout and "<b>" not in page.stdout
    assert "<td class=num>7.00</td>" in page.stdout  # the total counts quantities (price x quantity)
    got = units(repo, result.run_id)
    assert [got[k].status for k in ("brief", "architecture", "ui", "review")] == ["success"] * 4
