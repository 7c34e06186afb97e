"""The real vendor CLIs against the rehearsal model, through bridge's wiring: files on disk, exit codes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from bridge.rehearsal import ModelServer, parse_script

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


def _driver():
    """tests/fixtures/record_streams.py: the one helper that runs a real CLI (also records fixtures)."""
    name = "bridge_record_streams"
    if name not in sys.modules:
        path = Path(__file__).parent / "fixtures" / "record_streams.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


CLIS = ("codex", "claude", "gemini")
WRITE = """
replies:
  - match: 'into (\\S+) as (\\S+)'
    steps:
      - write_file: {path: '$1/$2', content: "# Report\\nfrom the rehearsal\\n"}
      - text: 'Report written.'
"""


def _final_text(run) -> str:
    """The answer as each CLI reports it (Gemini streams it in deltas)."""
    events = run.events()
    if run.cli == "codex":
        return "".join(e["item"]["text"] for e in events
                       if e.get("type") == "item.completed" and e["item"].get("type") == "agent_message")
    if run.cli == "claude":
        return next((e.get("result", "") for e in events if e.get("type") == "result"), "")
    return "".join(e["content"] for e in events if e.get("type") == "message" and e.get("role") == "assistant")


def _failed(run) -> bool:
    """The CLI's own terminal error event (exit codes alone say little: Gemini uses 144, 244...)."""
    events = run.events()
    if run.cli == "codex":
        return any(e.get("type") == "turn.failed" for e in events)
    if run.cli == "claude":
        return any(e.get("type") == "result" and e.get("is_error") for e in events)
    return any(e.get("type") == "result" and e.get("status") == "error" for e in events)


def _run(cli: str, script: str, tmp_path: Path, prompt: str, **kw):
    with ModelServer(parse_script(script)) as server:
        run = _driver().run_cli(cli, server.url, tmp_path, prompt, timeout=kw.pop("timeout", 45), **kw)
        counts = server.counts()
    assert not run.leftovers, f"{cli} left processes running in its group"
    assert not run.timed_out, f"{cli} timed out:\n{run.stderr[-2000:]}"
    return run, counts


@pytest.mark.parametrize("cli", CLIS)
def test_text_answer(cli: str, real_clis: Path, tmp_path: Path) -> None:
    run, counts = _run(cli, "- steps: ['Hello from the rehearsal.']", tmp_path, "Say hello.")
    assert run.exit_code == 0, run.stderr[-2000:]
    assert _final_text(run) == "Hello from the rehearsal."
    protocol = {"codex": "openai", "claude": "anthropic", "gemini": "gemini"}[cli]
    assert counts.get(protocol) == 1


@pytest.mark.parametrize("cli", CLIS)
def test_writes_a_file_into_the_shared_folder(cli: str, real_clis: Path, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    run, _ = _run(cli, WRITE, tmp_path, f"Write the audit into {shared} as report.md")
    assert run.exit_code == 0, run.stderr[-2000:]
    assert (shared / "report.md").read_text() == "# Report\nfrom the rehearsal\n"
    assert _final_text(run) == "Report written."


@pytest.mark.parametrize("cli", CLIS)
def test_api_error_fails_the_run(cli: str, real_clis: Path, tmp_path: Path) -> None:
    script = "- steps: [{error: {status: 500, message: 'rehearsal says no'}}]"
    run, counts = _run(cli, script, tmp_path, "Do something.")
    assert run.exit_code not in (0, None)
    assert _failed(run), run.stdout[-2000:]
    assert sum(counts.values()) <= 3  # retries are capped by the wiring


def test_shell_command_claude_and_codex(real_clis: Path, tmp_path: Path) -> None:
    script = "- steps: [{shell: 'echo shell-ok > SHARED/shell.txt'}, 'Ran it.']"
    for cli, extra in (("codex", ()), ("claude", ("--allowedTools", "Bash"))):
        root = tmp_path / cli
        run, _ = _run(cli, script.replace("SHARED", str(root / "shared")), root, "Run it.", extra=extra)
        assert run.exit_code == 0, run.stderr[-2000:]
        assert (root / "shared" / "shell.txt").read_text() == "shell-ok\n"


def test_hang_is_stopped_by_timeout_and_leaves_no_process(real_clis: Path, tmp_path: Path) -> None:
    with ModelServer(parse_script("- steps: [{hang: true}]")) as server:
        run = _driver().run_cli("codex", server.url, tmp_path, "Wait.", timeout=3)
    assert run.timed_out and not run.leftovers
