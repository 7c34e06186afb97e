from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from bridge.commands import watch as watch_cmd
from bridge.errors import BridgeError
from bridge.ledger import Ledger
from bridge.ledger_schema import RunRow
from bridge.triggers import TriggerQueue, glob_regex, matches
from bridge.workspace import RunLayout

REPO = Path(__file__).resolve().parent.parent
WAIT = 15.0

# A stand-in for `bridge run`: records its argv, then waits for a gate file (if any) so a test can
# hold a run open; on SIGINT it notes that it was interrupted and exits.
RECORDER = textwrap.dedent("""\
    import json, os, signal, sys, time
    rec = os.environ["REC_DIR"]
    name = os.path.join(rec, f"{time.time_ns()}-{os.getpid()}")
    def on_int(*_):
        open(name + ".sigint", "w").close()
        sys.exit(3)
    signal.signal(signal.SIGINT, on_int)
    with open(name + ".tmp", "w") as fh:
        json.dump(sys.argv[1:], fh)
    os.replace(name + ".tmp", name + ".json")
    gate = os.environ.get("REC_GATE")
    while gate and not os.path.exists(gate):
        time.sleep(0.01)
""")


# -- globs -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("pattern, rel, expected", [
    ("*.md", "report.md", True),
    ("*.md", "audit/report.md", False),
    ("audit/*.md", "audit/report.md", True),
    ("**/*.md", "a/b/report.md", True),
    ("**/*.md", "report.md", True),
    ("audit-*.json", "audit-security.json", True),
    ("r?.md", "r1.md", True),
    ("[ab].md", "b.md", True),
    ("[!ab].md", "a.md", False),
    ("*.md", ".report.md", False),  # hidden: a writer's temp file
    ("**/*.md", ".tmp/report.md", False),
    ("*", "report.md~", False),
])
def test_glob(pattern: str, rel: str, expected: bool) -> None:
    assert matches(glob_regex(pattern), rel) is expected


# -- the trigger queue (clock passed in) -----------------------------------------------------------

def test_debounce_waits_for_quiet() -> None:
    q = TriggerQueue(1.0)
    q.notice(Path("a.md"), now=0.0)
    q.notice(Path("a.md"), now=0.8)  # still being written: the quiet period restarts
    assert q.next_deadline() == pytest.approx(1.8)
    assert q.due(1.5) == []
    [(trigger, replaced)] = q.due(1.8)
    assert trigger.path == Path("a.md") and trigger.seq == 1 and replaced is None
    assert q.next_deadline() is None
    assert q.pop() == trigger and q.pop() is None


def test_debounce_is_per_burst_and_a_burst_is_one_trigger_with_every_file() -> None:
    q = TriggerQueue(0.5)
    for i in range(10):  # ten files, each written 0.2 s after the one before: one burst
        q.notice(Path(f"f{i + 1}.md"), i * 0.2)
    assert q.due(1.9) == [] and q.next_deadline() == pytest.approx(2.3)  # quiet 0.5 s after the LAST one
    [(trigger, absorbed)] = q.due(2.3)
    assert absorbed is None and trigger.seq == 1
    assert [p.name for p in trigger.paths] == [f"f{i}.md" for i in range(1, 11)]
    assert trigger.path == Path("f10.md")  # `trigger`: the last to change
    assert q.pop() == trigger
    q.notice(Path("f1.md"), 3.0)
    q.notice(Path("f2.md"), 3.1)
    q.notice(Path("f1.md"), 3.2)  # changed again: it is now the latest
    [(again, _)] = q.due(3.7)
    assert [p.name for p in again.paths] == ["f2.md", "f1.md"]


def test_coalesce_merges_bursts_while_a_run_is_going_and_drops_no_file() -> None:
    q = TriggerQueue(0.5)
    q.notice(Path("1.md"), 0.0)
    q.due(0.5)
    running = q.pop()  # run 1 starts
    assert running is not None and running.paths == (Path("1.md"),)
    q.notice(Path("2.md"), 1.0)
    first = q.due(1.5)
    q.notice(Path("3.md"), 2.0)
    q.notice(Path("2.md"), 2.1)  # 2.md again, in a later burst
    second = q.due(2.6)
    assert [t.paths for t, _ in first] == [(Path("2.md"),)] and first[0][1] is None
    (merged, absorbed), = second
    assert absorbed is not None and absorbed.seq == first[0][0].seq
    assert merged.paths == (Path("3.md"), Path("2.md")) and merged.path == Path("2.md")
    assert q.pending == (merged,)
    assert q.pop() == merged and q.pop() is None


