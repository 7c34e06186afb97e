"""Playbook checks beyond the models' shapes: references between parts of the file.

`check_references` works on the raw data (so it runs even when the models rejected something else
in the file) and returns problems located with the spots from bridge.yamlpos; it never raises. The
templates are bridge.template_checks'.
"""

from __future__ import annotations

import difflib
import zoneinfo
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import cronsim

from bridge import dag
from bridge.config import cli_definition, known_cli_names
from bridge.errors import Problem
from bridge.playbook import bad_id, cron_expression
from bridge.yamlpos import Path_, Spot, format_path

ON_CONFLICT = ("fail", "continue")
# What a resolution stage cannot have: it runs on demand, during another stage's merge step.
RESOLVER_FORBIDS = (
    ("needs", "it runs when a merge conflicts, not after other stages: remove `needs:`"),
    ("if", "it runs exactly when a merge conflicts: remove `if:`"),
    ("matrix", "it runs once per conflicting branch: remove `matrix:`"),
    ("loop", "a loop cannot resolve a conflict: name a plain top-level stage instead"),
    ("worktree", "it always works in a worktree on the conflicting branch (with the stage's `copy:`): "
                 "remove `worktree:`"),
)
# Names a `cli: command` argv item may use; the command adapter renders with exactly these.
COMMAND_NAMES = ("prompt", "prompt_file", "shared", "model", "cwd")


def problem_at(filename: str, spot: Spot | None, path: Path_, message: str, *, key: bool = False) -> Problem:
    """A Problem at the value (or, with key=True, the key) that `spot` locates."""
    if spot is None:
        return Problem(filename, None, None, format_path(path), message)
    if key and spot.key_line is not None:
        return Problem(filename, spot.key_line, spot.key_column, format_path(path), message)
    return Problem(filename, spot.line, spot.column, format_path(path), message)


