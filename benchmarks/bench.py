"""bridge's own overhead, measured with the fake agent CLI. Run by hand; prints a table. Not a test.

    .venv/bin/python benchmarks/bench.py [--chain 100] [--fanout 64] [--sleep 2] [--repeat 3]

Targets: per-stage overhead <= 15 ms, fan-out efficiency >= 90 %, peak RSS <= 150 MB, --help <= 300 ms.
"""

from __future__ import annotations

import argparse
import json
import os
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
FAKE = REPO / "tests" / "fakes" / "fake_agent.sh"  # --python-fake: the full Python fake instead


def project(root: Path) -> Path:
    (root / ".bridge").mkdir(parents=True, exist_ok=True)
    (root / ".bridge" / "clis.yaml").write_text(f"claude:\n  binary: {FAKE}\n")
    return root


def playbook(root: Path, name: str, stages: str, top: str = "") -> Path:
    path = root / f"{name}.yaml"
    path.write_text(f"version: 1\nname: {name}\n{top}agents:\n  f: {{cli: claude}}\nstages:\n{stages}")
    return path


def run_bridge(root: Path, pb: Path, *extra: str, sample_rss: bool = False) -> tuple[float, list[dict], int]:
    """Wall time, the JSON events, and the peak RSS (kB, VmHWM) of the bridge process."""
    argv = [sys.executable, "-m", "bridge", "run", str(pb), "--json", "--dir", str(root), *extra]
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    if sample_rss:
        while proc.poll() is None:
            try:
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
            except OSError:
                pass
            time.sleep(0.05)
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"bridge run failed ({proc.returncode}):\n{err[-2000:]}")
    return wall, [json.loads(line) for line in out.splitlines() if line.startswith("{")], peak


def span(events: list[dict]) -> float:
    started = next(e["t"] for e in events if e["event"] == "run_started")
    finished = next(e["t"] for e in events if e["event"] == "run_finished")
    return finished - started


def direct(prompt: str, times: int) -> float:
    """The same fake CLI run `times` times in a row, no bridge."""
    argv = [str(FAKE), "-p", prompt, "--output-format", "stream-json", "--verbose"]
    start = time.perf_counter()
    for _ in range(times):
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                       check=True)
    return time.perf_counter() - start


def bench_chain(root: Path, n: int) -> tuple[float, float, float]:
    stages = "".join(f"  s{i}:\n    agent: f\n    prompt: 'FAKE: message=m{i}'\n"
                     + (f"    needs: s{i - 1}\n" if i else "") for i in range(n))
    pb = playbook(root, "chain", stages)
    wall, events, _ = run_bridge(root, pb)
    base = direct("FAKE: message=m", n)
    return (span(events) - base) / n, wall, base


def direct_parallel(prompt: str, n: int) -> float:
    """n copies of the fake CLI started at once, no bridge: the wall time to beat."""
    argv = [str(FAKE), "-p", prompt, "--output-format", "stream-json", "--verbose"]
    start = time.perf_counter()
    procs = [subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
             for _ in range(n)]
    for proc in procs:
        proc.wait()
    return time.perf_counter() - start


def spreads(events: list[dict]) -> tuple[float, float]:
    """How long after the first agent the last one started, and the same for their ends."""
    started = [e["t"] for e in events if e["event"] == "unit_started"]
    ended = [e["t"] for e in events if e["event"] == "unit_finished"]
    return max(started) - min(started), max(ended) - min(ended)


def bench_fanout(root: Path, n: int, sleep: float, repeat: int) -> list[dict]:
    """Efficiency = the same n agents started directly in parallel / bridge's run span (per run)."""
    stages = "".join(f"  s{i}:\n    agent: f\n    prompt: 'FAKE: sleep={sleep}'\n" for i in range(n))
    pb = playbook(root, "fanout", stages)
    runs = []
    for _ in range(repeat):  # a shared machine is noisy: the baseline is taken next to each run
        ideal = direct_parallel(f"FAKE: sleep={sleep}", n)
        _, events, peak = run_bridge(root, pb, "--max-parallel", str(n), sample_rss=True)
        start_spread, end_spread = spreads(events)
        runs.append(dict(efficiency=ideal / span(events), span=span(events), ideal=ideal, peak_kb=peak,
                         start_spread=start_spread, end_spread=end_spread))
    return runs


