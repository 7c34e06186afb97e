"""dag: layers, cycles, upstream sets and what each stage may see."""

from __future__ import annotations

import pytest

from bridge.dag import CycleError, find_cycle, layers, upstream, visible
from bridge.loader import load_playbook_text


def test_layers_keep_declaration_order() -> None:
    needs = {"a": [], "b": [], "c": ["a"], "d": ["c", "b"], "e": ["a"]}
    assert layers(needs) == [["a", "b"], ["c", "e"], ["d"]]


def test_cycle_is_named_with_its_path() -> None:
    needs = {"x": [], "a": ["b"], "b": ["c"], "c": ["a"]}
    assert find_cycle(needs) == ["a", "b", "c", "a"]
    with pytest.raises(CycleError, match="a -> b -> c -> a"):
        layers(needs)
    assert find_cycle({"a": ["a"]}) == ["a", "a"]
    assert find_cycle({"a": [], "b": ["a"]}) is None


def test_a_need_outside_the_group_is_met_before_it() -> None:
    # a finally stage may need a main stage (dangling needs are reported by validation, not here)
    assert layers({"f1": ["main"], "f2": ["f1", "main"]}) == [["f1"], ["f2"]]


def test_upstream_is_transitive_and_cycle_safe() -> None:
    needs = {"a": [], "b": ["a"], "c": ["b"], "d": []}
    assert upstream(needs, "c") == {"a", "b"}
    assert upstream(needs, "d") == set()
    assert upstream({"a": ["b"], "b": ["a"]}, "a") == {"b"}


PB = """\
version: 1
name: pb
agents: {a: {cli: codex}}
stages:
  s1: {agent: a, prompt: x}
  s2: {agent: a, prompt: x}
  loop1:
    needs: [s1]
    loop:
      until: "true"
      stages:
        m1: {agent: a, prompt: x}
        m2: {agent: a, prompt: x, needs: [m1]}
  after: {agent: a, prompt: x, needs: [loop1]}
finally:
  f1: {agent: a, prompt: x}
  f2: {agent: a, prompt: x, needs: [f1]}
"""


def test_visible_stages() -> None:
    pb = load_playbook_text(PB, "pb.yaml")
    assert visible(pb, "s2") == []
    assert visible(pb, "m1") == ["s1"]
    assert visible(pb, "m2") == ["s1", "m1"]
    assert visible(pb, "after") == ["s1", "loop1", "m1", "m2"]
    assert visible(pb, "loop1", until=True) == ["s1", "m1", "m2"]
    assert visible(pb, "f1") == ["s1", "s2", "loop1", "m1", "m2", "after"]
    assert visible(pb, "f2")[-1] == "f1"
