"""Worktree lifecycle and merge-back, on real git repositories in tmp folders."""

from __future__ import annotations

import os
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from bridge.errors import BridgeError
from bridge.merge import conflict_prompt_context, integration_branch, land, merge_back, merge_order
from bridge.trust import trust_folder_for_claude, trust_folder_for_gemini
from bridge.worktrees import add_worktree, base_commit, finish_worktree, worktree
from bridge.worktrees import worktrees_root
from tests.runhelp import git

RUN = "20260101-000000-ab12"


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    write(root, {"app.py": "".join(f"line {i}\n" for i in range(1, 11)), "README.md": "hello\n",
                 ".gitignore": ".env\n*.local\n"})
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    return root


def agent(info_path: Path, files: dict[str, str], commit: str | None = None) -> None:
    """What an implementing agent does: edit files, maybe commit some of it itself."""
    write(info_path, files)
    if commit:
        git(info_path, "add", "-A")
        git(info_path, "commit", "-q", "-m", commit)


def implement(repo: Path, key: str, files: dict[str, str], base=None, commits: int = 0):
    base = base or base_commit(repo)
    info = add_worktree(repo, RUN, key, base)
    for n in range(commits):
        agent(info.path, {f"{key}-{n}.txt": f"{n}\n"}, commit=f"{key} step {n}")
    agent(info.path, files)
    finish = finish_worktree(info, RUN, key, repo / ".bridge" / "runs" / RUN / "shared")
    return info, finish


def snapshot(root: Path) -> dict[str, object]:
    """Everything a user could notice: status, index, HEAD, and every file's bytes."""
    files = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
             if p.is_file() and p.relative_to(root).parts[0] not in (".git", ".bridge")}
    return {
        "status": git(root, "status", "--porcelain", "--untracked-files=all"),
        "staged": git(root, "diff", "--cached"),
        "unstaged": git(root, "diff"),
        "index": (root / ".git" / "index").read_bytes(),
        "head": git(root, "rev-parse", "HEAD"),
        "branch": git(root, "symbolic-ref", "HEAD"),
        "files": files,
    }


def test_base_commit_reports_branch_and_dirty_files(repo: Path) -> None:
    clean = base_commit(repo)
    assert (clean.branch, clean.dirty) == ("main", False)
    assert clean.commit == git(repo, "rev-parse", "HEAD")
    (repo / "README.md").write_text("changed\n")
    (repo / "notes.txt").write_text("mine\n")
    dirty = base_commit(repo)
    assert dirty.dirty and set(dirty.dirty_files) == {"README.md", "notes.txt"}
    assert ".bridge/" in (repo / ".git" / "info" / "exclude").read_text()
    assert not (repo / ".gitignore").read_text().count(".bridge")


def test_worktree_lives_outside_the_users_tree_on_its_own_branch(repo: Path) -> None:
    with worktree(repo, RUN, "impl", base_commit(repo)) as info:
        assert info.path == worktrees_root(repo) / RUN / "impl"
        assert repo.resolve() not in info.path.resolve().parents  # outside the user's working tree
        assert info.path.is_relative_to(Path(os.environ["XDG_CACHE_HOME"]) / "bridge" / "worktrees")
        assert info.branch == f"bridge/{RUN}/impl"
        assert (info.path / "app.py").exists()
        assert git(info.path, "rev-parse", "--abbrev-ref", "HEAD") == info.branch
        assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    assert not info.path.exists()
    assert git(repo, "branch", "--list", info.branch)  # the branch outlives the folder


def test_ignored_files_are_copied_but_never_committed(repo: Path) -> None:
    write(repo, {".env": "TOKEN=secret\n", "conf/db.local": "x\n", "untracked.cfg": "y\n"})
    info = add_worktree(repo, RUN, "impl", base_commit(repo),
                        copy=[".env", "conf/*.local", "untracked.cfg", "app.py"])
    assert (info.path / ".env").read_text() == "TOKEN=secret\n"
    assert (info.path / "conf" / "db.local").exists()
    assert set(info.copied) == {".env", "conf/db.local"}
    skipped = dict(info.not_copied)
    assert "not ignored" in skipped["untracked.cfg"] and "tracked" in skipped["app.py"]
    assert not (info.path / "untracked.cfg").exists()
    agent(info.path, {"feature.py": "x = 1\n"})
    finish = finish_worktree(info, RUN, "impl", repo / "artifacts")
    committed = git(repo, "show", "--name-only", "--format=", finish.commit)
    assert committed.split() == ["feature.py"]


