"""What a template sees of one output file: `OutputValue` (lazy, safe, capped) and `StubValue`.

Part of the template context (bridge.context re-exports both); see OutputValue's docstring for
when and how a file is read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2

from bridge.errors import BridgeError
from bridge.outputs import resolve_output
from bridge.shared_files import JSON_CAP, TEXT_CAP, Read, decode_capped, read_regular

__all__ = ["OutputValue", "StubValue"]


class StubValue(jinja2.ChainableUndefined):
    """What a stub output answers for any JSON key at validation time: the JSON is unknown, so
    whatever a template does with it (`.a.b`, `+ 1`, `< 3`, `|int`, `== 'pass'`) renders."""

    __slots__ = ()

    def _same(self, *args: Any, **kwargs: Any) -> StubValue:
        return self

    def _false(self, other: Any) -> bool:
        return False

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __div__ = __rdiv__ = _same
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = _same
    __pow__ = __rpow__ = __pos__ = __neg__ = __call__ = _same
    __lt__ = __le__ = __gt__ = __ge__ = _false

    def __int__(self) -> int:
        return 0

    def __float__(self) -> float:
        return 0.0

    def __complex__(self) -> complex:
        return 0j


class OutputValue(dict):  # type: ignore[type-arg]
    """One output file. For `.json` outputs the dict holds the parsed JSON (so `.status` works).

    `str()` is the absolute path; `.rel` the path relative to the shared folder; `.text` the content;
    `.parsed` the parsed JSON whatever its type (None if not JSON). A JSON key that clashes with these
    attributes is still reachable as `value['text']`. A stub (validation) answers any key with a
    permissive placeholder, since the JSON is unknown.

    A loaded value (`load`) reads its file only when a template first asks for its text or a JSON
    key — a template that only names the path reads nothing — and then safely and within caps
    (bridge.shared_files): `.text` at most TEXT_CAP bytes (a marker says what was left out), JSON
    parsed only up to JSON_CAP. A file that is not safe to read (a symlink, a FIFO, a hard link)
    counts as missing: empty text, no keys, and `.problem` says why.
    """

    def __init__(self, path: Path, rel: str, text: str = "", data: Any = None, stub: bool = False) -> None:
        super().__init__(data if isinstance(data, dict) else {})
        self.path, self.rel = str(path), rel
        self._text, self._parsed, self._stub = text, data, stub
        self._shared: Path | None = None  # set by `load`: read on first use
        self.problem: str | None = None

    @classmethod
    def load(cls, shared: Path, rel: str) -> OutputValue:
        """An output file of the shared folder, read when first used (missing -> empty text; bad JSON -> no keys)."""
        value = cls(shared / rel, rel)
        value._shared = shared
        return value

    @property
    def loaded(self) -> bool:
        """Whether the content is known (read, or given): hand-off accounting counts only what was read."""
        return self._shared is None

    def _load(self) -> None:
        shared, self._shared = self._shared, None
        if shared is None:
            return
        is_json = self.rel.endswith(".json")
        try:
            read = read_regular(resolve_output(shared, self.rel), max(TEXT_CAP, JSON_CAP + 1 if is_json else 0))
        except FileNotFoundError:
            return
        except (OSError, BridgeError) as exc:
            self.problem = str(exc) if isinstance(exc, BridgeError) else f"{self.path}: {exc.strerror}"
            return
        self._text = decode_capped(Read(read.data[:TEXT_CAP], read.size), self.path)
        if is_json and read.data.strip():
            if read.size > JSON_CAP:
                self.problem = f"{self.path} holds {read.size:,} bytes of JSON, more than the {JSON_CAP:,} read"
                return
            try:
                self._parsed = json.loads(read.data.decode("utf-8", errors="replace"))
            except ValueError:
                return
            if isinstance(self._parsed, dict):
                dict.update(self, self._parsed)

    @property
    def text(self) -> str:
        self._load()
        return self._text

    @property
    def parsed(self) -> Any:
        self._load()
        return self._parsed

    # the dict's JSON keys are known only once the file is read
    def __getitem__(self, key: Any) -> Any:
        self._load()
        return dict.__getitem__(self, key)

    def __contains__(self, key: object) -> bool:
        self._load()
        return dict.__contains__(self, key)

    def __iter__(self) -> Iterator[Any]:
        self._load()
        return dict.__iter__(self)

    def __len__(self) -> int:
        self._load()
        return dict.__len__(self)

    def get(self, key: Any, default: Any = None) -> Any:
        self._load()
        return dict.get(self, key, default)

    def keys(self) -> Any:
        self._load()
        return dict.keys(self)

    def values(self) -> Any:
        self._load()
        return dict.values(self)

    def items(self) -> Any:
        self._load()
        return dict.items(self)

    def __repr__(self) -> str:
        return f"OutputValue({self.rel!r})"

    def __missing__(self, key: Any) -> Any:
        if self._stub:
            return StubValue(name=str(key))
        raise KeyError(key)

    def __str__(self) -> str:
        return self.path

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(self.path)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return self.path == other
        if getattr(other, "path", None) != self.path:
            return False
        self._load()
        return dict.__eq__(self, dict(other.items()) if isinstance(other, OutputValue) else other)  # type: ignore[arg-type]
