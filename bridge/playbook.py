"""Playbook format v1: the pydantic models. Raw YAML is turned into these by `bridge.loader`."""

from __future__ import annotations

import itertools
import math
import re
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

SANDBOXES = ("read-only", "workspace-write", "full-access")
MERGE_STRATEGIES = ("merge", "squash", "rebase", "none")
OVERLAPS = ("skip", "queue", "cancel")
CATCH_UPS = ("none", "last", "all")

_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*h)?\s*(?:(\d+(?:\.\d+)?)\s*m(?!s))?\s*"
                       r"(?:(\d+(?:\.\d+)?)\s*s)?\s*(?:(\d+)\s*ms)?\s*$")
_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
ID_RULE = "an id starts with a letter or '_', then letters, digits, '-' and '_'"


def bad_id(key: Any) -> str | None:
    """What is wrong with `key` as a stage or agent id, or None."""
    return None if isinstance(key, str) and _ID.match(key) else f"{key!r} is not a valid id: {ID_RULE}"


def parse_duration(value: Any) -> float:
    """'20m', '1h30m', '45s', '500ms' or a bare number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 20m or 1h30m, got a boolean")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"expected a duration like 30s, 20m or 1h30m, got {value}")
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration like 30s, 20m or 1h30m, got {type(value).__name__}")
    m = _DURATION.match(value)
    if not value.strip() or not m or not any(m.groups()):
        raise ValueError(f"{value!r} is not a duration; write it like 30s, 20m, 1h30m or 500ms")
    h, mins, s, ms = (float(g) if g else 0.0 for g in m.groups())
    return h * 3600 + mins * 60 + s + ms / 1000


Duration = Annotated[float, BeforeValidator(parse_duration, json_schema_input_type=Union[float, str])]


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


StrList = Annotated[list[str], BeforeValidator(_as_list, json_schema_input_type=Union[list[str], str])]


def _as_expression(value: Any) -> Any:
    # `if: false` in YAML is a boolean; jinja reads the same words as literals.
    return str(value).lower() if isinstance(value, bool) else value


Expression = Annotated[str, BeforeValidator(_as_expression, json_schema_input_type=Union[str, bool])]


class Model(BaseModel):
    """Base: unknown keys are errors, values are frozen once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class AgentProfile(Model):
    """A named way of running one CLI: which CLI, which model, under which policy."""

    cli: str = Field(description="codex | claude | gemini | command, or a CLI defined in configs/clis.yaml",
                     examples=["codex", "claude", "gemini", "command"])
    description: str = Field("", description="What this agent is for (shown by plan).")
    model: str | None = Field(None, description="Model name passed to the CLI (-m / --model).")
    sandbox: Literal["read-only", "workspace-write", "full-access"] = Field(
        "read-only",
        description="Portable policy: read-only (default), workspace-write, or full-access. "
        "Each adapter maps it to its CLI's own sandbox / permission flags.",
    )
    permission_mode: str | None = Field(
        None,
        description="Vendor-native override of the policy: Claude's --permission-mode "
        "(default|acceptEdits|dontAsk|bypassPermissions|plan) or Gemini's --approval-mode.",
    )
    allowed_tools: StrList = Field(default_factory=list, description="Tools the agent may use without asking "
                                   "(Claude Code: --allowedTools rules like Read, Bash(git diff:*)).")
    disallowed_tools: StrList = Field(default_factory=list, description="Tools the agent may never use.")
    args: StrList = Field(default_factory=list, description="Extra arguments appended to argv.")
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment, e.g. a proxy or gateway base URL."
    )
    max_turns: int | None = Field(None, ge=1, description="Stop the agent after this many model turns "
                                  "(where the CLI has an option for it; see `bridge validate` warnings).")
    system_prompt: str | None = Field(None, description="Appended to the CLI's system prompt.")
    command: StrList | None = Field(
        None,
        description="For cli: command — the argv to run; items are jinja templates "
        "({{ prompt }}, {{ prompt_file }}, {{ shared }}, {{ model }}).",
    )
    interactive: bool = Field(False, description="Drive the CLI through a terminal (pexpect).")

    @model_validator(mode="after")
    def _command_needs_argv(self) -> AgentProfile:
        if self.cli == "command" and not self.command:
            raise ValueError("cli: command needs `command:`, the argv to run (a list of strings)")
        return self