def test_finish_commits_leftovers_and_writes_patch_and_diffstat(repo: Path) -> None:
    info, finish = implement(repo, "impl", {"app.py": "changed\n", "new.py": "n = 1\n"}, commits=1)
    assert finish.commit == git(repo, "rev-parse", info.branch)
    assert finish.committed_leftovers
    log = git(repo, "log", "-1", "--format=%an <%ae>|%s", info.branch)
    assert log == f"bridge <bridge@localhost>|bridge: impl (run {RUN})"
    assert set(finish.files) == {"app.py", "new.py", "impl-0.txt"}
    assert "new.py" in finish.diffstat
    assert finish.diffstat_path.read_text() == finish.diffstat + "\n"
    patch = finish.patch_path.read_text()
    assert "+n = 1" in patch and patch.endswith("\n")
    # The patch is against the base: it applies to a fresh checkout of it.
    check = subprocess.run(["git", "apply", "--check", str(finish.patch_path)], cwd=repo)
    assert check.returncode == 0


def test_finish_with_no_changes_reports_none(repo: Path) -> None:
    _, finish = implement(repo, "idle", {})
    assert finish.commit is None and finish.diffstat == "" and finish.patch_path.read_text() == ""


def test_two_implementers_on_different_files_both_land(repo: Path) -> None:
    base = base_commit(repo)
    a, _ = implement(repo, "impl-a", {"a.py": "a\n"}, base)
    b, _ = implement(repo, "impl-b", {"b.py": "b\n"}, base)
    results = merge_back(repo, merge_order([b, a]), "merge", run_id=RUN, base=base)
    assert [(r.stage_key, r.ok) for r in results] == [("impl-b", True), ("impl-a", True)]
    landing = land(repo, RUN, base)
    assert landing.landed and landing.branch == "main"
    assert (repo / "a.py").read_text() == "a\n" and (repo / "b.py").read_text() == "b\n"
    assert git(repo, "status", "--porcelain") == ""
    assert len(git(repo, "rev-list", "--merges", f"{base.commit}..main").split()) == 2


def test_merge_order_uses_order_then_the_given_order(repo: Path) -> None:
    base = base_commit(repo)
    infos = [add_worktree(repo, RUN, k, base) for k in ("b", "a", "c")]
    assert [i.stage_key for i in merge_order(infos, {"c": -1})] == ["c", "b", "a"]


def test_same_lines_conflict_is_aborted_reported_and_branch_kept(repo: Path) -> None:
    base = base_commit(repo)
    a, _ = implement(repo, "impl-a", {"app.py": "A wrote this\n"}, base)
    b, _ = implement(repo, "impl-b", {"app.py": "B wrote this\n"}, base)
    first, second = merge_back(repo, [a, b], "merge", run_id=RUN, base=base)
    assert first.ok and not second.ok
    assert second.conflicts == ("app.py",) and "aborted" in second.message
    assert git(repo, "rev-parse", "--verify", b.branch)  # branch kept
    into = integration_branch(RUN)
    assert git(repo, "show", f"{into}:app.py") == "A wrote this"  # nothing half-merged
    assert not list((repo / ".git").rglob("MERGE_HEAD"))
    assert not (worktrees_root(repo) / RUN / "@integration").exists()
    ctx = conflict_prompt_context(second)
    assert ctx["files"] == ["app.py"] and ctx["branch"] == b.branch and ctx["into"] == into
    assert "<<<<<<<" in ctx["diff"] and "B wrote this" in ctx["diff"]
    assert land(repo, RUN, base).landed
    assert (repo / "app.py").read_text() == "A wrote this\n"


@pytest.mark.parametrize("strategy", ["squash", "rebase"])
def test_conflicts_abort_cleanly_for_squash_and_rebase(repo: Path, strategy: str) -> None:
    base = base_commit(repo)
    a, _ = implement(repo, "impl-a", {"app.py": "A\n"}, base)
    b, _ = implement(repo, "impl-b", {"app.py": "B\n"}, base, commits=2)
    first, second = merge_back(repo, [a, b], strategy, run_id=RUN, base=base)
    assert first.ok and not second.ok and second.conflicts == ("app.py",)
    tip = git(repo, "rev-parse", integration_branch(RUN))
    assert tip == first.commit
    assert not list((repo / ".git").rglob("rebase-merge"))
    assert not list((repo / ".git").rglob("MERGE_HEAD"))


