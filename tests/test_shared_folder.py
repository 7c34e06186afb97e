"""The shared folder in a run, with the fake agent CLI: outputs bridge writes from the final message,
the hand-off figures the ledger records, and the shared task list in templates, ledger and output."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from bridge.events import Status, TasksUpdated
from bridge.ledger import Ledger
from bridge.ui import PlainLines
from tests.runhelp import bridge, make_project, run_inproc, shared_dir, write_playbook


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path)


def test_from_final_message_output_is_written_by_bridge(project: Path) -> None:
    pb = write_playbook(project, """
        stages:
          audit:
            agent: f
            prompt: "FAKE: message=# Findings: none"
            outputs:
              - {path: audit/report.md, from: final_message}
          use:
            agent: f
            needs: audit
            prompt: "FAKE: message=read {{ stages.audit.outputs['audit/report.md'].text | trim }}"
    """)
    result, _ = run_inproc(project, pb)
    assert result.status is Status.SUCCESS, result.reason
    shared = shared_dir(project, result.run_id)
    assert (shared / "audit" / "report.md").read_text() == "# Findings: none\n"
    with Ledger(project) as ledger:
        assert ledger.unit(result.run_id, "use").final_message == "read # Findings: none"
        (art,) = ledger.artifacts(result.run_id, "audit")
        assert art["path"] == "audit/report.md"


def test_from_final_message_failed_agent_writes_nothing(project: Path) -> None:
    pb = write_playbook(project, """
        stages:
          audit:
            agent: f
            prompt: "FAKE: result=error; exit=1; message=half a report"
            outputs:
              - {path: audit/report.md, from: final_message}
    """)
    result, _ = run_inproc(project, pb)
    assert result.status is Status.FAILURE
    assert not (shared_dir(project, result.run_id) / "audit" / "report.md").exists()


def test_handoff_counts_quoted_upstream_bytes_not_the_prompt(project: Path) -> None:
    pb = write_playbook(project, """
        stages:
          a:
            agent: f
            prompt: "FAKE: respond_first=1; write={{ shared }}/a.txt=hello-output; message=the-final-message-of-a"
            outputs: [a.txt]
          b:
            agent: f
            needs: a
            prompt: "FAKE: message=ok. Some wording of b's own that is not handed from upstream. {{ stages.a.outputs['a.txt'].text }} / {{ stages.a.final_message }}"
          c:
            agent: f
            needs: b
            prompt: "FAKE: message=nothing from upstream here"
    """)
    result, _ = run_inproc(project, pb)
    assert result.status is Status.SUCCESS, result.reason
    with Ledger(project) as ledger:
        (a,) = ledger.attempts(result.run_id, "a")
        (b,) = ledger.attempts(result.run_id, "b")
        (c,) = ledger.attempts(result.run_id, "c")
    assert b.handoff_bytes == len("hello-output") + len("the-final-message-of-a")
    assert b.upstream_transcript_bytes == Path(a.stdout_path).stat().st_size > 0
    assert c.handoff_bytes == 0 and c.upstream_transcript_bytes > 0
    assert a.handoff_bytes == 0 and a.upstream_transcript_bytes == 0
    shown = bridge(project, "show", result.run_id, "b")
    assert shown.returncode == 0, shown.stderr
    assert f"hand-off  {b.handoff_bytes} bytes of upstream text in the prompt" in shown.stdout
    assert f"upstream transcripts {b.upstream_transcript_bytes} bytes" in shown.stdout


TASKS_PB = """
    tasks: tasks.md
    stages:
      plan:
        agent: f
        prompt: "FAKE: write={{ shared }}/tasks.md=- [ ] fix the bug (claude); message=planned {{ tasks.total }}"
      fix:
        agent: f
        needs: plan
        prompt: "FAKE: write={{ shared }}/tasks.md=- [x] fix the bug (claude); message=saw {{ tasks.done }}/{{ tasks.total }}, {{ tasks.open }} open: {% for t in tasks %}{{ t.text }} by {{ t.owner }}{% endfor %}"
      check:
        agent: f
        needs: fix
        prompt: "FAKE: message={{ tasks.items[0].done }} {{ tasks.done }}/{{ tasks.total }}"
