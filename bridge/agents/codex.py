"""OpenAI Codex CLI: `codex exec --json`, its JSONL events (thread / turn / item)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from bridge.agents.base import (AgentEvent, Command, ErrorKind, EventKind, Invocation, Outcome,
                                StreamParser,
                                Usage, as_int, classify_error, folders, full_prompt, option,
                                policy_args, prompt_file, too_long)

LAST_MESSAGE = "last_message.txt"
SCHEMA = "output-schema.json"


def in_git_repo(path: Path) -> bool:
    """A real repository or worktree above `path` (a stray, empty .git folder does not count)."""
    for folder in (path, *path.parents):
        dot = folder / ".git"
        if (dot / "HEAD").is_file():
            return True
        if dot.is_file():
            try:
                return dot.read_text(errors="replace").startswith("gitdir:")
            except OSError:
                return False
    return False


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def build_command(profile: Any, inv: Invocation, cli: dict[str, Any]) -> Command:
    prompt = full_prompt(profile, inv, cli)
    files: dict[Path, str] = {}
    stdin = None
    if too_long(prompt):  # `-` makes codex read the prompt from stdin (a file, never a pipe)
        stdin = prompt_file(inv)
        files[stdin] = prompt
        prompt = "-"
    argv = [cli.get("binary", "codex"), "exec"]
    if inv.resume_session:
        argv.append("resume")
    argv += list(cli.get("extra_args", ()))
    argv += ["--json"]
    if not in_git_repo(inv.cwd):
        argv.append("--skip-git-repo-check")
    if inv.stage_dir is not None:
        argv += ["-o", str(inv.stage_dir / LAST_MESSAGE)]
    dirs = folders(inv)
    if inv.resume_session:
        # `exec resume` takes neither -C, --sandbox nor --add-dir: the same policy as config overrides
        policy = policy_args(profile, cli, inv.shared_dir)
        if "--dangerously-bypass-approvals-and-sandbox" in policy:
            argv.append("--dangerously-bypass-approvals-and-sandbox")
        else:
            mode = policy[-1] if policy else "read-only"
            argv += ["-c", f"sandbox_mode={_toml_str(mode)}", "-c",
                     "sandbox_workspace_write.writable_roots=[" + ",".join(_toml_str(str(d)) for d in dirs) + "]"]
    else:
        argv += ["-C", str(inv.cwd)]
        argv += policy_args(profile, cli, inv.shared_dir)
        for d in dirs:
            argv += [cli.get("extra_dir_flag", "--add-dir"), str(d)]
    argv += option(cli, "model_flag", profile.model)
    if inv.output_schema is not None:
        if inv.stage_dir is None:
            raise ValueError("an output schema needs inv.stage_dir to write it into")
        schema = inv.stage_dir / SCHEMA
        files[schema] = json.dumps(inv.output_schema, indent=2)
        argv += ["--output-schema", str(schema)]  # passed to the model, NOT enforced by codex
    argv += list(profile.args)
    if inv.resume_session:
        argv.append(inv.resume_session)
    argv.append(prompt)
    return Command(argv=tuple(argv), env={**cli.get("env", {}), **profile.env}, files=files,
                   stdin=stdin, cwd=inv.cwd)


class CodexParser(StreamParser):
    """thread.started, turn.*, item.* (agent_message, command_execution, file_change...), error."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[str] = []

    def handle(self, obj: dict[str, Any]) -> list[AgentEvent]:
        kind = obj.get("type", "")
        if kind == "thread.started":
            self.session_id = obj.get("thread_id") or self.session_id
            return [AgentEvent(EventKind.SESSION, self.session_id or "", obj)]
        if kind in ("item.started", "item.updated", "item.completed"):
            return self._item(obj.get("item") or {}, done=kind == "item.completed")
        if kind == "turn.completed":
            u = obj.get("usage") or {}
            # cumulative per thread: the last one is the total, never sum them
            self.usage = Usage(as_int(u.get("input_tokens")), as_int(u.get("output_tokens")),
                               as_int(u.get("cached_input_tokens")))
            if self.success is None and self.permission_denials:  # Claude's rule too: a refused write fails
                self.fail(ErrorKind.PERMISSION_DENIED, "permission denied: " + ", ".join(self.permission_denials)
                          + " (blocked by the sandbox; give the profile a sandbox that allows it)")
            elif self.success is None:
                self.success = True
            return [AgentEvent(EventKind.USAGE, "", u), AgentEvent(EventKind.RESULT, self.final_message, obj)]
        if kind == "turn.failed":
            message = str((obj.get("error") or {}).get("message") or "; ".join(self.errors) or "turn failed")
            self.fail(_kind(message), message)
            return [AgentEvent(EventKind.RESULT, message, obj)]
        if kind == "error":
            message = str(obj.get("message") or "")
            self.errors.append(message)
            return [AgentEvent(EventKind.ERROR, message, obj)]
        return []

    def finish(self, exit_code: int | None, stderr_tail: str = "") -> Outcome:
        # a patch the sandbox refused shows only on stderr (`codex exec` reports no item for it)
        refused = _REJECTED.search(stderr_tail or "")
        if refused and self.success and not self.malformed:
            self.success = None
            why = f"permission denied: {refused.group(0).strip()}"
            self.fail(ErrorKind.PERMISSION_DENIED, f"{why}; give the profile a sandbox that allows the write")
        return super().finish(exit_code, stderr_tail)

    def _item(self, item: dict[str, Any], done: bool) -> list[AgentEvent]:
        t = item.get("type") or item.get("item_type") or ""
        if t == "agent_message":
            if not done:
                return []
            self.final_message = str(item.get("text") or "")
            return [AgentEvent(EventKind.MESSAGE, self.final_message, item)]
        if t == "command_execution":
            return [AgentEvent(EventKind.COMMAND, str(item.get("command") or ""), item)]
        if t == "file_change" and done:
            paths = ", ".join(str(c.get("path")) for c in item.get("changes") or [])
            if item.get("status") == "failed":  # the sandbox refused the patch
                self.permission_denials += (f"write({paths})",)
            return [AgentEvent(EventKind.FILE_CHANGE, paths, item)]
        if t in ("mcp_tool_call", "web_search") and done:
            return [AgentEvent(EventKind.TOOL, str(item.get("tool") or item.get("query") or t), item)]
        if t == "error" and done:  # a non-fatal warning (e.g. unknown model metadata)
            return [AgentEvent(EventKind.ERROR, str(item.get("message") or ""), item)]
        return []


