"""Playbook checks of its templates: each rendered once with stub values under StrictUndefined.

`check_templates` runs once the playbook's models are built (bridge.loader); every failure is a
problem located with the spots from bridge.yamlpos (in folded or flowing text, at the name it
reports). Never raises. References between parts of the file are bridge.checks'.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pydantic

from bridge import context, dag, templates
from bridge.checks import problem_at
from bridge.errors import BridgeError, Problem
from bridge.outputs import invalid_schema
from bridge.playbook import OutputSpec, Playbook, Stage, matrix_items
from bridge.workspace import stage_key
from bridge.yamlpos import Path_, Spot, format_path


def stage_path(playbook: Playbook, sid: str) -> Path_:
    """The path of a stage in the file: ('stages', id), ('finally', id) or inside its loop."""
    place = dag.places(playbook)[sid]
    if place.group == dag.TOP:
        return ("stages", sid)
    if place.group == dag.FINALLY:
        return ("finally", sid)
    return stage_path(playbook, place.group) + ("loop", "stages", sid)


class _Templates:
    def __init__(self, playbook: Playbook, spots: dict[Path_, Spot], filename: str, base: Path,
                 lines: list[str]) -> None:
        self.playbook, self.spots, self.filename, self.base = playbook, spots, filename, base
        self.lines = lines  # the file's text, to place errors in folded (`>`) or flowing text
        self.shared = Path.cwd() / ".bridge" / "runs" / "RUN_ID" / "shared"
        self.problems: list[Problem] = []
        self.seen: set[tuple[Path_, str]] = set()
        self.note = ""  # appended to messages of the current pass

    def fail(self, path: Path_, err: templates.TemplateError, file: Path | None = None) -> None:
        if any(seen == path for seen, _ in self.seen):
            return  # the same mistake in every matrix item (or loop pass) is one problem
        self.seen.add((path, err.detail))
        err = templates.TemplateError(err.where, err.detail + self.note, err.line)
        where = format_path(path)
        if file is not None:
            self.problems.append(Problem(str(file), err.line, None, where, err.detail))
            return
        spot = self.spots.get(path)
        if spot is None or err.line is None:
            self.problems.append(problem_at(self.filename, spot, path, err.detail))
            return
        if spot.literal or (spot.end_line or spot.line) == spot.line:
            line = spot.line + err.line - 1 + (1 if spot.block else 0)
            column = spot.column if err.line == 1 and not spot.block else None
        else:  # folded or flowing text: its lines are not the file's; find what the error names
            line, column = self.find(err.detail, spot)
        self.problems.append(Problem(self.filename, line, column, where, err.detail))

    def find(self, detail: str, spot: Spot) -> tuple[int, int | None]:
        """Where in a multi-line scalar the first quoted word of `detail` is (else its start)."""
        quoted = re.search(r"'([^']+)'", detail)
        first = spot.line + (1 if spot.block else 0)
        for n in range(first, (spot.end_line or spot.line) + 1):
            text = self.lines[n - 1] if quoted and n <= len(self.lines) else ""
            at = text.find(quoted.group(1)) if quoted else -1
            if at >= 0:
                return n, at + 1
        return spot.line, spot.column

    def template(self, path: Path_, text: str, ctx: dict[str, Any], file: Path | None = None) -> str | None:
        """Render once with stubs, then check every name in every branch; None if it failed."""
        where = format_path(path)
        try:
            out = templates.render(text, ctx, where)
            templates.check_names(text, ctx, where)
            return out
        except templates.TemplateError as err:
            self.fail(path, err, file)
            return None

    def expression(self, path: Path_, expr: str, ctx: dict[str, Any]) -> None:
        where = format_path(path)
        try:
            templates.evaluate(expr, ctx, where)
            templates.check_names(expr, ctx, where, expression=True)
        except templates.TemplateError as err:
            self.fail(path, err)

    def stage(self, sid: str, stage: Stage) -> None:
        path = stage_path(self.playbook, sid)
        first = context.stub_context(self.playbook, sid, self.shared)
        if stage.if_ is not None:
            self.expression(path + ("if",), stage.if_, first)
        if stage.loop is not None:
            ctx = context.stub_context(self.playbook, sid, self.shared, until=True)
            self.expression(path + ("loop", "until"), stage.loop.until, ctx)
            return
        in_loop = dag.places(self.playbook)[sid].loop is not None
        bad = invalid_schema(stage.output_schema) if stage.output_schema is not None else None
        if bad:
            self.add_at(path + ("output_schema",), f"this JSON Schema is itself invalid: {bad}")
        for i, spec in enumerate(stage.outputs):
            bad = invalid_schema(spec.schema_) if spec.schema_ is not None else None
            if bad:
                self.add_at(path + ("outputs", i, "schema"), f"this JSON Schema is itself invalid: {bad}")
        items = matrix_items(stage.matrix)
        keys: dict[str, dict[str, Any]] = {}
        for item in items:
            twin = keys.setdefault(stage_key(sid, item), item)
            if twin is not item:
                self.add_at(path + ("matrix",), f"matrix items {_item(twin)} and {_item(item)} are the same "
                                                f"item to bridge (their folders and branches would clash); "
                                                "make the values distinct")
                break
        written: dict[str, dict[str, Any]] = {}
        for item in items:
            for first_iteration in (False, True) if in_loop else (False,):
                ctx = context.stub_context(self.playbook, sid, self.shared, matrix=item,
                                             first_iteration=first_iteration)
                self.note = " (on a loop's first iteration, loop.previous is None)" if first_iteration else ""
                if stage.prompt is not None:
                    self.template(path + ("prompt",), stage.prompt, ctx)
                elif stage.prompt_file is not None:
                    self.prompt_file(path, stage.prompt_file, ctx)
                for i, spec in enumerate(stage.outputs):
                    rel = self.output(path + ("outputs", i), spec, ctx)
                    twin = written.setdefault(rel, item) if rel is not None and not first_iteration else item
                    if twin is not item:
                        self.add_at(path + ("outputs", i), f"matrix items {_item(twin)} and {_item(item)} both "
                                                           f"write {rel!r}; put a matrix value in the path, like "
                                                           f"{{{{ matrix.{next(iter(item), 'key')} }}}}")
        self.note = ""

    def prompt_file(self, path: Path_, name: str, ctx: dict[str, Any]) -> None:
        file = self.base / name
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return  # a missing file is reported by check_references
        self.template(path + ("prompt_file",), text, ctx, file)

    def output(self, path: Path_, spec: OutputSpec, ctx: dict[str, Any]) -> str | None:
        """Render an output's path; the path, or None if it failed."""
        where = path + ("path",) if (path + ("path",)) in self.spots else path
        rel = self.template(where, spec.path, ctx)
        if rel is not None and rel != spec.path:
            try:
                OutputSpec(path=rel)
            except pydantic.ValidationError as exc:
                detail = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
                self.fail(where, templates.TemplateError(format_path(where), f"renders to {rel!r}: {detail}"))
                return None
        return rel

    def add_at(self, path: Path_, message: str) -> None:
        """A problem at `path` (the nearest located parent when `path` has no position of its own)."""
        probe = path
        while probe and probe not in self.spots:
            probe = probe[:-1]
        self.problems.append(problem_at(self.filename, self.spots.get(probe), path, message))

    def command(self, name: str, argv: list[str]) -> None:
        ctx = {"prompt": "(prompt)", "prompt_file": str(self.shared / "prompt.md"), "shared": str(self.shared),
               "model": "(model)", "cwd": str(Path.cwd())}
        for i, item in enumerate(argv):
            where = ("agents", name, "command", i)
            if where not in self.spots:
                where = ("agents", name, "command")
            self.template(where, item, ctx)


def _item(item: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {v!r}" for k, v in item.items()) + "}"


def check_templates(playbook: Playbook, spots: dict[Path_, Spot], filename: str, base: Path,
                    lines: list[str] | None = None) -> list[Problem]:
    """Render every template of the playbook once with stub values; one problem per failure.
    `lines`: the file's text (places errors inside folded or flowing multi-line text)."""
    checker = _Templates(playbook, spots, filename, base, lines or [])
    for name, profile in playbook.agents.items():
        if profile.command:
            checker.command(name, list(profile.command))
    for sid, place in dag.places(playbook).items():
        try:
            checker.stage(sid, place.stage)
        except BridgeError as exc:  # a stub could not be built (should not happen once refs are clean)
            checker.problems.append(problem_at(filename, spots.get(stage_path(playbook, sid)),
                                               stage_path(playbook, sid), str(exc), key=True))
    return checker.problems
