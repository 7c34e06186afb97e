"""What a new user meets: the scaffold rehearses as shipped, and bad input gets one clear paragraph
(cause and fix, exit 1), never a traceback or lost work."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bridge.cli import app
from bridge.commands.init import PLAYBOOK, REHEARSAL
from bridge.rehearsal import load_script


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    out = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert "Traceback" not in out, out
    return result.exit_code, out


def git_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for args in (["init", "-q", "-b", "main"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
                                                 "--allow-empty", "-m", "init"]):
        subprocess.run(["git", *args], cwd=path, check=True)
    return path


def test_init_scaffolds_a_rehearsal_script_that_parses(tmp_path: Path) -> None:
    code, out = invoke("init", "--dir", str(tmp_path))
    assert code == 0, out
    assert f"created {REHEARSAL}" in out and f"bridge run {PLAYBOOK} --rehearse" in out
    script = load_script(tmp_path / REHEARSAL)
    assert len(script.replies) == 3


@pytest.mark.e2e
def test_init_then_rehearse_succeeds(tmp_path: Path, real_clis: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new user's first `bridge run --rehearse` of what `bridge init` wrote: the real codex (read-only
    planner: bridge writes its answer; workspace-write verifier) and claude, and the run succeeds."""
    monkeypatch.setenv("PATH", f"{real_clis}{os.pathsep}{os.environ['PATH']}")
    project = git_repo(tmp_path / "proj")
    assert invoke("init", "--dir", str(project))[0] == 0
    code, out = invoke("run", str(project / PLAYBOOK), "--rehearse", "--dir", str(project))
    assert code == 0, out
    runs = list((project / ".bridge" / "runs").iterdir())
    shared = runs[0] / "shared"
    assert (shared / "plan.md").read_text().startswith("1. ")
    assert '"pass"' in (shared / "verify.json").read_text()


class _ClosedPipe:
    """A stdout whose reader is gone (`bridge run ... | head -1`)."""

    def __init__(self) -> None:
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        pass


def test_progress_lines_survive_a_closed_pipe() -> None:
    """A closed stdout must not crash the run (it used to: BrokenPipeError out of the event callback,
    the run left 'interrupted' with its agents): the lines are dropped, the run goes on."""
    from bridge.events import RunFinished, Status
    from bridge.ui import JsonLines, PlainLines

    for sink in (PlainLines(_ClosedPipe()), JsonLines(_ClosedPipe())):  # type: ignore[arg-type]
        event = RunFinished(run_id="r", status=Status.SUCCESS, duration=1.0, tokens=0, cost_usd=None,
                            reason="", summary_path="", resumable=False)
        sink(event)
        sink(event)
        assert sink.stream.writes == 1 and sink.gone  # type: ignore[attr-defined]


def test_piping_a_command_into_head_is_not_a_crash(tmp_path: Path) -> None:
    """`bridge logs RUN STAGE | head`: the reader goes away; bridge stops quietly with 141, like git."""
    read, write = os.pipe()
    os.close(read)  # the reader is already gone: every write gets EPIPE
    try:
        proc = subprocess.run([sys.executable, "-m", "bridge", "schema"], stdout=write, stderr=subprocess.PIPE,
                              text=True, cwd=tmp_path, timeout=60)
    finally:
        os.close(write)
    assert proc.returncode == 141, proc.stderr
    assert proc.stderr == ""


def test_run_ids_are_never_folded_in_tables(capsys: pytest.CaptureFixture[str]) -> None:
    from bridge.ui import print_run_table

    print_run_table("runs", ["id", "playbook", "status", "started", "duration", "cost"],
                    [["20261121-135257-6a91", "plan-implement-verify-and-more", "success",
                      "2026-11-21 13:52", "2.1s", "$0.0004"]])
    assert "20261121-135257-6a91" in capsys.readouterr().out


