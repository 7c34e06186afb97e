"""`bridge demo`: rehearse audit-then-implement on a sample repo — the real CLIs, a scripted model."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from bridge.errors import BridgeError

NODE_HINT = ("Node.js (with npm) is needed for the agent CLIs and was not found: install Node.js 20 or newer "
             "from https://nodejs.org (or `sudo apt install nodejs npm`, `brew install node`), then run "
             "`bridge demo --yes` again.")


def _ask(question: str) -> bool:
    from bridge import ui

    if not sys.stdin.isatty():
        return False
    ui.print_text(question)
    try:
        return input("[y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


def _ensure_clis(yes: bool) -> dict[str, str]:
    """{binary: absolute path} of the CLIs the demo drives (those its playbook uses: codex and claude);
    installs the missing ones into bridge's CLI folder if allowed."""
    from bridge import demo, ui
    from bridge.process import cli_dirs, run_quick

    needed = demo.needed_clis()
    found = demo.find_clis(needed)
    if all(found.values()):
        return {name: str(path) for name, path in found.items()}
    absent = tuple(name for name, path in found.items() if path is None)
    missing = ", ".join(absent)
    prefix = demo.cache_dir()
    argv = demo.install_argv(prefix, absent)
    how = (f"The demo drives the real agent CLIs and {missing} {'is' if ',' not in missing else 'are'} not "
           f"installed. Install the pinned versions locally (no sudo, nothing global):\n\n    {' '.join(argv)}\n\n"
           f"then run `bridge demo` again (or run `bridge demo --yes` to do both).")
    if not yes and not _ask(how + "\n\nInstall them now?"):
        raise BridgeError(how)
    if shutil.which("npm") is None or shutil.which("node") is None:
        raise BridgeError(NODE_HINT)
    ui.print_text(f"Installing the agent CLIs into {prefix} (a minute or two) ...")
    prefix.mkdir(parents=True, exist_ok=True)
    code, out = run_quick(argv, timeout=900)
    if code != 0:
        tail = "\n".join(out.strip().splitlines()[-15:])
        raise BridgeError(f"`{' '.join(argv)}` {'timed out' if code is None else f'exited {code}'}:\n{tail}")
    found = demo.find_clis(needed)
    if not all(found.values()):
        raise BridgeError(f"npm finished but bridge does not find the CLIs on PATH nor in "
                          f"{os.pathsep.join(cli_dirs()) or 'its CLI folder'} (is $BRIDGE_CLI_PATH set to "
                          f"another folder?); run `{' '.join(argv)}` yourself to see why")
    return {name: str(path) for name, path in found.items()}


def _story(repo: Path, result: object, clis: dict[str, str], playbook: Path) -> None:
    import git

    from bridge import ui
    from bridge.process import cli_dirs
    from bridge.workspace import RunLayout

    nightly = playbook.parent / "nightly-verify.yaml"
    layout = RunLayout(repo, result.run_id)  # type: ignore[attr-defined]
    shared = layout.shared
    verdict = {}
    if (shared / "verify" / "result.json").is_file():
        verdict = json.loads((shared / "verify" / "result.json").read_text(encoding="utf-8"))
    fix = result.stages.get("fix")  # type: ignore[attr-defined]
    branches = sorted(b.name for b in git.Repo(repo).branches if b.name.startswith("bridge/"))
    lines = [
        "",
        "What happened",
        "  1. Codex audited the repo three times in parallel (security, performance, test gaps), each",
        "     writing a report into the shared folder and handing on a summary capped at 5 lines.",
        "  2. Claude Code, as lead, turned the reports into the shared task list; two Claude teammates",
        "     fixed their tasks at the same time, each in its own git worktree, merged back on your branch.",
        "  3. Codex ran the real test suite: still failing (total_value), so the loop went back to the lead",
        f"     with the failures; round {fix.iterations if fix else '?'} fixed it and the tests pass"
        f" (verify/result.json: {json.dumps(verdict) if verdict else 'missing'}).",
        "",
        f"The demo repo:   {repo}   (git log --graph; python3 -m unittest -q)",
        f"Audit reports:   {shared / 'audit'}/{{security,performance,test-gaps}}.md",
        f"Task list:       {shared / 'tasks.md'}",
        f"Test log:        {shared / 'verify' / 'tests.log'}",
        f"Run summary:     {layout.summary}",
        f"Branches:        {', '.join(branches) if branches else '-'}",
        f"Agent logs:      bridge show {result.run_id} --dir {repo}",  # type: ignore[attr-defined]
        f"Agent CLIs:      {', '.join(f'{name} {path}' for name, path in clis.items())}",
        f"                 (every bridge command looks on PATH, then in {os.pathsep.join(cli_dirs()) or '-'})",
        "",
        "Run it for real (your credentials, your repo):",
        "  bridge doctor",
        f"  bridge run {playbook} --dir YOUR_REPO --var test_command='npm test'",
        "  test_command is how the verifier runs YOUR tests: the default, `python3 -m unittest -q`, suits a",
        "  Python repo with unittest tests only; give yours (pytest -q, npm test, go test ./..., cargo test).",
        "  A test command that runs no test at all counts as a fail, never as a pass.",
        f"  (`bridge plan {playbook}` shows every prompt; copy it next to your repo to adapt it)",
        "",
        "Leave nightly-verify scheduled on your repo (the tests every night at 03:00 UTC, failures triaged):",
        "  mkdir -p YOUR_REPO/playbooks",
        f"  cp {nightly} YOUR_REPO/playbooks/     # then set vars.test_command in the copy",
        "  bridge schedule export --crontab --dir YOUR_REPO     # paste the lines into `crontab -e`",
        "  (or --systemd for systemd user units, or keep `bridge schedule run --dir YOUR_REPO` running)",
    ]
    ui.print_text("\n".join(lines))


def run(yes: bool = False, keep: Path | None = None) -> int:
    from bridge import demo, ui
    from bridge.events import Status
    from bridge.launch import RunSpec, start_run

    clis = _ensure_clis(yes)
    where = keep if keep is not None else Path(tempfile.mkdtemp(prefix="bridge-demo-"))
    repo = demo.build_sample(where)
    ui.print_text(f"Sample repo (3 seeded bugs, 2 of 4 tests failing): {repo}\n"
                  "Rehearsal: the real codex and claude CLIs, a scripted model on 127.0.0.1, no credentials.\n")
    spec = RunSpec(playbook_path=demo.playbook_path(), project=repo, rehearse=True)
    with ui.progress(False) as emit:
        result = start_run(spec, emit)
    if result.status is not Status.SUCCESS:
        ui.print_text(f"The demo run ended {result.status.value}: {result.reason}\n"
                      f"Look at: bridge show {result.run_id} --dir {repo}")
        return 1
    _story(repo, result, clis, spec.playbook_path)
    return 0
