"""The rehearsal model at the protocol level: urllib against a live server, one protocol at a time."""

from __future__ import annotations

import os
import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from bridge.errors import BridgeError
from bridge.rehearsal import ModelServer, parse_script, wiring
from bridge.rehearsal.script import select

SCRIPT = """
replies:
  - match: 'audit the repo into (\\S+)'
    cli: claude
    steps:
      - write_file: {path: '$1/audit.md', content: "# Audit\\n"}
      - text: 'Audit written.'
  - match: 'audit the repo into (?P<dir>\\S+)'
    steps:
      - write_file: {path: '${dir}/audit.md', content: "# Audit\\n"}
      - shell: 'ls ${dir}'
      - text: 'Audit written.'
  - match: 'fail with (\\d+)'
    steps:
      - error: {status: 429, message: 'slow down', retry_after: 7}
  - match: 'structured'
    steps:
      - structured: {status: ok}
  - match: 'relative'
    steps:
      - write_file: {path: out/notes.md, content: x}
  - match: 'slowly'
    steps:
      - {delay: 300ms, text: 'late'}
  - match: 'never'
    steps:
      - hang: true
"""


@pytest.fixture
def server(tmp_path: Path):
    with ModelServer(parse_script(SCRIPT), log_path=tmp_path / "requests.log") as srv:
        yield srv


def call(url: str, body: Any | None = None, method: str = "POST", timeout: float = 5) -> tuple[int, dict, str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read().decode()


def sse(text: str) -> list[tuple[str | None, dict]]:
    events = []
    for block in text.strip().split("\n\n"):
        name = None
        data = None
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
        events.append((name, data))
    return events


# -- the script ---------------------------------------------------------------------------------

def test_script_errors_name_file_and_line() -> None:
    bad = "replies:\n  - match: '('\n    steps:\n      - text: a\n        shell: b\n      - delay: soon\n"
    with pytest.raises(BridgeError) as info:
        parse_script(bad, "s.yaml")
    msg = str(info.value)
    assert "s.yaml:2: at replies.0.match" in msg and "regular expression" in msg
    assert "s.yaml:4: at replies.0.steps.0" in msg and "one thing" in msg
    assert "s.yaml:6: at replies.0.steps.1.delay" in msg


def test_script_shorthand_and_selection() -> None:
    script = parse_script("- match: hi\n  steps: [one, two]\n- cli: codex\n  steps: hello\n")
    assert select(script, "say hi", "claude", 1).step.text == "two"
    assert select(script, "say hi", "claude", 2).step is None  # ran out: "done"
    assert select(script, "other", "codex", 0).step.text == "hello"
    assert select(script, "other", "gemini", 0).reply_index is None  # default text


def test_group_references_expand_and_dollars_survive() -> None:
    script = parse_script("- match: 'to (\\S+) as (?P<name>\\w+)'\n  steps: [{shell: 'echo $HOME $$1 ${name} $1'}]\n")
    sel = select(script, "write to /x as rep", None, 0)
    assert sel.expand(sel.step.shell) == "echo $HOME $1 rep /x"


# -- Anthropic Messages -------------------------------------------------------------------------

def _anthropic(prompt: str, stream: bool = True, assistant_turns: int = 0, tools: tuple[str, ...] = ("Write", "Bash"),
               ) -> dict:
    messages: list[dict] = [{"role": "user", "content": [
        {"type": "text", "text": "<system-reminder>\nignore me: fail with 500\n</system-reminder>"},
        {"type": "text", "text": prompt}]}]
    for i in range(assistant_turns):
        messages += [{"role": "assistant", "content": [{"type": "tool_use", "id": f"t{i}", "name": "Write", "input": {}}]},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"t{i}", "content": "ok"}]}]
    return {"model": "claude-x", "stream": stream, "messages": messages,
            "system": [{"type": "text", "text": " - Primary working directory: /work/cwd\n"}],
            "tools": [{"name": t, "input_schema": {}} for t in tools]}


def test_anthropic_probe_and_streamed_tool_use(server: ModelServer) -> None:
    assert call(server.url + "/", method="HEAD")[0] == 200
    status, headers, body = call(server.url + "/v1/messages?beta=true", _anthropic("audit the repo into /s"))
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = sse(body)
    assert [n for n, _ in events] == ["message_start", "content_block_start", "content_block_delta",
                                      "content_block_stop", "message_delta", "message_stop"]
    assert all(n == d["type"] for n, d in events)
    block = events[1][1]["content_block"]
    assert block["type"] == "tool_use" and block["name"] == "Write"
    assert json.loads(events[2][1]["delta"]["partial_json"]) == {"file_path": "/s/audit.md", "content": "# Audit\n"}
    assert events[4][1]["delta"]["stop_reason"] == "tool_use"
    assert server.counts() == {"other": 1, "anthropic": 1}


