"""The process table (/proc): who is in a process group, who carries a run's marker, and stopping them.

No process is spawned here (bridge.process does that); this finds what an agent left behind — in its
group, or escaped from it but still carrying `BRIDGE_RUN_ID` — and signals it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, pgid) of a live pid, or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2:].split()
    return fields[0], int(fields[2])


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    out = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            out[key.decode(errors="replace")] = value.decode(errors="replace")
    return out


def _pids() -> Iterator[int]:
    for name in os.listdir("/proc"):
        if name.isdigit():
            yield int(name)


def _group_exists(pgid: int) -> bool:
    """Whether any process (zombies included) is in group `pgid`: one syscall, no /proc scan."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is `pgid`."""
    if not _group_exists(pgid):
        return []
    out = []
    for pid in _pids():
        st = _stat(pid)
        if st and st[1] == pgid and st[0] not in ("Z", "X"):
            out.append(pid)
    return out


_MARKER = b"BRIDGE_RUN_ID="


def _scan_marked() -> list[tuple[int, str, str]]:
    """(pid, run id, stage) of every live process carrying a run marker, bridge itself excluded."""
    me = os.getpid()
    out = []
    for pid in _pids():
        if pid == me:
            continue
        try:
            raw = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if _MARKER not in raw:  # most processes: no need to parse their environment
            continue
        st = _stat(pid)
        if not st or st[0] in ("Z", "X"):
            continue
        env = dict(item.partition(b"=")[::2] for item in raw.split(b"\0") if b"=" in item)
        out.append((pid, env.get(b"BRIDGE_RUN_ID", b"").decode(errors="replace"),
                    env.get(b"BRIDGE_STAGE", b"").decode(errors="replace")))
    return out


class _MarkedTable:
    """One /proc scan shared by every caller that asks while it runs or waits for it.

    Each agent's end checks for escaped processes carrying its run marker; 64 agents ending together
    would otherwise read every process's environ 64 times over (the fan-out benchmark's tail)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scanned_at = -1.0
        self._rows: list[tuple[int, str, str]] = []

    def rows(self) -> list[tuple[int, str, str]]:
        asked = time.monotonic()
        with self._lock:
            if self._scanned_at < asked:  # a scan begun after the ask sees every process alive then
                self._scanned_at = time.monotonic()
                self._rows = _scan_marked()
            return self._rows


_MARKED = _MarkedTable()


def run_processes(run_id: str, stage: str | None = None) -> list[int]:
    """Live processes carrying BRIDGE_RUN_ID=run_id (and BRIDGE_STAGE=stage when given)."""
    if not run_id:
        return []
    return [pid for pid, rid, st in _MARKED.rows() if rid == run_id and (stage is None or st == stage)]


def signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _signal_pids(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _wait_gone(pgid: int, extra: Callable[[], list[int]], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        alive = group_members(pgid) + extra()
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.02)


def kill_group(pgid: int, run_id: str = "", stage: str | None = None, grace: float = 0.0) -> int:
    """SIGTERM (if grace) then SIGKILL a group and any stray process of this run/stage; count found."""
    seen: set[int] = set()

    def strays() -> list[int]:
        # a dying process loses its environ (the marker) before it is gone: keep the ones seen
        now = run_processes(run_id, stage) if run_id else []
        seen.update(now)
        return [*now, *(p for p in seen if p not in now and (st := _stat(p)) and st[0] not in "ZX")]

    found = len(set(group_members(pgid) + strays()))
    if not found:
        return 0
    if grace > 0:
        signal_group(pgid, signal.SIGTERM)
        _signal_pids(strays(), signal.SIGTERM)
        if not _wait_gone(pgid, strays, grace):
            return found
    for _ in range(50):
        signal_group(pgid, signal.SIGKILL)
        _signal_pids(strays(), signal.SIGKILL)
        if not _wait_gone(pgid, strays, 0.1):
            break
    return found


def kill_leftovers(pgid: int, run_id: str) -> bool:
    """Stop a group that outlived a killed bridge, only if it carries BRIDGE_RUN_ID=run_id."""
    ours = [pid for pid in group_members(pgid) if _environ(pid).get("BRIDGE_RUN_ID") == run_id]
    if not ours:
        return False
    _signal_pids(ours, signal.SIGTERM)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and any(_stat(p) and _stat(p)[0] not in "ZX" for p in ours):
        time.sleep(0.05)
    _signal_pids([p for p in ours if _stat(p)], signal.SIGKILL)
    return True
