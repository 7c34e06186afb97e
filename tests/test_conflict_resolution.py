"""`on_conflict: <stage id>`: a merge conflict handed to a resolution stage (fake agent CLI, real git)."""

from __future__ import annotations

import signal
import subprocess
import textwrap
from pathlib import Path

import pytest

from bridge.errors import PlaybookError
from bridge.events import Status
from bridge.ledger import Ledger
from bridge.loader import load_playbook
from bridge.resume import resume_run
from bridge.worktrees import worktrees_root
from tests.runhelp import (bridge, bridge_argv, git, make_git_project, pid_alive, run_inproc, wait_for,
                           write_playbook)
from tests.test_mergeback import notes


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_git_project(tmp_path)

RESOLVER = """
  resolve:
    agent: w
    prompt: |
      Resolve the conflict in {{ conflict.files | join(', ') }} between {{ conflict.branch }} and {{ conflict.into }}
      ({{ conflict.strategy }}). {{ conflict.how }}
      ---
      {{ conflict.diff }}
      ---
      FAKE: {FAKE}
"""


def playbook(project: Path, body: str) -> Path:
    """A playbook with agents f (read-only) and w (workspace-write, for resolvers)."""
    path = write_playbook(project, body)
    writer = "agents:\n  w: {cli: claude, sandbox: workspace-write}\n"
    path.write_text(path.read_text().replace("agents:\n", writer, 1))
    return path


def conflicting(project: Path, fake: str, merge: str = "merge", extra: str = "") -> Path:
    """Two implementers rewriting the same line of app.txt; `resolve` handles the conflict."""
    return playbook(project, textwrap.dedent(f"""
        stages:
          impl:
            agent: f
            matrix: {{item: [a, b]}}
            worktree: {{merge: {merge}, on_conflict: resolve}}
            prompt: "FAKE: write=app.txt=line 1 from {{{{ matrix.item }}}}"
        """) + RESOLVER.replace("{FAKE}", fake) + extra)


def prompt_of(project: Path, run_id: str, key: str) -> str:
    return (project / ".bridge" / "runs" / run_id / "stages" / key / "attempt-1" / "prompt.md").read_text()


def test_a_resolver_resolves_the_conflict_and_both_changes_land(project: Path) -> None:
    pb = conflicting(project, "write=app.txt=line 1 from a and b; message=resolved")
    result, events = run_inproc(project, pb)
    assert result.status is Status.SUCCESS, result.reason
    run = result.run_id
    assert result.stages["impl"].status is Status.SUCCESS
    assert all(u.status is Status.SUCCESS for u in result.stages["impl"].units)
    assert result.stages["resolve"].status is Status.SUCCESS
    assert [u.key for u in result.stages["resolve"].units] == ["resolve-impl-b"]

    # the resolved content is what landed on the user's branch, with both implementers' commits
    assert (project / "app.txt").read_text() == "line 1 from a and b"
    assert git(project, "status", "--porcelain", "--untracked-files=no") == ""
    history = git(project, "log", "--format=%s", "main")
    assert f"merge bridge/{run}/impl-a" in history and f"merge bridge/{run}/impl-b" in history

    # the resolver worked on impl-b's branch with the integration branch merged in, markers present
    prompt = prompt_of(project, run, "resolve-impl-b")
    assert f"Resolve the conflict in app.txt between bridge/{run}/impl-b and bridge/{run}/@integration" \
        in prompt
    assert "<<<<<<<" in prompt and "line 1 from a" in prompt and "line 1 from b" in prompt
    assert "(merge)" in prompt and "bridge commits the merge" in prompt

    resolving, resolved = notes(events, "resolving"), notes(events, "resolved")
    assert resolving and resolving[0].files == ("app.txt",) and resolving[0].key == "impl-b"
    assert resolved and "resolved by resolve (resolve-impl-b)" in resolved[0].message
    assert not notes(events, "not_landed") and notes(events, "landed")
    with Ledger(project) as ledger:
        rows = {r["key"]: r for r in ledger.worktrees(run)}
        assert rows["impl-a"]["status"] == "merged"
        assert rows["impl-b"]["status"] == "resolved" and rows["impl-b"]["conflicts"] == ["app.txt"]
        assert ledger.unit(run, "impl-b").status == "success"
        assert ledger.unit(run, "resolve-impl-b").status == "success"
        assert ledger.landing(run)["landed"] == 1
        names = [name for name, _ in ledger.events(run)]
    assert names.count("git_note") >= 4

    shown = bridge(project, "show", run)
    assert shown.returncode == 0, shown.stderr
    assert f"bridge/{run}/impl-b: resolved in app.txt" in shown.stdout
    summary = (project / ".bridge" / "runs" / run / "summary.md").read_text()
    assert "resolve-impl-b" in summary and "resolved" in summary
    assert not (worktrees_root(project) / run).exists()
    out = bridge(project, "clean")  # everything merged and landed: every branch goes
    assert out.returncode == 0, out.stderr
    assert git(project, "branch", "--list", f"bridge/{run}/*") == ""