def test_anthropic_plain_json_and_step_counting(server: ModelServer) -> None:
    status, _, body = call(server.url + "/v1/messages", _anthropic("audit the repo into /s", False, 1))
    message = json.loads(body)
    assert status == 200 and message["content"] == [{"type": "text", "text": "Audit written."}]
    assert message["stop_reason"] == "end_turn" and message["usage"]["output_tokens"] > 0
    _, _, body = call(server.url + "/v1/messages", _anthropic("audit the repo into /s", False, 2))
    assert json.loads(body)["content"][0]["text"] == "done"  # steps ran out


def test_anthropic_relative_paths_resolve_against_cwd_and_structured(server: ModelServer) -> None:
    _, _, body = call(server.url + "/v1/messages", _anthropic("relative", False))
    assert json.loads(body)["content"][0]["input"]["file_path"] == "/work/cwd/out/notes.md"
    _, _, body = call(server.url + "/v1/messages", _anthropic("structured", False, tools=("StructuredOutput",)))
    assert json.loads(body)["content"][0] == {**json.loads(body)["content"][0], "name": "StructuredOutput",
                                              "input": {"status": "ok"}}
    _, _, body = call(server.url + "/v1/messages", _anthropic("structured", False))
    assert json.loads(json.loads(body)["content"][0]["text"]) == {"status": "ok"}


def test_anthropic_error_shape(server: ModelServer) -> None:
    status, headers, body = call(server.url + "/v1/messages", _anthropic("fail with 429"))
    assert status == 429 and headers["retry-after"] == "7"
    assert json.loads(body) == {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}


def test_side_requests_without_tools_get_text(server: ModelServer) -> None:
    _, _, body = call(server.url + "/v1/messages", _anthropic("audit the repo into /s", False, tools=()))
    assert json.loads(body)["content"][0]["type"] == "text"


# -- OpenAI Responses ---------------------------------------------------------------------------

def _responses(prompt: str, stream: bool = True, done_calls: int = 0, tools: tuple[str, ...] = ("exec_command",
                                                                                              "apply_patch")) -> dict:
    items: list[dict] = [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "be good"}]},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "<environment_context>\n  <cwd>/w</cwd>\n</environment_context>"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": prompt}]},
    ]
    for i in range(done_calls):
        items += [{"type": "function_call", "name": "exec_command", "arguments": "{}", "call_id": f"c{i}"},
                  {"type": "function_call_output", "call_id": f"c{i}", "output": "ok"}]
    return {"model": "gpt-5.5", "stream": stream, "input": items,
            "tools": [{"type": "custom" if t == "apply_patch" else "function", "name": t} for t in tools]}


def test_responses_stream_apply_patch(server: ModelServer) -> None:
    status, _, body = call(server.url + "/v1/responses", _responses("audit the repo into /s"))
    events = sse(body)
    names = [n for n, _ in events]
    assert status == 200 and names[0] == "response.created" and names[-1] == "response.completed"
    assert all(n == d["type"] for n, d in events)
    done = next(d["item"] for n, d in events if n == "response.output_item.done")
    assert done["type"] == "custom_tool_call" and done["name"] == "apply_patch"
    assert done["input"] == "*** Begin Patch\n*** Add File: /s/audit.md\n+# Audit\n*** End Patch\n"
    completed = events[-1][1]["response"]
    assert completed["id"] and completed["usage"]["total_tokens"] > 0


def test_responses_heredoc_without_apply_patch_writes_exact_content(server: ModelServer, tmp_path: Path) -> None:
    body = _responses(f"audit the repo into {tmp_path}/d", stream=False, tools=("exec_command",))
    _, _, text = call(server.url + "/v1/responses", body)
    item = json.loads(text)["output"][0]
    assert item["type"] == "function_call" and item["name"] == "exec_command"
    subprocess.run(["bash", "-c", json.loads(item["arguments"])["cmd"]], check=True)
    assert (tmp_path / "d" / "audit.md").read_text() == "# Audit\n"


