"""bridge against a shell script, with the REAL Claude Code CLI on the rehearsal model. Not a test.

    .venv/bin/python benchmarks/vs_shell.py [--repeat 5]

The comparison Archon was measured on: a 3-stage Claude Code chain run by bridge (`bridge run
--rehearse`) against the same three `claude -p` calls, with the same argv and env, from a shell
script. The difference is what bridge adds; the model-request counts show it asks for nothing extra.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# bridge as installed: pip compiles its bytecode at install time; a shell that forbids writing it
# (PYTHONDONTWRITEBYTECODE, set on some CI images) would time Python's compiler instead of bridge
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
CLIS = REPO / "tests" / "e2e" / "node_modules" / ".bin"
SCRIPT = "replies:\n  - match: 'Step (\\d)'\n    steps: ['Step $1 done.']\ndefault: ok\n"
PLAYBOOK = """version: 1
name: three
agents:
  c: {cli: claude}
stages:
  one: {agent: c, prompt: "Step 1: say hello."}
  two: {agent: c, needs: [one], prompt: "Step 2: say hello again."}
  three: {agent: c, needs: [two], prompt: "Step 3: say goodbye."}
"""


def shell_script(root: Path, url: str, home: Path) -> tuple[Path, dict[str, str]]:
    """The three calls bridge makes, as a plain shell script (argv built by bridge's own adapter)."""
    from bridge.agents import build_command
    from bridge.agents.base import Invocation
    from bridge.playbook import AgentProfile
    from bridge.rehearsal import wiring

    wire = wiring("claude", url, home)
    wire.write_files()
    lines, env = ["set -e"], {}
    for n, prompt in enumerate(["Step 1: say hello.", "Step 2: say hello again.", "Step 3: say goodbye."]):
        inv = Invocation(prompt=prompt, cwd=root, shared_dir=root / "shared", stage_dir=root / f"s{n}")
        cmd = build_command(AgentProfile(cli="claude"), inv, wire, project=root)
        env = cmd.env
        lines.append(shlex.join(cmd.argv) + " < /dev/null > /dev/null")
    (root / "shared").mkdir(exist_ok=True)
    path = root / "three.sh"
    path.write_text("\n".join(lines) + "\n")
    return path, env


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from bridge.rehearsal import ModelServer, parse_script, wiring

    env_path = f"{CLIS}{os.pathsep}{os.environ.get('PATH', '')}"
    for command in ("validate", "run"):  # warm: the first start after an edit writes the bytecode
        subprocess.run([sys.executable, "-m", "bridge", command, "--help"], stdout=subprocess.DEVNULL, check=True)
    shell_times, bridge_times, direct_times = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "three.yaml").write_text(PLAYBOOK)
        (root / "three.script.yaml").write_text(SCRIPT)
        with ModelServer(parse_script(SCRIPT, "three.script.yaml")) as server:
            os.environ["PATH"] = env_path
            for i in range(args.repeat):  # a fresh isolated HOME each time, as bridge gives each run
                script, env = shell_script(root, server.url, root / f"home{i}")
                start = time.perf_counter()
                subprocess.run(["bash", str(script)], cwd=root, env={**os.environ, **env}, check=True)
                shell_times.append(time.perf_counter() - start)
            shell_requests = server.counts()
            for i in range(args.repeat):  # bridge, the agents pointed at the same server (as in real use)
                wire = wiring("claude", server.url, root / f"bhome{i}")
                wire.write_files()
                (root / "direct.yaml").write_text(PLAYBOOK.replace(
                    "c: {cli: claude}", "c: {cli: claude, model: %s, env: %s}" % (wire.model, json.dumps(wire.env))))
                argv = [sys.executable, "-m", "bridge", "run", str(root / "direct.yaml"), "--json", "--dir", str(root)]
                start = time.perf_counter()
                subprocess.run(argv, cwd=root, env={**os.environ, "PATH": env_path}, check=True, capture_output=True)
                direct_times.append(time.perf_counter() - start)
            bridge_requests = {k: v - shell_requests.get(k, 0) for k, v in server.counts().items()}
        for _ in range(args.repeat):
            argv = [sys.executable, "-m", "bridge", "run", str(root / "three.yaml"), "--rehearse",
                    "--script", str(root / "three.script.yaml"), "--json", "--dir", str(root)]
            start = time.perf_counter()
            out = subprocess.run(argv, cwd=root, env={**os.environ, "PATH": env_path}, check=True,
                                 capture_output=True, text=True).stdout
            bridge_times.append(time.perf_counter() - start)
            events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
            assert events[-1]["status"] == "success", events[-1]
    sh, br, dr = (statistics.median(t) for t in (shell_times, bridge_times, direct_times))
    print(f"| 3 claude -p calls (real CLI, scripted model on 127.0.0.1), median of {args.repeat} | wall | added |")
    print("|---|---:|---:|")
    print(f"| shell script | {sh:.2f} s | |")
    print(f"| bridge run (agents pointed at that model, as with a vendor) | {dr:.2f} s | {dr - sh:+.2f} s |")
    print(f"| bridge run --rehearse (bridge also starts the scripted model) | {br:.2f} s | {br - sh:+.2f} s |")
    print(f"\nmodel requests: shell script {shell_requests}, bridge {bridge_requests} ({args.repeat} runs each)")

if __name__ == "__main__":
    main()
