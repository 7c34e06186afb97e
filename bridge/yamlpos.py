"""YAML text -> plain data plus the file position of every key and value (for error messages).

Differences from `yaml.safe_load`, all deliberate:
- duplicate keys are problems (PyYAML silently keeps the last one);
- only true/false are booleans (YAML 1.1 also reads on/off/yes/no, so `on: failure` would become
  `True: failure`, the GitHub Actions trap);
- mapping keys are always strings: the key's source text (`1:` is the key "1").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from bridge.errors import Problem

Path_ = tuple[Any, ...]  # ("stages", "audit", "outputs", 0)

_BOOL = "tag:yaml.org,2002:bool"
_MERGE = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    pass


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


@dataclass(frozen=True)
class Spot:
    """1-based positions of a value and of the key that holds it (None for list items / the root)."""

    line: int
    column: int
    key_line: int | None = None
    key_column: int | None = None
    block: bool = False  # a `|` or `>` scalar: its text starts on the line after `line`
    scalar: bool = True
    end_line: int | None = None  # the last line of a scalar spread over several
    literal: bool = False  # a `|` scalar: line n of its text is line n of the block


def format_path(path: Path_) -> str:
    """('stages', 'a', 'outputs', 0) -> 'stages.a.outputs[0]'."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass
class Parsed:
    data: Any
    spots: dict[Path_, Spot]
    problems: list[Problem]


def _spot(node: yaml.Node, key: yaml.Node | None = None) -> Spot:
    m = node.start_mark
    block = isinstance(node, yaml.ScalarNode) and node.style in ("|", ">")
    scalar = isinstance(node, yaml.ScalarNode)
    return Spot(m.line + 1, m.column + 1,
                key.start_mark.line + 1 if key else None, key.start_mark.column + 1 if key else None,
                block, scalar, node.end_mark.line + 1 if scalar else None, scalar and node.style == "|")


def parse(text: str, filename: str) -> Parsed:
    """Parse one YAML document. A syntax error yields data None and one located problem."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        detail = exc.problem or "invalid YAML"
        if exc.context:
            detail = f"{exc.context}, {detail}"
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        loader.dispose()
        return Parsed(None, {}, [Problem(filename, line, col, "", f"invalid YAML: {detail}")])
    except yaml.YAMLError as exc:
        loader.dispose()
        return Parsed(None, {}, [Problem(filename, None, None, "", f"invalid YAML: {exc}")])
    except RecursionError:
        loader.dispose()
        return Parsed(None, {}, [Problem(filename, 1, 1, "", f"not read: {DEEP}; a playbook is far smaller")])
    out = Parsed(None, {}, [])
    if root is not None:
        out.spots[()] = _spot(root)
        try:
            out.data = _Builder(loader, filename, out).build(root, ())
        except (_TooBig, RecursionError) as exc:
            why = str(exc) if isinstance(exc, _TooBig) else DEEP
            out = Parsed(None, {}, [Problem(filename, 1, 1, "", f"not read: {why}; a playbook is far smaller")])
    loader.dispose()
    return out


DEEP = "it nests values more than a few hundred levels deep"
MAX_VALUES = 200_000  # values in one file once aliases are expanded (a playbook has hundreds)


class _TooBig(Exception):
    pass


class _Builder:
    def __init__(self, loader: _Loader, filename: str, out: Parsed) -> None:
        self.loader, self.filename, self.out = loader, filename, out
        self.active: set[int] = set()  # node ids on the current path (recursive aliases)
        self.values = 0  # built so far: aliases expand on every use (an "alias bomb" is caught here)

    def problem(self, node: yaml.Node, path: Path_, message: str) -> None:
        m = node.start_mark
        self.out.problems.append(Problem(self.filename, m.line + 1, m.column + 1, format_path(path), message))

    def build(self, node: yaml.Node, path: Path_) -> Any:
        if id(node) in self.active:
            self.problem(node, path, "this alias refers to itself; YAML anchors cannot contain themselves")
            return None
        self.active.add(id(node))
        self.values += 1
        if self.values > MAX_VALUES:
            raise _TooBig(f"it holds more than {MAX_VALUES:,} values once its aliases (*name) are expanded")
        try:
            if isinstance(node, yaml.MappingNode):
                return self.mapping(node, path)
            if isinstance(node, yaml.SequenceNode):
                items = []
                for i, item in enumerate(node.value):
                    self.out.spots[path + (i,)] = _spot(item)
                    items.append(self.build(item, path + (i,)))
                return items
            try:
                return self.loader.construct_object(node, deep=True)
            except yaml.YAMLError as exc:
                self.problem(node, path, f"invalid value: {getattr(exc, 'problem', None) or exc}")
                return None
        finally:
            self.active.discard(id(node))

    def mapping(self, node: yaml.MappingNode, path: Path_) -> dict[str, Any]:
        own = {id(k) for k, _ in node.value if k.tag != _MERGE}
        try:
            self.loader.flatten_mapping(node)
        except yaml.YAMLError as exc:
            self.problem(node, path, f"invalid merge key: {getattr(exc, 'problem', None) or exc}")
            return {}
        out: dict[str, Any] = {}
        first: dict[str, yaml.Node] = {}
        for knode, vnode in node.value:
            if not isinstance(knode, yaml.ScalarNode):
                self.problem(knode, path, "a key must be a plain word, not a list or mapping")
                continue
            key = str(knode.value)
            if key in first and id(first[key]) in own and id(knode) in own:
                line = first[key].start_mark.line + 1
                self.problem(knode, path + (key,),
                             f"duplicate key {key!r} (first given on line {line}); "
                             "YAML would silently keep only the last one, so remove one of them")
                continue
            first[key] = knode
            self.out.spots[path + (key,)] = _spot(vnode, knode)
            out[key] = self.build(vnode, path + (key,))
        return out
