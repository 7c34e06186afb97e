"""Rehearsals: a scripted local model the real CLIs talk to, at zero token cost."""

from __future__ import annotations

from bridge.rehearsal.script import Reply, Script, Step, load_script, parse_script
from bridge.rehearsal.server import ModelServer, RequestRecord
from bridge.rehearsal.wiring import Wiring, wiring, wiring_kinds

__all__ = [
    "ModelServer", "Reply", "RequestRecord", "Script", "Step", "Wiring", "load_script", "parse_script",
    "wiring", "wiring_kinds",
]
