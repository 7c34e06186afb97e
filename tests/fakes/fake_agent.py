#!/usr/bin/env -S python3 -S
"""A fake agent CLI speaking Claude Code's stream-json, steered by `FAKE:` lines in its prompt.

Point a CLI definition at it (`.bridge/clis.yaml`: `fake: {adapter: claude, binary: <this file>}`)
and write, anywhere in a stage's prompt, lines such as

    FAKE: count=/tmp/calls.txt; write={{ shared }}/out.txt=hello; sleep=0.2; message=done
    FAKE: fail_first=2; rate_limit_first=1; tokens=100,20; cost=0.01; tool=Bash:ls -la

Keys (`;`-separated, repeatable where it makes sense):
  count=FILE             append "<BRIDGE_STAGE> <pid>" to FILE (how many times it ran, and where)
  write=PATH=TEXT        write TEXT to PATH (atomically) before sleeping; repeatable
  respond_first=1        print the final message and the result before the writes (else after): a
                         test whose subject is not an early stop by complete outputs uses it, so
                         bridge never races the result and stops the agent before its cost is known
  append=PATH=TEXT       append TEXT and a newline to PATH (relative paths: the cwd); repeatable
  read=PATH=DEST         copy PATH's text (or "<missing>") to DEST, after the writes; repeatable
  sleep=SECONDS          sleep before the result (after the writes)
  until=FILE             then wait (at most 60 s) until FILE exists: a test lets the agent finish
  sleep_first=N:SECONDS  the first N runs (per count file) sleep SECONDS more
  pre_sleep=SECONDS      sleep before the writes
  message=TEXT           the final message (default "done")
  tokens=IN,OUT / cost=USD   usage and cost in the result event
  tool=NAME:ARG          an assistant tool_use event first (shows as activity); repeatable
  exit=N                 exit code (default 0)
  result=success|error|none  the terminal event: none exits without one
  fail_first=N           the first N runs (per count file) end with an error result and exit 1
  rate_limit_first=N     the first N runs (per count file) hit a usage limit ("try again in <reset>s")
  reset=SECONDS          the usage-limit reset delay (default 0.2)
  pidfile=FILE           write this process's pid to FILE
  ignore_term=1          ignore SIGTERM (so only SIGKILL stops it)
FAKE_AGENT_DEFAULTS in the environment holds lines applied before the prompt's.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("FAKE:"):
            continue
        for item in line[5:].split(";"):
            if "=" in item:
                key, value = item.split("=", 1)
                out.setdefault(key.strip(), []).append(value.strip())
    return out


def prompt_from(argv: list[str]) -> str:
    if "-p" in argv:
        i = argv.index("-p")
        if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            return argv[i + 1]
    if not sys.stdin.isatty():
        try:
            return sys.stdin.read()
        except OSError:
            return ""
    return "\n".join(argv)


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def write_atomic(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.fake-{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    text = os.environ.get("FAKE_AGENT_DEFAULTS", "") + "\n" + prompt_from(argv)
    d = directives(text)

    def one(key: str, default: str = "") -> str:
        return d.get(key, [default])[-1]

    session = None
    if "--resume" in argv:
        session = argv[argv.index("--resume") + 1]
    session = session or f"fake-{os.getpid()}"
    runs = 0
    if "count" in d:
        path = one("count")
        with open(path, "a") as fh:
            fh.write(f"{os.environ.get('BRIDGE_STAGE', '?')} {os.getpid()}\n")
        with open(path) as fh:
            runs = sum(1 for _ in fh)
    if "pidfile" in d:
        write_atomic(one("pidfile"), str(os.getpid()))
    if one("ignore_term") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    emit({"type": "system", "subtype": "init", "session_id": session, "cwd": os.getcwd()})
    for tool in d.get("tool", []):
        name, _, arg = tool.partition(":")
        emit({"type": "assistant", "session_id": session, "message": {"content": [
            {"type": "tool_use", "name": name, "input": {"command": arg}}]}})
    time.sleep(float(one("pre_sleep", "0")))
    if one("respond_first", "0") == "1":
        code = respond(d, session, runs)
        sys.stdout.flush()
        do_files(d)
        return code
    do_files(d)
    time.sleep(float(one("sleep", "0")))
    deadline = time.monotonic() + 60
    while "until" in d and not os.path.exists(one("until")) and time.monotonic() < deadline:
        time.sleep(0.05)
    if "sleep_first" in d:
        n, _, secs = one("sleep_first").partition(":")
        if runs and runs <= int(n):
            time.sleep(float(secs))
    return respond(d, session, runs)


def do_files(d: dict[str, list[str]]) -> None:
    """The write=, append= and read= directives, in that order."""
    for item in d.get("write", []):
        path, _, content = item.partition("=")
        write_atomic(path, content or "ok\n")
    for item in d.get("append", []):
        path, _, content = item.partition("=")
        with open(path, "a") as fh:
            fh.write(content + "\n")
    for item in d.get("read", []):
        path, _, dest = item.partition("=")
        try:
            with open(path) as fh:
                text = fh.read()
        except OSError:
            text = "<missing>"
        write_atomic(dest, text)


def respond(d: dict[str, list[str]], session: str, runs: int) -> int:
    """The terminal event (and the final message before it); returns the exit code."""

    def one(key: str, default: str = "") -> str:
        return d.get(key, [default])[-1]

    tin, _, tout = one("tokens", "10,5").partition(",")
    usage = {"input_tokens": int(tin or 0), "output_tokens": int(tout or 0)}
    cost = float(one("cost", "0"))
    base = {"type": "result", "session_id": session, "usage": usage, "total_cost_usd": cost, "num_turns": 1}
    if runs and runs <= int(one("rate_limit_first", "0")):
        emit({**base, "subtype": "error_during_execution", "is_error": True,
              "result": f"Claude usage limit reached; try again in {one('reset', '0.2')}s"})
        return 1
    if runs and runs <= int(one("fail_first", "0")):
        emit({**base, "subtype": "error_during_execution", "is_error": True, "result": f"fake failure #{runs}"})
        return 1
    result = one("result", "success")
    if result == "error":
        emit({**base, "subtype": "error_during_execution", "is_error": True, "result": one("message", "fake error")})
    elif result == "success":
        emit({"type": "assistant", "session_id": session, "message": {"content": [
            {"type": "text", "text": one("message", "done")}]}})
        emit({**base, "subtype": "success", "is_error": False, "result": one("message", "done")})
    return int(one("exit", "1" if result == "error" else "0"))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