def test_without_a_conflict_the_resolver_is_skipped(project: Path) -> None:
    pb = playbook(project, textwrap.dedent("""
        stages:
          impl:
            agent: f
            matrix: {item: [a, b]}
            worktree: {on_conflict: resolve}
            prompt: "FAKE: write={{ matrix.item }}.txt=from {{ matrix.item }}"
        """) + RESOLVER.replace("{FAKE}", "message=should not run"))
    result, events = run_inproc(project, pb)
    assert result.status is Status.SUCCESS, result.reason
    assert result.stages["resolve"].status is Status.SKIPPED
    assert result.stages["resolve"].reason == "no conflict"
    assert "resolve" not in events[0].units  # not scheduled up front
    with Ledger(project) as ledger:
        row = ledger.unit(result.run_id, "resolve")
        assert row.status == "skipped" and row.reason == "no conflict"
        assert not ledger.attempts(result.run_id, "resolve")


def test_a_failing_resolver_fails_the_stage_naming_files_and_branch(project: Path) -> None:
    head = git(project, "rev-parse", "HEAD").strip()
    pb = conflicting(project, "write=app.txt=half done; result=error; message=cannot resolve")
    result, events = run_inproc(project, pb)
    run = result.run_id
    assert result.status is Status.FAILURE
    impl = result.stages["impl"]
    assert impl.status is Status.FAILURE
    reason = impl.reason
    assert "merge conflict in app.txt" in reason and f"bridge/{run}/impl-b" in reason, reason
    assert "resolution stage resolve (resolve-impl-b) failure" in reason and "cannot resolve" in reason
    failed = {u.key: u for u in impl.units}
    assert failed["impl-b"].status is Status.FAILURE and failed["impl-a"].status is Status.SUCCESS
    assert result.stages["resolve"].status is Status.FAILURE

    # nothing landed; impl-b's branch is kept exactly as the implementer left it
    assert git(project, "rev-parse", "HEAD").strip() == head
    assert (project / "app.txt").read_text() == "line 1\nline 2\n"
    branch = f"bridge/{run}/impl-b"
    assert git(project, "show", f"{branch}:app.txt") == "line 1 from b"
    assert git(project, "rev-list", "--merges", "--count", f"{head}..{branch}").strip() == "0"
    unresolved = notes(events, "unresolved")
    assert unresolved and unresolved[0].files == ("app.txt",) and "kept" in unresolved[0].message
    with Ledger(project) as ledger:
        row = next(r for r in ledger.worktrees(run) if r["key"] == "impl-b")
        assert row["status"] == "conflict" and row["conflicts"] == ["app.txt"]
        assert ledger.unit(run, "impl-b").status == "failure"
    assert not (worktrees_root(project) / run / "impl-b").exists()


def test_a_resolver_leaving_markers_does_not_resolve(project: Path) -> None:
    pb = conflicting(project, "message=looked at it")  # succeeds, but edits nothing
    result, _ = run_inproc(project, pb)
    assert result.status is Status.FAILURE
    reason = result.stages["impl"].reason
    assert "conflict markers are left in app.txt" in reason, reason
    assert git(project, "show", f"bridge/{result.run_id}/impl-b:app.txt") == "line 1 from b"


def test_rebase_stage_lands_the_resolution_linearly(project: Path) -> None:
    base = git(project, "rev-parse", "HEAD").strip()
    result, _ = run_inproc(project, conflicting(project, "write=app.txt=both", merge="rebase"))
    assert result.status is Status.SUCCESS, result.reason
    assert (project / "app.txt").read_text() == "both"
    assert git(project, "rev-list", "--merges", "--count", f"{base}..main").strip() == "0"