def test_missing_clis_are_listed_before_any_stage_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pre-flight: every agent CLI is looked up before the first stage; one error names each missing
    one with its stages and install command, and nothing runs (the echo stage used to run first)."""
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", f"{empty}{os.pathsep}/usr/bin{os.pathsep}/bin")
    monkeypatch.setenv("BRIDGE_CLI_PATH", "")
    if any(shutil.which(n) for n in ("claude", "gemini")):
        pytest.fail("an agent CLI is installed system-wide; this test needs a PATH without them")
    marker = tmp_path / "ran"
    playbook = tmp_path / "p.yaml"
    playbook.write_text(f"""\
version: 1
name: pre
agents:
  a: {{cli: command, command: [touch, {marker}]}}
  b: {{cli: claude}}
  c: {{cli: gemini}}
stages:
  first: {{agent: a, prompt: hi}}
  s: {{agent: b, needs: [first], prompt: hi}}
  t: {{agent: c, needs: [s], prompt: hi}}
  u: {{agent: c, needs: [s], prompt: hi}}
""")
    project = git_repo(tmp_path / "proj")
    code, out = invoke("run", str(playbook), "--dir", str(project))
    flat = " ".join(out.split())
    assert code == 1, out
    assert "nothing was started: 2 agent CLIs" in flat
    assert "claude (for stage s; install: npm install -g @anthropic-ai/claude-code)" in flat
    assert "gemini (for stages t, u; install: npm install -g @google/gemini-cli)" in flat
    assert not marker.exists() and not (project / ".bridge" / "runs").exists()

    # one missing CLI: the lookup's own message, with the stage; --only leaves the others out
    code, out = invoke("run", str(playbook), "--dir", str(project), "--only", "s")
    flat = " ".join(out.split())
    assert code == 1 and "nothing was started: stage s needs a CLI that is missing: the agent CLI 'claude'" in flat
    assert "$BRIDGE_CLI_PATH is empty" in flat and "gemini" not in flat


SECRETS = {"ANTHROPIC_API_KEY": "sk-ant-bridgeqa-FAKE-anthropic-0123456789",
           "OPENAI_API_KEY": "sk-bridgeqa-FAKE-openai-9876543210",
           "GITHUB_TOKEN": "ghp_bridgeqaFAKEgithub5555555555"}


def leaked(folder: Path, values: list[str]) -> list[str]:
    """Every file under `folder` (the ledger's db, wal and shm included) holding one of `values`."""
    return [f"{path}: {value[:12]}..." for path in sorted(folder.rglob("*")) if path.is_file()
            for value in values if value.encode() in path.read_bytes()]


def test_secrets_in_an_agents_answer_are_masked_everywhere(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """An agent that prints its environment: stdout.jsonl was masked, but its final message went as
    is into result.json, the ledger (final message, summary) and a `from: final_message` output."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    project = git_repo(tmp_path / "proj")
    playbook = tmp_path / "p.yaml"
    playbook.write_text("""\
version: 1
name: envy
agents:
  a: {cli: command, command: [sh, -c, "env; echo $GITHUB_TOKEN >&2; exit 0"], env: {MY_TOKEN: profile-secret-777}}
stages:
  s: {agent: a, prompt: hi, outputs: [{path: env.txt, from: final_message}], summary: {max_lines: 500}}
  t: {agent: a, needs: [s], prompt: "{{ stages.s.summary }}"}
""")
    code, out = invoke("run", str(playbook), "--dir", str(project))
    assert code == 0, out
    bridge_dir = project / ".bridge"
    run_dir = next((bridge_dir / "runs").iterdir())
    assert "GITHUB_TOKEN=***" in (run_dir / "shared" / "env.txt").read_text()
    assert "MY_TOKEN=***" in (run_dir / "shared" / "env.txt").read_text()
    assert leaked(bridge_dir, [*SECRETS.values(), "profile-secret-777"]) == []


@pytest.mark.e2e
def test_a_rehearsal_writes_no_secret_of_the_environment(tmp_path: Path, real_clis: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{real_clis}{os.pathsep}{os.environ['PATH']}")
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    project = git_repo(tmp_path / "proj")
    assert invoke("init", "--dir", str(project))[0] == 0
    code, out = invoke("run", str(project / PLAYBOOK), "--rehearse", "--dir", str(project))
    assert code == 0, out
    assert leaked(project / ".bridge", list(SECRETS.values())) == []
    assert leaked(project / ".bridge", [v[-20:] for v in SECRETS.values()]) == []


@pytest.mark.parametrize("exc, says", [
    (OSError(28, "No space left on device", "/p/.bridge/runs/x/stages/s/attempt-1/stdout.jsonl"),
     "cannot write /p/.bridge/runs/x/stages/s/attempt-1/stdout.jsonl: No space left on device. "
     "Fix: free some space on that disk"),
    (OSError(30, "Read-only file system", "/p/.bridge"),
     "cannot write /p/.bridge: Read-only file system. Fix: make the project folder writable"),
    (__import__("sqlite3").OperationalError("database or disk is full"),
     "cannot write the run ledger (.bridge/ledger.db): database or disk is full. Fix: free some space"),
])
def test_a_full_disk_or_read_only_folder_is_not_reported_as_a_bug(
        exc: Exception, says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """These used to be 'bridge hit an internal error ... a bug in bridge' with exit 3."""
    import bridge.launch

    def boom(*args: object, **kwargs: object) -> None:
        raise exc

    monkeypatch.setattr(bridge.launch, "start_run", boom)
    playbook = tmp_path / "p.yaml"
    playbook.write_text("version: 1\nname: x\nagents: {a: {cli: command, command: [echo]}}\n"
                        "stages: {s: {agent: a, prompt: hi}}\n")
    code, out = invoke("run", str(playbook), "--dir", str(tmp_path))
    assert code == 1, out
    assert says in " ".join(out.split()) and "internal error" not in out
    assert "bridge resume RUN" in out


def test_a_real_bug_still_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bridge.launch

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError(5, "Input/output error")  # not the machine's state we know how to explain

    monkeypatch.setattr(bridge.launch, "start_run", boom)
    playbook = tmp_path / "p.yaml"
    playbook.write_text("version: 1\nname: x\nagents: {a: {cli: command, command: [echo]}}\n"
                        "stages: {s: {agent: a, prompt: hi}}\n")
    code, out = invoke("run", str(playbook), "--dir", str(tmp_path))
    assert code == 3 and "internal error" in out and "bridge-crash-" in out


def test_resume_says_when_the_playbook_was_edited(tmp_path: Path) -> None:
    """A resume runs the playbook as it is now; it used to do so silently, even with a stage of the
    run gone from it."""
    playbook = tmp_path / "p.yaml"
    failing = ("version: 1\nname: ed\nagents: {a: {cli: command, command: [sh, -c, 'exit 1']},"
               " b: {cli: command, command: [echo, ok]}}\n"
               "stages:\n  s: {agent: b, prompt: hi}\n  t: {agent: a, needs: [s], prompt: hi}\n")
    playbook.write_text(failing)
    assert invoke("run", str(playbook), "--dir", str(tmp_path))[0] == 1
    run_id = next((tmp_path / ".bridge" / "runs").iterdir()).name
    code, out = invoke("resume", run_id, "--dir", str(tmp_path))  # unchanged: no warning
    assert code == 1 and "changed since this run started" not in out
    playbook.write_text(failing.replace("'exit 1'", "'echo fixed'").replace("  t:", "  t2:"))
    code, out = invoke("resume", run_id, "--dir", str(tmp_path))
    flat = " ".join(out.split())
    assert code == 0, out
    assert (f"warning: {playbook} changed since this run started: the resume runs it as it is now "
            "(succeeded units are kept); stages of the run no longer in it: t") in flat
    assert "s success (reused from an earlier session)" in flat and "t2 success" in flat
