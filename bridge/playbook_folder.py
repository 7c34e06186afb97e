"""A folder of scheduled playbooks: its playbook files, the project it belongs to, loading one."""

from __future__ import annotations

from pathlib import Path

from bridge.playbook import Playbook


def load_playbook(path: Path) -> Playbook:
    """Load a playbook through bridge.loader when it exists (plain pydantic until then)."""
    try:
        from bridge.loader import load_playbook as load
    except ModuleNotFoundError as exc:
        if exc.name != "bridge.loader":
            raise
        import yaml

        return Playbook.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    return load(path)


def playbook_files(folder: Path) -> list[Path]:
    """The playbook files of a folder (*.yaml, *.yml), sorted (rehearsal scripts live in rehearsals/)."""
    return sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def project_dir_for(folder: Path) -> Path:
    """The project a playbook folder belongs to: the nearest ancestor with .bridge or .git."""
    folder = folder.resolve()
    for candidate in (folder, *folder.parents):
        if (candidate / ".bridge").is_dir() or (candidate / ".git").exists():
            return candidate
    return Path.cwd().resolve()
