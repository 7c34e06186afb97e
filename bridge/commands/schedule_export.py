"""`bridge schedule export [DIR] --systemd | --crontab`: schedules for the OS scheduler."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bridge.commands.schedule_run import playbook_folder
from bridge.cron import cron_expression, jitter_offset, validate_schedules
from bridge.errors import BridgeError
from bridge.playbook import Schedule
from bridge.process import find_cli
from bridge.scheduler import load_playbook, playbook_files
from bridge.ui import print_plain

AGENT_CLIS = ("codex", "claude", "gemini")
BASE_PATH = ("/usr/local/bin", "/usr/bin", "/bin")
_DAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_NAMES = {"dow": ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
          "month": ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]}
_RANGES = {"minute": (0, 59), "hour": (0, 23), "dom": (1, 31), "month": (1, 12), "dow": (0, 7)}


class Untranslatable(ValueError):
    """A cron expression systemd's OnCalendar cannot say."""


@dataclass(frozen=True)
class Entry:
    """One schedule of one playbook, with what every export needs."""

    name: str  # unit / log name: the playbook name, plus -2, -3... for further schedules
    playbook: str
    path: Path
    schedule: Schedule
    number: int = 1  # which of the playbook's schedules (1-based): `bridge schedule fire --schedule N`


# ---- environment: where bridge and the agent CLIs are -----------------------------------------

def bridge_command() -> list[str]:
    """An absolute way to run bridge: the script beside this Python, else on PATH, else -m."""
    beside = Path(sys.executable).parent / "bridge"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    found = shutil.which("bridge")
    return [str(Path(found).resolve())] if found else [sys.executable, "-m", "bridge"]


def run_path() -> tuple[str, list[str]]:
    """PATH for scheduled runs (folders of the agent CLIs found now first) and the CLIs not found."""
    folders: list[str] = []
    missing: list[str] = []
    for cli in AGENT_CLIS:
        found = find_cli(cli)  # PATH, then bridge's own CLI folder (where `bridge demo --yes` installs)
        if found:
            folders.append(str(Path(found).parent))
        else:
            missing.append(cli)
    node = shutil.which("node")  # the npm CLIs start with `#!/usr/bin/env node`
    if folders and node:
        folders.append(str(Path(node).parent))
    folders.append(str(Path(bridge_command()[0]).parent))
    folders += BASE_PATH
    return os.pathsep.join(dict.fromkeys(folders)), missing


def entries(folder: Path) -> list[Entry]:
    """Every schedule in the folder; a broken playbook stops the export (it would fail at fire time)."""
    out: list[Entry] = []
    for path in playbook_files(folder):
        try:
            playbook = load_playbook(path)
            validate_schedules(playbook)
        except Exception as exc:
            raise BridgeError(f"cannot export {path.name}: {exc}") from None
        for i, schedule in enumerate(playbook.schedule, 1):
            name = playbook.name if i == 1 else f"{playbook.name}-{i}"
            out.append(Entry(name, playbook.name, path.resolve(), schedule, i))
    return out


def run_args(entry: Entry, project: Path) -> list[str]:
    """`bridge schedule fire PLAYBOOK --schedule N --dir PROJECT`: the playbook lock under the schedule's
    overlap policy (the same lock `bridge schedule run` takes), a ledger row, then the run."""
    return [*bridge_command(), "schedule", "fire", str(entry.path), "--schedule", str(entry.number),
            "--dir", str(project)]


# ---- systemd -----------------------------------------------------------------------------

def _values(field: str, spec: str) -> list[int]:
    lo, hi = _RANGES[field]
    out: list[int] = []
    for part in spec.split(","):
        base, _, step = part.partition("/")
        if base == "*":
            a, b = lo, hi
        elif "-" in base:
            a, b = (_number(field, x) for x in base.split("-", 1))
        else:
            a = _number(field, base)
            b = hi if step else a
        out += list(range(a, b + 1, int(step) if step else 1))
    return sorted(set(out))


def _number(field: str, text: str) -> int:
    names = _NAMES.get(field)
    if names and text.upper() in names:
        return names.index(text.upper()) + (1 if field == "month" else 0)
    if not text.isdigit():
        raise Untranslatable(f"{text!r} in the {field} field has no OnCalendar equivalent")
    return int(text)


def _field(field: str, spec: str, width: int = 2) -> str:
    if spec == "*":
        return "*"
    lo, _ = _RANGES[field]
    if spec.startswith("*/"):  # keep the compact repetition form systemd understands
        return f"{lo:0{width}d}/{int(spec[2:])}"
    return ",".join(f"{v:0{width}d}" for v in _values(field, spec))


def on_calendar(cron: str, tz: str) -> str:
    """The OnCalendar= value for a cron expression; raises Untranslatable when there is none."""
    minute, hour, dom, month, dow = cron_expression(cron).split()
    if dom != "*" and dow != "*" and not dom.startswith("*") and not dow.startswith("*"):
        raise Untranslatable("cron fires when EITHER the day of month or the weekday matches; "
                             "OnCalendar needs both to match")
    days = ""
    if dow != "*":
        days = ",".join(dict.fromkeys(_DAYS[v] for v in _values("dow", dow))) + " "
    date = f"*-{_field('month', month)}-{_field('dom', dom)}"
    return f"{days}{date} {_field('hour', hour)}:{_field('minute', minute)}:00 {tz}"