def test_responses_step_counting_and_text(server: ModelServer) -> None:
    _, _, text = call(server.url + "/v1/responses", _responses("audit the repo into /s", False, 1))
    item = json.loads(text)["output"][0]
    assert json.loads(item["arguments"]) == {"cmd": "ls /s"}
    _, _, body = call(server.url + "/v1/responses", _responses("audit the repo into /s", True, 2))
    deltas = "".join(d["delta"] for n, d in sse(body) if n == "response.output_text.delta")
    assert deltas == "Audit written."


def test_responses_error_shape(server: ModelServer) -> None:
    status, headers, body = call(server.url + "/v1/responses", _responses("fail with 429"))
    assert status == 429 and headers["retry-after"] == "7"
    assert json.loads(body)["error"]["code"] == "rate_limit_exceeded"


# -- Gemini -------------------------------------------------------------------------------------

def _gemini(prompt: str, model_turns: int = 0) -> dict:
    contents: list[dict] = [{"role": "user", "parts": [
        {"text": "<session_context>\n- **Workspace Directories:**\n  - /g/cwd\n</session_context>"}, {"text": prompt}]}]
    for _ in range(model_turns):
        contents += [{"role": "model", "parts": [{"functionCall": {"name": "write_file", "args": {}}}]},
                     {"role": "user", "parts": [{"functionResponse": {"name": "write_file", "response": {}}}]}]
    return {"contents": contents, "tools": [{"functionDeclarations": [
        {"name": "write_file"}, {"name": "run_shell_command"}]}]}


def test_gemini_stream_function_call_and_text(server: ModelServer) -> None:
    url = server.url + "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    status, headers, body = call(url, _gemini("audit the repo into /s"))
    events = sse(body)
    assert status == 200 and all(name is None for name, _ in events)  # data-only SSE
    part = events[0][1]["candidates"][0]["content"]["parts"][0]
    assert part == {"functionCall": {"name": "write_file", "args": {"file_path": "/s/audit.md", "content": "# Audit\n"}}}
    assert events[-1][1]["usageMetadata"]["totalTokenCount"] > 0
    _, _, body = call(url, _gemini("audit the repo into /s", 1))
    assert sse(body)[0][1]["candidates"][0]["content"]["parts"][0]["functionCall"]["name"] == "run_shell_command"


def test_gemini_plain_relative_path_and_errors(server: ModelServer) -> None:
    url = server.url + "/v1beta/models/m:generateContent"
    _, _, body = call(url, _gemini("relative"))
    args = json.loads(body)["candidates"][0]["content"]["parts"][0]["functionCall"]["args"]
    assert args["file_path"] == "/g/cwd/out/notes.md"
    status, headers, body = call(url, _gemini("fail with 429"))
    err = json.loads(body)["error"]
    assert status == 429 and err["status"] == "RESOURCE_EXHAUSTED" and err["details"][0]["retryDelay"] == "7s"
    status, _, body = call(server.url + "/v1beta/models/m:countTokens", {"contents": []})
    assert status == 200 and json.loads(body)["totalTokens"] >= 1


# -- server behaviour ---------------------------------------------------------------------------

def test_default_answer_unknown_path_log_and_counts(server: ModelServer, tmp_path: Path) -> None:
    _, _, body = call(server.url + "/v1/messages", _anthropic("anything else", False))
    assert json.loads(body)["content"][0]["text"] == "ok"
    assert call(server.url + "/nope", {})[0] == 404
    assert server.counts() == {"anthropic": 1, "other": 1}
    log = (tmp_path / "requests.log").read_text()
    assert "POST /v1/messages [anthropic] turn=0 -> 200 no reply matched" in log
    assert server.requests[0].prompt == "anything else"


def test_delay_and_hang(server: ModelServer) -> None:
    start = time.monotonic()
    _, _, body = call(server.url + "/v1/messages", _anthropic("slowly", False))
    assert time.monotonic() - start >= 0.3 and json.loads(body)["content"][0]["text"] == "late"
    with pytest.raises(OSError):  # socket timeout: the server never answers
        call(server.url + "/v1/messages", _anthropic("never", False), timeout=0.5)


def test_hanging_request_does_not_block_shutdown() -> None:
    import threading

    with ModelServer(parse_script("- steps: [{hang: true}]")) as srv:
        t = threading.Thread(target=lambda: pytest.raises(Exception, call, srv.url + "/v1/responses",
                                                          _responses("x"), timeout=30), daemon=True)
        t.start()
        time.sleep(0.2)
        start = time.monotonic()
    assert time.monotonic() - start < 3


