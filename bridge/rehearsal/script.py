"""The rehearsal script: which scripted replies the local model gives, one step per model turn."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bridge.errors import BridgeError
from bridge.playbook import parse_duration

CliKind = Literal["codex", "claude", "gemini"]
DEFAULT_TEXT = "ok"  # the answer to a request that no reply matches
DONE_TEXT = "done"  # the answer once a reply's steps have run out


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WriteFile(_Model):
    path: str
    content: str = ""


class ApiError(_Model):
    status: Literal[400, 401, 403, 404, 429, 500, 503, 529] = 500
    message: str = "rehearsal error"
    retry_after: Optional[float] = None  # seconds, sent as a retry-after header
    type: Optional[str] = None  # override the vendor's error type (e.g. usage_limit_reached)


class Step(_Model):
    """One model turn: exactly one action, optionally delayed."""

    text: Optional[str] = None
    write_file: Optional[WriteFile] = None
    read_file: Optional[str] = None  # a path; Claude Code's Write refuses an existing file not Read first
    shell: Optional[str] = None
    structured: Optional[Any] = None
    error: Optional[ApiError] = None
    hang: bool = False
    delay: float = 0.0

    @field_validator("delay", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)

    @model_validator(mode="after")
    def _one_action(self) -> "Step":
        actions = [k for k in ("text", "write_file", "read_file", "shell", "structured", "error")
                   if getattr(self, k) is not None]
        if self.hang:
            actions.append("hang")
        if len(actions) > 1:
            raise ValueError(f"a step does one thing; this one has {', '.join(actions)}")
        if not actions and not self.delay:
            raise ValueError("a step needs one of text, write_file, read_file, shell, structured, error, hang")
        return self

    @property
    def kind(self) -> str:
        for key in ("write_file", "read_file", "shell", "structured", "error", "text"):
            if getattr(self, key) is not None:
                return key
        return "hang" if self.hang else "text"

    @property
    def is_tool(self) -> bool:
        return self.write_file is not None or self.read_file is not None or self.shell is not None


class Reply(_Model):
    """Scripted behaviour for every conversation whose first user prompt matches `match`."""

    match: Optional[str] = None
    cli: Optional[CliKind] = None
    steps: tuple[Step, ...] = Field(default_factory=tuple)

    @field_validator("match")
    @classmethod
    def _regex(cls, value: Optional[str]) -> Optional[str]:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    @field_validator("steps", mode="before")
    @classmethod
    def _steps(cls, value: Any) -> Any:
        # A bare string is shorthand for one text step.
        if isinstance(value, str):
            return [{"text": value}]
        if isinstance(value, list):
            return [{"text": v} if isinstance(v, str) else v for v in value]
        return value


class Script(_Model):
    replies: tuple[Reply, ...] = ()
    default: str = DEFAULT_TEXT



@dataclass(frozen=True)
class Selection:
    """What to answer: the reply chosen (its index, or None), the step (None: steps ran out)."""

    reply_index: Optional[int]
    step_index: int
    step: Optional[Step]
    groups: tuple[str, ...] = ()
    named: tuple[tuple[str, str], ...] = ()

    def expand(self, text: str) -> str:
        """Replace $1..$9 and ${name} with the groups of the reply's `match`; $$ is a literal $."""
        if not self.groups and not self.named:
            return text
        named = dict(self.named)

        def sub(m: re.Match[str]) -> str:
            token = m.group(0)
            if token == "$$":
                return "$"
            key = m.group(1) or m.group(2)
            if key.isdigit():
                i = int(key)
                return self.groups[i - 1] if 0 < i <= len(self.groups) else token
            return named.get(key, token)

        return re.sub(r"\$\$|\$(\d)|\$\{(\w+)\}", sub, text)

    def describe(self) -> str:
        if self.reply_index is None:
            return "no reply matched: default text"
        what = self.step.kind if self.step else "done (steps ran out)"
        return f"reply {self.reply_index} step {self.step_index}: {what}"


def select(script: Script, prompt: str, cli: Optional[str], turn: int) -> Selection:
    """The reply whose `match` finds the first user prompt (and whose cli fits), at step `turn`."""
    for index, reply in enumerate(script.replies):
        if reply.cli is not None and cli is not None and reply.cli != cli:
            continue
        found = re.search(reply.match, prompt) if reply.match is not None else None
        if reply.match is not None and found is None:
            continue
        step = reply.steps[turn] if turn < len(reply.steps) else None
        groups = tuple(g or "" for g in found.groups()) if found else ()
        named = tuple((k, v or "") for k, v in found.groupdict().items()) if found else ()
        return Selection(index, turn, step, groups, named)
    return Selection(None, turn, None)


def parse_script(text: str, filename: str = "<script>") -> Script:
    """YAML text -> Script; raises BridgeError listing every problem with file:line."""
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        raise BridgeError(f"{filename}: not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if isinstance(data, list):  # a bare list of replies is fine too
        data, root = {"replies": data}, None
    try:
        return Script.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            line = _line_of(root, loc)
            where = f"{filename}:{line}" if line else filename
            path = ".".join(str(p) for p in loc)
            lines.append(f"  {where}: at {path or 'top level'}: {err['msg']}")
        raise BridgeError(f"rehearsal script {filename} is invalid:\n" + "\n".join(lines)) from None


def load_script(path: Path) -> Script:
    """Read and validate a rehearsal script file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise BridgeError(f"cannot read rehearsal script {path}: {exc.strerror}") from exc
    return parse_script(text, str(path))


def _line_of(node: Any, loc: tuple[Any, ...]) -> Optional[int]:
    """1-based line of the YAML node at `loc` (the deepest one that exists)."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if k.value == key), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            child = node.value[key]
        if child is None:
            break
        node, line = child, child.start_mark.line + 1
    return line