def test_squash_leaves_exactly_one_commit(repo: Path) -> None:
    base = base_commit(repo)
    info, _ = implement(repo, "impl", {"x.py": "x\n"}, base, commits=3)
    (result,) = merge_back(repo, [info], "squash", run_id=RUN, base=base)
    assert result.ok and land(repo, RUN, base).landed
    assert git(repo, "rev-list", "--count", f"{base.commit}..main") == "1"
    assert git(repo, "rev-list", "--parents", "-1", "main").count(" ") == 1
    assert (repo / "x.py").exists() and (repo / "impl-2.txt").exists()


def test_rebase_gives_linear_history(repo: Path) -> None:
    base = base_commit(repo)
    a, _ = implement(repo, "impl-a", {"a.py": "a\n"}, base, commits=1)
    b, _ = implement(repo, "impl-b", {"b.py": "b\n"}, base, commits=1)
    results = merge_back(repo, [a, b], "rebase", run_id=RUN, base=base)
    assert all(r.ok for r in results)
    assert land(repo, RUN, base).landed
    assert git(repo, "rev-list", "--merges", f"{base.commit}..main") == ""
    assert git(repo, "rev-list", "--count", f"{base.commit}..main") == "4"
    # The stage branch itself is untouched.
    assert git(repo, "rev-parse", b.branch) != git(repo, "rev-parse", "main")


def test_none_leaves_the_branch_for_review(repo: Path) -> None:
    base = base_commit(repo)
    info, finish = implement(repo, "impl", {"x.py": "x\n"}, base)
    (result,) = merge_back(repo, [info], "none", run_id=RUN, base=base)
    assert result.ok and result.commit is None and info.branch in result.message
    assert git(repo, "rev-parse", "main") == base.commit
    assert git(repo, "rev-parse", info.branch) == finish.commit
    assert not land(repo, RUN, base).landed


def test_dirty_user_tree_is_left_exactly_as_it_was(repo: Path) -> None:
    write(repo, {"README.md": "my edit\n", "scratch.txt": "untracked\n", "staged.py": "s = 1\n"})
    git(repo, "add", "staged.py")
    before = snapshot(repo)
    base = base_commit(repo)
    assert base.dirty
    a, _ = implement(repo, "impl-a", {"a.py": "a\n"}, base)
    b, _ = implement(repo, "impl-b", {"b.py": "b\n"}, base)
    assert all(r.ok for r in merge_back(repo, [a, b], "merge", run_id=RUN, base=base))
    landing = land(repo, RUN, base)
    assert snapshot(repo) == before
    into = integration_branch(RUN)
    assert not landing.landed and landing.integration_branch == into
    assert "uncommitted changes" in landing.message and f"git merge {into}" in landing.message
    assert git(repo, "show", f"{into}:a.py") == "a" and git(repo, "show", f"{into}:b.py") == "b"
    assert git(repo, "rev-parse", "main") == base.commit


def test_untracked_files_do_not_block_landing_unless_they_would_be_overwritten(repo: Path) -> None:
    base = base_commit(repo)
    a, _ = implement(repo, "impl-a", {"a.py": "a\n"}, base)
    (repo / "scratch.txt").write_text("mine\n")
    merge_back(repo, [a], "merge", run_id=RUN, base=base)
    assert land(repo, RUN, base).landed
    assert (repo / "scratch.txt").read_text() == "mine\n" and (repo / "a.py").exists()
    base2 = base_commit(repo)
    run2 = "20260101-000001-cd34"
    info = add_worktree(repo, run2, "impl", base2)
    agent(info.path, {"scratch.txt": "agent's\n"})
    finish_worktree(info, run2, "impl", repo / "artifacts")
    merge_back(repo, [info], "merge", run_id=run2, base=base2)
    landing = land(repo, run2, base2)
    assert not landing.landed and "would overwrite scratch.txt" in landing.message
    assert (repo / "scratch.txt").read_text() == "mine\n"
    assert git(repo, "rev-parse", "main") == base2.commit


def test_branch_that_moved_on_is_not_touched(repo: Path) -> None:
    base = base_commit(repo)
    info, _ = implement(repo, "impl", {"x.py": "x\n"}, base)
    write(repo, {"mine.txt": "1\n"})
    git(repo, "add", "mine.txt")
    git(repo, "commit", "-q", "-m", "user moved on")
    moved = git(repo, "rev-parse", "main")
    merge_back(repo, [info], "merge", run_id=RUN, base=base)
    landing = land(repo, RUN, base)
    assert not landing.landed and "moved on" in landing.message
    assert git(repo, "rev-parse", "main") == moved


