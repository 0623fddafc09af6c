"""CRI-format container log files: one line per write, rotated by size, read back for attach.

The format is the one containerd and CRI-O write and ``kubectl logs`` expects from a kubelet:
``<RFC3339Nano timestamp> <stdout|stderr> <F|P> <text>\\n``, where ``P`` marks a partial line (a
chunk cut at ``MAX_LINE`` bytes, or output that ended without a newline) and ``F`` its last piece.

This module is imported twice: by the agent (``services.agent.runtimes.logs``) and, as a plain
top-level module, by the container shim (``shim.py``), which runs outside the agent's process and
package so that a container's output keeps being written while the agent restarts. It therefore
uses the standard library only.

Rotation follows the kubelet's ``containerLogMaxSize`` / ``containerLogMaxFiles``: when the live
file ``N.log`` would pass the size limit it is renamed ``N.log.1`` (older ones shift up, the oldest
beyond ``max_files - 1`` rotated files is removed) and a new ``N.log`` begins.
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Iterator

MAX_LINE = 16 * 1024  # bytes of text per log line before it is split into partial lines


def timestamp(now: float | None = None) -> str:
    """RFC 3339 with nanoseconds in UTC, as CRI runtimes write it."""
    ns = time.time_ns() if now is None else int(now * 1e9)
    seconds, frac = divmod(ns, 1_000_000_000)
    stamp = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


class Writer:
    """Append CRI lines to ``path``, rotating at ``max_size`` bytes and keeping ``max_files`` files."""

    def __init__(self, path: str, *, max_size: int = 10 * 1024 * 1024, max_files: int = 5) -> None:
        self.path = path
        self.max_size = max(max_size, 1024)
        self.max_files = max(max_files, 1)
        self._pending: dict[str, bytes] = {}  # stream -> bytes after the last newline
        self._file = open(path, "ab")  # noqa: SIM115 - held for the writer's lifetime
        self._size = self._file.tell()

    def write(self, stream: str, data: bytes) -> None:
        """Record output of ``stream``: whole lines now, a trailing fragment on the next write."""
        buffered = self._pending.pop(stream, b"") + data
        *lines, rest = buffered.split(b"\n")
        for line in lines:
            self._line(stream, line, final=True)
        while len(rest) > MAX_LINE:
            self._line(stream, rest[:MAX_LINE], final=False)
            rest = rest[MAX_LINE:]
        if rest:
            self._pending[stream] = rest
        self._file.flush()

    def flush_partial(self) -> None:
        """Write out fragments without a newline (the container ended, or went quiet)."""
        for stream, rest in list(self._pending.items()):
            self._line(stream, rest, final=False)
        self._pending.clear()
        self._file.flush()

    def close(self) -> None:
        self.flush_partial()
        self._file.close()

    def _line(self, stream: str, text: bytes, *, final: bool) -> None:
        while len(text) > MAX_LINE:
            self._line(stream, text[:MAX_LINE], final=False)
            text = text[MAX_LINE:]
        record = f"{timestamp()} {stream} {'F' if final else 'P'} ".encode() + text + b"\n"
        if self._size and self._size + len(record) > self.max_size:
            self._rotate()
        self._file.write(record)
        self._size += len(record)

    def _rotate(self) -> None:
        self._file.close()
        rotate(self.path, max_files=self.max_files)
        self._file = open(self.path, "ab")  # noqa: SIM115
        self._size = 0


def rotate(path: str, *, max_files: int) -> None:
    """Shift ``path`` to ``path.1`` (``.1`` to ``.2``...), dropping files beyond ``max_files``."""
    keep = max_files - 1  # rotated files kept beside the live one
    if keep <= 0:
        os.unlink(path)
        return
    for index in range(keep, 0, -1):
        older = f"{path}.{index}"
        if os.path.exists(older):
            if index == keep:
                os.unlink(older)
            else:
                os.replace(older, f"{path}.{index + 1}")
    os.replace(path, f"{path}.1")


def files(path: str) -> list[str]:
    """The rotated files then the live one, oldest first (what ``logs`` reads in order)."""
    rotated = []
    index = 1
    while os.path.exists(f"{path}.{index}"):
        rotated.append(f"{path}.{index}")
        index += 1
    return [*reversed(rotated), *([path] if os.path.exists(path) else [])]


def parse(line: bytes) -> tuple[str, str, bool, bytes] | None:
    """Split one CRI line into (timestamp, stream, final, text); None when it is not one."""
    parts = line.rstrip(b"\n").split(b" ", 3)
    if len(parts) < 3 or parts[2] not in (b"F", b"P"):
        return None
    text = parts[3] if len(parts) == 4 else b""
    return parts[0].decode(), parts[1].decode(), parts[2] == b"F", text


def read_text(path: str, *, stream: str | None = None) -> Iterator[bytes]:
    """The container's output as it wrote it (partial lines joined), across rotated files."""
    for name in files(path):
        with open(name, "rb") as handle:
            for raw in handle:
                parsed = parse(raw)
                if parsed is None or (stream is not None and parsed[1] != stream):
                    continue
                yield parsed[3] + (b"\n" if parsed[2] else b"")
