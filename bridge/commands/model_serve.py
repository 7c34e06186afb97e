"""`bridge model serve`: the rehearsal model in the foreground, with the env to point each CLI at it."""

from __future__ import annotations

import shlex
import tempfile
import threading
from pathlib import Path

from bridge.process import sigterm_as_interrupt
from bridge.rehearsal import ModelServer, RequestRecord, Script, load_script, wiring, wiring_kinds
from bridge.rehearsal.wiring import isolated_environ
from bridge.ui import print_text


def _show(record: RequestRecord) -> None:
    print_text(f"{record.method} {record.path} -> {record.status} {record.answer}", stderr=True)


def run(script: Path | None, port: int) -> int:
    loaded = load_script(script) if script is not None else Script()
    # SIGTERM (a service manager, `timeout`) stops it like Ctrl-C: the temp folders are removed
    with sigterm_as_interrupt(), tempfile.TemporaryDirectory(prefix="bridge-rehearsal-") as tmp:
        try:
            with ModelServer(loaded, port=port, log_path=Path(tmp) / "requests.log", on_request=_show) as server:
                _announce(server.url, script, loaded, Path(tmp))
                threading.Event().wait()
        except KeyboardInterrupt:
            print_text("\nstopped", stderr=True)
    return 0


def _announce(url: str, script: Path | None, loaded: Script, tmp: Path) -> None:
    print_text(f"rehearsal model serving on {url}  (Ctrl-C to stop)", "green")
    print_text(f"script: {script or 'none: every request gets the answer ' + repr(loaded.default)}")
    inherited = isolated_environ()
    for kind in wiring_kinds():
        home = tmp / kind
        wire = wiring(kind, url, home)
        wire.write_files()  # config files (codex config.toml, gemini settings.json) live in `home`
        print_text(f"\n# {kind}: isolated HOME {home} (removed when the server stops)", "bold")
        for key, value in wire.env.items():
            if inherited.get(key) != value:  # PATH, locale: the shell's own
                print_text(f"export {key}={shlex.quote(value)}")
        extra = " ".join(shlex.quote(a) for a in wire.argv)
        print_text(f"# model: {wire.model}" + (f"; pass: {extra}" if extra else ""))
