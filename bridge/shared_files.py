"""Reading what agents wrote, safely: outputs, the task list, files in a worktree.

An agent controls these files, so bridge never follows them anywhere: a symlink is not read (it could
point outside the shared folder), nor a file with more than one hard link (`ln /outside/secret.txt
out.txt` shares the outside file's inode), nor anything but a regular file (opening a FIFO blocks
until a writer comes, for good). The checks run on `lstat` before the open and again on the open
file (`fstat`), which is opened with O_NOFOLLOW | O_NONBLOCK, so a file swapped in between is caught
too. Reads are capped: a 300 MB output costs bridge at most the cap in memory (docs/shared-folder.md).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from bridge.errors import BridgeError

TEXT_CAP = 1 << 20  # `.text` of an output: at most 1 MiB is read, then a marker says what was left out
JSON_CAP = 4 << 20  # a JSON output is parsed (and schema-checked) only up to 4 MiB

_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


class UnsafeFile(BridgeError):
    """A file bridge will not read: a symlink, not a regular file, or hard-linked elsewhere."""


@dataclass(frozen=True)
class Read:
    data: bytes  # at most `limit` bytes from the start of the file
    size: int  # the file's whole size

    @property
    def truncated(self) -> bool:
        return self.size > len(self.data)


def unsafe(st: os.stat_result) -> str | None:
    """Why a file with this (l)stat must not be read, or None."""
    if stat.S_ISLNK(st.st_mode):
        return "is a symlink; write a regular file instead"
    if stat.S_ISFIFO(st.st_mode):
        return "is a FIFO (named pipe), not a regular file"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if st.st_nlink > 1:
        return (f"has {st.st_nlink} hard links, so it may be a file from outside the shared folder under a "
                "second name; write a new file instead of linking one")
    return None


@contextlib.contextmanager
def open_regular(path: Path) -> Iterator[BinaryIO]:
    """The regular file at `path`, open for reading; UnsafeFile (or OSError) if it cannot be read
    safely; FileNotFoundError when it does not exist, IsADirectoryError for a folder."""
    st = os.lstat(path)
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", str(path))
    why = unsafe(st)
    if why:
        raise UnsafeFile(f"{path} {why}")
    try:
        fd = os.open(path, _FLAGS)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):  # swapped for a link or a FIFO meanwhile
            raise UnsafeFile(f"{path} changed into something that is not a regular file") from None
        raise
    with os.fdopen(fd, "rb") as fh:
        why = unsafe(os.fstat(fh.fileno()))
        if why:
            raise UnsafeFile(f"{path} {why}")
        os.set_blocking(fh.fileno(), True)
        yield fh


def read_regular(path: Path, limit: int) -> Read:
    """The first `limit` bytes of the regular file at `path` (as `open_regular` opens it)."""
    with open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        data = fh.read(limit)
    return Read(data, max(size, len(data)))


def _whole_chars(data: bytes) -> bytes:
    """`data` without a last UTF-8 character that the cap cut in two."""
    i = len(data) - 1
    while i >= 0 and len(data) - i <= 4 and (data[i] & 0xC0) == 0x80:
        i -= 1  # back over continuation bytes to the character's lead byte
    if i < 0:
        return data
    lead = data[i]
    need = 2 if 0xC0 <= lead < 0xE0 else 3 if 0xE0 <= lead < 0xF0 else 4 if 0xF0 <= lead < 0xF8 else 1
    return data[:i] if len(data) - i < need else data


def decode_capped(read: Read, path: Path | str) -> str:
    """The text of `read` (UTF-8, bad bytes replaced), never cut inside a character, with a marker
    when the file holds more than was read."""
    if not read.truncated:
        return read.data.decode("utf-8", errors="replace")
    data = _whole_chars(read.data)
    return (data.decode("utf-8", errors="replace") + f"\n[… bridge read the first {len(data):,} of "
            f"{read.size:,} bytes of this file; the rest is in {path}]")