def run_on_terminal(root: Path, pb: Path, *extra: str) -> float:
    """`bridge run` with a pseudo-terminal as its output (the rich Live view); first agent start to
    last agent end, from the ledger."""
    import pty
    import sqlite3

    master, slave = pty.openpty()
    argv = [sys.executable, "-m", "bridge", "run", str(pb), "--dir", str(root), *extra]
    proc = subprocess.Popen(argv, cwd=root, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                            env={**os.environ, "TERM": "xterm-256color"})
    os.close(slave)
    while True:  # keep the terminal drained, as a real one is
        try:
            if not os.read(master, 65536):
                break
        except OSError:  # EIO: the child closed the terminal
            break
    os.close(master)
    if proc.wait() != 0:
        raise SystemExit(f"bridge run on a terminal failed ({proc.returncode})")
    db = sqlite3.connect(root / ".bridge" / "ledger.db")
    try:
        run_id = db.execute("SELECT id FROM runs ORDER BY started DESC LIMIT 1").fetchone()[0]
        first, last = db.execute("SELECT min(started), max(ended) FROM stages WHERE run_id = ?",
                                 (run_id,)).fetchone()
    finally:
        db.close()
    return last - first


def bench_fanout_terminal(root: Path, n: int, sleep: float) -> tuple[float, float, float]:
    """The fan-out again with the Live view rendering (one run)."""
    pb = root / "fanout.yaml"  # written by bench_fanout
    ideal = direct_parallel(f"FAKE: sleep={sleep}", n)
    took = run_on_terminal(root, pb, "--max-parallel", str(n))
    return ideal / took, took, ideal


def bench_help(times: int = 5) -> float:
    samples = []
    for _ in range(times):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bridge", "--help"], stdout=subprocess.DEVNULL, check=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chain", type=int, default=100)
    parser.add_argument("--fanout", type=int, default=64)
    parser.add_argument("--sleep", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=3, help="fan-out runs (the median is reported)")
    parser.add_argument("--python-fake", action="store_true", help="use tests/fakes/fake_agent.py")
    args = parser.parse_args()
    if args.python_fake:
        global FAKE
        FAKE = REPO / "tests" / "fakes" / "fake_agent.py"
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} before the run\n", flush=True)
    with tempfile.TemporaryDirectory(prefix="bridge-bench-") as tmp:
        root = project(Path(tmp))
        per_stage, chain_wall, chain_direct = bench_chain(root, args.chain)
        runs = bench_fanout(root, args.fanout, args.sleep, args.repeat)
        tty_eff, tty_took, tty_ideal = bench_fanout_terminal(root, args.fanout, args.sleep)
    help_s = bench_help()
    fan = sorted(runs, key=lambda r: r["efficiency"])[len(runs) // 2]  # the median run
    peak_mb = max(r["peak_kb"] for r in runs) / 1024
    rows = [
        (f"overhead per stage ({args.chain}-stage chain)", f"{per_stage * 1000:.1f} ms", "<= 15 ms",
         per_stage <= 0.015, f"bridge {chain_wall:.2f}s wall vs the CLI run directly {chain_direct:.2f}s"),
        (f"fan-out efficiency ({args.fanout} x {args.sleep:g}s, median of {len(runs)})",
         f"{fan['efficiency'] * 100:.0f} %", ">= 90 %", fan["efficiency"] >= 0.9,
         f"run {fan['span']:.2f}s vs direct {fan['ideal']:.2f}s; agents started within "
         f"{fan['start_spread']:.2f}s, ended within {fan['end_spread']:.2f}s; all runs: "
         + ", ".join(f"{r['efficiency'] * 100:.0f} %" for r in runs)),
        (f"fan-out efficiency on a terminal (Live view, {args.fanout} x {args.sleep:g}s)",
         f"{tty_eff * 100:.0f} %", ">= 90 %", tty_eff >= 0.9,
         f"agents ran within {tty_took:.2f}s vs direct {tty_ideal:.2f}s (one run)"),
        (f"peak RSS of bridge ({args.fanout} agents)", f"{peak_mb:.0f} MB", "<= 150 MB", peak_mb <= 150,
         "VmHWM of the bridge process (largest of the runs)"),
        ("`bridge --help` start-up", f"{help_s * 1000:.0f} ms", "<= 300 ms", help_s <= 0.3, "median of 5"),
    ]
    from handoff_latency import measure, row  # output written -> next CLI spawned (its own module)
    rows.append(row(measure(100)))
    print(table(rows))
    print(f"\nload average {os.getloadavg()[0]:.1f} after the run", flush=True)


def table(rows: list[tuple[str, str, str, bool, str]]) -> str:
    """A Markdown table: measure, value, target, pass/fail, note."""
    lines = ["| measure | value | target | result | note |", "|---|---:|---|---|---|"]
    lines += [f"| {name} | {value} | {target} | {'pass' if ok else 'FAIL'} | {note} |"
              for name, value, target, ok, note in rows]
    return "\n".join(lines)

if __name__ == "__main__":
    main()