def test_branch_not_checked_out_is_fast_forwarded_without_a_checkout(repo: Path) -> None:
    base = base_commit(repo)
    info, _ = implement(repo, "impl", {"x.py": "x\n"}, base)
    git(repo, "checkout", "-q", "-b", "elsewhere")
    (repo / "wip.txt").write_text("wip\n")
    before = snapshot(repo)
    merge_back(repo, [info], "merge", run_id=RUN, base=base)
    landing = land(repo, RUN, base)
    assert landing.landed and git(repo, "show", "main:x.py") == "x"
    assert snapshot(repo) == before


def test_stale_worktree_is_pruned_and_does_not_block_the_same_ids(repo: Path) -> None:
    base = base_commit(repo)
    info = add_worktree(repo, RUN, "impl", base)
    git(repo, "worktree", "lock", str(info.path))
    shutil.rmtree(info.path)  # a crash that lost the folder (the lock stays)
    again = add_worktree(repo, RUN, "impl", base)
    assert again.path == info.path and (again.path / "app.py").exists()
    paths = git(repo, "worktree", "list", "--porcelain")
    assert paths.count(str(info.path)) == 1


def test_existing_branch_with_work_is_reused_not_reset(repo: Path) -> None:
    base = base_commit(repo)
    info, finish = implement(repo, "impl", {"x.py": "x\n"}, base)
    git(repo, "worktree", "remove", "--force", str(info.path))
    again = add_worktree(repo, RUN, "impl", base)
    assert git(again.path, "rev-parse", "HEAD") == finish.commit


