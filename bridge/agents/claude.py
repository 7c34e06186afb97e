"""Claude Code: `claude -p --output-format stream-json --verbose`, its system / assistant / result lines
(or its terminal UI, `claude PROMPT`, for a profile with `interactive: true`)."""

from __future__ import annotations

import json
import time
from typing import Any

from bridge.agents.base import (AgentEvent, Command, ErrorKind, EventKind, Invocation, StreamParser,
                                Usage, as_int, classify_error, folders, full_prompt, option,
                                policy_args, prompt_file, too_long)
from bridge.errors import BridgeError

FILE_TOOLS = {"Edit", "Write", "MultiEdit", "NotebookEdit"}


def build_command(profile: Any, inv: Invocation, cli: dict[str, Any]) -> Command:
    prompt = full_prompt(profile, inv, cli)
    files = {}
    stdin = None
    interactive = bool(getattr(profile, "interactive", False))
    argv = [cli.get("binary", "claude")]
    if interactive:  # the TUI: the prompt as the first argument is submitted as the first message
        if too_long(prompt):
            raise BridgeError("the prompt is too long for an interactive claude session (its only way "
                              "in is an argument); shorten it or drop `interactive: true`")
        argv.append(prompt)  # first: the variadic flags below would swallow it
    else:
        argv.append("-p")
        if too_long(prompt):  # with no prompt argument, -p reads it from stdin (a file here)
            stdin = prompt_file(inv)
            files[stdin] = prompt
        else:
            argv.append(prompt)  # right after -p: the variadic flags below would swallow it
    argv += list(cli.get("extra_args", ()))
    if not interactive:
        argv += ["--output-format", "stream-json", "--verbose"]
    policy = policy_args(profile, cli, inv.shared_dir)
    argv += policy
    env = {**cli.get("env", {})}
    if profile.sandbox == "full-access" or "bypassPermissions" in policy:
        env.update(cli.get("full_access_env") or {})
    dirs = folders(inv)
    if dirs and cli.get("extra_dir_flag"):
        argv += [cli["extra_dir_flag"], *map(str, dirs)]
    argv += option(cli, "model_flag", profile.model)
    argv += option(cli, "max_turns_flag", profile.max_turns)
    if profile.allowed_tools and cli.get("allowed_tools_flag"):
        argv += [cli["allowed_tools_flag"], *profile.allowed_tools]
    if profile.disallowed_tools and cli.get("disallowed_tools_flag"):
        argv += [cli["disallowed_tools_flag"], *profile.disallowed_tools]
    argv += option(cli, "system_prompt_flag", profile.system_prompt)
    if inv.output_schema is not None and not interactive:  # a -p option (the result's structured_output)
        argv += ["--json-schema", json.dumps(inv.output_schema)]
    if inv.resume_session:
        argv += ["--resume", inv.resume_session]
    argv += list(profile.args)
    return Command(argv=tuple(argv), env={**env, **profile.env}, files=files, interactive=interactive,
                   stdin=stdin, cwd=inv.cwd)


