"""Hand-off latency: from an output file landing in the shared folder (written by an agent that keeps
running) to the dependent stage's CLI being spawned. Run by hand; prints a row of bench.py's table.

    .venv/bin/python benchmarks/handoff_latency.py [--trials 100]

One run of a chain of trials + 1 stages, the fake agent CLI (tests/fakes/fake_agent.py): stage i
renames o<i>.txt into the shared folder, then sleeps 30 s; stage i+1 needs stage i. Each trial is
the output's mtime -> the mtime of stage i+1's argv.json, which bridge writes just before it execs
the CLI. Both are file timestamps from the kernel's coarse clock (a few ms granularity). Target:
p50 <= 50 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FAKE = REPO / "tests" / "fakes" / "fake_agent.py"  # understands write= and sleep=
TARGET_P50 = 0.050


def chain_playbook(root: Path, trials: int) -> Path:
    stages = "".join(
        f"  s{i}:\n    agent: f\n    prompt: 'FAKE: write={{{{ shared }}}}/o{i}.txt=report {i}; sleep=30'\n"
        f"    outputs: [o{i}.txt]\n" + (f"    needs: s{i - 1}\n" if i else "")
        for i in range(trials + 1))
    path = root / "handoff.yaml"
    path.write_text(f"version: 1\nname: handoff\nagents:\n  f: {{cli: claude}}\nstages:\n{stages}")
    return path


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def measure(trials: int = 100) -> dict:
    """Run the chain once; the latencies (seconds) of its `trials` hand-offs, p50 and p99."""
    with tempfile.TemporaryDirectory(prefix="bridge-handoff-") as tmp:
        root = Path(tmp)
        (root / ".bridge").mkdir()
        (root / ".bridge" / "clis.yaml").write_text(f"claude:\n  binary: {FAKE}\n")
        pb = chain_playbook(root, trials)
        argv = [sys.executable, "-m", "bridge", "run", str(pb), "--json", "--dir", str(root)]
        proc = subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=60 + trials * 5)
        events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not events:
            raise SystemExit(f"bridge run failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        run_dir = Path(events[0]["run_dir"])
        stopped = sum(1 for e in events if e["event"] == "unit_finished" and "outputs complete" in e["reason"])
        latencies = []
        for i in range(trials):
            written = os.stat(run_dir / "shared" / f"o{i}.txt").st_mtime_ns
            spawned = os.stat(run_dir / "stages" / f"s{i + 1}" / "attempt-1" / "argv.json").st_mtime_ns
            latencies.append((spawned - written) / 1e9)
    return {"trials": trials, "p50": statistics.median(latencies), "p99": percentile(latencies, 0.99),
            "max": max(latencies), "min": min(latencies), "stopped_on_outputs": stopped}


def row(result: dict) -> tuple[str, str, str, bool, str]:
    """A row of bench.py's table."""
    p50, p99 = result["p50"], result["p99"]
    return (f"hand-off latency, output written -> next CLI spawned ({result['trials']} trials)",
            f"p50 {p50 * 1000:.1f} ms", "p50 <= 50 ms", p50 <= TARGET_P50,
            f"p99 {p99 * 1000:.1f} ms, min {result['min'] * 1000:.1f} ms, max {result['max'] * 1000:.1f} ms; "
            f"{result['stopped_on_outputs']} agents stopped on their outputs while still running")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=100)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench import table

    print(table([row(measure(args.trials))]))


if __name__ == "__main__":
    main()