class OutputSpec(Model):
    """A file a stage must leave in the shared folder, optionally checked against a JSON schema."""

    path: str = Field(description="Path in the shared folder (jinja; e.g. audit/{{ matrix.area }}.md).")
    schema_: dict[str, Any] | None = Field(None, alias="schema", description="JSON Schema the file must match "
                                           "(for .json outputs).")
    description: str = Field("", description="What the file holds (for people and prompts).")
    required: bool = Field(True, description="false: the stage succeeds without it.")
    from_: Literal["agent", "final_message"] = Field(
        "agent", alias="from",
        description="Who writes the file: the agent (default), or bridge, which writes the agent's final "
        "message into it after a successful end (for read-only agents, e.g. a read-only Codex auditor).",
    )

    @field_validator("path")
    @classmethod
    def _relative(cls, v: str) -> str:
        return in_shared(v, "an output path")


def in_shared(v: str, what: str) -> str:
    """`v` if it is a path relative to the shared folder that stays in it; else ValueError."""
    if not v.strip():
        raise ValueError(f"{what} cannot be empty")
    if v.startswith("/") or v.startswith("~"):
        raise ValueError(f"{v!r} is absolute; {what} is relative to the shared folder")
    if ".." in re.split(r"[\\/]", v):
        raise ValueError(f"{v!r} climbs out of the shared folder with '..'")
    return v


def _as_output(value: Any) -> Any:
    return {"path": value} if isinstance(value, str) else value


Output = Annotated[OutputSpec, BeforeValidator(_as_output, json_schema_input_type=Union[OutputSpec, str])]


class Summary(Model):
    """Caps on what a stage hands downstream (the 'token tax' control)."""

    max_lines: int | None = Field(None, ge=1, description="Cap on the summary handed downstream, in lines.")
    max_bytes: int | None = Field(None, ge=1, description="Cap on the summary handed downstream, in bytes.")
    source: Literal["final_message", "outputs"] = Field(
        "final_message", alias="from", description="Summarise the final message or the output files."
    )


class Retry(Model):
    limit: int = Field(0, ge=0, description="Extra attempts after the first.")
    backoff: Duration = Field(5.0, description="Wait before the first retry; doubles each time.")
    factor: float = Field(2.0, ge=1.0, description="Each retry waits this many times longer than the last.")


def _as_retry(value: Any) -> Any:
    return {"limit": value} if isinstance(value, int) and not isinstance(value, bool) else value


class Worktree(Model):
    """Run the stage in its own git worktree and merge the work back."""

    merge: Literal["merge", "squash", "rebase", "none"] = Field(
        "merge", description="How the stage's branch lands: merge, squash, rebase, or none (kept for review).")
    copy_: StrList = Field(
        default_factory=lambda: [".env"], alias="copy",
        description="Ignored files copied into the worktree (e.g. .env).",
    )
    on_conflict: str = Field(
        "fail", description="fail | continue | the id of a stage that resolves the conflict"
    )
    order: int = Field(0, description="Merge order among parallel implementers (lower first).")


def _as_worktree(value: Any) -> Any:
    if value is True:
        return {}
    if isinstance(value, str):
        return {"merge": value}
    return value


class Budget(Model):
    max_cost_usd: float | None = Field(None, gt=0)
    max_tokens: int | None = Field(None, gt=0)


LOOP_FIELDS = {"name", "needs", "if_", "continue_on_error", "loop"}  # what a loop stage may set
LOOP_KEYS = {"name", "needs", "if", "continue_on_error", "loop"}