class ClaudeParser(StreamParser):
    """system/init, assistant / user content blocks, system/api_retry, and the terminal result."""

    def __init__(self) -> None:
        super().__init__()
        self.retries: list[dict[str, Any]] = []
        self.messages: dict[str, Usage] = {}  # message id -> its usage, as its assistant events say

    def handle(self, obj: dict[str, Any]) -> list[AgentEvent]:
        kind = obj.get("type", "")
        if obj.get("session_id"):
            self.session_id = obj["session_id"]
        if kind == "system":
            if obj.get("subtype") == "init":
                return [AgentEvent(EventKind.SESSION, self.session_id or "", obj)]
            if obj.get("subtype") == "api_retry":
                self.retries.append(obj)
                why = obj.get("error") or obj.get("error_status") or ""
                return [AgentEvent(EventKind.ERROR, f"API retry: {why}", obj)]
            return []
        if kind == "assistant":
            return self._assistant(obj.get("message") or {})
        if kind == "result":
            return self._result(obj)
        return []

    def _assistant(self, message: dict[str, Any]) -> list[AgentEvent]:
        events = self._running_usage(message)
        for block in message.get("content") or []:
            t = block.get("type")
            if t == "text" and block.get("text"):
                events.append(AgentEvent(EventKind.MESSAGE, block["text"], block))
            elif t == "tool_use":
                name, args = block.get("name", ""), block.get("input") or {}
                if name == "Bash":
                    events.append(AgentEvent(EventKind.COMMAND, str(args.get("command", "")), block))
                elif name in FILE_TOOLS:
                    events.append(AgentEvent(EventKind.FILE_CHANGE, str(args.get("file_path", "")), block))
                else:
                    events.append(AgentEvent(EventKind.TOOL, name, block))
        return events

    def _running_usage(self, message: dict[str, Any]) -> list[AgentEvent]:
        """Each model call's usage as its assistant events carry it: the input exactly, the output as
        counted when the message started (the result has the final figures). So a session stopped
        before its result (its outputs complete, a budget) still counts its calls, and a budget sees
        a long session grow."""
        u, mid = message.get("usage"), message.get("id")
        if not isinstance(u, dict) or not mid:
            return []
        self.messages[str(mid)] = _usage(u)
        self.usage = Usage(sum(m.input_tokens for m in self.messages.values()),
                           sum(m.output_tokens for m in self.messages.values()),
                           sum(m.cached_tokens for m in self.messages.values()))
        return [AgentEvent(EventKind.USAGE, "", {"usage": self.usage})]

    def _result(self, obj: dict[str, Any]) -> list[AgentEvent]:
        self.final_message = str(obj.get("result") or "")
        u = obj.get("usage") or {}
        self.usage = _usage(u)
        self.cost_usd = obj.get("total_cost_usd")
        self.num_turns = obj.get("num_turns")
        self.structured_output = obj.get("structured_output")
        denials = obj.get("permission_denials") or []
        self.permission_denials = tuple(_denial(d) for d in denials)
        subtype, is_error = obj.get("subtype", ""), bool(obj.get("is_error"))
        text = self.final_message or ", ".join(obj.get("errors") or []) or subtype
        if subtype == "error_max_turns":
            self.fail(ErrorKind.MAX_TURNS, f"stopped after {self.num_turns} turns (max turns)")
        elif is_error or subtype.startswith("error"):
            status = obj.get("api_error_status")
            self.fail(classify_error(text, status if isinstance(status, int) else None), text)
            delay = (self.retries[-1].get("retry_delay_ms") if self.retries else None)
            if self.error is ErrorKind.RATE_LIMIT and self.reset_at is None and isinstance(delay, (int, float)):
                self.reset_at = time.time() + delay / 1000  # its own wait, from the API's retry-after
        elif denials:  # the trap: a denied tool still says subtype "success", is_error false
            self.fail(ErrorKind.PERMISSION_DENIED, "permission denied: " + ", ".join(self.permission_denials))
        else:
            self.success = True
        return [AgentEvent(EventKind.USAGE, "", {"usage": self.usage, "total_cost_usd": self.cost_usd}),
                AgentEvent(EventKind.RESULT, self.final_message, obj)]


def _usage(u: dict[str, Any]) -> Usage:
    """Claude's usage: input_tokens excludes the cache reads and writes, which also count as input."""
    cached = as_int(u.get("cache_read_input_tokens"))
    return Usage(as_int(u.get("input_tokens")) + as_int(u.get("cache_creation_input_tokens")) + cached,
                 as_int(u.get("output_tokens")), cached)


def _denial(d: Any) -> str:
    if not isinstance(d, dict):
        return str(d)
    args = d.get("tool_input") or {}
    target = args.get("file_path") or args.get("command") or args.get("path") or ""
    return f"{d.get('tool_name', '?')}({target})" if target else str(d.get("tool_name", "?"))


def new_parser(cli: dict[str, Any]) -> ClaudeParser:
    return ClaudeParser()


def new_record_parser(cli: dict[str, Any]) -> ClaudeParser:
    """Claude Code's record of a session holds the assistant lines of its stream-json."""
    return ClaudeParser()

