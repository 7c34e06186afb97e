"""`bridge init`: scaffold a starter playbook, its prompt template and the schema for editors."""

from __future__ import annotations

import json
from pathlib import Path

from bridge.commands.schema import playbook_schema
from bridge.errors import BridgeError
from bridge.ui import print_text

PLAYBOOK = "playbooks/bridge.yaml"
PROMPT = "playbooks/prompts/implement.md.j2"
SCHEMA = "playbooks/playbook.schema.json"
REHEARSAL = "playbooks/rehearsals/bridge.yaml"

STARTER = """\
# yaml-language-server: $schema=./playbook.schema.json
# A starter playbook: Codex plans, Claude Code implements in a worktree, Codex verifies, in a loop
# until the verdict is "pass". Check it with `bridge validate`, preview it with `bridge plan`.
# The format, field by field: docs/playbooks.md (or `bridge schema` for the JSON Schema).
version: 1
name: plan-implement-verify
description: Plan a change, implement it in a worktree, verify until green.

vars:
  task: "Describe the change you want here, or pass --var task='...'"

# Agent profiles: which CLI, which model, which sandbox policy. Other examples:
#   reviewer: {cli: gemini, model: gemini-2.5-pro, sandbox: read-only}
#   linter:   {cli: command, command: [ruff, check, .]}
#   via-proxy: {cli: claude, env: {ANTHROPIC_BASE_URL: "http://127.0.0.1:8080"}}
agents:
  planner:            # read-only: it answers, bridge writes its answer into the shared folder
    cli: codex
    sandbox: read-only
  verifier:           # runs the tests and writes its verdict, so it needs workspace-write
    cli: codex
    sandbox: workspace-write
  implementer:
    cli: claude
    sandbox: workspace-write
    allowed_tools: [Read, Edit, Write, Bash]
    max_turns: 40

stages:
  plan:
    agent: planner
    prompt: |
      Plan this change to the repository: {{ vars.task }}
      Answer with a short, numbered plan only. Do not change any file.
    outputs: [{path: plan.md, from: final_message}]   # bridge saves the answer as the plan
    summary: {max_lines: 20}
    timeout: 15m

  build:
    needs: [plan]
    loop:
      until: "stages.verify.outputs['verify.json'].status == 'pass'"
      max_iterations: 3
      stages:
        implement:
          agent: implementer
          prompt_file: prompts/implement.md.j2
          worktree: {merge: squash}
          timeout: 30m
        verify:
          needs: [implement]
          agent: verifier
          prompt: |
            Run the project's tests and review the change against {{ shared }}/plan.md.
            Write {"status": "pass"} or {"status": "fail", "problems": [...]} to {{ shared }}/verify.json.
          outputs:
            - path: verify.json
              schema: {type: object, required: [status], properties: {status: {enum: [pass, fail]}}}
          timeout: 15m
"""

IMPLEMENT = """\
Implement this change: {{ vars.task }}

The plan is in {{ shared }}/plan.md. In short:
{{ stages.plan.summary }}
{% if loop.previous %}
The last verification failed; its report is {{ loop.previous.verify.outputs['verify.json'] }}.
Fix what it lists first.
{% endif %}
Keep the change small, add or update tests, and run them before you finish.
"""

REHEARSAL_SCRIPT = """\
# The rehearsal script of bridge.yaml: `bridge run playbooks/bridge.yaml --rehearse` runs the REAL
# codex and claude CLIs against a scripted model on 127.0.0.1 (no credentials, no tokens spent).
# Each reply matches a stage's prompt and lists the model's turns; the CLIs execute them with their
# own tools. The format: docs/rehearsal.md. Edit it as you edit the playbook.
replies:
  - match: 'Plan this change to the repository'
    cli: codex
    steps:
      - text: |-
          1. Find the code the change touches.
          2. Make the change and add a test for it.
          3. Run the tests.

  # The implementer only answers here, so a rehearsal leaves your files and branch as they are.
  # To watch a real edit, add a step such as: - write_file: {path: NOTES.md, content: "..."}
  - match: 'Implement this change'
    cli: claude
    steps:
      - text: Implemented the plan (rehearsal).

  - match: 'Write \\{"status": "pass"\\} .* to (\\S+verify\\.json)'
    cli: codex
    steps:
      - write_file: {path: $1, content: '{"status": "pass"}'}
      - text: The tests pass.
"""


def files() -> dict[str, str]:
    """Relative path -> content of everything `bridge init` writes."""
    return {
        PLAYBOOK: STARTER,
        PROMPT: IMPLEMENT,
        SCHEMA: json.dumps(playbook_schema(), indent=2, ensure_ascii=False) + "\n",
        REHEARSAL: REHEARSAL_SCRIPT,
    }


def run(directory: Path | None = None, force: bool = False) -> int:
    root = (directory or Path.cwd()).resolve()
    scaffold = files()
    existing = [rel for rel in scaffold if (root / rel).exists()]
    if existing and not force:
        raise BridgeError(f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''} in {root}; "
                          "nothing was written. Use --force to overwrite.")
    for rel, text in scaffold.items():
        path = root / rel
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise BridgeError(f"cannot write {path}: {exc.strerror or exc}") from None
        print_text(f"{'overwrote' if rel in existing else 'created'} {rel}", "green")
    print_text(f"next: bridge validate {PLAYBOOK} && bridge plan {PLAYBOOK}\n"
               f"then rehearse it (the real CLIs, a scripted local model, no tokens): "
               f"bridge run {PLAYBOOK} --rehearse")
    return 0
