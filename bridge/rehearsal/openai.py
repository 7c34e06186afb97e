"""OpenAI Responses API, as Codex CLI speaks it: SSE events ending in response.completed."""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

from bridge.rehearsal.script import ApiError, Selection, Step
from bridge.rehearsal.wire import (
    Answer, Conversation, ToolCall, chunk_text, json_answer, retry_after_headers, sse_answer, user_text,
)

NAME = "openai"
CLI = "codex"
_ERRORS = {
    400: ("invalid_request_error", None), 401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", None), 404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"), 500: ("server_error", None), 503: ("server_error", None),
    529: ("server_error", None),
}
_MODEL_TURNS = {"function_call", "custom_tool_call", "local_shell_call"}
_CWD = re.compile(r"<cwd>([^<]+)</cwd>")


def handles(method: str, path: str) -> bool:
    return method == "POST" and path.rstrip("/").endswith("/responses")


def side_answer(path: str, body: dict[str, Any]) -> Answer | None:
    return None


def _texts(item: dict[str, Any]) -> list[str]:
    content = item.get("content")
    if isinstance(content, str):
        return [content]
    return [c.get("text", "") for c in content or [] if isinstance(c, dict)]


def read(path: str, body: dict[str, Any]) -> Conversation:
    items = [i for i in body.get("input", []) or [] if isinstance(i, dict)]
    messages = [i for i in items if i.get("type", "message") == "message"]
    users = [m for m in messages if m.get("role") == "user"]
    prompt = next((p for p in (user_text(_texts(m)) for m in users) if p), "")
    turns = sum(1 for i in items if i.get("type") in _MODEL_TURNS
                or (i.get("type", "message") == "message" and i.get("role") == "assistant"))
    everything = "\n".join(t for m in messages for t in _texts(m))
    cwd = _CWD.search(everything)
    tools = frozenset(t.get("name", t.get("type", "")) for t in body.get("tools", []) or [] if isinstance(t, dict))
    return Conversation(prompt=prompt, turn=turns, stream=bool(body.get("stream", False)),
                        model=str(body.get("model", "gpt-5.5")), tools=tools,
                        cwd=cwd.group(1).strip() if cwd else None)


def _patch(path: str, content: str) -> str:
    lines = content.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    body = "".join(f"+{line}\n" for line in lines)
    return f"*** Begin Patch\n*** Add File: {path}\n{body}*** End Patch\n"


def _heredoc(path: str, content: str) -> str:
    marker = "REHEARSAL_EOF"
    while marker in content:
        marker += "_"
    tail = "" if content.endswith("\n") or not content else "\n"
    quoted = "'" + path.replace("'", "'\\''") + "'"
    return f"mkdir -p \"$(dirname {quoted})\" && cat > {quoted} <<'{marker}'\n{content}{tail}{marker}\n"


def _shell(cmd: str, conv: Conversation) -> ToolCall:
    if "exec_command" in conv.tools or not conv.tools:
        return ToolCall("exec_command", {"cmd": cmd})
    return ToolCall("shell", {"command": ["bash", "-lc", cmd]})


def action(step: Step, sel: Selection, conv: Conversation) -> str | ToolCall:
    """The scripted step as Codex's own tools: apply_patch (a file), exec_command (a command)."""
    if step.write_file is not None:
        path = conv.absolute(sel.expand(step.write_file.path))
        content = sel.expand(step.write_file.content)
        if "apply_patch" in conv.tools:
            return ToolCall("apply_patch", free_text=_patch(path, content))
        return _shell(_heredoc(path, content), conv)
    if step.read_file is not None:
        path = sel.expand(step.read_file)
        return _shell("cat '" + path.replace("'", "'\\''") + "'", conv)
    if step.shell is not None:
        return _shell(sel.expand(step.shell), conv)
    if step.structured is not None:
        return json.dumps(step.structured)  # --output-schema is a text format: answer JSON text
    return sel.expand(step.text or "")


