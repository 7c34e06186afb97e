"""The rehearsal model server: one HTTP endpoint on 127.0.0.1 speaking all three vendor protocols."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, Callable
from urllib.parse import urlsplit

from bridge.errors import BridgeError
from bridge.rehearsal import anthropic, gemini, openai
from bridge.rehearsal.script import DONE_TEXT, Script, Selection, select
from bridge.rehearsal.wire import Answer, Conversation, ToolCall, json_answer

PROTOCOLS: tuple[ModuleType, ...] = (anthropic, openai, gemini)


@dataclass(frozen=True)
class RequestRecord:
    """One request the server saw, for logs and tests."""

    method: str
    path: str
    protocol: str | None
    prompt: str = ""
    turn: int = 0
    answer: str = ""  # what was chosen: "reply 0 step 1: write_file", "default text", ...
    status: int = 200


class ModelServer:
    """Serve `script` on 127.0.0.1 until the `with` block ends; `.url` is the base URL."""

    def __init__(self, script: Script | None = None, port: int = 0, log_path: Path | None = None,
                 dump_dir: Path | None = None, on_request: Callable[[RequestRecord], None] | None = None) -> None:
        self.script = script or Script()
        self._on_request = on_request
        self._port = port
        self._log_path = log_path
        self._dump_dir = dump_dir
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._records: list[RequestRecord] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> ModelServer:
        server = self

        class Handler(_Handler):
            model_server = server

        try:
            self._httpd = _Server(("127.0.0.1", self._port), Handler)
        except OSError as exc:
            raise BridgeError(f"cannot serve the rehearsal model on 127.0.0.1:{self._port}: {exc.strerror}. "
                              "Pick another --port or 0 for a free one.") from exc
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="rehearsal-model",
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()  # releases hanging and delayed answers
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise BridgeError("the rehearsal model server is not running")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def port(self) -> int:
        return int(urlsplit(self.url).port or 0)

    # -- observations ----------------------------------------------------------------------
    @property
    def requests(self) -> tuple[RequestRecord, ...]:
        with self._lock:
            return tuple(self._records)

    def counts(self) -> dict[str, int]:
        """Model requests per protocol (anthropic, openai, gemini); other requests under "other"."""
        return dict(Counter(r.protocol or "other" for r in self.requests))

    def _record(self, record: RequestRecord, body: Any = None) -> None:
        with self._lock:
            self._records.append(record)
            n = len(self._records)
            if self._log_path is not None:
                line = (f"{time.strftime('%H:%M:%S')} {record.method} {record.path} "
                        f"[{record.protocol or '-'}] turn={record.turn} -> {record.status} {record.answer}"
                        f" | prompt={record.prompt[:80]!r}\n")
                with self._log_path.open("a") as fh:
                    fh.write(line)
            if self._dump_dir is not None and body is not None:
                self._dump_dir.mkdir(parents=True, exist_ok=True)
                (self._dump_dir / f"{n:03d}-{record.protocol or 'other'}.json").write_text(
                    json.dumps({"path": record.path, "body": body}, indent=1))
        if self._on_request is not None:
            self._on_request(record)

    # -- answering -------------------------------------------------------------------------
    def answer(self, method: str, path: str, body: Any) -> tuple[Answer | None, float]:
        """(the answer, seconds to wait first); None as answer means hang until shutdown."""
        proto = next((p for p in PROTOCOLS if p.handles(method, path)), None)
        if proto is None:
            if method in ("HEAD", "GET") and urlsplit(path).path in ("/", ""):
                self._record(RequestRecord(method, path, None, answer="probe"))
                return json_answer(200, {"ok": True}), 0.0
            self._record(RequestRecord(method, path, None, answer="unknown endpoint", status=404), body)
            return json_answer(404, {"error": {"message": f"no such endpoint: {method} {path}"}}), 0.0
        if not isinstance(body, dict):
            self._record(RequestRecord(method, path, proto.NAME, answer="bad body", status=400), body)
            return json_answer(400, {"error": {"message": "request body must be a JSON object"}}), 0.0
        side = proto.side_answer(path, body)
        if side is not None:
            self._record(RequestRecord(method, path, proto.NAME, answer="side endpoint"), body)
            return side, 0.0
        conv = proto.read(path, body)
        sel = select(self.script, conv.prompt, proto.CLI, conv.turn)
        answer, delay, what = self._compose(proto, conv, sel)
        status = answer.status if answer else 0
        self._record(RequestRecord(method, path, proto.NAME, conv.prompt, conv.turn, what, status), body)
        return answer, delay

    def _compose(self, proto: ModuleType, conv: Conversation, sel: Selection) -> tuple[Answer | None, float, str]:
        step = sel.step
        if sel.reply_index is None:
            return proto.reply(conv, self.script.default), 0.0, sel.describe()
        if step is None:
            return proto.reply(conv, DONE_TEXT), 0.0, sel.describe()
        if step.hang:
            return None, 0.0, sel.describe()
        if step.error is not None:
            return proto.error(step.error), step.delay, sel.describe()
        if step.kind == "text" and step.text is None:  # a bare delay step: then "done"
            return proto.reply(conv, DONE_TEXT), step.delay, sel.describe()
        act = proto.action(step, sel, conv)
        if isinstance(act, ToolCall) and not conv.tools:
            # A side request (titles, summaries) offers no tools: a tool call would confuse it.
            return proto.reply(conv, DONE_TEXT), step.delay, sel.describe() + " (no tools offered: text)"
        return proto.reply(conv, act), step.delay, sel.describe()


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A CLI stopped mid-request (its outputs were complete, a timeout, a cancel) resets the
        # connection; socketserver would print that traceback on bridge's terminal.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    model_server: ModelServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # the server keeps its own log

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(None, head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._serve(None)

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        self._serve(body)

    def _serve(self, body: Any, head: bool = False) -> None:
        server = self.model_server
        answer, delay = server.answer(self.command, self.path, body)
        if answer is None or (delay and server._stop.wait(delay)):
            server._stop.wait()  # hang: never answer; the connection dies at shutdown
            self.close_connection = True
            return
        streaming = len(answer.chunks) > 1 or any(k == "content-type" and "event-stream" in v
                                                  for k, v in answer.headers)
        try:
            self.send_response(answer.status)
            for key, value in answer.headers:
                self.send_header(key, value)
            if streaming:
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                if not head:
                    for chunk in answer.chunks:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
            else:
                data = b"".join(answer.chunks)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                if not head:
                    self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