"""


def test_task_list_in_templates_ledger_and_output(project: Path) -> None:
    pb = write_playbook(project, TASKS_PB)
    result, events = run_inproc(project, pb)
    assert result.status is Status.SUCCESS, result.reason
    with Ledger(project) as ledger:
        units = {u.key: u for u in ledger.units(result.run_id)}
        snapshots = [d for name, d in ledger.events(result.run_id) if name == "tasks"]
    assert units["plan"].final_message == "planned 0"
    assert units["fix"].final_message == "saw 0/1, 1 open: fix the bug by claude"
    assert units["check"].final_message == "True 1/1"
    assert [(s["after"], s["done"], s["total"], s["open"]) for s in snapshots] == [
        ("", 0, 0, 0), ("plan", 0, 1, 1), ("fix", 1, 1, 0), ("check", 1, 1, 0)]
    assert snapshots[-1]["items"][0]["text"] == "fix the bug"
    updates = [(e.done, e.total, e.after) for e in events if isinstance(e, TasksUpdated)]
    assert updates == [(0, 1, "plan"), (1, 1, "fix")]
    out = io.StringIO()
    lines = PlainLines(out)
    for e in events:
        lines(e)
    assert "☑ tasks 1/1 done (after fix)" in out.getvalue()
    shown = bridge(project, "show", result.run_id)
    assert "tasks     1/1 done, 0 open" in shown.stdout


def test_task_templates_validate_against_the_stub(project: Path) -> None:
    from bridge.errors import PlaybookError
    from bridge.loader import load_playbook

    load_playbook(write_playbook(project, TASKS_PB, name="good"))  # tasks.open, .items[0], for t in tasks
    bad = write_playbook(project, """
        tasks: tasks.md
        stages:
          a: {agent: f, prompt: "{{ tasks.opn }}"}
    """, name="bad")
    with pytest.raises(PlaybookError, match="opn"):
        load_playbook(bad)


def test_ledger_json_of_task_snapshot_is_plain(project: Path) -> None:
    from bridge.context import TasksView

    view = TasksView({"items": [{"text": "x", "done": True}], "done": 1, "total": 1, "open": 0})
    assert json.loads(json.dumps(view.to_dict())) == {"items": [{"text": "x", "done": True}], "done": 1,
                                                      "total": 1, "open": 0}
    assert list(view) == [{"text": "x", "done": True}] and len(view) == 1 and view["open"] == 0
    assert not TasksView() and TasksView().open == 0


# agent-written files are read safely ------------------------------------------------------------
SH = '  sh: {cli: command, command: [sh, -c, "{{ prompt }}"], sandbox: workspace-write}\n'


def sh_playbook(project: Path, body: str, name: str = "pb") -> Path:
    path = write_playbook(project, body, name=name)
    path.write_text(path.read_text().replace("agents:\n", "agents:\n" + SH, 1))
    return path


def prompt_of(project: Path, run_id: str, key: str) -> str:
    return (project / ".bridge" / "runs" / run_id / "stages" / key / "attempt-1" / "prompt.md").read_text()


def test_links_out_of_the_shared_folder_never_reach_a_prompt(project: Path, tmp_path: Path) -> None:
    """A hard link fails its own stage; a symlinked output of a failed stage reads as missing in a
    dependent of a continue_on_error stage and in a finally stage."""
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET=outside-the-shared-folder\n")
    pb = sh_playbook(project, f"""
        stages:
          hard:
            agent: sh
            continue_on_error: true
            prompt: "ln {secret} {{{{ shared }}}}/hard.txt"
            outputs: [hard.txt]
          soft:
            agent: sh
            continue_on_error: true
            prompt: "ln -s {secret} {{{{ shared }}}}/soft.txt"
            outputs: [soft.txt]
          use:
            agent: sh
            needs: [hard, soft]
            prompt: "echo [{{{{ stages.hard.outputs['hard.txt'].text }}}}:{{{{ stages.soft.outputs['soft.txt'].text }}}}]"
        finally:
          wrap:
            agent: sh
            prompt: "echo [{{{{ stages.hard.outputs['hard.txt'].text }}}}:{{{{ stages.soft.outputs['soft.txt'].text }}}}]"
    """)
    result, _ = run_inproc(project, pb)
    hard, soft = result.stages["hard"], result.stages["soft"]
    assert hard.status is Status.FAILURE and "hard.txt: has 2 hard links" in hard.reason, hard.reason
    assert soft.status is Status.FAILURE and "symlink" in soft.reason, soft.reason
    for key in ("use", "wrap"):
        assert result.stages[key].status is Status.SUCCESS, result.stages[key].reason
        prompt = prompt_of(project, result.run_id, key)
        assert "SECRET" not in prompt and "echo [:]" in prompt, prompt


def test_a_fifo_at_the_task_list_does_not_freeze_the_run(project: Path) -> None:
    pb = sh_playbook(project, """
        tasks: tasks.md
        stages:
          swap:
            agent: sh
            prompt: "printf -- '- [ ] one\\\\n' > {{ shared }}/tasks.md; rm {{ shared }}/tasks.md; mkfifo {{ shared }}/tasks.md"
          after:
            agent: sh
            needs: swap
            prompt: "echo {{ tasks.total }} tasks"
    """)
    done = bridge(project, "run", str(pb), timeout=60)  # before: blocked for good in open(), deaf to signals
    assert done.returncode == 0, done.stdout + done.stderr
    with Ledger(project) as ledger:
        run = ledger.find_run("last").id
        assert ledger.unit(run, "after").final_message.strip() == "0 tasks"


def test_handoff_figures_of_a_loop_member_and_a_filtered_summary(project: Path) -> None:
    """A loop member's transcripts are those of the stages its loop needs; a summary re-laid out by
    `| indent` still counts as handed (line by line)."""
    pb = sh_playbook(project, """
        stages:
          a:
            agent: sh
            prompt: "for i in $(seq 0 29); do echo finding $i: the check at line $i of store.py is wrong; done"
          work:
            needs: [a]
            loop:
              max_iterations: 1
              until: "true"
              stages:
                plan:
                  agent: f
                  prompt: |
                    Fix these:
                      {{ stages.a.summary | indent(2) }}
                    FAKE: message=planned
    """)
    result, _ = run_inproc(project, pb)
    assert result.status is Status.SUCCESS, result.reason
    with Ledger(project) as ledger:
        (a,) = ledger.attempts(result.run_id, "a")
        (plan,) = ledger.attempts(result.run_id, "plan@1")
        summary = ledger.unit(result.run_id, "a").summary
    assert summary.count("\n") >= 10  # a many-line summary, so `| indent` changed it
    prompt = prompt_of(project, result.run_id, "plan@1")
    assert summary not in prompt and "\n  finding 29" in prompt
    lines = [ln for ln in summary.splitlines() if ln.strip()]
    assert plan.handoff_bytes >= sum(len(ln.encode()) for ln in lines)  # every line of it counted
    assert plan.handoff_bytes < len(prompt.encode())  # but not the prompt's own wording
    assert plan.upstream_transcript_bytes == Path(a.stdout_path).stat().st_size > 0
