"""Container logs for the tunnel: read CRI log files, select what ``kubectl logs`` asked for, follow.

A CRI log file holds one record per write: ``<RFC3339Nano> <stdout|stderr> <F|P> <text>``. A ``P``
(partial) record continues in the next one; an ``F`` record ends a line. Options follow the
kubelet's: ``tail_lines`` counts whole lines from the end, ``since`` drops records older than a unix
time, ``timestamps`` prefixes each record with its own time, ``limit_bytes`` cuts the output.

Following polls the file (a quarter second when idle): inotify would save little for a handful of
followed containers and does not exist everywhere. It ends once the container attempt that was
running at the start has exited and its file is read to the end, as the kubelet does; a file that
shrinks or is replaced (rotation) is read again from its start.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

POLL = 0.25  # seconds between looks at a followed file that did not grow
READ_SIZE = 64 * 1024


class Sink(Protocol):
    async def send(self, channel: int, data: bytes) -> None: ...


@dataclasses.dataclass(frozen=True, slots=True)
class LogOptions:
    follow: bool = False
    tail_lines: int | None = None
    since: float | None = None  # unix time
    timestamps: bool = False
    limit_bytes: int | None = None

    @classmethod
    def from_header(cls, header: dict[str, Any]) -> LogOptions:
        def number(key: str) -> Any:
            value = header.get(key)
            return value if isinstance(value, int | float) and not isinstance(value, bool) else None

        return cls(
            follow=bool(header.get("follow")),
            tail_lines=number("tail_lines"),
            since=number("since"),
            timestamps=bool(header.get("timestamps")),
            limit_bytes=number("limit_bytes"),
        )


def parse_time(stamp: bytes) -> float | None:
    """Unix time of an RFC 3339 timestamp with up to nanoseconds (Python parses microseconds)."""
    text = stamp.decode("ascii", errors="replace")
    head, dot, rest = text.partition(".")
    fraction, zone = "", ""
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        fraction, zone = rest[:digits], rest[digits:]
    else:
        head, zone = text[:19], text[19:]
    try:
        moment = datetime.datetime.fromisoformat(head + (zone or "Z"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp() + (float(f"0.{fraction}") if fraction else 0.0)


@dataclasses.dataclass(slots=True)
class Record:
    stamp: bytes
    text: bytes  # with its newline when the record ends a line
    time: float | None

    @property
    def ends_line(self) -> bool:
        return self.text.endswith(b"\n")


def parse_records(lines: Iterable[bytes]) -> Iterator[Record]:
    for line in lines:
        parts = line.rstrip(b"\n").split(b" ", 3)
        if len(parts) < 3 or parts[2] not in (b"F", b"P"):
            yield Record(b"", line if line.endswith(b"\n") else line + b"\n", None)  # not CRI: pass through
            continue
        text = parts[3] if len(parts) == 4 else b""
        yield Record(parts[0], text if parts[2] == b"P" else text + b"\n", parse_time(parts[0]))


def select(records: Iterable[Record], options: LogOptions) -> list[Record]:
    """The records ``kubectl logs`` shows before following: since, then the last ``tail_lines`` lines."""
    chosen = [r for r in records if options.since is None or r.time is None or r.time >= options.since]
    if options.tail_lines is None:
        return chosen
    if options.tail_lines <= 0:
        return []
    lines: collections.deque[list[Record]] = collections.deque(maxlen=options.tail_lines)
    current: list[Record] = []
    for record in chosen:
        current.append(record)
        if record.ends_line:
            lines.append(current)
            current = []
    if current:
        lines.append(current)
    return [record for line in lines for record in line]


class LogWriter:
    """Renders records to the sink, honouring ``timestamps`` and ``limit_bytes``."""

    def __init__(self, sink: Sink, options: LogOptions, *, channel: int = 1) -> None:
        self._sink = sink
        self._options = options
        self._channel = channel
        self._left = options.limit_bytes

    @property
    def full(self) -> bool:
        return self._left is not None and self._left <= 0

    async def write(self, records: Iterable[Record]) -> None:
        out = bytearray()
        for record in records:
            if self._options.timestamps and record.stamp:
                out += record.stamp + b" "
            out += record.text
        if self._left is not None:
            out = out[: self._left]
            self._left -= len(out)
        if out:
            await self._sink.send(self._channel, bytes(out))


async def stream_log(
    sink: Sink, path: Path, options: LogOptions, *, running: Callable[[], bool], poll: float = POLL
) -> None:
    """Send the selected part of the log at ``path``, then follow it while ``running()`` holds."""
    writer = LogWriter(sink, options)
    follower = _Follower(path)
    await writer.write(select(parse_records(follower.read_lines()), options))
    if not options.follow:
        return
    while not writer.full:
        lines = follower.read_lines()
        if lines:
            await writer.write(parse_records(lines))
            continue
        if not running():
            await writer.write(parse_records(follower.read_lines(final=True)))
            return
        await asyncio.sleep(poll)


class _Follower:
    """Reads whole lines from a file that grows, and starts over when it is truncated or replaced."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._inode: int | None = None
        self._offset = 0
        self._pending = b""

    def read_lines(self, *, final: bool = False) -> list[bytes]:
        try:
            stat = os.stat(self._path)
        except FileNotFoundError:
            return []
        if stat.st_ino != self._inode or stat.st_size < self._offset:
            self._inode, self._offset, self._pending = stat.st_ino, 0, b""
        if stat.st_size > self._offset:
            with open(self._path, "rb") as handle:
                handle.seek(self._offset)
                data = handle.read(max(stat.st_size - self._offset, READ_SIZE))
            self._offset += len(data)
            self._pending += data
        complete, newline, rest = self._pending.rpartition(b"\n")
        self._pending = rest
        lines = [line + b"\n" for line in complete.split(b"\n")] if newline else []
        if final and self._pending:
            lines.append(self._pending)
            self._pending = b""
        return lines