def test_resolver_in_a_loop_iteration(project: Path) -> None:
    pb = playbook(project, textwrap.dedent("""
        stages:
          work:
            loop:
              until: "loop.iteration >= 1"
              stages:
                impl:
                  agent: f
                  matrix: {item: [a, b]}
                  worktree: {merge: squash, on_conflict: resolve}
                  prompt: "FAKE: write=app.txt=from {{ matrix.item }}"
        """) + RESOLVER.replace("{FAKE}", "write=app.txt=from a+b"))
    result, _ = run_inproc(project, pb)
    assert result.status is Status.SUCCESS, result.reason
    assert [u.key for u in result.stages["resolve"].units] == ["resolve-impl-b@1"]
    assert (project / "app.txt").read_text() == "from a+b"


# validation -------------------------------------------------------------------------------------
def problems(project: Path, body: str) -> str:
    with pytest.raises(PlaybookError) as info:
        load_playbook(playbook(project, body), project=project)
    return str(info.value)


def test_unknown_resolver_is_a_validation_error(project: Path) -> None:
    text = problems(project, """
        stages:
          impl: {agent: f, worktree: {on_conflict: reslove}, prompt: x}
          resolve: {agent: w, prompt: "{{ conflict.diff }}"}
    """)
    assert "stages.impl.worktree.on_conflict" in text and "'reslove' is none of these" in text
    assert "did you mean 'resolve'" in text


def test_conflict_outside_a_resolver_is_a_validation_error(project: Path) -> None:
    text = problems(project, """
        stages:
          impl: {agent: f, worktree: true, prompt: "fix {{ conflict.files }}"}
    """)
    assert "stages.impl.prompt" in text and "'conflict' is undefined" in text
    assert "exists only in a resolution stage" in text


def test_resolver_templates_see_conflict_and_only_its_keys(project: Path) -> None:
    pb = load_playbook(conflicting(project, "message=x"), project=project)
    assert "resolve" in pb.stages
    text = problems(project, """
        stages:
          impl: {agent: f, worktree: {on_conflict: resolve}, prompt: x}
          resolve: {agent: w, prompt: "{{ conflict.filez }}"}
    """)
    assert "stages.resolve.prompt" in text and "conflict has no 'filez'" in text and "'files'" in text


def test_resolver_shape_rules(project: Path) -> None:
    text = problems(project, """
        stages:
          impl: {agent: f, worktree: {on_conflict: resolve}, prompt: x}
          other: {agent: f, worktree: {on_conflict: impl}, prompt: x}
          resolve: {agent: f, needs: impl, worktree: true, prompt: x}
          after: {agent: f, needs: [resolve], prompt: x}
          self: {agent: f, worktree: {on_conflict: self}, prompt: x}
        finally:
          report: {agent: f, needs: resolve, prompt: x}
    """)
    assert "stages.resolve.needs" in text and "remove `needs:`" in text
    assert "stages.resolve.worktree" in text and "remove `worktree:`" in text
    assert "stages.after.needs[0]" in text and "it cannot be needed; need 'impl' instead" in text
    assert "stages.impl.worktree" in text  # impl resolves other's conflicts, so it cannot have one
    assert "cannot resolve its own merge conflicts" in text
    assert "stages.resolve.agent" in text and "agent 'f' is read-only" in text
    assert "finally.report" not in text  # a finally stage may need a resolver: it runs after


def test_resume_after_a_resolution_keeps_it(project: Path, tmp_path: Path) -> None:
    calls = tmp_path / "calls.txt"
    pb = conflicting(project, "write=app.txt=merged", extra=f"""
  after:
    agent: f
    needs: impl
    prompt: "FAKE: count={calls}; fail_first=1"
""")
    first, _ = run_inproc(project, pb)
    assert first.status is Status.FAILURE and first.stages["after"].status is Status.FAILURE
    assert first.stages["resolve"].status is Status.SUCCESS
    events: list = []
    again = resume_run(project, first.run_id, events.append)
    assert again.status is Status.SUCCESS, again.reason
    assert again.stages["resolve"].status is Status.SUCCESS  # resolved earlier, not "no conflict"
    assert [u.key for u in again.stages["resolve"].units] == ["resolve-impl-b"]
    assert (project / "app.txt").read_text() == "merged"
    with Ledger(project) as ledger:
        keys = {u.key for u in ledger.units(first.run_id)}
        assert "resolve-impl-b" in keys and "resolve" not in keys
        assert len(ledger.attempts(first.run_id, "resolve-impl-b")) == 1  # not run again