_REJECTED = re.compile(r"(?:patch rejected|blocked by (?:the )?(?:read-only )?sandbox)[^\n]*", re.I)


def _kind(message: str) -> ErrorKind:
    return classify_error(message)


def new_parser(cli: dict[str, Any]) -> CodexParser:
    return CodexParser()


class CodexRecordParser(StreamParser):
    """Codex's rollout file: an event_msg token_count after each model call, whose
    total_token_usage is the thread's running total (never sum them), and the agent's messages."""

    def handle(self, obj: dict[str, Any]) -> list[AgentEvent]:
        payload = obj.get("payload") or {}
        if obj.get("type") != "event_msg" or not isinstance(payload, dict):
            return []
        if payload.get("type") == "token_count":
            u = (payload.get("info") or {}).get("total_token_usage") or {}
            if not u:
                return []
            self.usage = Usage(as_int(u.get("input_tokens")), as_int(u.get("output_tokens")),
                               as_int(u.get("cached_input_tokens")))
            return [AgentEvent(EventKind.USAGE, "", {"usage": self.usage})]
        item = payload.get("item") or {}
        if payload.get("type") == "item_completed" and item.get("type") == "AgentMessage":
            text = "".join(str(c.get("text") or "") for c in item.get("content") or [] if isinstance(c, dict))
            return [AgentEvent(EventKind.MESSAGE, text, item)] if text else []
        return []


def new_record_parser(cli: dict[str, Any]) -> CodexRecordParser:
    return CodexRecordParser()