def test_bad_ids_and_empty_repo_are_user_errors(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(BridgeError, match="cannot name a git branch"):
        add_worktree(repo, RUN, "bad..key", base_commit(repo))
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    with pytest.raises(BridgeError, match="no commits"):
        base_commit(empty)
    with pytest.raises(BridgeError, match="not inside a git repository"):
        base_commit(tmp_path / "nowhere")


def test_trust_helpers_write_the_cli_formats_and_keep_other_keys(tmp_path: Path) -> None:
    config = tmp_path / "claude"
    config.mkdir()
    existing = {"theme": "dark", "projects": {"/x": {"a": 1}}}
    (config / ".claude.json").write_text(json.dumps(existing))
    path = trust_folder_for_claude(config, tmp_path / "wt")
    data = json.loads(path.read_text())
    assert data["theme"] == "dark" and data["projects"]["/x"] == {"a": 1}
    assert data["projects"][str((tmp_path / "wt").resolve())] == {"hasTrustDialogAccepted": True}
    gpath = trust_folder_for_gemini(tmp_path / "home", tmp_path / "wt")
    assert json.loads(gpath.read_text()) == {str((tmp_path / "wt").resolve()): "TRUST_FOLDER"}


def test_parallel_implementers_can_add_worktrees_at_once(repo: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    base = base_commit(repo)
    with ThreadPoolExecutor(6) as pool:
        infos = list(pool.map(lambda i: add_worktree(repo, RUN, f"impl-{i}", base), range(12)))
    assert all((i.path / "app.py").exists() for i in infos)


def test_finish_never_commits_a_merge_in_progress(repo: Path) -> None:
    """An agent that left `git merge` half done (markers in the files) gets no commit from bridge."""
    git(repo, "checkout", "-q", "-b", "other")
    write(repo, {"app.py": "other\n"})
    git(repo, "commit", "-qam", "other")
    git(repo, "checkout", "-q", "main")
    info = add_worktree(repo, RUN, "impl", base_commit(repo))
    agent(info.path, {"app.py": "mine\n"}, commit="mine")
    tip = git(info.path, "rev-parse", "HEAD")
    with pytest.raises(subprocess.CalledProcessError):
        git(info.path, "merge", "other")
    assert "<<<<<<<" in (info.path / "app.py").read_text()
    with pytest.raises(BridgeError, match="left a merge in progress .* never commits a half-done merge"):
        finish_worktree(info, RUN, "impl", repo / "artifacts")
    assert git(repo, "rev-parse", info.branch) == tip


def test_landing_never_overwrites_an_ignored_file_of_the_user(repo: Path) -> None:
    """git replaces ignored files without asking on a fast-forward; landing stays put instead."""
    write(repo, {"my.local": "the user's own\n"})  # ignored by *.local
    base = base_commit(repo)
    info = add_worktree(repo, RUN, "impl", base, copy=[])
    write(info.path, {"my.local": "the agent's\n", "ok.py": "x\n"})
    git(info.path, "add", "-f", "my.local", "ok.py")
    git(info.path, "commit", "-qm", "agent")
    finish_worktree(info, RUN, "impl", repo / "artifacts")
    assert merge_back(repo, [info], "merge", run_id=RUN, base=base)[0].ok
    landing = land(repo, RUN, base)
    assert not landing.landed
    assert "would overwrite my.local" in landing.message and "untracked or ignored" in landing.message
    assert (repo / "my.local").read_text() == "the user's own\n"
    assert git(repo, "rev-parse", "main") == base.commit and not (repo / "ok.py").exists()


def test_forbidden_paths_sees_every_commit_of_the_range(repo: Path) -> None:
    from bridge.branchguard import forbidden_paths

    write(repo, {".env": "SECRET=user\n"})
    base = base_commit(repo)
    info = add_worktree(repo, RUN, "impl", base)
    assert info.copied == (".env",)
    git(info.path, "add", "-f", ".env")
    git(info.path, "commit", "-qm", "oops")
    git(info.path, "rm", "-q", "--cached", ".env")  # gone from the tip, still in the history
    write(info.path, {"build/x.local": "1\n", "app.py": "changed\n"})
    git(info.path, "add", "-f", "build/x.local", "app.py")
    git(info.path, "commit", "-qm", "more")
    assert forbidden_paths(repo, base.commit, info.branch, info.copied) == (".env", "build/x.local")
    assert forbidden_paths(repo, base.commit, base.commit) == ()
    finish = finish_worktree(info, RUN, "impl", repo / "artifacts")
    assert "SECRET" not in finish.patch_path.read_text()  # the copied secret stays out of the artifacts


def test_remove_keeps_a_worktree_whose_detached_head_holds_commits(repo: Path) -> None:
    from bridge.worktrees import remove_worktree

    info = add_worktree(repo, RUN, "impl", base_commit(repo))
    git(info.path, "checkout", "-q", "--detach")
    agent(info.path, {"x.py": "x\n"}, commit="on no branch")
    assert remove_worktree(info) is False and info.path.exists()
    git(repo, "branch", "keep-it", git(info.path, "rev-parse", "HEAD"))
    assert remove_worktree(info) is True and not info.path.exists()


def test_bridge_worktrees_moves_them_and_interactive_clis_trust_them_there(repo: Path, tmp_path: Path,
                                                                          monkeypatch) -> None:
    from bridge.trust import trust_worktree

    monkeypatch.setenv("BRIDGE_WORKTREES", str(tmp_path / "elsewhere"))
    with worktree(repo, RUN, "impl", base_commit(repo)) as info:
        assert info.path.parent.parent.parent == tmp_path / "elsewhere"
        conf = tmp_path / "claude-conf"
        assert trust_worktree("claude", info.path, {"CLAUDE_CONFIG_DIR": str(conf)}) is not None
        assert trust_worktree("claude", repo, {"CLAUDE_CONFIG_DIR": str(conf)}) is None  # the user's own: never


def test_a_symlinked_env_is_copied_as_its_contents_never_as_the_link(repo: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.env"
    secret.write_text("KEY=user\n")
    (repo / ".gitignore").write_text(".env\n")
    git(repo, "add", ".gitignore")
    git(repo, "commit", "-q", "-m", "ignore .env")
    (repo / ".env").symlink_to(secret)
    with worktree(repo, RUN, "impl", base_commit(repo)) as info:
        copy = info.path / ".env"
        assert not copy.is_symlink() and copy.read_text() == "KEY=user\n"
        with copy.open("a") as fh:
            fh.write("AGENT_WROTE=1\n")
    assert secret.read_text() == "KEY=user\n"


def test_the_copied_env_does_not_keep_a_worktree_when_only_your_uncommitted_gitignore_ignores_it(
        repo: Path) -> None:
    from bridge.cleanup import clean
    from bridge.worktrees import add_worktree, remove_worktree

    (repo / ".gitignore").write_text("*.log\n")
    git(repo, "add", ".gitignore")
    git(repo, "commit", "-q", "-m", "gitignore without .env")
    with (repo / ".gitignore").open("a") as fh:
        fh.write(".env\n")  # the user's own edit, not committed
    (repo / ".env").write_text("SECRET=1\n")
    info = add_worktree(repo, RUN, "impl", base_commit(repo))
    assert info.copied == (".env",)
    assert remove_worktree(info) and not info.path.exists()  # the copy is no work of the agent's
    kept = add_worktree(repo, RUN, "other", base_commit(repo))
    report = clean(repo)
    assert str(kept.path) in report.removed_worktrees and not kept.path.exists()
    assert (repo / ".env").read_text() == "SECRET=1\n"