class Stage(Model):
    """One node of the DAG: an agent run, or a loop over a group of stages."""

    name: str | None = Field(None, description="Display name (default: the stage id).")
    agent: str | None = Field(None, description="The agent profile (a key of `agents:`) that runs this stage.")
    prompt: str | None = Field(None, description="The prompt, a jinja template ({{ stages.<id>.summary }}, "
                               "{{ shared }}, {{ matrix.<key> }}, ...).")
    prompt_file: str | None = Field(None, description="A jinja prompt template file, relative to the playbook.")
    needs: StrList = Field(default_factory=list, description="Stage ids that must end before this one starts.")
    if_: Expression | None = Field(None, alias="if", description="Jinja expression; the stage is skipped when false.")
    matrix: dict[str, list[Any]] | None = Field(None, description="Run once per combination of these lists "
                                                "(include / exclude as in GitHub Actions).")
    max_parallel: int | None = Field(None, ge=1, description="Matrix items running at once.")
    fail_fast: bool = Field(True, description="Cancel the other matrix items when one fails.")
    outputs: list[Output] = Field(default_factory=list, description="Files the stage must leave in the shared "
                                  "folder; the stage is done once they exist and are valid.")
    summary: Summary = Field(default_factory=Summary, description="Caps on what is handed downstream.")
    output_schema: dict[str, Any] | None = Field(
        None, description="JSON Schema the agent's final answer must match, enforced by the CLI (Codex "
        "--output-schema, Claude Code --json-schema; Gemini CLI has no such option). Keep the answer as a file "
        "with an output `from: final_message`.")
    timeout: Duration | None = Field(None, gt=0, description="Wall-clock limit of one attempt (e.g. 20m).")
    idle_timeout: Duration | None = Field(
        None, gt=0, description="Stop an attempt that prints nothing for this long (e.g. 5m).")
    retry: Annotated[Retry, BeforeValidator(_as_retry, json_schema_input_type=Union[Retry, int])] = Field(
        default_factory=Retry, description="Attempts after a failure: a number, or {limit, backoff, factor}.")
    continue_on_error: bool = Field(False, description="A failure does not fail the run or stop dependents.")
    worktree: Annotated[Worktree | None, BeforeValidator(
        _as_worktree, json_schema_input_type=Union[Worktree, bool, Literal["merge", "squash", "rebase", "none"], None])
    ] = Field(None, description="Run in its own git worktree and merge back: true, a strategy, or settings.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment for this stage's agent.")
    max_cost_usd: float | None = Field(None, gt=0, description="Stop the stage past this cost (USD).")
    max_tokens: int | None = Field(None, gt=0, description="Stop the stage past this many tokens.")
    loop: Loop | None = Field(None, description="Repeat a group of stages until a condition holds.")

    @model_validator(mode="after")
    def _shape(self) -> Stage:
        if self.loop is not None:
            extra = [k for k in self.model_fields_set - LOOP_FIELDS
                     if k not in ("agent", "prompt", "prompt_file", "matrix", "worktree") or getattr(self, k)]
            if extra:
                names = ", ".join(sorted(type(self).model_fields[k].alias or k for k in extra))
                raise ValueError(f"a loop stage groups other stages; it cannot also set {names} "
                                 f"(set them on its member stages; a loop takes {', '.join(sorted(LOOP_KEYS))})")
            return self
        if not self.agent:
            raise ValueError("a stage needs `agent:` (or `loop:` to group stages)")
        if self.prompt is None and self.prompt_file is None:
            raise ValueError("a stage needs `prompt:` or `prompt_file:`")
        if self.prompt is not None and self.prompt_file is not None:
            raise ValueError("give `prompt:` or `prompt_file:`, not both")
        if self.matrix is not None:
            if not self.matrix:
                raise ValueError("`matrix:` is empty; give at least one key with a list of values")
            for key, values in self.matrix.items():
                if key in MATRIX_EXTRAS:
                    if not all(isinstance(v, dict) and v for v in values):
                        raise ValueError(f"matrix.{key} is a list of mappings (key: value), like "
                                         f"[{{area: docs, depth: quick}}]")
                elif not values:
                    raise ValueError(f"matrix key {key!r} has no values")
            keys = [k for k in self.matrix if k not in MATRIX_EXTRAS]
            for rule in self.matrix.get("exclude") or []:
                unknown = [k for k in rule if k not in keys]
                if unknown:
                    raise ValueError(f"matrix.exclude names {unknown[0]!r}, which is not a matrix key "
                                     f"(keys: {', '.join(keys) or 'none'})")
            if not matrix_items(self.matrix):
                raise ValueError("the matrix has no items left after `exclude`")
        return self


class Loop(Model):
    """Repeat a group of stages until a condition holds (e.g. implement -> verify)."""

    until: Expression = Field(description="Jinja expression over this iteration's stages; true ends the loop.")
    max_iterations: int = Field(3, ge=1, le=100, description="The loop fails if `until` never held by then.")
    stages: dict[str, Stage] = Field(description="The group, keyed by id (members need only each other).")


Stage.model_rebuild()


class Schedule(Model):
    cron: str = Field(description="Five-field cron expression, or @hourly / @daily / @weekly / @monthly.")
    timezone: str = Field("UTC", description="IANA timezone of the cron expression, e.g. Europe/Paris.")
    overlap: Literal["skip", "queue", "cancel"] = Field(
        "skip", description="When a fire comes while the last run still runs: skip it, queue it, or cancel the old.")
    jitter: Duration = Field(0.0, description="Start up to this much later, at random (spreads load).")
    catch_up: Literal["none", "last", "all"] = Field(
        "none", description="Fires missed while the scheduler was down: none, the last one, or all.")
    vars: dict[str, Any] = Field(default_factory=dict, description="--var values for these runs.")