def test_queue_keeps_every_burst_in_order() -> None:
    q = TriggerQueue(0.5, queue_all=True)
    for i, at in enumerate([0.0, 0.1, 0.2]):
        q.notice(Path(f"{i}.md"), at)
    q.notice(Path("0.md"), 0.3)  # 0.md changed again: it is the burst's last file
    q.due(10.0)
    q.notice(Path("3.md"), 11.0)
    q.due(12.0)
    assert [[p.name for p in t.paths] for t in q.pending] == [["1.md", "2.md", "0.md"], ["3.md"]]
    assert [q.pop().seq for _ in range(2)] == [1, 2]
    with pytest.raises(ValueError):
        TriggerQueue(-1)


@pytest.mark.parametrize("glob, message", [
    ("[", "never closed with ']'"),
    ("audit/[!x.md", "never closed"),
    ("", "needs a glob"),
    ("/abs/*.md", "is absolute"),
    ("../up/*.md", "climbs out"),
    (".hidden/*.md", "hidden"),
])
def test_bad_globs_are_refused_up_front(glob: str, message: str) -> None:
    from bridge.triggers import check_glob

    with pytest.raises(BridgeError, match=re.escape(message)):
        check_glob(glob)


# -- the command, end to end with a recording stand-in for `bridge run` ----------------------------

VALID = textwrap.dedent("""\
    version: 1
    name: implement
    vars: {focus: all}
    agents: {a: {cli: claude}}
    stages:
      go: {agent: a, prompt: "{{ trigger }} {{ triggers | join(' ') }} {{ vars.focus }}"}
""")

@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "implement.yaml").write_text(VALID)
    script = tmp_path / "recorder.py"
    script.write_text(RECORDER)
    records = tmp_path / "records"
    records.mkdir()
    monkeypatch.setenv("REC_DIR", str(records))
    real = watch_cmd.child_argv
    monkeypatch.setattr(watch_cmd, "child_argv",
                        lambda *a: [sys.executable, str(script), *real(*a)[1:]])
    return proj


