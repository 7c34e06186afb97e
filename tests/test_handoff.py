"""handoff: summaries capped by lines and bytes, hand-off bytes against upstream transcript bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.handoff import cap_summary, handoff_size


# -- summaries and hand-off sizes ------------------------------------------------------------------

def test_cap_summary_short_text_is_unchanged() -> None:
    assert cap_summary("a\nb\n", 5, 100) == "a\nb\n"
    assert cap_summary("a\nb", None, None) == "a\nb"


def test_cap_summary_by_lines() -> None:
    text = "\n".join(f"line {i}" for i in range(10))
    assert cap_summary(text, max_lines=3) == "line 0\nline 1\nline 2\n[… 7 more lines]"


def test_cap_summary_by_bytes_on_line_boundaries() -> None:
    text = "\n".join(f"line {i}" for i in range(10))
    out = cap_summary(text, max_bytes=40)
    assert len(out.encode()) <= 40
    assert out.endswith("more lines]")
    kept = out.splitlines()[:-1]
    assert kept == [f"line {i}" for i in range(len(kept))] and kept
    assert out.splitlines()[-1] == f"[… {10 - len(kept)} more lines]"


def test_cap_summary_multibyte_utf8() -> None:
    text = "żółć " * 40 + "\nsecond"
    out = cap_summary(text, max_bytes=50)
    assert len(out.encode("utf-8")) <= 50
    out.encode("utf-8").decode("utf-8")  # still valid UTF-8
    assert out.startswith("żółć") and out.endswith("[… 1 more lines]")
    emoji = "\n".join(["🙂" * 5] * 10)
    out = cap_summary(emoji, max_lines=20, max_bytes=60)
    assert all(line == "🙂" * 5 for line in out.splitlines()[:-1])


def test_handoff_size(tmp_path: Path) -> None:
    log = tmp_path / "stdout.jsonl"
    log.write_bytes(b"x" * 1000)
    h = handoff_size(["é", "ab"], [log, tmp_path / "missing.jsonl"])
    assert (h.handed_bytes, h.transcript_bytes) == (4, 1000)
    assert h.ratio == pytest.approx(0.004)
    assert h.to_dict()["transcript_bytes"] == 1000
    assert handoff_size("abc", []).ratio is None


def test_a_view_is_never_another_results_whose_id_was_reused() -> None:
    # views were cached by id(result): once a result was freed its id came back for a new one (a
    # later loop iteration's verify shown as an earlier impl)
    from bridge.events import Status
    from bridge.playbook import Playbook
    from bridge.unit import StageResult
    from bridge.views import Contexts

    pb = Playbook.model_validate({"version": 1, "name": "t", "agents": {"a": {"cli": "codex"}},
                                  "stages": {"impl": {"agent": "a", "prompt": "x"},
                                             "verify": {"agent": "a", "prompt": "x"}}})
    contexts = Contexts(pb, shared=Path("/tmp/none"), inbox=Path("/tmp/none"), run_id="r", vars={})
    for _ in range(200):
        old = StageResult("impl", Status.SUCCESS, "", ())
        assert contexts.view("impl", old).id == "impl"
        del old
        assert contexts.view("verify", StageResult("verify", Status.FAILURE, "", ())).status == "failure"
