"""Gemini API (generativelanguage v1beta), as Gemini CLI speaks it: data-only SSE or plain JSON."""

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

NAME = "gemini"
CLI = "gemini"
_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 529: "UNAVAILABLE"}
_PATH = re.compile(r"^/v1(?:beta|alpha)?/models/([^/:]+):(\w+)")
_CWD = re.compile(r"Workspace Directories:\**\s*\n\s*-\s*(/\S+)")


def handles(method: str, path: str) -> bool:
    return method == "POST" and bool(_PATH.match(path))


def side_answer(path: str, body: dict[str, Any]) -> Answer | None:
    m = _PATH.match(path)
    if m and m.group(2) == "countTokens":
        return json_answer(200, {"totalTokens": estimate_tokens(body)})
    if m and m.group(2) == "embedContent":
        return json_answer(200, {"embedding": {"values": [0.0] * 8}})
    return None


def _texts(content: dict[str, Any]) -> list[str]:
    return [p["text"] for p in content.get("parts", []) or [] if isinstance(p, dict) and isinstance(p.get("text"), str)]


def read(path: str, body: dict[str, Any]) -> Conversation:
    m = _PATH.match(path)
    contents = [c for c in body.get("contents", []) or [] if isinstance(c, dict)]
    users = [c for c in contents if c.get("role", "user") == "user"
             and not any("functionResponse" in p for p in c.get("parts", []) or [] if isinstance(p, dict))]
    prompt = next((p for p in (user_text(_texts(c)) for c in users) if p), "")
    turns = sum(1 for c in contents if c.get("role") == "model")
    tools = frozenset(
        d.get("name", "") for t in body.get("tools", []) or [] if isinstance(t, dict)
        for d in t.get("functionDeclarations", []) or [] if isinstance(d, dict))
    system = body.get("systemInstruction") or {}
    context = "\n".join(_texts(system) if isinstance(system, dict) else []) + "\n" + "\n".join(
        t for c in users[:1] for t in _texts(c))
    cwd = _CWD.search(context)
    return Conversation(prompt=prompt, turn=turns, stream=bool(m and m.group(2) == "streamGenerateContent"),
                        model=m.group(1) if m else "gemini-rehearsal", tools=tools,
                        cwd=cwd.group(1).rstrip(".,:;") if cwd else None)


def action(step: Step, sel: Selection, conv: Conversation) -> str | ToolCall:
    """The scripted step as Gemini CLI's own tools: write_file, read_file, run_shell_command."""
    if step.write_file is not None:
        path = conv.absolute(sel.expand(step.write_file.path))
        return ToolCall("write_file", {"file_path": path, "content": sel.expand(step.write_file.content)})
    if step.read_file is not None:
        path = conv.absolute(sel.expand(step.read_file))
        return ToolCall("read_file", {"file_path": path})
    if step.shell is not None:
        return ToolCall("run_shell_command", {"command": sel.expand(step.shell), "description": "rehearsal step"})
    if step.structured is not None:
        return json.dumps(step.structured)
    return sel.expand(step.text or "")


def _chunk(conv: Conversation, parts: list[dict[str, Any]], finish: str | None, usage: bool) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    out: dict[str, Any] = {"candidates": [candidate], "modelVersion": conv.model,
                           "responseId": uuid.uuid4().hex[:20]}
    if usage:
        prompt_tokens = 20 + len(conv.prompt) // 4
        out_tokens = max(1, len(json.dumps(parts)) // 8)
        out["usageMetadata"] = {"promptTokenCount": prompt_tokens, "candidatesTokenCount": out_tokens,
                                "totalTokenCount": prompt_tokens + out_tokens}
    return out


def reply(conv: Conversation, act: str | ToolCall) -> Answer:
    if isinstance(act, ToolCall):
        pieces = [[{"functionCall": {"name": act.name, "args": act.arguments}}]]
    else:
        pieces = [[{"text": piece}] for piece in chunk_text(act)]
    if not conv.stream:
        parts = pieces[0] if isinstance(act, ToolCall) else [{"text": act}]
        return json_answer(200, _chunk(conv, parts, "STOP", True))
    last = len(pieces) - 1
    return sse_answer([(None, _chunk(conv, parts, "STOP" if i == last else None, i == last))
                       for i, parts in enumerate(pieces)])


def error(err: ApiError) -> Answer:
    status = err.type or _STATUS.get(err.status, "INTERNAL")
    body: dict[str, Any] = {"error": {"code": err.status, "message": err.message, "status": status}}
    if err.retry_after is not None:
        body["error"]["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                     "retryDelay": f"{int(err.retry_after)}s"}]
    return json_answer(err.status, body, retry_after_headers(err.retry_after))
