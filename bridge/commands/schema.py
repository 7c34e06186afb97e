"""`bridge schema`: the JSON Schema of the playbook format, for editors (yaml-language-server)."""

from __future__ import annotations

import json
from typing import Any

from bridge.playbook import Playbook
from bridge.ui import print_raw

SCHEMA_ID = "https://raw.githubusercontent.com/bridge-agents/bridge/main/docs/playbook.schema.json"


def _draft7(node: Any) -> Any:
    """pydantic writes draft 2020-12 `$defs`; draft-07 `definitions` is what every editor reads."""
    if isinstance(node, dict):
        out = {("definitions" if k == "$defs" else k): _draft7(v) for k, v in node.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            out["$ref"] = "#/definitions/" + ref.removeprefix("#/$defs/")
        return out
    if isinstance(node, list):
        return [_draft7(v) for v in node]
    return node


def playbook_schema() -> dict[str, Any]:
    """The schema as a dict: keys by alias (`if`, `finally`, `schema`, `copy`), draft-07."""
    body = _draft7(Playbook.model_json_schema(by_alias=True, mode="validation"))
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": SCHEMA_ID,
        **body,
        "title": "bridge playbook (version 1)",
        "description": "A bridge playbook: agents, stages (a DAG by `needs`), finally, schedule, notify. "
                       "See docs/playbooks.md.",
    }


def run() -> int:
    print_raw(json.dumps(playbook_schema(), indent=2, ensure_ascii=False))
    return 0
