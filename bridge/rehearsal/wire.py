"""What every wire protocol reads from a request and writes back, independent of the vendor."""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

# Text blocks the CLIs inject into the user turn that are not the stage prompt.
_INJECTED = re.compile(
    r"^\s*(<system-reminder>|<environment_context>|<user_instructions>|<permissions instructions>"
    r"|<session_context>|# AGENTS\.md instructions|This is the Gemini CLI)",
)


@dataclass(frozen=True)
class Conversation:
    """The facts a protocol module extracts from one request body."""

    prompt: str  # the first user prompt (the stage prompt)
    turn: int  # model turns already in the conversation = index of the step to answer
    stream: bool
    model: str
    tools: frozenset[str] = frozenset()  # names of the tools the CLI offers
    cwd: str | None = None  # the CLI's working directory, when the request says it

    def absolute(self, path: str) -> str:
        """A scripted path as the CLI's file tools want it: relative ones joined to the CLI's cwd."""
        return posixpath.join(self.cwd, path) if self.cwd and not posixpath.isabs(path) else path


@dataclass(frozen=True)
class Answer:
    """An HTTP response: status, headers and body chunks (one per SSE event when streaming)."""

    status: int
    headers: tuple[tuple[str, str], ...]
    chunks: tuple[bytes, ...]


@dataclass(frozen=True)
class ToolCall:
    """A vendor-specific tool call the model makes: the CLI executes it with its own tool."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    free_text: str | None = None  # Codex custom tools (apply_patch) take raw text, not JSON


def is_injected(text: str) -> bool:
    """True for context the CLI adds to the user turn (reminders, environment), not the prompt."""
    return bool(_INJECTED.match(text))


def user_text(texts: Iterable[str]) -> str:
    """The prompt: the user-written text blocks of a turn, joined."""
    return "\n".join(t for t in texts if t and not is_injected(t))


def json_answer(status: int, body: Any, headers: Iterable[tuple[str, str]] = ()) -> Answer:
    data = json.dumps(body).encode()
    return Answer(status, (("content-type", "application/json"), *headers), (data,))


def sse_answer(events: Iterable[tuple[str | None, Any]], headers: Iterable[tuple[str, str]] = ()) -> Answer:
    """SSE with `event:` lines when a name is given (Anthropic, OpenAI); data-only otherwise (Gemini)."""
    chunks = []
    for name, data in events:
        head = f"event: {name}\n" if name else ""
        chunks.append(f"{head}data: {json.dumps(data)}\n\n".encode())
    hdrs = (("content-type", "text/event-stream"), ("cache-control", "no-cache"), *headers)
    return Answer(200, hdrs, tuple(chunks))


def retry_after_headers(seconds: float | None) -> tuple[tuple[str, str], ...]:
    if seconds is None:
        return ()
    return (("retry-after", str(int(seconds)) if float(seconds).is_integer() else str(seconds)),)


def chunk_text(text: str, size: int = 24) -> list[str]:
    """Split text into a few deltas so streams look like the real thing."""
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def estimate_tokens(body: Any) -> int:
    """A rough, deterministic token count for usage fields (4 characters per token)."""
    return max(1, len(json.dumps(body)) // 4)
