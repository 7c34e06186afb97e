"""Notifications (webhook on 127.0.0.1, command) and the Markdown run summary."""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from bridge.notify import (NotifyFailure, RunSummary, StageSummary, notify, render_summary,
                           write_run_summary)
from bridge.playbook import Notify


def summary(status: str = "success", shared: str | None = None) -> RunSummary:
    return RunSummary(
        run_id="20240501-100000-abcd", playbook="nightly-audit", status=status,
        started_at=1714557600.0, ended_at=1714557600.0 + 754.2,
        stages=(
            StageSummary("audit", "success", attempts=1, duration=300.5, cost_usd=0.12, tokens=1000,
                         reports=("audit/report.md",)),
            StageSummary("implement", status, attempts=2, duration=450.0, cost_usd=0.30,
                         branch="bridge/20240501-100000-abcd/implement",
                         worktree=None, error=None if status == "success" else "tests failed"),
        ),
        cost_usd=0.42, tokens=12345, shared_dir=shared,
    )


class Hook:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.status = 200


@pytest.fixture
def hook() -> Iterator[tuple[Hook, str]]:
    state = Hook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers["Content-Length"])
            state.bodies.append(json.loads(self.rfile.read(length)))
            state.headers.append(dict(self.headers))
            self.send_response(state.status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_port}/hook"
    finally:
        server.shutdown()
        server.server_close()


def test_webhook_receives_the_run_json(hook: tuple[Hook, str], tmp_path: Path) -> None:
    state, url = hook
    failures = notify([Notify(webhook=url)], summary(), summary_path=tmp_path / "summary.md")
    assert failures == []
    [body] = state.bodies
    assert state.headers[0]["Content-Type"] == "application/json"
    assert body["run_id"] == "20240501-100000-abcd" and body["playbook"] == "nightly-audit"
    assert body["status"] == "success" and body["duration_s"] == 754.2
    assert body["cost_usd"] == 0.42 and body["tokens"] == 12345
    assert body["summary_path"] == str(tmp_path / "summary.md")
    from datetime import datetime
    assert datetime.fromisoformat(body["started_at"]).timestamp() == 1714557600.0  # ISO 8601, as documented
    assert body["ended_at"] == "2024-05-01T10:12:34+00:00"
    assert [(s["id"], s["status"], s["attempts"], s["duration_s"]) for s in body["stages"]] == [
        ("audit", "success", 1, 300.5), ("implement", "success", 2, 450.0)]


def test_on_filters_by_status(hook: tuple[Hook, str]) -> None:
    state, url = hook
    entries = [Notify(webhook=url, on="failure")]
    assert notify(entries, summary("success")) == []
    assert state.bodies == []
    notify(entries, summary("cancelled"))  # anything but success counts as a failure
    assert [b["status"] for b in state.bodies] == ["cancelled"]


def test_command_gets_json_on_stdin_and_env(tmp_path: Path) -> None:
    out = tmp_path / "got.json"
    script = ("import json, os, sys; data = json.load(sys.stdin); "
              "data['env'] = {k: v for k, v in os.environ.items() if k.startswith('BRIDGE_RUN_')}; "
              f"open({str(out)!r}, 'w').write(json.dumps(data))")
    failures = notify([Notify(command=[sys.executable, "-c", script])], summary("failure"),
                      summary_path=tmp_path / "s.md")
    assert failures == []
    got = json.loads(out.read_text())
    assert got["status"] == "failure" and got["stages"][1]["error"] == "tests failed"
    assert got["env"]["BRIDGE_RUN_ID"] == "20240501-100000-abcd"
    assert got["env"]["BRIDGE_RUN_STATUS"] == "failure"
    assert got["env"]["BRIDGE_RUN_PLAYBOOK"] == "nightly-audit"
    assert got["env"]["BRIDGE_RUN_SUMMARY"] == str(tmp_path / "s.md")
    assert got["env"]["BRIDGE_RUN_COST_USD"] == "0.4200"


