"""`bridge model serve`: the rehearsal model in the foreground, with the env to point each CLI at it."""

from __future__ import annotations

import shlex
import tempfile
import threading
from pathlib import Path

from bridge.rehearsal import ModelServer, RequestRecord, Script, load_script, wiring, wiring_kinds
from bridge.ui import print_text


def _show(record: RequestRecord) -> None:
    print_text(f"{record.method} {record.path} -> {record.status} {record.answer}", stderr=True)


def run(script: Path | None, port: int) -> int:
    loaded = load_script(script) if script is not None else Script()
    with tempfile.TemporaryDirectory(prefix="bridge-rehearsal-") as tmp, \
            ModelServer(loaded, port=port, log_path=Path(tmp) / "requests.log", on_request=_show) as server:
        print_text(f"rehearsal model serving on {server.url}  (Ctrl-C to stop)", "green")
        print_text(f"script: {script or 'none: every request gets the answer ' + repr(loaded.default)}")
        for kind in wiring_kinds():
            home = Path(tmp) / kind
            wire = wiring(kind, server.url, home)
            wire.write_files()  # config files (codex config.toml, gemini settings.json) live in `home`
            print_text(f"\n# {kind}: isolated HOME {home} (removed when the server stops)", "bold")
            for key, value in wire.env.items():
                print_text(f"export {key}={shlex.quote(value)}")
            extra = " ".join(shlex.quote(a) for a in wire.argv)
            print_text(f"# model: {wire.model}" + (f"; pass: {extra}" if extra else ""))
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print_text("\nstopped", stderr=True)
    return 0