def test_busy_port_is_a_clear_error(server: ModelServer) -> None:
    with pytest.raises(BridgeError, match="--port"):
        with ModelServer(port=server.port):
            pass


# -- wiring -------------------------------------------------------------------------------------

def test_wiring_points_every_cli_at_the_server(tmp_path: Path) -> None:
    url = "http://127.0.0.1:4567"
    codex = wiring("codex", url, tmp_path)
    toml = codex.files[tmp_path / ".codex" / "config.toml"]
    assert 'base_url = "http://127.0.0.1:4567/v1"' in toml and 'wire_api = "responses"' in toml
    assert codex.env["CODEX_HOME"] == f"{tmp_path}/.codex" and codex.env["HOME"] == str(tmp_path)
    claude = wiring("claude", url, tmp_path)
    assert claude.env["ANTHROPIC_BASE_URL"] == url and claude.env["CLAUDE_CODE_MAX_RETRIES"] == "1"
    gemini = wiring("gemini", url, tmp_path)
    assert gemini.env["GOOGLE_GEMINI_BASE_URL"] == url and gemini.argv[:1] == ("-m",)
    settings = json.loads(gemini.files[tmp_path / ".gemini" / "settings.json"])
    assert settings["security"]["auth"]["selectedType"] == "gemini-api-key"
    gemini.write_files()
    assert (tmp_path / ".gemini" / "settings.json").is_file()
    for w in (codex, claude, gemini):
        assert not any("key" in k.lower() and v != "rehearsal-dummy-key-0000" for k, v in w.env.items())
    with pytest.raises(BridgeError, match="rehearsals support"):
        wiring("aider", url, tmp_path)


def test_shipped_example_scripts_parse() -> None:
    from bridge.rehearsal import load_script

    scripts = sorted((Path(__file__).parent / "fixtures" / "scripts").glob("*.yaml"))
    assert scripts
    for path in scripts:
        script = load_script(path)
        assert script.replies
    sel = select(load_script(scripts[0]), "Audit the repo. Write your findings to /s/f.md", "gemini", 0)
    assert sel.expand(sel.step.write_file.path) == "/s/f.md"


def test_a_client_resetting_mid_request_prints_no_traceback(capfd) -> None:
    """A CLI stopped mid-request resets its connection; bridge's terminal must not show a traceback."""
    import socket
    import struct

    with ModelServer(parse_script("- steps: [ok]")) as server:
        host, port = server.url.removeprefix("http://").split(":")
        sock = socket.create_connection((host, int(port)))
        sock.sendall(b"POST /v1/messages HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
        sock.close()
        time.sleep(0.3)
    assert "Traceback" not in capfd.readouterr().err


def test_a_rehearsed_cli_sees_none_of_the_users_environment(tmp_path, monkeypatch):
    from bridge.rehearsal import wiring

    monkeypatch.setenv("CLAUDE_CODE_USE_BEDROCK", "1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-users-real-key")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "users-config"))
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    for kind in ("codex", "claude", "gemini"):
        env = wiring(kind, "http://127.0.0.1:1", tmp_path / "home").env
        assert not {"CLAUDE_CODE_USE_BEDROCK", "OPENAI_API_KEY", "XDG_CONFIG_HOME"} & set(env), kind
        assert env["HOME"] == str(tmp_path / "home") and env["PATH"] == os.environ["PATH"]
        assert env["LC_ALL"] == "C.UTF-8"


def test_model_serve_in_the_foreground_stops_on_sigterm_and_leaves_nothing(tmp_path):
    # `bridge model serve`: prints the URL and each CLI's env, answers on 127.0.0.1, and removes its
    # temp folders when a service manager (or `timeout`) sends SIGTERM
    import signal
    import subprocess
    import sys
    import urllib.request

    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "bridge", "model", "serve"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    try:
        first = proc.stdout.readline()
        assert "rehearsal model serving on http://127.0.0.1:" in first, first
        url = first.split(" on ")[1].split()[0]
        announced = ""  # what to export for each CLI, printed once the server serves: read it all first
        while not announced.rstrip().endswith("gemini-2.5-flash"):
            line = proc.stdout.readline()
            assert line, announced
            announced += line
        assert urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10).status == 200
        assert list(tmp_path.glob("bridge-rehearsal-*"))
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, out
    assert "export ANTHROPIC_BASE_URL=" in announced and "export PATH=" not in announced + out
    assert list(tmp_path.glob("bridge-rehearsal-*")) == []
