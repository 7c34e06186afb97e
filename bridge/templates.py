"""The one jinja2 Environment: every template bridge renders goes through `render` or `evaluate` here.

Prompts, prompt files, `if`, `until`, output paths and command argv alike, with StrictUndefined: a name
that does not exist is an error naming where it is, never an empty string. What a template sees (the
context's shape and values) is bridge.context's.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from types import TracebackType
from typing import Any, NoReturn

import jinja2
from jinja2 import meta, nodes

from bridge.errors import BridgeError
from bridge.playbook import Stage

ENV = jinja2.Environment(
    undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True,
)

_WRAPPED = re.compile(r"^\s*\{\{(.*)\}\}\s*$", re.S)


class TemplateError(BridgeError):
    """A template failed to compile or render. `line` is 1-based within the template, if known."""

    def __init__(self, where: str, detail: str, line: int | None = None) -> None:
        self.where, self.detail, self.line = where, detail, line
        at = f" (line {line})" if line else ""
        super().__init__(f"{where}{at}: {detail}")


class _Reference(Exception):
    """Raised by the context mappings (not a LookupError, so jinja lets it through unchanged)."""


@lru_cache(maxsize=512)
def _compile(template: str) -> jinja2.Template:
    return ENV.from_string(template)


@lru_cache(maxsize=512)
def _compile_expr(expr: str) -> Any:
    return ENV.compile_expression(expr, undefined_to_none=False)


def _template_line(tb: TracebackType | None) -> int | None:
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


_UNDEFINED_NAME = re.compile(r"^'([^']+)' is undefined$")


def _undefined(message: str, context: Mapping[str, Any]) -> str:
    m = _UNDEFINED_NAME.match(message)
    if m:
        only = "; `conflict` exists only in a resolution stage (a stage named by a worktree's " \
               "`on_conflict`)" if m.group(1) == "conflict" else ""
        return f"undefined: {m.group(1)!r} is undefined{suggest(m.group(1), context)}{only} " \
               f"(available: {', '.join(context)})"
    return f"undefined: {message}"


def _run(where: str, call: Any, context: Mapping[str, Any], located: bool = True) -> Any:
    try:
        return call()
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(where, f"template syntax error: {exc.message}", exc.lineno) from None
    except BridgeError:
        raise
    except Exception as exc:  # a template can raise anything (1/0, 'a' + 1, ...)
        if isinstance(exc, _Reference):
            detail = str(exc)
        elif isinstance(exc, jinja2.UndefinedError):
            detail = _undefined(exc.message or "", context)
        else:
            detail = f"{type(exc).__name__}: {exc}"
        raise TemplateError(where, detail, _template_line(exc.__traceback__) if located else None) from None


def render(template: str, context: Mapping[str, Any], where: str) -> str:
    """Render `template`; errors raise TemplateError naming `where` (e.g. 'stages.audit.prompt')."""
    return _run(where, lambda: _compile(template).render(dict(context)), context)


def evaluate(expr: str, context: Mapping[str, Any], where: str) -> bool:
    """Evaluate an `if:` / `until:` expression, bare (`a == b`) or wrapped (`{{ a == b }}`)."""
    m = _WRAPPED.match(expr)
    inner = m.group(1) if m and "{{" not in m.group(1) else expr
    if not inner.strip():
        raise TemplateError(where, "the expression is empty")
    return _run(where, lambda: bool(_compile_expr(inner.strip())(**dict(context))), context, located=False)


def check_names(template: str, context: Mapping[str, Any], where: str, *, expression: bool = False) -> None:
    """Raise TemplateError for names the template uses that `context` lacks, in every branch.

    Rendering with stubs only walks the branches the stub values take; this walks the syntax tree,
    so `{% if x %}{{ stages.typo }}{% endif %}` and `a or stages.typo` are caught too.
    """
    m = _WRAPPED.match(template) if expression else None
    source = "{{ " + (m.group(1) if m and "{{" not in m.group(1) else template) + " }}" if expression else template
    try:
        ast = ENV.parse(source)
    except jinja2.TemplateSyntaxError:
        return  # render / evaluate report it with its line
    free = meta.find_undeclared_variables(ast)
    for name in sorted(free):
        if name not in context and name not in ENV.globals:
            raise TemplateError(where, _undefined(f"'{name}' is undefined", context), None)
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        base = node.node
        if not (isinstance(base, nodes.Name) and base.name in free):
            continue
        mapping = context.get(base.name)
        if isinstance(node, nodes.Getattr):
            key: Any = node.attr
        elif isinstance(node.arg, nodes.Const):
            key = node.arg.value
        else:
            continue
        if isinstance(mapping, Lookup) and key not in mapping and not hasattr(dict, str(key)):
            raise TemplateError(where, mapping._message(key), None if expression else node.lineno)


class Lookup(dict):  # type: ignore[type-arg]
    """A dict whose missing keys raise a message saying what to fix (the context's mappings, bridge.context)."""

    def _message(self, key: Any) -> str:
        return f"no key {key!r}"

    def __missing__(self, key: Any) -> Any:
        raise _Reference(self._message(key))


def fail(message: str) -> NoReturn:
    """Stop a template with `message` as the whole error (for context objects' missing attributes)."""
    raise _Reference(message)


def suggest(word: str, choices: Iterable[str]) -> str:
    """The "; did you mean 'x'?" hint for the closest of `choices`, or an empty string."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def output_paths(stage: Stage, context: Mapping[str, Any], where: str) -> list[str]:
    """The stage's declared output paths, rendered for one matrix item's context."""
    return [render(o.path, context, f"{where}.outputs") for o in stage.outputs]