# a crash while the resolver works; resolvers that commit themselves ------------------------------
@pytest.mark.parametrize("writes", [True, False], ids=["resolver-writes", "resolver-does-nothing"])
def test_resume_after_a_crash_mid_resolution_never_commits_the_half_done_merge(
        project: Path, tmp_path: Path, writes: bool) -> None:
    """bridge SIGKILLed while its resolver works: the resume drops the unfinished merge (saving what it
    held), runs the resolver again, and never lands a conflict marker."""
    pid, calls = tmp_path / "resolver.pid", tmp_path / "calls.txt"
    write = "write=app.txt=resolved by the resolver; " if writes else ""
    pb = conflicting(project, f"count={calls}; pidfile={pid}; {write}sleep_first=1:60")
    head = git(project, "rev-parse", "HEAD")
    proc = subprocess.Popen(bridge_argv("run", str(pb), "--dir", str(project)), cwd=project,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: pid.exists() and pid.read_text().strip(), 60, "the resolver to start")
        if writes:
            wait_for(lambda: "resolved" in next(worktrees_root(project).glob("*/impl-b/app.txt"))
                     .read_text(), 20, "the resolver's edit")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    resolver = int(pid.read_text())
    worktree = next(worktrees_root(project).glob("*/impl-b"))
    assert (worktree / "app.txt").exists()
    (worktree / "late.txt").write_text("written by the orphaned resolver after bridge died\n")
    assert git(project, "rev-parse", "HEAD") == head

    with Ledger(project) as ledger:
        run = ledger.find_run("last").id
    events: list = []
    again = resume_run(project, run, events.append)
    wait_for(lambda: not pid_alive(resolver), 10, "the resume to stop the orphaned resolver")
    # the resolver ran again, on the same conflict; it was never reported as "no conflict"
    assert [line.split()[0] for line in calls.read_text().splitlines()] == ["resolve-impl-b"] * 2
    assert [u.key for u in again.stages["resolve"].units] == ["resolve-impl-b"]
    dropped = notes(events, "unresolved")
    assert dropped and "unfinished resolution is dropped (never committed)" in dropped[0].message
    assert set(dropped[0].files) >= {"app.txt", "late.txt"}
    patch = project / ".bridge" / "runs" / run / "shared" / "patches" / "impl-b.interrupted-resolution.patch"
    saved = patch.read_text()
    assert "late.txt" in saved and "written by the orphaned resolver" in saved
    assert ("resolved by the resolver" if writes else "<<<<<<< ") in saved
    with Ledger(project) as ledger:
        assert "patches/impl-b.interrupted-resolution.patch" in {a["path"] for a in ledger.artifacts(run)}
    # whatever happened, no marker and none of the orphan's files reached main
    for rev in git(project, "rev-list", "main").split():
        assert "<<<<<<<" not in git(project, "show", f"{rev}:app.txt")
    assert "late.txt" not in git(project, "ls-tree", "-r", "--name-only", "main")
    if writes:
        assert again.status is Status.SUCCESS, again.reason
        assert (project / "app.txt").read_text() == "resolved by the resolver"
    else:  # the rerun resolver also left the markers: the unit fails, nothing lands
        assert again.status is Status.FAILURE
        assert "conflict markers are left in app.txt" in again.stages["impl"].reason
        assert git(project, "rev-parse", "main") == head


def test_a_resolver_committing_the_markers_itself_does_not_resolve(project: Path) -> None:
    """Markers committed by the resolver (not left in the worktree) are found in the commit."""
    sh = '  sh: {cli: command, command: [sh, -c, "{{ prompt }}"], sandbox: workspace-write}\n'
    pb = playbook(project, sh + textwrap.dedent("""
        stages:
          impl:
            agent: sh
            matrix: {item: [a, b]}
            worktree: {on_conflict: resolve}
            prompt: "printf 'line 1 from {{ matrix.item }}\\\\n' > app.txt"
          resolve:
            agent: sh
            prompt: "git add -A && git commit -qm 'resolved, honest' && echo {{ conflict.files | join(',') }}"
        """))
    head = git(project, "rev-parse", "HEAD")
    result, events = run_inproc(project, pb)
    assert result.status is Status.FAILURE
    reason = result.stages["impl"].reason
    assert "conflict markers were committed in app.txt" in reason, reason
    assert git(project, "rev-parse", "main") == head
    assert "<<<<<<<" not in (project / "app.txt").read_text()
    branch = f"bridge/{result.run_id}/impl-b"
    assert git(project, "rev-list", "--merges", "--count", f"{head}..{branch}") == "0"  # put back
    assert not notes(events, "resolved")