def records(project: Path) -> list[list[str]]:
    folder = project.parent / "records"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def wait_for(predicate, timeout: float = WAIT) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def drop(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp"
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


class Watching:
    """`bridge watch` running in a thread until the test is done with it."""

    def __init__(self, project: Path, **options: object) -> None:
        self.stop = threading.Event()
        self.ready = threading.Event()
        kwargs = dict(playbook=Path("implement.yaml"), on="audit/*.md", watch_dir=None, queue=False,
                      debounce=0.05, var=["focus=security"], directory=None, project=project)
        kwargs.update(options)
        self.result: list[int] = []
        self.thread = threading.Thread(target=lambda: self.result.append(watch_cmd.run(**kwargs, stop=self.stop,
                                                                                 ready=self.ready)))

    def __enter__(self) -> Watching:
        self.thread.start()
        assert self.ready.wait(WAIT)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(WAIT)
        assert not self.thread.is_alive()


def test_a_file_dropped_in_the_inbox_starts_exactly_one_run(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inbox = project / ".bridge" / "inbox"
    with Watching(project):
        report = drop(inbox / "audit" / "report.md", "# Codex audit\n")
        assert wait_for(lambda: len(records(project)) == 1)
        time.sleep(0.3)  # well past the debounce: no second run may follow
        (inbox / "ignored.txt").write_text("not matching")
        assert len(records(project)) == 1
    [argv] = records(project)
    out = capsys.readouterr().out
    [run_id] = re.findall(r"run #1 started \(pid \d+, run (\S+)\) for ", out)  # chosen by watch, said
    assert argv == ["-m", "bridge", "run", str(project / "implement.yaml"), "--trigger", str(report.resolve()),
                    "--dir", str(project), "--run-id", run_id, "--var", "focus=security"]
    assert "trigger #1: audit/report.md" in out and "run #1 ended: exit 0" in out


def test_coalesce_hands_the_next_run_every_file_that_came_meanwhile(project: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    lines: list[str] = []
    monkeypatch.setattr(watch_cmd, "say", lines.append)
    gate = tmp_path / "gate"
    monkeypatch.setenv("REC_GATE", str(gate))
    inbox = project / "drop"
    inbox.mkdir()
    with Watching(project, directory=inbox, on="*.md"):  # --dir: the folder to watch
        drop(inbox / "f1.md", "one")
        assert wait_for(lambda: len(records(project)) == 1)
        for n in range(2, 11):  # nine more, each its own burst, while run 1 is going
            drop(inbox / f"f{n}.md", "x")
            assert wait_for(lambda: any(f"trigger #{n}:" in line for line in lines))
        assert any("trigger #10: f10.md and 8 more files (joins pending #9" in line for line in lines), lines
        gate.touch()  # run 1 ends; the one pending trigger runs next, with all nine files
        assert wait_for(lambda: len(records(project)) == 2)
        time.sleep(0.3)
    handed = [[Path(argv[i + 1]).name for i, a in enumerate(argv) if a == "--trigger"] for argv in records(project)]
    assert handed == [["f1.md"], [f"f{n}.md" for n in range(2, 11)]]  # none dropped, the latest last
    assert records(project)[1][records(project)[1].index("--dir") + 1] == str(project)  # the project, still


def test_a_burst_of_files_is_one_run(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines: list[str] = []
    monkeypatch.setattr(watch_cmd, "say", lines.append)
    inbox = project / ".bridge" / "inbox"
    with Watching(project, on="*.md", debounce=1.0):
        for n in range(1, 11):  # ten files written one after another, well within the debounce
            drop(inbox / f"f{n}.md", "x")
        assert wait_for(lambda: len(records(project)) == 1)
        time.sleep(1.3)  # past the debounce: no second run follows
    [argv] = records(project)
    assert [Path(argv[i + 1]).name for i, a in enumerate(argv) if a == "--trigger"] == [f"f{n}.md" for n in range(1, 11)]
    assert any("trigger #1: f10.md and 9 more files" in line for line in lines), lines


def test_queue_runs_every_trigger_in_order(project: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    lines: list[str] = []
    monkeypatch.setattr(watch_cmd, "say", lines.append)
    gate = tmp_path / "gate"
    monkeypatch.setenv("REC_GATE", str(gate))
    inbox = project / ".bridge" / "inbox"
    with Watching(project, queue=True, on="*.md"):
        drop(inbox / "1.md", "one")
        assert wait_for(lambda: len(records(project)) == 1)
        for n in (2, 3):
            drop(inbox / f"{n}.md", "x")
            assert wait_for(lambda: any(f"trigger #{n}:" in line for line in lines))
        gate.touch()
        assert wait_for(lambda: len(records(project)) == 3)
    triggers = [Path(argv[argv.index("--trigger") + 1]).name for argv in records(project)]
    assert triggers == ["1.md", "2.md", "3.md"]


def test_stopping_interrupts_the_running_child(project: Path, monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    monkeypatch.setenv("REC_GATE", str(tmp_path / "never"))
    inbox = project / ".bridge" / "inbox"
    watching = Watching(project, on="*.md")
    with watching:
        drop(inbox / "a.md", "x")
        assert wait_for(lambda: len(records(project)) == 1)
    assert watching.result == [130]
    assert list((tmp_path / "records").glob("*.sigint"))


def test_bad_arguments(project: Path) -> None:
    def run(*args: object, **kw: object) -> int:
        return watch_cmd.run(*args, project=project, **kw)  # type: ignore[arg-type]

    with pytest.raises(BridgeError, match="not found"):
        run(Path("nope.yaml"), "*.md", None, False, 1.0, [], None)
    with pytest.raises(BridgeError, match="not a folder"):
        run(Path("implement.yaml"), "*.md", None, False, 1.0, [], project / "missing")
    with pytest.raises(BridgeError, match="key=value"):
        run(Path("implement.yaml"), "*.md", None, False, 1.0, ["novalue"], None)
    with pytest.raises(BridgeError, match="debounce"):
        run(Path("implement.yaml"), "*.md", None, False, -1.0, [], None)
    with pytest.raises(BridgeError, match="never closed"):
        run(Path("implement.yaml"), "[", None, False, 1.0, [], None)


def test_a_broken_playbook_is_refused_before_watching(project: Path) -> None:
    """Before: bridge watch started, and every trigger consumed its file and then failed validation."""
    from bridge.errors import PlaybookError

    (project / "broken.yaml").write_text(VALID.replace("prompt:", "promt:"))
    inbox = project / ".bridge" / "inbox"
    with pytest.raises(PlaybookError, match="promt"):
        watch_cmd.run(Path("broken.yaml"), "*.md", None, False, 0.05, [], None, project=project)
    with pytest.raises(PlaybookError, match="focus"):  # validated with the --var values a run would get
        (project / "vars.yaml").write_text(VALID.replace("vars: {focus: all}", "vars: {}"))
        watch_cmd.run(Path("vars.yaml"), "*.md", None, False, 0.05, ["focus=x"], None, project=project)
    assert records(project) == [] and not list(inbox.glob("*")) if inbox.exists() else True


def test_the_command_line_checks_before_watching(project: Path) -> None:
    bad_glob = subprocess.run([sys.executable, "-m", "bridge", "watch", "implement.yaml", "--on", "[", "-C",
                               str(project)], cwd=project, capture_output=True, text=True, timeout=WAIT,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    assert bad_glob.returncode != 0 and "never closed with ']'" in bad_glob.stdout + bad_glob.stderr
    assert "watching" not in bad_glob.stdout
    (project / "broken.yaml").write_text("version: 1\nname: x\nstages: {a: {agent: nobody, prompt: x}}\n")
    broken = subprocess.run([sys.executable, "-m", "bridge", "watch", "broken.yaml", "--on", "*.md", "-C",
                             str(project)], cwd=project, capture_output=True, text=True, timeout=WAIT,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert broken.returncode != 0 and "nobody" in broken.stdout + broken.stderr
    assert "watching" not in broken.stdout


def test_dir_is_the_folder_and_the_project_is_found_above_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proj = tmp_path / "repo"
    (proj / "incoming" / "deep").mkdir(parents=True)
    (proj / ".bridge").mkdir()
    assert watch_cmd._places(proj / "incoming" / "deep", None, None) == (proj.resolve(), (proj / "incoming" / "deep").resolve())
    monkeypatch.chdir(proj / "incoming")
    assert watch_cmd._places(None, None, None) == (proj.resolve(), (proj / ".bridge" / "inbox").resolve())
    assert watch_cmd._places(Path("deep"), None, None)[1] == (proj / "incoming" / "deep").resolve()
    # the old form: --watch-dir FOLDER (relative to the project) --dir PROJECT
    assert watch_cmd._places(proj, Path("incoming"), None) == (proj.resolve(), (proj / "incoming").resolve())


def test_ctrl_c_stops_watching_and_the_child(project: Path, tmp_path: Path) -> None:
    """The real signal path: `bridge watch` in its own process, SIGINT as from a terminal."""
    gate = tmp_path / "never"
    driver = textwrap.dedent(f"""\
        import sys
        from pathlib import Path
        from bridge.commands import watch
        real = watch.child_argv
        watch.child_argv = lambda *a: [sys.executable, {str(tmp_path / 'recorder.py')!r}, *real(*a)[1:]]
        sys.exit(watch.run(Path("implement.yaml"), "*.md", None, False, 0.05, [], None, project=Path({str(project)!r})))
    """)
    env = {**os.environ, "REC_GATE": str(gate), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", driver], cwd=project, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out_lines: list[str] = []
    reader = threading.Thread(target=lambda: out_lines.extend(iter(proc.stdout.readline, "")))  # type: ignore[union-attr]
    reader.start()
    try:
        inbox = project / ".bridge" / "inbox"
        assert wait_for(lambda: any("Ctrl-C to stop" in line for line in out_lines))
        drop(inbox / "audit.md", "x")
        assert wait_for(lambda: len(records(project)) == 1)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join(WAIT)
    out = "".join(out_lines)
    assert proc.returncode == 130, out
    assert "run #1 started" in out and "stopping run #1" in out and "stopped watching after 1 run" in out
    assert list((tmp_path / "records").glob("*.sigint"))


# -- the command with a REAL child `bridge run` ------------------------------------------------------

ON_AUDIT = textwrap.dedent("""\
    version: 1
    name: on-audit
    agents:
      reader:
        cli: command
        command: [sh, -c, 'printf "from %s: " "$(basename "$1")"; cat "$1"', sh, "{{ prompt }}"]
    stages:
      read:
        agent: reader
        prompt: "{{ trigger }}"
        outputs: [{path: seen.txt, from: final_message}]
        timeout: 30s
""")


@pytest.fixture
def real_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project whose playbook reads the triggering file; `bridge watch` starts real `bridge run`s."""
    proj = tmp_path / "real"
    (proj / ".bridge").mkdir(parents=True)
    (proj / "on-audit.yaml").write_text(ON_AUDIT)
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the child `python -m bridge` is this checkout
    return proj


def finished_runs(project: Path) -> list[RunRow]:
    if not (project / ".bridge" / "ledger.db").exists():
        return []
    with Ledger(project) as ledger:
        return [r for r in ledger.runs() if r.status != "running"]


def test_a_dropped_file_runs_the_playbook_for_real(real_project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines: list[str] = []
    monkeypatch.setattr(watch_cmd, "say", lines.append)
    inbox = real_project / ".bridge" / "inbox"
    with Watching(real_project, playbook=Path("on-audit.yaml"), var=[]):
        report = drop(inbox / "audit" / "security.md", "SQL injection in find()\n")
        assert wait_for(lambda: len(finished_runs(real_project)) == 1, 60), lines
        assert wait_for(lambda: any("run #1 ended: exit 0" in line for line in lines))
        time.sleep(0.3)  # well past the debounce: no second run may follow
    [run] = finished_runs(real_project)
    assert (run.playbook, run.status, run.trigger) == ("on-audit", "success", str(report.resolve()))
    assert any("run #1 started (pid " in line and f", run {run.id}) for " in line for line in lines), lines
    seen = RunLayout(real_project, run.id).shared / "seen.txt"
    assert seen.read_text().strip() == "from security.md: SQL injection in find()"
    assert not any("run #2" in line for line in lines)


def test_drops_during_a_run_coalesce_into_one_pending_run(real_project: Path, monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    """While run #1 (held open by a gate file) is going, two drops coalesce into ONE pending run that
    gets both files (`triggers`), the latest as `trigger`: two runs in all."""
    gate = tmp_path / "gate"  # no quoting needed: pytest's tmp paths have no spaces
    says = f"""'while [ ! -e {gate} ]; do sleep 0.05; done; printf "%s" "$1"'"""
    (real_project / "all.yaml").write_text(ON_AUDIT.replace(  # says `trigger`, then every file of `triggers`
        """'printf "from %s: " "$(basename "$1")"; cat "$1"'""", says).replace(
        'prompt: "{{ trigger }}"', 'prompt: "{{ trigger }}|{{ triggers | join(\',\') }}"'))
    lines: list[str] = []
    monkeypatch.setattr(watch_cmd, "say", lines.append)
    inbox = real_project / ".bridge" / "inbox"
    with Watching(real_project, playbook=Path("all.yaml"), var=[]):
        drop(inbox / "audit" / "1.md", "one\n")
        assert wait_for(lambda: any("run #1 started" in line for line in lines)), lines
        drop(inbox / "audit" / "2.md", "two\n")
        assert wait_for(lambda: any("trigger #2: audit/2.md (queued" in line for line in lines)), lines
        drop(inbox / "audit" / "3.md", "three\n")
        assert wait_for(lambda: any("trigger #3: audit/3.md and 1 more file (joins pending #2" in line
                                    for line in lines)), lines
        gate.touch()  # run 1 ends; the one pending trigger (2.md and 3.md) runs next
        assert wait_for(lambda: len(finished_runs(real_project)) == 2, 60), lines
        assert wait_for(lambda: any("run #3 ended: exit 0" in line for line in lines))
        time.sleep(0.3)  # well past the debounce: nothing else is pending
    runs = sorted(finished_runs(real_project), key=lambda r: r.started)
    assert [Path(r.trigger).name for r in runs] == ["1.md", "3.md"]
    assert [r.status for r in runs] == ["success", "success"]
    two, three = (str((inbox / "audit" / f"{n}.md").resolve()) for n in (2, 3))
    assert (RunLayout(real_project, runs[1].id).shared / "seen.txt").read_text().strip() == f"{three}|{two},{three}"
    assert sum("started (pid" in line for line in lines) == 2
