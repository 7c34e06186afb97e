"""Any other CLI: an argv template from the profile or configs, plain-text or JSONL output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bridge.agents.base import (AgentEvent, Command, ErrorKind, EventKind, Invocation, Outcome,
                                StreamParser, Usage, as_int, classify_error, dig, folders,
                                full_prompt, option, prompt_file, too_long)
from bridge.errors import BridgeError
from bridge.templates import render

PROMPT_FILE = "prompt.txt"


def build_command(profile: Any, inv: Invocation, cli: dict[str, Any]) -> Command:
    template = list(profile.command or cli.get("command") or [])
    if not template:
        raise BridgeError(f"CLI {profile.cli!r} has no command: give the profile `command:` (an argv list)")
    prompt = full_prompt(profile, inv, cli)
    files: dict[Path, str] = {}
    uses_file = any("prompt_file" in item for item in template)
    pfile = prompt_file(inv, PROMPT_FILE) if uses_file else None
    if pfile is not None:
        files[pfile] = prompt
    if any("prompt" in item.replace("prompt_file", "") for item in template) and too_long(prompt):
        raise BridgeError(f"the prompt is {len(prompt.encode()) // 1024} KiB, too long for an argv item; "
                          "use {{ prompt_file }} in the command instead of {{ prompt }}")
    context = {"prompt": prompt, "prompt_file": str(pfile or ""), "shared": str(inv.shared_dir),
               "model": profile.model or "", "cwd": str(inv.cwd)}
    argv = [render(item, context, f"agents.command[{i}]") for i, item in enumerate(template)]
    binary = cli.get("binary")
    if binary and argv and argv[0] == Path(binary).name and binary != argv[0]:
        argv[0] = binary  # configs may point the name at an absolute path
    if profile.command is None:  # the profile's own template is taken literally; configs' gets flags
        argv += option(cli, "model_flag", profile.model)
        if cli.get("extra_dir_flag"):
            for d in folders(inv):
                argv += [cli["extra_dir_flag"], str(d)]
    argv += list(profile.args)
    return Command(argv=tuple(argv), env={**cli.get("env", {}), **profile.env}, files=files, cwd=inv.cwd)


class TextParser:
    """Plain output: the final message is stdout, success is exit 0."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    @property
    def terminal(self) -> bool:
        return False

    def feed(self, line: str) -> list[AgentEvent]:
        self.lines.append(line)
        return [AgentEvent(EventKind.MESSAGE, line)]

    def finish(self, exit_code: int | None, stderr_tail: str = "") -> Outcome:
        text = "\n".join(self.lines).strip()
        if exit_code == 0:
            return Outcome(True, final_message=text)
        tail = stderr_tail.strip()
        kind = classify_error(tail) if tail else ErrorKind.CRASHED
        if kind is ErrorKind.API:
            kind = ErrorKind.CRASHED
        code = "was killed by a signal" if exit_code is None else f"exited {exit_code}"
        last = tail.splitlines()[-1][:300] if tail else ""
        return Outcome(False, kind, code + (f": {last}" if last else ""), final_message=text)


class JsonlParser(StreamParser):
    """JSONL with configured field paths (see `jsonl:` in configs/clis.yaml)."""

    def __init__(self, fields: dict[str, Any]) -> None:
        super().__init__()
        self.f = fields

    def _is(self, obj: dict[str, Any], spec: Any) -> bool:
        return isinstance(spec, dict) and dig(obj, self.f.get("type", "type")) == spec.get("type")

    def handle(self, obj: dict[str, Any]) -> list[AgentEvent]:
        events: list[AgentEvent] = []
        sid = dig(obj, self.f.get("session", "session_id"))
        if sid and sid != self.session_id:
            self.session_id = str(sid)
            events.append(AgentEvent(EventKind.SESSION, self.session_id, obj))
        msg = self.f.get("message")
        if self._is(obj, msg):
            text = str(dig(obj, msg.get("text", "text")) or "")
            self.final_message = text
            events.append(AgentEvent(EventKind.MESSAGE, text, obj))
        term = self.f.get("terminal")
        if self._is(obj, term):
            usage = self.f.get("usage") or {}
            self.usage = Usage(as_int(dig(obj, usage.get("input_tokens", ""))),
                               as_int(dig(obj, usage.get("output_tokens", ""))))
            cost = dig(obj, self.f.get("cost", "")) if self.f.get("cost") else None
            self.cost_usd = float(cost) if isinstance(cost, (int, float)) else None
            if term.get("text") and dig(obj, term["text"]) is not None:
                self.final_message = str(dig(obj, term["text"]))
            ok = term.get("success") or {}
            if not ok or dig(obj, ok.get("field", "")) == ok.get("equals"):
                self.success = True
            else:
                err = dig(obj, term.get("error", "error"))
                text = str(err.get("message") if isinstance(err, dict) else err or "the CLI reported a failure")
                self.fail(classify_error(text), text)
            events.append(AgentEvent(EventKind.RESULT, self.final_message, obj))
        return events


def new_parser(cli: dict[str, Any]) -> TextParser | JsonlParser:
    if cli.get("output", "text") == "jsonl":
        return JsonlParser(cli.get("jsonl") or {})
    return TextParser()
