"""Gemini CLI: `gemini -p --output-format stream-json --skip-trust`, init / message / tool / result."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from bridge.agents.base import (AgentEvent, Command, ErrorKind, EventKind, Invocation, StreamParser, Usage,
                                as_int, classify_error, folders, full_prompt, option, policy_args,
                                prompt_file, too_long)
from bridge.errors import BridgeError

FILE_TOOLS = {"write_file", "replace", "edit"}
SHELL_TOOLS = {"run_shell_command"}
STDIN_NOTE = "Follow the instructions above."
POLICY = "gemini-policy.toml"
MAX_TURNS_TEXT = re.compile(r"max(imum)? session turns", re.I)


def shared_policy(cli: dict[str, Any], shared: Path) -> str:
    """A policy-engine file denying edits whose file_path is not inside the shared folder."""
    regex = '"file_path":"(?!' + re.escape(str(shared)).replace("\\-", "-") + '/)'
    return str(cli.get("shared_policy", "")).replace("{shared_regex}", json.dumps(regex))


def build_command(profile: Any, inv: Invocation, cli: dict[str, Any]) -> Command:
    prompt = full_prompt(profile, inv, cli)
    files = {}
    stdin = None
    interactive = bool(getattr(profile, "interactive", False))
    if interactive and too_long(prompt):
        raise BridgeError("the prompt is too long for an interactive gemini session (its only way in "
                          "is an argument); shorten it or drop `interactive: true`")
    if too_long(prompt):  # -p is appended to stdin, which is a file here
        stdin = prompt_file(inv)
        files[stdin] = prompt
        prompt = STDIN_NOTE
    # interactive: the TUI, -i submits the prompt and stays (bridge types /quit at the end)
    argv = [cli.get("binary", "gemini"), "-i" if interactive else "-p", prompt]
    argv += list(cli.get("extra_args", ()))
    argv += ["--skip-trust"] if interactive else ["--output-format", "stream-json", "--skip-trust"]
    policy = policy_args(profile, cli, inv.shared_dir)
    if "{shared_policy}" in policy:
        if inv.stage_dir is None:
            raise ValueError("gemini's read-only policy needs inv.stage_dir to write its policy file")
        files[inv.stage_dir / POLICY] = shared_policy(cli, inv.shared_dir)
        policy = [str(inv.stage_dir / POLICY) if a == "{shared_policy}" else a for a in policy]
    argv += policy
    for d in folders(inv):
        argv += [cli.get("extra_dir_flag", "--include-directories"), str(d)]
    argv += option(cli, "model_flag", profile.model)
    if profile.allowed_tools and cli.get("allowed_tools_flag"):
        argv += [cli["allowed_tools_flag"], *profile.allowed_tools]
    if inv.resume_session:
        argv += ["--resume", inv.resume_session]
    argv += list(profile.args)
    return Command(argv=tuple(argv), env={**cli.get("env", {}), **profile.env}, files=files,
                   interactive=interactive, stdin=stdin, cwd=inv.cwd)


class GeminiParser(StreamParser):
    def __init__(self) -> None:
        super().__init__()
        self._text: list[str] = []
        self.errors: list[str] = []
        self.denials: list[str] = []

    def handle(self, obj: dict[str, Any]) -> list[AgentEvent]:
        kind = obj.get("type", "")
        if kind == "init":
            self.session_id = obj.get("session_id") or self.session_id
            return [AgentEvent(EventKind.SESSION, self.session_id or "", obj)]
        if kind == "message":
            if obj.get("role") != "assistant":
                return []
            content = str(obj.get("content") or "")
            if not obj.get("delta"):
                self._text = []
            self._text.append(content)
            self.final_message = "".join(self._text)
            return [AgentEvent(EventKind.MESSAGE, content, obj)]
        if kind == "tool_use":
            self._text = []  # the final message is the text after the last tool call
            return [_tool_event(obj.get("tool_name", ""), obj.get("parameters") or {}, obj)]
        if kind == "tool_result" and (obj.get("error") or {}).get("type") == "policy_violation":
            self.denials.append(str(obj.get("tool_id") or "tool"))
            return [AgentEvent(EventKind.ERROR, "denied by policy", obj)]
        if kind == "error":
            message = str(obj.get("message") or "")
            self.errors.append(message)
            return [AgentEvent(EventKind.ERROR, message, obj)]
        if kind == "result":
            stats = obj.get("stats") or {}
            self.usage = Usage(as_int(stats.get("input_tokens") or stats.get("input")),
                               as_int(stats.get("output_tokens")), as_int(stats.get("cached")))
            self.permission_denials = tuple(self.denials)
            if obj.get("status") == "success" and self.denials:
                self.fail(ErrorKind.PERMISSION_DENIED, "denied by policy: " + ", ".join(self.denials))
            elif obj.get("status") == "success":
                self.success = True
            else:
                err = obj.get("error") or {}
                message = str(err.get("message") if isinstance(err, dict) else err) or "; ".join(self.errors)
                kind = (ErrorKind.MAX_TURNS if MAX_TURNS_TEXT.search(message)
                        else classify_error(message or "error", _status(err)))
                self.fail(kind, message or "gemini reported an error")
            return [AgentEvent(EventKind.USAGE, "", stats), AgentEvent(EventKind.RESULT, self.final_message, obj)]
        return []


def _tool_event(name: str, params: dict[str, Any], obj: dict[str, Any]) -> AgentEvent:
    if name in SHELL_TOOLS:
        return AgentEvent(EventKind.COMMAND, str(params.get("command", "")), obj)
    if name in FILE_TOOLS:
        return AgentEvent(EventKind.FILE_CHANGE, str(params.get("file_path", "")), obj)
    return AgentEvent(EventKind.TOOL, name, obj)


def _status(err: Any) -> int | None:
    code = err.get("code") if isinstance(err, dict) else None
    return code if isinstance(code, int) else None


def new_parser(cli: dict[str, Any]) -> GeminiParser:
    return GeminiParser()


class GeminiRecordParser(StreamParser):
    """Gemini CLI's chat record: a "gemini" line per model call, written again as it grows (same
    id), with its tokens, its text and its tool calls; "$set" and "user" lines say nothing here."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[str, Usage] = {}  # message id -> its tokens
        self.seen: set[str] = set()  # tool call ids and message texts already reported

    def handle(self, obj: dict[str, Any]) -> list[AgentEvent]:
        if obj.get("type") != "gemini":
            return []
        mid, events = str(obj.get("id") or len(self.calls)), []
        tokens = obj.get("tokens")
        if isinstance(tokens, dict):
            self.calls[mid] = Usage(as_int(tokens.get("input")), as_int(tokens.get("output")),
                                    as_int(tokens.get("cached")))
            self.usage = Usage(*(sum(getattr(u, f) for u in self.calls.values())
                                 for f in ("input_tokens", "output_tokens", "cached_tokens")))
            events.append(AgentEvent(EventKind.USAGE, "", {"usage": self.usage}))
        text = obj.get("content")
        if isinstance(text, str) and text and f"{mid}:{text}" not in self.seen:
            self.seen.add(f"{mid}:{text}")
            self.final_message = text
            events.append(AgentEvent(EventKind.MESSAGE, text, obj))
        for call in obj.get("toolCalls") or []:
            if isinstance(call, dict) and str(call.get("id")) not in self.seen:
                self.seen.add(str(call.get("id")))
                events.append(_tool_event(str(call.get("name") or ""), call.get("args") or {}, call))
        return events


def new_record_parser(cli: dict[str, Any]) -> GeminiRecordParser:
    return GeminiRecordParser()

