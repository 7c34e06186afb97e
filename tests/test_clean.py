"""`bridge clean`: finished runs' worktrees and branches go, unmerged work stays (and says why)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bridge.cleanup import clean
from bridge.cli import app
from bridge.merge import integration_branch, land, merge_back
from bridge.worktrees import add_worktree, base_commit, finish_worktree
from tests.runhelp import git

RUN = "20260101-000000-ab12"
OTHER = "20260102-000000-cd34"


def branches(repo: Path) -> set[str]:
    return set(git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/").split())


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "app.py").write_text("app\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    return root


def stage(repo: Path, run: str, key: str, files: dict[str, str], keep_folder: bool = False):
    info = add_worktree(repo, run, key, base_commit(repo))
    for rel, text in files.items():
        (info.path / rel).write_text(text)
    if files:
        finish_worktree(info, run, key, repo / ".bridge" / "runs" / run / "shared")
    if not keep_folder:
        git(repo, "worktree", "remove", "--force", str(info.path))
    return info


def test_merged_work_is_removed_and_unmerged_work_is_kept_with_a_reason(repo: Path) -> None:
    base = base_commit(repo)
    merged = stage(repo, RUN, "merged", {"m.py": "m\n"})
    idle = stage(repo, RUN, "idle", {}, keep_folder=True)
    unmerged = stage(repo, RUN, "unmerged", {"u.py": "u\n"})
    merge_back(repo, [merged], "merge", run_id=RUN, base=base)
    assert land(repo, RUN, base).landed
    report = clean(repo)
    assert set(report.removed_branches) == {merged.branch, idle.branch, integration_branch(RUN)}
    assert report.removed_worktrees == (str(idle.path),)
    kept = dict(report.kept)
    assert "1 commit(s) on no branch of yours" in kept[unmerged.branch]
    assert f"git merge {unmerged.branch}" in kept[unmerged.branch]
    assert branches(repo) == {"main", unmerged.branch}
    assert not idle.path.exists()


def test_dry_run_reports_the_same_and_changes_nothing(repo: Path) -> None:
    stage(repo, RUN, "idle", {}, keep_folder=True)
    stage(repo, RUN, "unmerged", {"u.py": "u\n"})
    before = (branches(repo), git(repo, "worktree", "list"))
    dry = clean(repo, dry_run=True)
    assert (branches(repo), git(repo, "worktree", "list")) == before
    real = clean(repo)
    assert (dry.removed_branches, dry.removed_worktrees, dry.kept) == (
        real.removed_branches, real.removed_worktrees, real.kept)
    assert dry.dry_run and not real.dry_run


def test_squashed_work_counts_as_merged(repo: Path) -> None:
    base = base_commit(repo)
    info = stage(repo, RUN, "impl", {"x.py": "x\n"})
    merge_back(repo, [info], "squash", run_id=RUN, base=base)
    assert land(repo, RUN, base).landed
    report = clean(repo)
    assert info.branch in report.removed_branches and not report.kept


def test_unlanded_integration_branch_is_kept(repo: Path) -> None:
    base = base_commit(repo)
    info = stage(repo, RUN, "impl", {"x.py": "x\n"})
    merge_back(repo, [info], "merge", run_id=RUN, base=base)
    report = clean(repo)  # never landed: the work exists only on bridge branches
    assert {b for b, _ in report.kept} == {info.branch, integration_branch(RUN)}
    assert report.removed_branches == ()


def test_worktree_with_uncommitted_changes_is_kept(repo: Path) -> None:
    info = add_worktree(repo, RUN, "crashed", base_commit(repo))
    (info.path / "half.py").write_text("half done\n")
    report = clean(repo)
    kept = dict(report.kept)
    assert "uncommitted changes" in kept[str(info.path)]
    assert "kept worktree" in kept[info.branch]
    assert (info.path / "half.py").exists()


def test_unfinished_runs_are_left_alone_and_run_filter_applies(repo: Path) -> None:
    running = stage(repo, RUN, "a", {}, keep_folder=True)
    done = stage(repo, OTHER, "b", {}, keep_folder=True)
    report = clean(repo, finished_runs={OTHER})
    assert report.removed_branches == (done.branch,)
    assert (f"bridge/{RUN}/*", "the run is not finished") in report.kept
    assert running.path.exists()
    only = clean(repo, run_id=RUN)
    assert only.removed_branches == (running.branch,)


def test_stale_worktrees_are_pruned_even_when_locked(repo: Path) -> None:
    info = add_worktree(repo, RUN, "impl", base_commit(repo))
    git(repo, "worktree", "lock", str(info.path))
    shutil.rmtree(info.path)
    dry = clean(repo, dry_run=True)
    assert dry.pruned == (str(info.path),)
    assert str(info.path) in git(repo, "worktree", "list", "--porcelain")
    report = clean(repo)
    assert report.pruned == (str(info.path),) and info.branch in report.removed_branches
    assert str(info.path) not in git(repo, "worktree", "list", "--porcelain")
    again = add_worktree(repo, RUN, "impl", base_commit(repo))  # the same ids work again
    assert (again.path / "app.py").exists()


def test_bridge_clean_command_prints_the_report(repo: Path) -> None:
    stage(repo, RUN, "idle", {}, keep_folder=True)
    unmerged = stage(repo, RUN, "unmerged", {"u.py": "u\n"})
    result = CliRunner().invoke(app, ["clean", "--dry-run", "--dir", str(repo)])
    assert result.exit_code == 0, result.output
    assert "would remove branch" in result.output and f"bridge/{RUN}/idle" in result.output
    assert "kept" in result.output and unmerged.branch in result.output
    assert f"bridge/{RUN}/idle" in branches(repo)
    result = CliRunner().invoke(app, ["clean", "--dir", str(repo)])
    assert result.exit_code == 0 and "removed branch" in result.output
    assert branches(repo) == {"main", unmerged.branch}


def test_bridge_clean_takes_a_run_prefix_or_last(repo: Path) -> None:
    """RUN is resolved the way `bridge show` resolves it (the ledger's find_run)."""
    from bridge.ledger import Ledger

    with Ledger(repo) as ledger:
        for run_id in (RUN, OTHER):  # OTHER starts last
            ledger.start_run(run_id, "pb", repo / "pb.yaml", repo, vars={}, options={}, pid=0)
            ledger.finish_run(run_id, "success", "", tokens=0, cost_usd=0.0)
    first = stage(repo, RUN, "a", {}, keep_folder=True)
    second = stage(repo, OTHER, "b", {}, keep_folder=True)
    ambiguous = CliRunner().invoke(app, ["clean", "2026010", "--dir", str(repo)])
    assert ambiguous.exit_code == 1 and "matches 2 runs" in ambiguous.output
    unknown = CliRunner().invoke(app, ["clean", "1999", "--dir", str(repo)])
    assert unknown.exit_code == 1 and "no run matches '1999'" in unknown.output
    assert branches(repo) == {"main", first.branch, second.branch}  # nothing removed on an error
    last = CliRunner().invoke(app, ["clean", "last", "--dir", str(repo)])
    assert last.exit_code == 0, last.output
    assert branches(repo) == {"main", first.branch}  # `last` is OTHER, the latest started
    prefix = CliRunner().invoke(app, ["clean", RUN[:10], "--dir", str(repo)])
    assert prefix.exit_code == 0, prefix.output
    assert branches(repo) == {"main"} and not first.path.exists()


def test_commits_on_a_detached_head_are_saved_before_the_worktree_goes(repo: Path) -> None:
    """An agent detached its worktree's HEAD and committed there (the stage then failed): clean saves
    the commit on bridge/<run>/<key>@rescued instead of leaving it unreachable."""
    info = stage(repo, RUN, "impl", {"a.py": "a\n"}, keep_folder=True)
    git(info.path, "checkout", "-q", "--detach")
    (info.path / "lost.py").write_text("precious\n")
    git(info.path, "add", "lost.py")
    git(info.path, "commit", "-q", "-m", "made on a detached HEAD")
    orphan = git(info.path, "rev-parse", "HEAD")
    dry = clean(repo, dry_run=True)
    rescue = f"bridge/{RUN}/impl@rescued"
    assert dry.rescued == (rescue,) and "would be saved" in dict(dry.kept)[rescue]
    assert rescue not in branches(repo) and info.path.exists()
    report = clean(repo)
    assert report.rescued == (rescue,) and str(info.path.resolve()) in report.removed_worktrees
    assert "1 commit(s) made in" in dict(report.kept)[rescue] and "detached" in dict(report.kept)[rescue]
    assert git(repo, "rev-parse", rescue) == orphan and not info.path.exists()
    again = clean(repo)  # the rescued work stays until you merge or drop it
    assert "on no branch of yours" in dict(again.kept)[rescue] and rescue in branches(repo)
    out = CliRunner().invoke(app, ["clean", "--dir", str(repo)])
    assert out.exit_code == 0 and rescue in out.output


def test_branches_an_agent_made_in_a_worktree_are_reported_never_deleted(repo: Path) -> None:
    git(repo, "branch", "users-own")  # made by the user at the base: not the agent's
    info = stage(repo, RUN, "impl", {"a.py": "a\n"}, keep_folder=True)
    git(info.path, "branch", "agent-made")  # at the stage's commit
    git(info.path, "checkout", "-q", "-b", "agent-side")
    (info.path / "side.py").write_text("side\n")
    git(info.path, "add", "side.py")
    git(info.path, "commit", "-q", "-m", "on the agent's branch")
    report = clean(repo)
    assert set(report.agent_branches) == {"agent-made", "agent-side"}
    assert any("branch agent-side was made or checked out in a worktree of run" in n for n in report.notes)
    assert {"main", "users-own", "agent-made", "agent-side"} <= branches(repo)
    # the stage's branch is only on the agent's branches, which are not yours: it is kept
    assert info.branch in dict(report.kept) and info.branch in branches(repo)
    out = CliRunner().invoke(app, ["clean", "--dir", str(repo)])
    assert out.exit_code == 0 and "branch agent-made was made or checked out" in out.output


def test_a_worktree_made_under_another_cache_folder_is_found_again(repo: Path, tmp_path: Path, monkeypatch) -> None:
    # a run started with one XDG_CACHE_HOME (cron's, or before an upgrade), resumed and cleaned
    # with another: its checkout is where git says it is, never a second one for the same branch
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache-a"))
    first = add_worktree(repo, RUN, "impl", base_commit(repo))
    (first.path / "half.py").write_text("half done\n")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache-b"))
    again = add_worktree(repo, RUN, "impl", base_commit(repo))
    assert again.path == first.path and (again.path / "half.py").exists()
    dry = clean(repo, dry_run=True)  # its uncommitted work: kept, and so is the branch
    assert first.branch not in dry.removed_branches and str(first.path) not in dry.removed_worktrees
    (first.path / "half.py").unlink()
    report = clean(repo)
    assert report.removed_worktrees == (str(first.path),) and first.branch in report.removed_branches
    assert not first.path.exists()


def test_a_relative_cache_folder_is_ignored_as_xdg_says(repo: Path, monkeypatch) -> None:
    monkeypatch.chdir(repo)
    monkeypatch.setenv("XDG_CACHE_HOME", "relcache")
    info = add_worktree(repo, RUN, "impl", base_commit(repo))
    assert info.path.is_absolute() and repo.resolve() not in info.path.resolve().parents
    assert git(repo, "status", "--porcelain") == ""