def _hint(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


class _Refs:
    def __init__(self, data: dict[str, Any], spots: dict[Path_, Spot], filename: str, base: Path,
                 project: Path | None) -> None:
        self.data, self.spots, self.filename, self.base, self.project = data, spots, filename, base, project
        self.problems: list[Problem] = []
        self.ids: dict[str, tuple[str, Path_]] = {}  # id -> (group, path of the stage)

    def add(self, path: Path_, message: str, *, key: bool = False) -> None:
        self.problems.append(problem_at(self.filename, self.spots.get(path), path, message, key=key))

    def groups(self) -> Iterator[tuple[str, Path_, dict[str, Any]]]:
        """(group, path of its mapping, raw stages): top level, each loop, finally."""
        top = self.data.get("stages")
        if isinstance(top, dict):
            yield dag.TOP, ("stages",), top
            for sid, raw in top.items():
                loop = raw.get("loop") if isinstance(raw, dict) else None
                if isinstance(loop, dict) and isinstance(loop.get("stages"), dict):
                    yield sid, ("stages", sid, "loop", "stages"), loop["stages"]
        fin = self.data.get("finally")
        if isinstance(fin, dict):
            yield dag.FINALLY, ("finally",), fin

    def run(self) -> list[Problem]:
        self.agents()
        groups = list(self.groups())
        for group, gpath, stages in groups:
            for sid in stages:
                if why := bad_id(sid):
                    self.add(gpath + (sid,), why, key=True)
                if sid in self.ids:
                    first = format_path(self.ids[sid][1])
                    self.add(gpath + (sid,), f"stage id {sid!r} is already used by {first}; stage ids are "
                                             "global (loop members and finally stages included)", key=True)
                else:
                    self.ids[sid] = (group, gpath + (sid,))
        if isinstance(self.data.get("stages"), dict) and not self.data["stages"]:
            self.add(("stages",), "a playbook needs at least one stage", key=True)
        for group, gpath, stages in groups:
            for sid, raw in stages.items():
                if isinstance(raw, dict):
                    self.stage(group, gpath + (sid,), sid, raw, stages)
            self.cycles(gpath, stages)
        self.resolvers(groups)
        self.schedules()
        return self.problems

    def resolvers(self, groups: list[tuple[str, Path_, dict[str, Any]]]) -> None:
        """A stage named by a worktree's `on_conflict` runs only on a conflict, on that branch."""
        clients: dict[str, list[str]] = {}
        for _, gpath, stages in groups:
            for sid, raw in stages.items():
                wt = raw.get("worktree") if isinstance(raw, dict) else None
                target = wt.get("on_conflict") if isinstance(wt, dict) else None
                if isinstance(target, str) and target not in ON_CONFLICT and target in self.ids:
                    if target == sid:
                        self.add(gpath + (sid, "worktree", "on_conflict"),
                                 f"stage {sid!r} cannot resolve its own merge conflicts; name another "
                                 "stage (without `worktree:`) that resolves them")
                    else:
                        clients.setdefault(target, []).append(sid)
        for rid, served in clients.items():
            group, path = self.ids[rid]
            raw = self._raw(group, rid)
            who = f"{rid!r} resolves the merge conflicts of {', '.join(served)} (their on_conflict)"
            if group != dag.TOP:
                self.add(path, f"{who}, so it must be a top-level stage, not "
                               f"{'a finally stage' if group == dag.FINALLY else f'a member of loop {group!r}'}",
                         key=True)
            for field, why in RESOLVER_FORBIDS:
                if isinstance(raw, dict) and raw.get(field) is not None:
                    self.add(path + (field,), f"{who}; {why}", key=True)
            self.resolver_agent(path, raw, who)
        for group, gpath, stages in groups:
            if group == dag.FINALLY:
                continue  # finally stages run after every resolution
            for sid, raw in stages.items():
                needs = raw.get("needs") if isinstance(raw, dict) else None
                items = [(gpath + (sid, "needs"), needs)] if isinstance(needs, str) else (
                    [(gpath + (sid, "needs", i), n) for i, n in enumerate(needs)] if isinstance(needs, list)
                    else [])
                for where, need in items:
                    if isinstance(need, str) and need in clients:
                        self.add(where, f"{need!r} is a resolution stage: it runs only while "
                                        f"{', '.join(clients[need])} merge(s), so it cannot be needed; need "
                                        f"{clients[need][0]!r} instead (its merge step includes the resolution)")

    def resolver_agent(self, path: Path_, raw: Any, who: str) -> None:
        """A resolver edits the conflicting files: a read-only agent could only look at them."""
        agents = self.data.get("agents") if isinstance(self.data.get("agents"), dict) else {}
        name = raw.get("agent") if isinstance(raw, dict) else None
        profile = agents.get(name) if isinstance(name, str) else None
        if not isinstance(profile, dict) or profile.get("cli") == "command" or profile.get("permission_mode"):
            return
        if profile.get("sandbox", "read-only") == "read-only":
            self.add(path + ("agent",), f"{who}, so it edits files in the worktree, but agent {name!r} is "
                                        "read-only; give it `sandbox: workspace-write`")

    def _raw(self, group: str, sid: str) -> Any:
        for g, _, stages in self.groups():
            if g == group and sid in stages:
                return stages[sid]
        return None

    def agents(self) -> None:
        agents = self.data.get("agents")
        if not isinstance(agents, dict):
            return
        names = known_cli_names(self.project)
        for name, raw in agents.items():
            if why := bad_id(name):
                self.add(("agents", name), why, key=True)
            cli = raw.get("cli") if isinstance(raw, dict) else None
            if isinstance(cli, str) and cli not in names:
                self.add(("agents", name, "cli"), f"unknown cli {cli!r}{_hint(cli, names)} "
                                                  f"(known: {', '.join(names)}; add others in .bridge/clis.yaml)")
            elif isinstance(cli, str):
                modes = cli_definition(cli, self.project).get("permission_modes")
                mode = raw.get("permission_mode")
                if modes and isinstance(mode, str) and mode not in modes:
                    self.add(("agents", name, "permission_mode"),
                             f"{cli} has no permission mode {mode!r}{_hint(mode, modes)} "
                             f"(it takes: {', '.join(modes)}; or leave it out and set `sandbox:`)")

    def stage(self, group: str, path: Path_, sid: str, raw: dict[str, Any], siblings: dict[str, Any]) -> None:
        agents = self.data.get("agents") if isinstance(self.data.get("agents"), dict) else {}
        agent = raw.get("agent")
        if isinstance(agent, str) and agent not in agents:
            known = ", ".join(agents) or "none"
            self.add(path + ("agent",), f"unknown agent {agent!r}{_hint(agent, list(agents))} "
                                        f"(agents declared under `agents:`: {known})")
        self.needs(group, path, sid, raw, siblings)
        loop = raw.get("loop")
        if isinstance(loop, dict) and group not in (dag.TOP, dag.FINALLY):
            self.add(path + ("loop",), "loops cannot be nested; move this loop to the top level", key=True)
        if isinstance(loop, dict) and group == dag.FINALLY:
            self.add(path + ("loop",), "a finally stage cannot be a loop", key=True)
        if isinstance(loop, dict) and loop.get("stages") == {}:
            self.add(path + ("loop", "stages"), "a loop needs at least one stage", key=True)
        wt = raw.get("worktree")
        target = wt.get("on_conflict") if isinstance(wt, dict) else None
        if isinstance(target, str) and target not in ON_CONFLICT and target not in self.ids:
            self.add(path + ("worktree", "on_conflict"),
                     f"on_conflict is fail, continue or the id of a stage that resolves the conflict; "
                     f"{target!r} is none of these{_hint(target, [*ON_CONFLICT, *self.ids])}")
        pf = raw.get("prompt_file")
        if isinstance(pf, str):
            self.prompt_file_readable(path + ("prompt_file",), pf)

    def prompt_file_readable(self, where: Path_, name: str) -> None:
        file = self.base / name
        if not name.strip():
            self.add(where, "prompt_file is empty; give the template's path, relative to the playbook's folder")
        elif not file.is_file():
            self.add(where, f"prompt file {name!r} not found (looked for {file}; paths are relative to "
                            f"the playbook's folder)")
        else:
            try:
                file.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                self.add(where, f"prompt file {name!r} is not UTF-8 text (byte {exc.start}); save it as UTF-8")
            except OSError as exc:
                self.add(where, f"prompt file {name!r} cannot be read ({exc.strerror})")

    def needs(self, group: str, path: Path_, sid: str, raw: dict[str, Any], siblings: dict[str, Any]) -> None:
        needs = raw.get("needs")
        items = [(path + ("needs",), needs)] if isinstance(needs, str) else (
            [(path + ("needs", i), n) for i, n in enumerate(needs)] if isinstance(needs, list) else [])
        scope = set(siblings)
        if group == dag.FINALLY:  # finally stages run last; naming an earlier stage is harmless
            scope |= {i for i, (g, _) in self.ids.items() if g != dag.FINALLY}
        for where, need in items:
            if not isinstance(need, str):
                continue
            if need == sid:
                self.add(where, f"stage {sid!r} cannot need itself")
            elif need in scope:
                continue
            elif need not in self.ids:
                self.add(where, f"needs {need!r}, which is not a stage{_hint(need, sorted(scope))}")
            elif group not in (dag.TOP, dag.FINALLY):
                self.add(where, f"loop members may only need stages of the same loop ({', '.join(siblings)}); "
                                f"{need!r} is outside loop {group!r}: add it to the loop's own needs")
            elif self.ids[need][0] == dag.FINALLY:
                self.add(where, f"{need!r} is a finally stage, which runs after every other stage; "
                                "it cannot be needed")
            else:
                self.add(where, f"{need!r} is a member of loop {self.ids[need][0]!r}; "
                                f"need the loop {self.ids[need][0]!r} instead")

    def cycles(self, gpath: Path_, stages: dict[str, Any]) -> None:
        graph: dict[str, list[str]] = {}
        for sid, raw in stages.items():
            needs = raw.get("needs") if isinstance(raw, dict) else None
            needs = [needs] if isinstance(needs, str) else needs if isinstance(needs, list) else []
            graph[sid] = [n for n in needs if isinstance(n, str) and n in stages and n != sid]
        for _ in range(len(graph)):  # every cycle, each once: one of its needs is dropped once reported
            cycle = dag.find_cycle(graph)
            if not cycle:
                break
            self.add(gpath + (cycle[0], "needs"), f"stages need each other in a cycle: {' -> '.join(cycle)}; "
                                                  "remove one of these needs", key=True)
            graph[cycle[-2]] = [n for n in graph[cycle[-2]] if n != cycle[-1]]

    def schedules(self) -> None:
        entries = self.data.get("schedule")
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            if not isinstance(entry, dict):
                continue
            cron = entry.get("cron")
            if isinstance(cron, str):
                fields = len(cron_expression(cron).split())
                try:
                    if cron.strip().startswith("@") and fields == 1:
                        raise ValueError(f"no alias {cron.strip()!r}")
                    if fields != 5:
                        raise ValueError(f"it has {fields} field{'s' * (fields != 1)}")
                    cronsim.CronSim(cron_expression(cron), datetime(2000, 1, 1))
                except (cronsim.CronSimError, ValueError, KeyError, IndexError) as exc:
                    self.add(("schedule", i, "cron"),
                             f"{cron!r} is not a cron expression ({exc}); write five fields "
                             "(minute hour day month weekday), e.g. '0 3 * * *', or @hourly, @daily, "
                             "@weekly, @monthly, @yearly")
            tz = entry.get("timezone")
            if isinstance(tz, str):
                try:
                    zoneinfo.ZoneInfo(tz)
                except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                    zones = sorted(zoneinfo.available_timezones())
                    self.add(("schedule", i, "timezone"),
                             f"unknown timezone {tz!r}{_hint(tz, zones)} (use an IANA name like "
                             "'Europe/Paris' or 'UTC')")


def check_references(data: dict[str, Any], spots: dict[Path_, Spot], filename: str, base: Path,
                     project: Path | None = None) -> list[Problem]:
    """Agents, needs, cycles, duplicate ids, on_conflict, prompt files, cron and timezones."""
    return _Refs(data, spots, filename, base, project).run()