def _item(act: str | ToolCall) -> dict[str, Any]:
    call_id = f"call_{uuid.uuid4().hex[:20]}"
    if isinstance(act, str):
        return {"type": "message", "id": f"msg_{uuid.uuid4().hex[:20]}", "role": "assistant",
                "status": "completed", "content": [{"type": "output_text", "text": act, "annotations": []}]}
    if act.free_text is not None:
        return {"type": "custom_tool_call", "id": f"ctc_{uuid.uuid4().hex[:20]}", "status": "completed",
                "call_id": call_id, "name": act.name, "input": act.free_text}
    return {"type": "function_call", "id": f"fc_{uuid.uuid4().hex[:20]}", "status": "completed",
            "call_id": call_id, "name": act.name, "arguments": json.dumps(act.arguments)}


def _usage(conv: Conversation, item: dict[str, Any]) -> dict[str, Any]:
    inp, out = 20 + len(conv.prompt) // 4, max(1, len(json.dumps(item)) // 8)
    return {"input_tokens": inp, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": out,
            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": inp + out}


def reply(conv: Conversation, act: str | ToolCall) -> Answer:
    item = _item(act)
    resp_id = f"resp_{uuid.uuid4().hex[:24]}"
    response = {"id": resp_id, "object": "response", "created_at": int(time.time()), "status": "completed",
                "model": conv.model, "output": [item], "usage": _usage(conv, item)}
    if not conv.stream:
        return json_answer(200, response)
    pending = {**response, "status": "in_progress", "output": [], "usage": None}
    events: list[tuple[str | None, Any]] = [
        ("response.created", {"type": "response.created", "response": pending}),
        ("response.in_progress", {"type": "response.in_progress", "response": pending}),
    ]
    base = {"output_index": 0, "item_id": item["id"]}
    if item["type"] == "message":
        text = item["content"][0]["text"]
        part = {"type": "output_text", "text": "", "annotations": []}
        events.append(("response.output_item.added", {"type": "response.output_item.added", "output_index": 0,
                                                      "item": {**item, "status": "in_progress", "content": []}}))
        events.append(("response.content_part.added", {"type": "response.content_part.added", **base,
                                                       "content_index": 0, "part": part}))
        for piece in chunk_text(text):
            events.append(("response.output_text.delta", {"type": "response.output_text.delta", **base,
                                                          "content_index": 0, "delta": piece}))
        events.append(("response.output_text.done", {"type": "response.output_text.done", **base,
                                                     "content_index": 0, "text": text}))
        events.append(("response.content_part.done", {"type": "response.content_part.done", **base,
                                                      "content_index": 0, "part": {**part, "text": text}}))
    elif item["type"] == "function_call":
        events.append(("response.output_item.added", {"type": "response.output_item.added", "output_index": 0,
                                                      "item": {**item, "status": "in_progress", "arguments": ""}}))
        events.append(("response.function_call_arguments.delta", {
            "type": "response.function_call_arguments.delta", **base, "delta": item["arguments"]}))
        events.append(("response.function_call_arguments.done", {
            "type": "response.function_call_arguments.done", **base, "arguments": item["arguments"]}))
    else:
        events.append(("response.output_item.added", {"type": "response.output_item.added", "output_index": 0,
                                                      "item": {**item, "status": "in_progress", "input": ""}}))
        events.append(("response.custom_tool_call_input.delta", {
            "type": "response.custom_tool_call_input.delta", **base, "delta": item["input"]}))
        events.append(("response.custom_tool_call_input.done", {
            "type": "response.custom_tool_call_input.done", **base, "input": item["input"]}))
    events.append(("response.output_item.done", {"type": "response.output_item.done", "output_index": 0,
                                                 "item": item}))
    events.append(("response.completed", {"type": "response.completed", "response": response}))
    numbered = [(name, {**data, "sequence_number": n}) for n, (name, data) in enumerate(events)]
    return sse_answer(numbered, (("x-request-id", f"req_{resp_id}"),))


def error(err: ApiError) -> Answer:
    kind, code = _ERRORS.get(err.status, ("server_error", None))
    body: dict[str, Any] = {"error": {"message": err.message, "type": err.type or kind, "param": None,
                                      "code": code}}
    if err.retry_after is not None:
        # Codex reads these on a usage limit to say when to try again.
        body["error"]["resets_in_seconds"] = int(err.retry_after)
        body["error"]["resets_at"] = int(time.time() + err.retry_after)
    return json_answer(err.status, body, (("x-request-id", "req_rehearsal_error"),
                                          *retry_after_headers(err.retry_after)))
