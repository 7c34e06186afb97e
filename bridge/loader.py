"""Playbook files -> validated `Playbook` values, or a `PlaybookError` listing every problem.

The only place the raw YAML of a playbook is touched. Problems come from four passes over the same
file, all collected before anything is raised: YAML syntax and duplicate keys (bridge.yamlpos), the
pydantic models (bridge.playbook), references between parts of the file (bridge.checks), and every
template rendered once with stub values (bridge.template_checks.check_templates).
"""

from __future__ import annotations

import copy
import difflib
import json
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pydantic

from bridge import checks, template_checks
from bridge.errors import BridgeError, PlaybookError, Problem
from bridge.playbook import Model, Playbook
from bridge.yamlpos import Parsed, Spot, format_path, parse

# Keys people bring from other tools, and what bridge calls them.
_SYNONYMS = {
    "depends_on": "needs", "depends-on": "needs", "dependencies": "needs", "after": "needs",
    "when": "if", "condition": "if", "timeout_minutes": "timeout", "timeout-minutes": "timeout",
    "retries": "retry", "steps": "stages", "jobs": "stages", "profiles": "agents",
    "variables": "vars", "env_vars": "env", "on_failure": "continue_on_error",
}


def parse_vars(pairs: list[str]) -> dict[str, str]:
    """--var ['k=v', ...] -> {'k': 'v'}; a pair without '=' is a user error."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise BridgeError(f"--var {pair!r}: write it as key=value, e.g. --var target=src")
        out[key.strip()] = value
    return out


def load_playbook(path: Path | str, vars: Mapping[str, str] | None = None, *,
                  project: Path | None = None) -> Playbook:
    """Read and validate a playbook file; `vars` are --var overrides (only declared vars)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlaybookError([Problem(str(path), None, None, "", "no such file")]) from None
    except IsADirectoryError:
        raise PlaybookError([Problem(str(path), None, None, "", "is a folder, not a playbook file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlaybookError([Problem(str(path), None, None, "", f"cannot be read: {exc}")]) from None
    return load_playbook_text(text, str(path), vars, project=project)


def load_playbook_text(text: str, filename: str, vars: Mapping[str, str] | None = None, *,
                       project: Path | None = None) -> Playbook:
    """Validate playbook text; `filename` is used in messages and locates `prompt_file`s."""
    parsed = parse(text, filename)
    problems = list(parsed.problems)
    if parsed.data is None and not problems:
        problems.append(Problem(filename, 1, 1, "", "the file is empty; a playbook starts with `version: 1`"))
    elif parsed.data is not None and not isinstance(parsed.data, dict):
        problems.append(_at(parsed, filename, (), "a playbook is a mapping of keys "
                                                  "(version, name, agents, stages, ...), "
                                                  f"not {_kind(parsed.data)}"))
    if parsed.data is None or not isinstance(parsed.data, dict):
        raise PlaybookError(problems)
    data: dict[str, Any] = parsed.data
    playbook: Playbook | None = None
    checked: Playbook | None = None  # what the templates are checked on
    try:
        playbook = checked = Playbook.model_validate(data)
    except pydantic.ValidationError as exc:
        errors = exc.errors(include_url=False)
        # bad ids are reported by checks.check_references, each at its own key
        problems += [_from_pydantic(err, parsed, filename) for err in errors if "is not a valid id" not in err["msg"]]
        checked = _without(data, [err["loc"] for err in errors])
    base = Path(filename).parent
    references = checks.check_references(data, parsed.spots, filename, base, project)
    override_problems, values = _overrides(data, parsed, filename, vars or {})
    problems += _schedule_vars(data, parsed, filename)
    problems += references + override_problems
    if checked is not None and values:
        checked = checked.model_copy(update={"vars": {**checked.vars, **values}})
    if checked is not None and not references and not override_problems:
        # the templates too, even when a bad value elsewhere was reported: every problem at once
        problems += template_checks.check_templates(checked, parsed.spots, filename, base, text.splitlines())
    if playbook is not None:
        playbook = checked
    if problems:
        raise PlaybookError(sorted(problems, key=lambda p: (p.line or 0, p.column or 0)))
    assert playbook is not None
    return playbook


def _without(data: dict[str, Any], bad: list[tuple[Any, ...]]) -> Playbook | None:
    """The playbook without the values reported bad (so its templates can be checked too), or None."""
    pruned = copy.deepcopy(data)
    for loc in bad:
        node: Any = pruned
        last: tuple[Any, Any] | None = None  # (container, key) of the deepest value `loc` reaches
        for part in loc:  # parts that are not keys (pydantic's union tags) are skipped
            if isinstance(node, dict) and part in node or (
                    isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)):
                last, node = (node, part), node[part]
        if last is not None and isinstance(last[0], dict):
            last[0].pop(last[1], None)
        elif last is None or isinstance(last[0], list):
            return None
    try:
        return Playbook.model_validate(pruned)
    except pydantic.ValidationError:
        return None


def _at(parsed: Parsed, filename: str, path: tuple[Any, ...], message: str, *, key: bool = False) -> Problem:
    spot = parsed.spots.get(path)
    return checks.problem_at(filename, spot, path, message, key=key)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the text {shown!r}"
    return f"{type(value).__name__} {value!r}"


def _model_at(loc: tuple[Any, ...]) -> type[Model] | None:
    """The model class that holds the mapping at `loc` (for 'did you mean' on unknown keys)."""
    tp: Any = Playbook
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
            field = next((f for n, f in tp.model_fields.items() if part in (n, f.alias)), None)
            if field is None:
                return None
            tp = field.annotation
        elif typing.get_origin(tp) in (dict, list):
            tp = typing.get_args(tp)[-1]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, Model) else None


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = args[0] if len(args) == 1 else tp
            if len(args) != 1:
                return tp
        else:
            return tp


def field_names(model: type[Model]) -> list[str]:
    """The keys a user writes for `model` (aliases such as `if`, `finally`, `schema`)."""
    return [f.alias or n for n, f in model.model_fields.items()]


def did_you_mean(word: str, choices: list[str]) -> str:
    """'; did you mean 'X'?' for the closest choice, or ''."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if not close and word.replace("-", "_") in choices:
        close = [word.replace("-", "_")]
    if not close and _SYNONYMS.get(word) in choices:
        close = [_SYNONYMS[word]]
    return f"; did you mean {close[0]!r}?" if close else ""


_QUOTED = re.compile(r"'([^']*)'")


def _describe(err: Mapping[str, Any]) -> str:
    typ, loc, given = err["type"], tuple(err["loc"]), err.get("input")
    got = f", got {_kind(given)}"
    if typ == "missing":
        return f"missing required key {loc[-1]!r}"
    if typ == "extra_forbidden":
        model = _model_at(loc[:-1])
        names = field_names(model) if model else []
        hint = did_you_mean(str(loc[-1]), names)
        if not hint and names:
            hint = f" (allowed here: {', '.join(names)})"
        return f"unknown key {loc[-1]!r}{hint}"
    if loc == ("version",) and typ == "literal_error":
        return f"unsupported version {given!r}; this bridge reads `version: 1`"
    if typ == "literal_error":
        allowed = _QUOTED.findall(str(err.get("ctx", {}).get("expected", "")))
        hint = did_you_mean(str(given), allowed) if isinstance(given, str) else ""
        return f"expected one of {', '.join(allowed)}{got}{hint}"
    simple = {
        "string_type": "expected text", "int_type": "expected a whole number",
        "int_parsing": "expected a whole number", "int_from_float": "expected a whole number",
        "float_type": "expected a number", "float_parsing": "expected a number",
        "bool_type": "expected true or false", "bool_parsing": "expected true or false",
        "list_type": "expected a list", "dict_type": "expected a mapping (key: value)",
        "model_type": "expected a mapping (key: value)",
        "model_attributes_type": "expected a mapping (key: value)",
    }
    if typ in simple:
        return simple[typ] + got
    limits = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if typ in limits:
        bound = next(iter(err.get("ctx", {}).values()), "?")
        return f"expected a number {limits[typ]} {bound}{got}"
    msg = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    return msg


def _from_pydantic(err: Mapping[str, Any], parsed: Parsed, filename: str) -> Problem:
    loc = tuple(err["loc"])
    typ = err["type"]
    if typ == "missing":
        parent = loc[:-1]
        spot = parsed.spots.get(parent)
        if spot is None or not parent:
            return Problem(filename, 1, 1, format_path(loc), _describe(err))
        return checks.problem_at(filename, spot, loc, _describe(err), key=True)
    probe = loc
    while probe and probe not in parsed.spots:
        probe = probe[:-1]
    spot: Spot | None = parsed.spots.get(probe)
    key = typ == "extra_forbidden" or (spot is not None and not spot.scalar)
    return checks.problem_at(filename, spot, loc, _describe(err), key=key)


def _overrides(data: dict[str, Any], parsed: Parsed, filename: str,
               given: Mapping[str, str]) -> tuple[list[Problem], dict[str, Any]]:
    """--var values: only declared vars; a non-text default makes the value parse as YAML."""
    declared = data.get("vars") if isinstance(data.get("vars"), dict) else {}
    problems: list[Problem] = []
    values: dict[str, Any] = {}
    for name, raw in given.items():
        if name not in declared:
            known = ", ".join(declared) or "none"
            problems.append(_at(parsed, filename, ("vars",),
                                f"--var {name}: this playbook declares no var {name!r}"
                                f"{did_you_mean(name, list(declared))} (declared: {known})", key=True))
            continue
        value, expected = _coerce(raw, declared[name])
        if expected:
            problems.append(_at(parsed, filename, ("vars", name),
                                f"--var {name}={raw}: expected {expected}, like the declared default "
                                f"{declared[name]!r}", key=True))
            continue
        values[name] = value
    return problems, values


def _schedule_vars(data: dict[str, Any], parsed: Parsed, filename: str) -> list[Problem]:
    """A schedule's `vars:` become --var values of its runs: checked as those are."""
    declared = data.get("vars") if isinstance(data.get("vars"), dict) else {}
    entries = data.get("schedule") if isinstance(data.get("schedule"), list) else []
    problems = []
    for i, entry in enumerate(entries):
        given = entry.get("vars") if isinstance(entry, dict) else None
        for name, value in (given.items() if isinstance(given, dict) else ()):
            where = ("schedule", i, "vars", name)
            if name not in declared:
                problems.append(_at(parsed, filename, where, f"this playbook declares no var {name!r}"
                                    f"{did_you_mean(str(name), list(declared))} (declared: "
                                    f"{', '.join(declared) or 'none'})", key=True))
                continue
            raw = value if isinstance(value, str) else json.dumps(value)
            if _coerce(raw, declared[name])[1]:
                problems.append(_at(parsed, filename, where, f"expected {_coerce(raw, declared[name])[1]}, "
                                                             f"like the declared default {declared[name]!r}"))
    return problems


def _coerce(raw: str, default: Any) -> tuple[Any, str]:
    """(value, '') or (None, what was expected): numbers and booleans keep their declared type."""
    if isinstance(default, bool):
        value = {"true": True, "false": False}.get(raw.strip().lower())
        return (value, "") if value is not None else (None, "true or false")
    if isinstance(default, (int, float)):
        try:
            return (int(raw) if isinstance(default, int) else float(raw)), ""
        except ValueError:
            return None, "a whole number" if isinstance(default, int) else "a number"
    return raw, ""