def _systemd_quote(arg: str) -> str:
    arg = arg.replace("%", "%%").replace("$", "$$")
    if arg and not any(c in arg for c in " \t\"'\\;"):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def systemd_units(items: list[Entry], project: Path) -> tuple[str, list[tuple[Entry, str]]]:
    """Unit files as one text (each headed by its file name) and the schedules left out, with why."""
    path, missing = run_path()
    chunks: list[str] = [
        "# systemd user units generated by `bridge schedule export --systemd`.",
        "# Save each block under ~/.config/systemd/user/<file>, then:",
        "#   systemctl --user daemon-reload && systemctl --user enable --now <name>.timer",
        "# systemd never starts a unit that is still active: a fire while the unit's own previous run goes on",
        "# is dropped, whatever the overlap policy. `bridge schedule fire` takes the playbook's lock, so a run",
        "# never overlaps one started by `bridge schedule run`, cron or by hand (overlap: skip, wait or stop it).",
    ]
    if missing:
        chunks.append(f"# Not found on PATH when exporting: {', '.join(missing)}")
    skipped: list[tuple[Entry, str]] = []
    for e in items:
        s = e.schedule
        try:
            calendar = on_calendar(s.cron, s.timezone)
        except Untranslatable as exc:
            skipped.append((e, str(exc)))
            continue
        notes = []
        if s.overlap != "skip":
            notes.append(f"# overlap: {s.overlap} applies to runs started elsewhere; a fire while this unit is "
                         "still active is dropped by systemd")
        if s.catch_up == "all":
            notes.append("# catch_up: all cannot be expressed; Persistent=true runs the missed fire once")
        timer = [
            f"# --- bridge-{e.name}.timer ---", "[Unit]",
            f"Description=bridge schedule of {e.playbook} ({s.cron}, {s.timezone})", "", *notes,
            "[Timer]", f"OnCalendar={calendar}",
            f"Persistent={'true' if s.catch_up != 'none' else 'false'}",
        ]
        if s.jitter:
            timer += [f"RandomizedDelaySec={int(s.jitter)}", "FixedRandomDelay=true"]
        timer += [f"Unit=bridge-{e.name}.service", "", "[Install]", "WantedBy=timers.target"]
        service = [
            f"# --- bridge-{e.name}.service ---", "[Unit]", f"Description=bridge playbook {e.playbook}", "",
            "[Service]", "Type=oneshot", f"WorkingDirectory={_systemd_quote(str(project))}",
            f"Environment={_systemd_quote('PATH=' + path)}",
            "ExecStart=" + " ".join(_systemd_quote(a) for a in run_args(e, project)),
        ]
        chunks += ["", *service, "", *timer]
    return "\n".join(chunks) + "\n", skipped


# ---- crontab -----------------------------------------------------------------------------

def _local_is_utc() -> bool:
    return time.timezone == 0 and (not time.daylight or time.altzone == 0)


def _cron_quote(arg: str) -> str:
    return shlex.quote(arg).replace("%", "\\%")  # an unescaped % ends a crontab command


def crontab_lines(items: list[Entry], project: Path) -> str:
    """Crontab text: PATH once, then one line per schedule, grouped under CRON_TZ per timezone."""
    path, missing = run_path()
    lines = [
        "# crontab lines generated by `bridge schedule export --crontab`; add them with `crontab -e`.",
        "# CRON_TZ needs a cron that supports it (cronie, busybox); cron has no catch-up of missed fires.",
        "# `bridge schedule fire` takes the playbook's lock (.bridge/locks/) under its overlap policy: skip,",
        "# queue (waits; at most one fire waits) or cancel (stops the running copy, then runs).",
        "SHELL=/bin/sh",
        f"PATH={path}",
    ]
    if missing:
        lines.append(f"# Not found on PATH when exporting: {', '.join(missing)}")
    by_zone: dict[str, list[Entry]] = {}
    for e in items:
        by_zone.setdefault(e.schedule.timezone, []).append(e)
    zones = sorted(by_zone, key=lambda z: (z != "UTC", z))
    for tz in zones:
        lines.append("")
        if tz != "UTC" or not _local_is_utc():
            lines.append(f"CRON_TZ={tz}")
        for e in by_zone[tz]:
            s = e.schedule
            log = project / ".bridge" / "logs" / "schedule" / f"{e.name}.cron.log"
            command = " ".join(_cron_quote(a) for a in run_args(e, project))
            jitter = round(jitter_offset(e.playbook, s))  # whole seconds, as `schedule list` shows it
            sleep = f"sleep {jitter} && " if jitter else ""
            lines.append(f"# {e.playbook} ({e.path.name}): overlap {s.overlap}, catch_up {s.catch_up}"
                         + (" (not in cron: missed fires are not run)" if s.catch_up != "none" else ""))
            lines.append(f"{cron_expression(s.cron)} cd {_cron_quote(str(project))} && mkdir -p "
                         f"{_cron_quote(str(log.parent))} && {sleep}{command} >> {_cron_quote(str(log))} 2>&1")
    return "\n".join(lines) + "\n"


def run(directory: Path | None = None, systemd: bool = False, crontab: bool = False,
        project: Path | None = None) -> int:
    if systemd == crontab:
        raise BridgeError("choose one: bridge schedule export --systemd or --crontab")
    folder, project = playbook_folder(directory, project)
    items = entries(folder)
    if not items:
        raise BridgeError(f"no playbook in {folder} has a `schedule:`; nothing to export")
    if crontab:
        print_plain(crontab_lines(items, project))
        return 0
    text, skipped = systemd_units(items, project)
    print_plain(text)
    if skipped:
        why = "; ".join(f"{e.playbook} ({e.schedule.cron}): {reason}" for e, reason in skipped)
        print_plain(f"not exported: {why}. Use --crontab for these.", stderr=True)
        return 1
    return 0