def test_command_is_not_run_through_a_shell(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    failures = notify([Notify(command=[sys.executable, "-c", "import sys; sys.exit(0)", f"; touch {marker}"])],
                      summary())
    assert failures == [] and not marker.exists()


def test_notify_failures_are_returned_not_raised(hook: tuple[Hook, str], tmp_path: Path) -> None:
    state, url = hook
    state.status = 500
    entries = [
        Notify(webhook=url),
        Notify(webhook="http://127.0.0.1:1/nothing-listens-here"),
        Notify(webhook="file:///etc/passwd"),
        Notify(command=[sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"]),
        Notify(command=[str(tmp_path / "no-such-program")]),
    ]
    failures = notify(entries, summary())
    assert all(isinstance(f, NotifyFailure) for f in failures)
    assert len(failures) == 5
    text = [str(f) for f in failures]
    assert "HTTP 500" in text[0]
    assert "unreachable" in text[1]
    assert "http" in text[2]
    assert "code 3" in text[3] and "boom" in text[3]
    assert "no-such-program" in text[4]


def test_summary_markdown_has_the_stage_table_and_links(tmp_path: Path) -> None:
    run_dir = tmp_path / ".bridge" / "runs" / "20240501-100000-abcd"
    shared = run_dir / "shared"
    path = write_run_summary(run_dir / "summary.md", summary("failure", shared=str(shared)))
    assert path == run_dir / "summary.md"
    text = path.read_text()
    assert text.startswith("# nightly-audit: failure")
    assert "| Stage | Status | Attempts | Duration | Cost | Note |" in text
    assert "| audit | success | 1 | 5m 00s | $0.1200 |  |" in text  # as the terminal shows it
    assert "| implement | failure | 2 | 7m 30s | $0.3000 |  |" in text
    assert "| Duration | 12m 34s |" in text and "| Cost | $0.4200 |" in text and "12,345" in text
    assert "[audit/report.md](shared/audit/report.md)" in text
    assert "`bridge/20240501-100000-abcd/implement`" in text
    assert "- implement: tests failed" in text
    assert not list(run_dir.glob("*.tmp"))  # written atomically, nothing left behind


def test_summary_escapes_pipes_in_cells() -> None:
    s = RunSummary("r", "p", "success", 0.0, 1.0, stages=(StageSummary("a|b", "success"),))
    assert "| a\\|b | success |" in render_summary(s, Path("/tmp"))


# ---- figures: nothing reported is "-" / null, never 0 ------------------------------------------

def test_unknown_cost_and_tokens_are_a_dash_and_null(hook: tuple[Hook, str], tmp_path: Path) -> None:
    state, url = hook
    s = RunSummary("r1", "p", "failure", 0.0, 10.0, cost_usd=None, tokens=None, stages=(
        StageSummary("codex-stage", "success", cost_usd=None, tokens=1200),  # Codex: tokens, no dollars
        StageSummary("tiny", "success", cost_usd=0.0045, tokens=300),
        StageSummary("never-ran", "skipped", attempts=0)))
    text = render_summary(s, tmp_path)
    assert "| Cost | - |" in text and "| Tokens | - |" in text
    assert "| codex-stage | success | 1 | 0.0s | - |" in text
    assert "| tiny | success | 1 | 0.0s | $0.0045 |" in text  # not rounded to $0.00
    assert "$0.00 " not in text and "$0.00|" not in text
    notify([Notify(webhook=url)], dataclasses.replace(s, cost_usd=0.0, tokens=0))  # 0: nothing reported
    [body] = state.bodies
    assert body["cost_usd"] is None and body["tokens"] is None
    assert [(x["cost_usd"], x["tokens"]) for x in body["stages"]] == [(None, 1200), (0.0045, 300), (None, None)]


# ---- ${ENV} in webhooks and commands, the project as the command's folder ---------------------

def test_webhook_url_is_expanded_from_the_environment_at_send_time(hook: tuple[Hook, str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    state, url = hook
    monkeypatch.setenv("BRIDGE_TEST_HOOK_URL", url)
    assert notify([Notify(webhook="${BRIDGE_TEST_HOOK_URL}")], summary()) == []
    assert [b["run_id"] for b in state.bodies] == ["20240501-100000-abcd"]
    monkeypatch.delenv("BRIDGE_TEST_HOOK_URL")
    [failure] = notify([Notify(webhook="${BRIDGE_TEST_HOOK_URL}")], summary())
    assert str(failure) == "webhook ${BRIDGE_TEST_HOOK_URL}: ${BRIDGE_TEST_HOOK_URL} is not set in bridge's environment"


def test_an_expanded_secret_never_appears_in_a_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "hooks-T000-B000-s3cr3t-value"
    monkeypatch.setenv("BRIDGE_TEST_CHAT", f"http://127.0.0.1:1/{secret}")  # a name that does not look secret
    monkeypatch.setenv("BRIDGE_TEST_ARG", secret)
    failures = notify([Notify(webhook="${BRIDGE_TEST_CHAT}"),
                       Notify(command=[sys.executable, "-c", "import sys; print(sys.argv[1], file=sys.stderr); "
                                       "sys.exit(2)", "${BRIDGE_TEST_ARG}"])], summary())
    assert len(failures) == 2
    text = " ".join(str(f) for f in failures)
    assert secret not in text and "${BRIDGE_TEST_CHAT}" in text and "code 2: ***" in text


def test_command_argv_is_expanded_and_dollar_dollar_escapes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "argv.json"
    monkeypatch.setenv("BRIDGE_TEST_WHO", "ops-team")
    script = f"import json, sys; open({str(out)!r}, 'w').write(json.dumps(sys.argv[1:]))"
    assert notify([Notify(command=[sys.executable, "-c", script, "to=${BRIDGE_TEST_WHO}", "$${HOME}",
                                   "${HOME%/x}"])], summary()) == []
    assert json.loads(out.read_text()) == ["to=ops-team", "${HOME}", "${HOME%/x}"]  # the shell's forms untouched


def test_a_relative_command_is_found_in_the_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project, elsewhere = tmp_path / "proj", tmp_path / "elsewhere"
    (project / "scripts").mkdir(parents=True)
    elsewhere.mkdir()
    script = project / "scripts" / "n.sh"
    script.write_text("#!/bin/sh\npwd > notified.txt\n")
    script.chmod(0o755)
    monkeypatch.chdir(elsewhere)  # the caller's cwd is not the project
    assert notify([Notify(command=["./scripts/n.sh"])], summary(), cwd=project) == []
    assert (project / "notified.txt").read_text().strip() == str(project)  # run in the project, too
    [failure] = notify([Notify(command=["./scripts/n.sh"])], summary())  # without the project: not found
    assert "n.sh" in str(failure)


def test_a_named_secret_is_masked_short_at_the_cut_or_with_a_tab(monkeypatch: pytest.MonkeyPatch) -> None:
    # before: stderr was cut to 300 characters before masking (the secret's end leaked at the cut),
    # values under 6 characters were never masked, and a tab made the printed form differ
    monkeypatch.setenv("BRIDGE_TEST_LONG", "0123456789abcdef")
    monkeypatch.setenv("BRIDGE_TEST_PIN", "97531")
    monkeypatch.setenv("BRIDGE_TEST_TAB", "tab\tsecret")
    script = ("import sys; sys.stderr.write('secret=' + sys.argv[1] + ' pin=' + sys.argv[2] + ' tab=' "
              "+ repr(sys.argv[3]) + ' ' + 'x' * 290); sys.exit(3)")
    [failure] = notify([Notify(command=[sys.executable, "-c", script, "${BRIDGE_TEST_LONG}",
                                        "${BRIDGE_TEST_PIN}", "${BRIDGE_TEST_TAB}"])], summary())
    text = str(failure)
    for leak in ("0123456789", "9abcdef", "97531", "tab\\tsecret", "tab\tsecret"):
        assert leak not in text, (leak, text)
    assert "secret=*** pin=*** tab='***'" in text and "code 3" in text
