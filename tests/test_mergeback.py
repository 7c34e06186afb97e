"""Worktree stages in real runs (fake agent CLI, real git): isolation, merge-back, landing, clean."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.events import GitNote, Status
from bridge.ledger import Ledger
from bridge.worktrees import worktrees_root
from tests.runhelp import bridge, git, make_git_project, make_project, run_inproc, shared_dir, write_playbook


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_git_project(tmp_path)


def notes(events: list, kind: str | None = None) -> list[GitNote]:
    return [e for e in events if isinstance(e, GitNote) and (kind is None or e.kind == kind)]


def parallel(project: Path, merge: str = "merge", same_file: bool = False) -> Path:
    target = "app.txt" if same_file else "{{ matrix.item }}.txt"
    return write_playbook(project, f"""
        stages:
          impl:
            agent: f
            matrix: {{item: [a, b]}}
            worktree: {{merge: {merge}}}
            prompt: "FAKE: write={target}=from {{{{ matrix.item }}}}"
    """)


def test_parallel_implementers_land_on_the_users_branch(project: Path) -> None:
    base = git(project, "rev-parse", "HEAD").strip()
    result, events = run_inproc(project, parallel(project))
    assert result.status is Status.SUCCESS, result.reason
    assert (project / "a.txt").read_text() == "from a" and (project / "b.txt").read_text() == "from b"
    assert git(project, "status", "--porcelain", "--untracked-files=no") == ""
    log = git(project, "log", "--format=%s", f"{base}..main").splitlines()
    assert [s for s in log if "merge" in s] == [
        f"bridge: impl-b (run {result.run_id}): merge bridge/{result.run_id}/impl-b",
        f"bridge: impl-a (run {result.run_id}): merge bridge/{result.run_id}/impl-a"]
    assert notes(events, "landed")
    with Ledger(project) as ledger:
        rows = {r["key"]: r for r in ledger.worktrees(result.run_id)}
        assert {k: r["status"] for k, r in rows.items()} == {"impl-a": "merged", "impl-b": "merged"}
        landing = ledger.landing(result.run_id)
        assert landing["landed"] == 1 and landing["branch"] == "main"
        arts = {a["path"] for a in ledger.artifacts(result.run_id)}
    assert {"patches/impl-a.patch", "patches/impl-a.diffstat", "patches/impl-b.patch"} <= arts
    shared = shared_dir(project, result.run_id)
    assert "+from a" in (shared / "patches" / "impl-a.patch").read_text()
    assert not (worktrees_root(project) / result.run_id).exists()  # folders go, branches stay

    shown = bridge(project, "show", result.run_id)
    assert shown.returncode == 0, shown.stderr
    assert f"bridge/{result.run_id}/impl-a: merged" in shown.stdout
    assert "landing   landed: main fast-forwarded" in shown.stdout
    summary = (project / ".bridge" / "runs" / result.run_id / "summary.md").read_text()
    assert f"`bridge/{result.run_id}/impl-b`" in summary and "## Landing" in summary

    out = bridge(project, "clean")
    assert out.returncode == 0, out.stderr
    assert git(project, "branch", "--list", f"bridge/{result.run_id}/*") == ""
    assert "main" in git(project, "branch", "--list", "main")


def test_squash_makes_one_commit_per_stage(project: Path) -> None:
    base = git(project, "rev-parse", "HEAD").strip()
    result, _ = run_inproc(project, parallel(project, merge="squash"))
    assert result.status is Status.SUCCESS, result.reason
    assert git(project, "rev-list", "--count", f"{base}..main").strip() == "2"  # impl-a, impl-b
    assert git(project, "rev-list", "--merges", "--count", f"{base}..main").strip() == "0"
    assert (project / "a.txt").exists() and (project / "b.txt").exists()
    out = bridge(project, "clean", result.run_id)
    assert out.returncode == 0, out.stderr
    assert git(project, "branch", "--list", f"bridge/{result.run_id}/*") == ""


def test_conflict_fails_the_stage_naming_files_and_keeps_the_branch(project: Path) -> None:
    head = git(project, "rev-parse", "HEAD").strip()
    result, events = run_inproc(project, parallel(project, same_file=True))
    assert result.status is Status.FAILURE
    reason = result.stages["impl"].reason
    assert "app.txt" in reason and f"bridge/{result.run_id}/impl-b" in reason, reason
    assert git(project, "rev-parse", "HEAD").strip() == head  # nothing landed
    assert (project / "app.txt").read_text() == "line 1\nline 2\n"
    assert git(project, "status", "--porcelain", "--untracked-files=no") == ""
    assert git(project, "branch", "--list", f"bridge/{result.run_id}/impl-b").strip()
    conflict = notes(events, "conflict")
    assert conflict and conflict[0].files == ("app.txt",)
    with Ledger(project) as ledger:
        row = next(r for r in ledger.worktrees(result.run_id) if r["key"] == "impl-b")
        assert row["status"] == "conflict" and row["conflicts"] == ["app.txt"]
        assert ledger.unit(result.run_id, "impl-b").status == "failure"
        assert ledger.landing(result.run_id)["landed"] == 0

    out = bridge(project, "clean")
    assert out.returncode == 0, out.stderr
    assert git(project, "branch", "--list", f"bridge/{result.run_id}/impl-b").strip()  # unmerged: kept
    assert f"bridge/{result.run_id}/impl-b" in out.stdout


def test_conflict_continue_marks_it_and_goes_on(project: Path) -> None:
    pb = write_playbook(project, """
        stages:
          impl:
            agent: f
            matrix: {item: [a, b]}
            worktree: {on_conflict: continue}
            prompt: "FAKE: write=app.txt=from {{ matrix.item }}"
          after:
            agent: f
            needs: impl
            prompt: "FAKE: message=ran"
    """)
    result, events = run_inproc(project, pb)
    assert result.status is Status.SUCCESS, result.reason
    assert "on_conflict: continue" in result.stages["impl"].reason
    assert result.stages["after"].status is Status.SUCCESS
    assert (project / "app.txt").read_text() == "from a"  # impl-a merged and landed


def test_dirty_tree_is_left_byte_for_byte(project: Path) -> None:
    (project / "app.txt").write_text("my edit\n")  # modified, unstaged
    (project / "notes.txt").write_text("staged edit\n")
    git(project, "add", "notes.txt")
    (project / "scratch.txt").write_text("untracked\n")
    pb = parallel(project)

    def state() -> tuple:
        return (git(project, "status", "--porcelain", "--", ".", ":!.bridge"), git(project, "diff"),
                git(project, "diff", "--cached"), (project / ".git" / "index").read_bytes(),
                git(project, "rev-parse", "HEAD"), git(project, "branch", "--show-current"),
                {p: (project / p).read_bytes() for p in ("app.txt", "notes.txt", "scratch.txt", "pb.yaml")})

    before = state()
    result, events = run_inproc(project, pb)
    assert result.status is Status.SUCCESS, result.reason
    assert state() == before
    assert not (project / "a.txt").exists()
    dirty = notes(events, "dirty")
    assert dirty and "uncommitted changes" in dirty[0].message and "left untouched" in dirty[0].message
    into = f"bridge/{result.run_id}/@integration"
    waiting = notes(events, "not_landed")
    assert waiting and f"git merge {into}" in waiting[-1].message
    assert len({n.message for n in waiting}) == len(waiting)  # each said once (it was printed twice)
    assert git(project, "show", f"{into}:a.txt") == "from a"
    out = bridge(project, "clean")
    assert out.returncode == 0, out.stderr
    assert git(project, "branch", "--list", into).strip()  # never landed: kept, with the reason
    assert "git merge" in out.stdout


def test_loop_iteration_two_sees_iteration_one_and_verify_sees_merged_code(project: Path) -> None:
    pb = write_playbook(project, """
        stages:
          work:
            loop:
              until: "loop.iteration >= 2"
              max_iterations: 3
              stages:
                impl:
                  agent: f
                  worktree: squash
                  prompt: "FAKE: append=log.txt=round {{ loop.iteration }}"
                check:
                  agent: f
                  needs: impl
                  prompt: "FAKE: read=log.txt={{ shared }}/seen-{{ loop.iteration }}.txt"
    """)
    result, _ = run_inproc(project, pb)
    assert result.status is Status.SUCCESS, result.reason
    assert (project / "log.txt").read_text() == "round 1\nround 2\n"
    shared = shared_dir(project, result.run_id)
    assert (shared / "seen-1.txt").read_text() == "round 1\n"
    assert (shared / "seen-2.txt").read_text() == "round 1\nround 2\n"
    branches = git(project, "branch", "--list", f"bridge/{result.run_id}/*")
    assert "impl.1" in branches and "impl.2" in branches


def test_verify_runs_on_merged_work_when_it_could_not_land(project: Path) -> None:
    (project / "app.txt").write_text("dirty\n")  # landing is not possible
    pb = write_playbook(project, """
        stages:
          impl:
            agent: f
            worktree: true
            prompt: "FAKE: write=new.txt=made"
          verify:
            agent: f
            needs: impl
            prompt: "FAKE: read=new.txt={{ shared }}/seen.txt"
    """)
    result, _ = run_inproc(project, pb)
    assert result.status is Status.SUCCESS, result.reason
    shared = shared_dir(project, result.run_id)
    assert (shared / "seen.txt").read_text() == "made"
    assert not (project / "new.txt").exists()
    assert not (worktrees_root(project) / result.run_id).exists()  # the checkout went


def test_worktree_stage_outside_git_is_a_clear_error(tmp_path: Path) -> None:
    proj = make_project(tmp_path)
    from bridge.errors import BridgeError

    with pytest.raises(BridgeError, match="git"):
        run_inproc(proj, parallel(proj))


def test_interactive_clis_trust_bridge_worktrees_only(tmp_path: Path) -> None:
    import json

    from bridge.trust import trust_worktree

    wt = tmp_path / "repo" / ".bridge" / "worktrees" / "run1" / "impl"
    wt.mkdir(parents=True)
    conf, home = tmp_path / "claude-conf", tmp_path / "home2"
    assert trust_worktree("claude", tmp_path / "repo", {"CLAUDE_CONFIG_DIR": str(conf)}) is None
    path = trust_worktree("claude", wt, {"CLAUDE_CONFIG_DIR": str(conf), "HOME": str(home)})
    assert json.loads(path.read_text())["projects"][str(wt.resolve())]["hasTrustDialogAccepted"] is True
    path = trust_worktree("gemini", wt, {"HOME": str(home)})
    assert json.loads(path.read_text()) == {str(wt.resolve()): "TRUST_FOLDER"}
    assert trust_worktree("codex", wt, {"HOME": str(home)}) is None


@pytest.mark.parametrize("agent_cmd", [
    "echo SECRET=agent > .env && git add -f .env && git commit -qm env",  # would replace the user's .env
    "git add -f .env && git commit -qm env",  # would publish the secret bridge copied in
], ids=["agent-own-env", "copied-secret"])
def test_a_branch_committing_ignored_files_is_not_merged(project: Path, agent_cmd: str) -> None:
    (project / ".gitignore").write_text(".env\n")
    git(project, "add", ".gitignore")
    git(project, "commit", "-qm", "ignore .env")
    (project / ".env").write_text("SECRET=user-original\n")
    head = git(project, "rev-parse", "HEAD")
    pb = write_playbook(project, f"""
        stages:
          impl:
            agent: sh
            matrix: {{item: [a, b]}}
            worktree: true
            prompt: "echo {{{{ matrix.item }}}} > {{{{ matrix.item }}}}.txt && {{% if matrix.item == 'b' %}}{agent_cmd}{{% else %}}true{{% endif %}}"
        """)
    pb.write_text(pb.read_text().replace(
        "agents:\n", 'agents:\n  sh: {cli: command, command: [sh, -c, "{{ prompt }}"], sandbox: workspace-write}\n'))
    result, events = run_inproc(project, pb)
    run = result.run_id
    assert result.status is Status.FAILURE
    units = {u.key: u for u in result.stages["impl"].units}
    assert units["impl-a"].status is Status.SUCCESS and units["impl-b"].status is Status.FAILURE
    assert "impl-b committed .env, which your repository ignores" in units["impl-b"].reason
    # the user's .env and branch are untouched; the secret is on no branch but the kept one
    assert (project / ".env").read_text() == "SECRET=user-original\n"
    assert git(project, "rev-parse", "main") == head
    for branch in ("main", f"bridge/{run}/@integration"):
        assert ".env" not in git(project, "log", "--format=", "--name-only", branch)
    assert ".env" in git(project, "log", "--format=", "--name-only", f"bridge/{run}/impl-b")
    kept = notes(events, "kept")
    assert any(n.key == "impl-b" and "is kept" in n.message for n in kept)
    shared = project / ".bridge" / "runs" / run / "shared"
    assert all("SECRET" not in p.read_text() for p in (shared / "patches").iterdir())
    with Ledger(project) as ledger:
        rows = {r["key"]: r for r in ledger.worktrees(run)}
        assert rows["impl-b"]["status"] == "kept" and rows["impl-a"]["status"] == "merged"


def test_matrix_items_merge_in_declaration_order(project: Path) -> None:
    pb = write_playbook(project, """
        stages:
          impl:
            agent: f
            matrix: {part: [zeta, alpha, mid]}
            worktree: true
            prompt: "FAKE: write={{ matrix.part }}.txt=from {{ matrix.part }}"
    """)
    result, events = run_inproc(project, pb)
    assert result.status is Status.SUCCESS, result.reason
    run = result.run_id
    merged = [n.key for n in notes(events, "merged")]
    assert merged == ["impl-zeta", "impl-alpha", "impl-mid"]
    subjects = git(project, "log", "--reverse", "--merges", "--format=%s", "main").splitlines()
    assert subjects == [f"bridge: impl-{p} (run {run}): merge bridge/{run}/impl-{p}" for p in ("zeta", "alpha", "mid")]


def test_a_worktree_agent_is_not_stopped_mid_edit_once_its_report_exists(project: Path) -> None:
    """Its report is complete (renamed into place) while it still edits code: in a worktree it runs to its
    own end, so what is committed and merged is its finished work, not a half-made edit."""
    pb = write_playbook(project, """
        stages:
          impl:
            agent: sh
            worktree: true
            prompt: "printf done > {{ shared }}/.r && mv {{ shared }}/.r {{ shared }}/report.md && sleep 2 && echo finished > code.txt"
            outputs: [report.md]
    """)
    pb.write_text(pb.read_text().replace(
        "agents:\n", 'agents:\n  sh: {cli: command, command: [sh, -c, "{{ prompt }}"], sandbox: workspace-write}\n'))
    result, _ = run_inproc(project, pb)
    assert result.status is Status.SUCCESS, result.reason
    assert result.stages["impl"].units[0].reason != "outputs complete; agent stopped"
    assert (project / "code.txt").read_text() == "finished\n"  # its last edit landed with the rest
    with Ledger(project) as ledger:
        (attempt,) = ledger.attempts(result.run_id, "impl")
    assert attempt.ended_by == "exit"


def test_the_early_stop_rule() -> None:
    from bridge.outputs import WORKTREE_GRACE, early_stop_grace
    from bridge.playbook import OutputSpec

    specs = [OutputSpec(path="r.md")]
    assert early_stop_grace(specs, worktree=False, interactive=False) == 0.0
    assert early_stop_grace(specs, worktree=True, interactive=False) is None
    assert early_stop_grace(specs, worktree=True, interactive=True) == WORKTREE_GRACE
    assert early_stop_grace([OutputSpec(path="r.md", required=False)], worktree=False, interactive=False) is None
