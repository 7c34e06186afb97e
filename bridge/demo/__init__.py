"""The rehearsed demo's pieces: the sample repository, and finding or installing the pinned agent CLIs.

Nothing here prints; `bridge/commands/demo.py` tells the story. The CLI versions come from one file,
tests/e2e/package.json (shipped as bridge/_data/clis/package.json), the same pins the tests use.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bridge.errors import BridgeError
from bridge.process import cli_install_dir, find_cli
from bridge.resources import data_dir

SAMPLE = Path(__file__).resolve().parent / "sample"
PLAYBOOK = "audit-then-implement.yaml"  # the shipped playbook the demo rehearses
CLI_BINARIES = {"codex": "@openai/codex", "claude": "@anthropic-ai/claude-code", "gemini": "@google/gemini-cli"}
_AUTHOR = ("bridge demo", "demo@bridge.invalid")


def build_sample(dest: Path) -> Path:
    """Copy the sample repository into `dest` (absent or empty) and make it a git repo with one commit."""
    import git

    dest = dest.resolve()
    if dest.exists() and any(dest.iterdir()):
        raise BridgeError(f"{dest} is not empty: give --keep a new or empty folder")
    shutil.copytree(SAMPLE, dest, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".bridge"))
    repo = git.Repo.init(dest, initial_branch="main")
    with repo.config_writer() as config:  # a demo repo of its own: no user identity needed
        config.set_value("user", "name", _AUTHOR[0])
        config.set_value("user", "email", _AUTHOR[1])
    repo.git.add("-A")
    repo.git.commit("-m", "inventory: the sample with three seeded bugs", "--no-verify", "--no-gpg-sign")
    return dest


def is_sample(project: Path) -> bool:
    """Is `project` a copy of the sample repository (every file of it there, fixed or not)?"""
    files = [p.relative_to(SAMPLE) for p in SAMPLE.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    return bool(files) and all((project / rel).is_file() for rel in files)


def foreign_rehearsal(script: Path, project: Path) -> str | None:
    """A warning when one of bridge's shipped rehearsal scripts — written for the sample repository —
    writes repository files and the project is not that sample; None otherwise. The run then keeps
    what it merges off the user's branch (bridge.launch sets the landing aside)."""
    from bridge.rehearsal import load_script

    shipped = (data_dir("playbooks") / "rehearsals").resolve()
    if script.resolve().parent != shipped or is_sample(project):
        return None
    writes = sorted({step.write_file.path for reply in load_script(script).replies for step in reply.steps
                     if step.write_file is not None and not step.write_file.path.startswith("$")})
    if not writes:
        return None
    return (f"this rehearsal plays bridge's shipped script {script.name}, written for the demo's sample "
            f"repository (`bridge demo`): its scripted agents write the sample's files ({', '.join(writes)}), "
            f"whatever {project} holds. So nothing this run merges lands on your branch: it stays on the run's "
            "integration branch (delete it with `bridge clean`). To rehearse your own repository, write a "
            "script for it (docs/rehearsal.md) and pass --script.")


def pinned_clis() -> dict[str, str]:
    """{npm package: version} of the agent CLIs, from the shipped package.json."""
    path = data_dir("clis") / "package.json"
    try:
        deps = json.loads(path.read_text(encoding="utf-8"))["dependencies"]
    except (OSError, ValueError, KeyError) as exc:
        raise BridgeError(f"cannot read the pinned CLI versions from {path} ({exc}); reinstall bridge") from exc
    return {pkg: deps[pkg] for pkg in CLI_BINARIES.values() if pkg in deps}


def cache_dir() -> Path:
    """Where `bridge demo --yes` installs the CLIs: bridge's own CLI folder's prefix (~/.cache/bridge/clis)."""
    return cli_install_dir()


def playbook_path() -> Path:
    """The shipped playbook the demo runs."""
    return data_dir("playbooks") / PLAYBOOK


def needed_clis(playbook: Path | None = None) -> tuple[str, ...]:
    """The agent CLIs (of CLI_BINARIES) the demo playbook's stages use: codex and claude, not gemini."""
    from bridge.loader import load_playbook
    from bridge.playbook import iter_stages

    pb = load_playbook(playbook or playbook_path())
    used = {pb.agents[stage.agent].cli for _, stage in [*iter_stages(pb.stages), *iter_stages(pb.finally_)]
            if stage.agent}
    return tuple(name for name in CLI_BINARIES if name in used)


def find_clis(names: tuple[str, ...] | None = None) -> dict[str, str | None]:
    """{binary: absolute path or None} for `names` (default: every pinned CLI), looked up the way every
    bridge run looks them up (PATH, then bridge's CLI folder: bridge.process.cli_search_path)."""
    return {name: find_cli(name) for name in (CLI_BINARIES if names is None else names)}


def install_argv(prefix: Path, names: tuple[str, ...] | None = None) -> list[str]:
    """The npm command that installs the pinned CLIs `names` (default: all) into `prefix` (no global
    install, no sudo)."""
    wanted = {CLI_BINARIES[n] for n in (CLI_BINARIES if names is None else names)}
    return ["npm", "install", "--no-fund", "--no-audit", "--prefix", str(prefix),
            *(f"{pkg}@{version}" for pkg, version in pinned_clis().items() if pkg in wanted)]
