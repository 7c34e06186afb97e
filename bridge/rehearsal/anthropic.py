"""Anthropic Messages API, as Claude Code speaks it: SSE with `event:` lines, or plain JSON."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from bridge.rehearsal.script import ApiError, Selection, Step
from bridge.rehearsal.wire import (
    Answer, Conversation, ToolCall, chunk_text, estimate_tokens, json_answer, retry_after_headers,
    sse_answer, user_text,
)

NAME = "anthropic"
CLI = "claude"
_ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 429: "rate_limit_error", 500: "api_error", 503: "api_error",
    529: "overloaded_error",
}
_CWD = re.compile(r"Primary working directory:\s*(\S+)")


def handles(method: str, path: str) -> bool:
    return method == "POST" and path.startswith("/v1/messages")


def side_answer(path: str, body: dict[str, Any]) -> Answer | None:
    """Endpoints that are not a model turn (token counting)."""
    if path.startswith("/v1/messages/count_tokens"):
        return json_answer(200, {"input_tokens": estimate_tokens(body)})
    return None


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    return [b.get("text", "") for b in content or [] if isinstance(b, dict) and b.get("type") == "text"]


def read(path: str, body: dict[str, Any]) -> Conversation:
    messages = [m for m in body.get("messages", []) if isinstance(m, dict)]
    first_user = next((m for m in messages if m.get("role") == "user"), {})
    system = body.get("system")
    system_text = system if isinstance(system, str) else "\n".join(_texts(system))
    cwd = _CWD.search(system_text)
    return Conversation(
        prompt=user_text(_texts(first_user.get("content"))),
        turn=sum(1 for m in messages if m.get("role") == "assistant"),
        stream=bool(body.get("stream")),
        model=str(body.get("model", "claude-rehearsal")),
        tools=frozenset(t.get("name", "") for t in body.get("tools", []) or [] if isinstance(t, dict)),
        cwd=cwd.group(1) if cwd else None,
    )


def action(step: Step, sel: Selection, conv: Conversation) -> str | ToolCall:
    """The scripted step as Claude Code's own tools: Write, Read, Bash, StructuredOutput."""
    if step.write_file is not None:
        path = conv.absolute(sel.expand(step.write_file.path))  # Write insists on absolute paths
        return ToolCall("Write", {"file_path": path, "content": sel.expand(step.write_file.content)})
    if step.read_file is not None:
        path = conv.absolute(sel.expand(step.read_file))
        return ToolCall("Read", {"file_path": path})
    if step.shell is not None:
        return ToolCall("Bash", {"command": sel.expand(step.shell), "description": "rehearsal step"})
    if step.structured is not None:
        if "StructuredOutput" in conv.tools:
            return ToolCall("StructuredOutput", dict(step.structured) if isinstance(step.structured, dict)
                            else {"value": step.structured})
        return json.dumps(step.structured)
    return sel.expand(step.text or "")


def reply(conv: Conversation, act: str | ToolCall) -> Answer:
    msg_id = f"msg_rehearsal_{uuid.uuid4().hex[:16]}"
    usage = {"input_tokens": 10 + len(conv.prompt) // 4, "output_tokens": 0,
             "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    if isinstance(act, ToolCall):
        block: dict[str, Any] = {"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:20]}",
                                 "name": act.name, "input": act.arguments}
        stop = "tool_use"
        out_tokens = max(1, len(json.dumps(act.arguments)) // 4)
    else:
        block = {"type": "text", "text": act}
        stop = "end_turn"
        out_tokens = max(1, len(act) // 4)
    if not conv.stream:
        message = {"id": msg_id, "type": "message", "role": "assistant", "model": conv.model,
                   "content": [block], "stop_reason": stop, "stop_sequence": None,
                   "usage": {**usage, "output_tokens": out_tokens}}
        return json_answer(200, message, (("request-id", f"req_{msg_id}"),))
    start = {"type": "message_start", "message": {
        "id": msg_id, "type": "message", "role": "assistant", "model": conv.model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {**usage, "output_tokens": 1}}}
    events: list[tuple[str | None, Any]] = [("message_start", start)]
    if block["type"] == "text":
        events.append(("content_block_start", {"type": "content_block_start", "index": 0,
                                               "content_block": {"type": "text", "text": ""}}))
        for piece in chunk_text(act):  # type: ignore[arg-type]
            events.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                   "delta": {"type": "text_delta", "text": piece}}))
    else:
        events.append(("content_block_start", {"type": "content_block_start", "index": 0,
                                               "content_block": {**block, "input": {}}}))
        events.append(("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
            "type": "input_json_delta", "partial_json": json.dumps(block["input"])}}))
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                           "usage": {"output_tokens": out_tokens}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return sse_answer(events, (("request-id", f"req_{msg_id}"),))


def error(err: ApiError) -> Answer:
    body = {"type": "error", "error": {"type": err.type or _ERROR_TYPES.get(err.status, "api_error"),
                                       "message": err.message}}
    headers = (("request-id", "req_rehearsal_error"), *retry_after_headers(err.retry_after))
    return json_answer(err.status, body, headers)
