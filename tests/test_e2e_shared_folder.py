"""The shared folder with the REAL CLIs: `bridge run --rehearse --script` against the scripted model.

Three Codex auditors (a matrix) write reports into the shared folder and are kept busy afterwards,
so their stage can only advance on the files; a read-only Codex reviewer hands its answer back
through `from: final_message`; a Claude implementer gets the report paths and capped summaries,
not the transcripts; and two misbehaving agents try to leave the shared folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from bridge.ledger import Ledger
from bridge.proctable import run_processes
from tests.runhelp import bridge_argv

pytestmark = pytest.mark.e2e

AREAS = ("security", "speed", "style")
BUSY = 60  # seconds the scripted model keeps an auditor busy after it wrote its report

PLAYBOOK = """\
version: 1
name: shared-e2e
agents:
  auditor: {cli: codex, sandbox: workspace-write}
  reviewer: {cli: codex, sandbox: read-only}
  implementer: {cli: claude, sandbox: workspace-write}
  confined: {cli: claude, sandbox: read-only}
  linker: {cli: codex, sandbox: workspace-write}
stages:
  audit:
    agent: auditor
    matrix: {area: [security, speed, style]}
    prompt: "Audit {{ matrix.area }} into {{ shared }}/audit"
    outputs: ["audit/{{ matrix.area }}.md"]
    summary: {from: outputs, max_lines: 3}
    timeout: 50s
  review:
    agent: reviewer
    prompt: "Review the code read-only and answer with your verdict."
    outputs:
      - {path: review/codex.md, from: final_message}
    timeout: 50s
  implement:
    agent: implementer
    needs: [audit, review]
    timeout: 50s
    prompt: |
      Implement the fixes the reports ask for.
      {% for item in stages.audit.items %}{% for out in item.outputs.values() %}
      Report: {{ out }}
      Summary:
      {{ item.summary }}
      {% endfor %}{% endfor %}
      Review: {{ stages.review.outputs['review/codex.md'] }}
  escape:
    agent: confined
    prompt: "Escape from {{ shared }} now."
    continue_on_error: true
    timeout: 50s
  link:
    agent: linker
    prompt: "Link {{ shared }} to the secret."
    outputs: [evil/link.md]
    continue_on_error: true
    timeout: 50s
"""

SCRIPT = """\
replies:
  - match: 'Audit (\\w+) into (\\S+)'
    cli: codex
    steps:
      - write_file:
          path: '$2/$1.md'
          content: "# $1 audit\\nfinding 1 of $1\\nfinding 2 of $1\\nfinding 3 of $1\\nfinding 4 of $1\\nfinding 5 of $1\\n"
      - {delay: BUSYs, text: 'late words nobody should wait for'}
  - match: 'Review the code read-only'
    cli: codex
    steps:
      - text: "Verdict: ship it.\\nNo blocking issues."
  - match: 'Implement the fixes'
    cli: claude
    steps:
      - text: 'Implemented the fixes.'
  - match: 'Escape from (\\S+) now'
    cli: claude
    steps:
      - write_file: {path: '$1/../../escaped-relative.txt', content: "out\\n"}
      - write_file: {path: 'OUTSIDE/escaped-absolute.txt', content: "out\\n"}
      - write_file: {path: 'PROJECT/escaped-project.txt', content: "out\\n"}
      - text: 'Done escaping.'
  - match: 'Link (\\S+) to the secret'
    cli: codex
    steps:
      - shell: "mkdir -p $1/evil && ln -s OUTSIDE/secret.md $1/evil/link.md"
      - text: 'Linked.'
"""


def test_shared_folder_with_real_clis(tmp_path: Path, real_clis: Path) -> None:
    project, outside = tmp_path / "proj", tmp_path / "outside"
    project.mkdir()
    outside.mkdir()
    (outside / "secret.md").write_text("SECRET\n")
    playbook = project / "shared.yaml"
    playbook.write_text(PLAYBOOK)
    script = tmp_path / "script.yaml"
    script.write_text(SCRIPT.replace("BUSY", str(BUSY)).replace("OUTSIDE", str(outside))
                      .replace("PROJECT", str(project)))
    env = {**os.environ, "NO_COLOR": "1", "PATH": f"{real_clis}{os.pathsep}{os.environ['PATH']}"}

    start = time.monotonic()
    proc = subprocess.run(bridge_argv("run", str(playbook), "--rehearse", "--script", str(script), "--json",
                                      "--dir", str(project)),
                          cwd=project, env=env, capture_output=True, text=True, timeout=120)
    took = time.monotonic() - start
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    run_id = events[0]["run_id"]
    assert run_processes(run_id) == [], "an agent of the run is still running"
    assert took < BUSY, f"the run took {took:.0f}s: the auditors were not stopped on their files"

    finished = {e["key"]: e for e in events if e["event"] == "unit_finished"}
    with Ledger(project) as ledger:
        units = {u.key: u for u in ledger.units(run_id)}
        attempts = {k: ledger.attempts(run_id, k)[-1] for k in units}
    run_dir = project / ".bridge" / "runs" / run_id
    shared = run_dir / "shared"
    detail = {k: (u.status, u.reason) for k, u in units.items()}

    # the auditors: each report written by the agent itself; the stage ended on the file
    for area in AREAS:
        key = f"audit-{area}"
        assert units[key].status == "success", detail
        assert units[key].reason == "outputs complete; agent stopped", detail
        assert attempts[key].ended_by == "stopped"
        assert finished[key]["duration"] < BUSY / 2, finished[key]
        assert (shared / "audit" / f"{area}.md").read_text().startswith(f"# {area} audit\nfinding 1")

    # the read-only reviewer: bridge wrote its final message into the declared output
    assert units["review"].status == "success", detail
    assert (shared / "review" / "codex.md").read_text() == "Verdict: ship it.\nNo blocking issues.\n"
    assert "read-only" in attempts["review"].argv

    # the implementer: paths and capped summaries, not the reports in full, not the transcripts
    assert units["implement"].status == "success", detail
    prompt = (Path(attempts["implement"].dir) / "prompt.md").read_text()
    for area in AREAS:
        assert str(shared / "audit" / f"{area}.md") in prompt
        assert f"## audit/{area}.md\n# {area} audit\nfinding 1 of {area}\n[… 4 more lines]" in prompt
        assert f"finding 2 of {area}" not in prompt  # max_lines: 3 (the "## path" header and 2 lines) + marker
    assert str(shared / "review" / "codex.md") in prompt
    transcript = Path(attempts["audit-security"].stdout_path).read_text()
    assert '"type"' in transcript and '"type"' not in prompt
    imp = attempts["implement"]
    assert 0 < imp.handoff_bytes < len(prompt.encode())
    assert imp.upstream_transcript_bytes == sum(
        Path(attempts[k].stdout_path).stat().st_size for k in (*(f"audit-{a}" for a in AREAS), "review"))
    assert imp.upstream_transcript_bytes > imp.handoff_bytes

    # the misbehaving agents: nothing escaped, and the symlinked output is rejected by name
    for escaped in (run_dir.parent / "escaped-relative.txt", outside / "escaped-absolute.txt",
                    project / "escaped-project.txt"):
        assert not escaped.exists(), f"{escaped} was written outside the shared folder"
    assert units["escape"].status == "failure" and units["escape"].error == "permission_denied", detail
    assert units["link"].status == "failure", detail
    assert (shared / "evil" / "link.md").is_symlink()  # the agent did make it...
    assert "evil/link.md" in units["link"].reason and "symlink" in units["link"].reason  # ...it did not count
    assert (outside / "secret.md").read_text() == "SECRET\n"