class Notify(Model):
    on: Annotated[list[Literal["success", "failure"]], BeforeValidator(
        _as_list, json_schema_input_type=Union[list[Literal["success", "failure"]], Literal["success", "failure"]])
    ] = Field(default_factory=lambda: ["success", "failure"], description="success, failure, or both (default).")
    webhook: str | None = Field(None, description="URL that gets a JSON POST of the run's result.")
    command: StrList | None = Field(None, description="argv run with the run's result as JSON on stdin.")

    @model_validator(mode="after")
    def _target(self) -> Notify:
        if not self.webhook and not self.command:
            raise ValueError("a notify entry needs `webhook:` or `command:`")
        return self


class Playbook(Model):
    """A whole playbook file."""

    version: Literal[1] = Field(description="The format version: 1.")
    name: str = Field(description="The playbook's name (runs are listed by it).")
    description: str = Field("", description="What the playbook does.")
    vars: dict[str, Any] = Field(default_factory=dict, description="Values templates see as {{ vars.<name> }}; "
                                 "override with --var name=value.")
    agents: dict[str, AgentProfile] = Field(description="Named agent profiles: which CLI, model and policy.")
    stages: dict[str, Stage] = Field(description="The stages, keyed by id: a DAG through `needs`.")
    finally_: dict[str, Stage] = Field(default_factory=dict, alias="finally",
                                       description="Stages that always run at the end, whatever happened.")
    max_parallel: int | None = Field(None, ge=1, description="Agents running at once, run-wide. Unset: 4, "
                                     "bridge's default (each agent is a CLI process, and all share the vendor "
                                     "accounts' rate limits); `bridge run --max-parallel N` overrides it.")
    max_cost_usd: float | None = Field(None, gt=0, description="Stop the run past this cost (USD).")
    max_tokens: int | None = Field(None, gt=0, description="Stop the run past this many tokens.")
    tasks: str | None = Field(None, description="Shared task list file (Markdown checklist) in the shared folder.")
    schedule: list[Schedule] = Field(default_factory=list, description="When `bridge schedule run` starts it.")
    notify: list[Notify] = Field(default_factory=list, description="Who hears when a run ends.")

    @field_validator("tasks")
    @classmethod
    def _tasks_in_shared(cls, v: str | None) -> str | None:
        return None if v is None else in_shared(v, "the task list's path")

    @field_validator("stages", "finally_", "agents")
    @classmethod
    def _ids(cls, v: dict[str, Any]) -> dict[str, Any]:
        bad = [why for key in v if (why := bad_id(key))]
        if bad:
            raise ValueError("; ".join(bad))
        return v


def uses_worktrees(playbook: Playbook) -> bool:
    """Whether any stage (loop members and finally included) runs in a git worktree."""
    return any(s.worktree is not None for _, s in [*iter_stages(playbook.stages), *iter_stages(playbook.finally_)])


def iter_stages(stages: dict[str, Stage], prefix: str = "") -> list[tuple[str, Stage]]:
    """Every stage, loop members included, as (id, stage)."""
    out: list[tuple[str, Stage]] = []
    for sid, stage in stages.items():
        out.append((sid, stage))
        if stage.loop is not None:
            out.extend(iter_stages(stage.loop.stages))
    return out


MATRIX_EXTRAS = ("include", "exclude")  # as in GitHub Actions


def matrix_items(matrix: dict[str, list[Any]] | None) -> list[dict[str, Any]]:
    """The matrix's items, as GitHub Actions makes them; [{}] without a matrix.

    The cartesian product of the keys' values (declaration order), minus each `exclude` entry's
    matches (an entry matches an item whose values it all shares); then each `include` entry extends
    every item it matches on the product's keys with its other keys, or is added as an item of its
    own when it matches none.
    """
    if not matrix:
        return [{}]
    keys = [k for k in matrix if k not in MATRIX_EXTRAS]
    items = [dict(zip(keys, combo)) for combo in itertools.product(*(matrix[k] for k in keys))] if keys else []
    for rule in matrix.get("exclude") or []:
        items = [i for i in items if any(i.get(k, _NONE) != v for k, v in rule.items())]
    originals = [dict(i) for i in items]
    for rule in matrix.get("include") or []:
        fixed = {k: v for k, v in rule.items() if k in keys}
        hits = [n for n, o in enumerate(originals) if all(o.get(k) == v for k, v in fixed.items())]
        extend = [n for n in hits if all(items[n].get(k, v) == v or k not in originals[n]
                                          for k, v in rule.items() if k not in keys)]
        for n in extend:
            items[n].update({k: v for k, v in rule.items() if k not in keys})
        if not extend:
            items.append(dict(rule))
    return items


_NONE = object()


CRON_ALIASES = {
    "@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *",
}


def cron_expression(cron: str) -> str:
    """A schedule's `cron:` as five fields (@daily and friends expanded)."""
    return CRON_ALIASES.get(cron.strip().lower(), cron.strip())
