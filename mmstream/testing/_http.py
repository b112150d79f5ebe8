"""HTTP/1.1 for the loopback server: reading requests, writing heads and chunks, response plans.

A request is read whole (head, then a ``Content-Length`` or chunked body); an
answer is a plan of writes and sleeps, so the server can pace a stream, splice
faults into it and notice a client that leaves between two writes.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import socket
import struct
from collections.abc import Sequence
from typing import Literal

import anyio
import anyio.abc
from anyio.abc import SocketAttribute

from mmstream.testing._errors import error_frame, malformed_frame, reason_phrase
from mmstream.testing._formats import Answer, render_stream
from mmstream.testing._script import Fault

__all__ = [
    "BadRequest",
    "Connection",
    "End",
    "Step",
    "abort",
    "chunk",
    "response_head",
    "stream_plan",
]

#: largest request head accepted (status line + headers).
_MAX_HEAD = 64 * 1024
#: largest single write; bigger bodies are cut so a disconnect is noticed between writes.
_WRITE = 256 * 1024


class BadRequest(Exception):
    pass


class Connection:
    """One accepted TCP connection: its stream, id and unread bytes."""

    __slots__ = ("buffer", "id", "stream")

    def __init__(self, stream: anyio.abc.SocketStream, conn_id: int) -> None:
        self.stream = stream
        self.id = conn_id
        self.buffer = bytearray()

    async def read_request(
        self,
    ) -> tuple[str, str, str, dict[str, str], bytes] | None:
        """The next request (method, target, version, headers, body), or ``None`` at EOF."""
        buffer = self.buffer
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(buffer) > _MAX_HEAD:
                raise BadRequest("request head too large")
            try:
                data = await self.stream.receive(65536)
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                if buffer.strip():
                    raise BadRequest("connection closed inside a request head") from None
                return None
            buffer += data
        head = bytes(buffer[:end]).decode("latin-1")
        del buffer[: end + 4]
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise BadRequest(f"bad request line {lines[0]!r}")
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                raise BadRequest(f"bad header line {line!r}")
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        if headers.get("expect", "").lower() == "100-continue":
            await self.stream.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            if "chunked" in headers.get("transfer-encoding", "").lower():
                body = await self._read_chunked()
            else:
                body = await self._read_exactly(int(headers.get("content-length", "0") or "0"))
        except ValueError:
            raise BadRequest("bad content-length or chunk size") from None
        return method, target, version, headers, body

    async def _fill(self, size: int) -> None:
        while len(self.buffer) < size:
            try:
                data = await self.stream.receive(max(65536, size - len(self.buffer)))
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                raise BadRequest("connection closed inside a request body") from None
            self.buffer += data

    async def _read_exactly(self, size: int) -> bytes:
        await self._fill(size)
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    async def _read_line(self) -> bytes:
        while True:
            end = self.buffer.find(b"\r\n")
            if end >= 0:
                line = bytes(self.buffer[:end])
                del self.buffer[: end + 2]
                return line
            await self._fill(len(self.buffer) + 1)

    async def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int((await self._read_line()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while await self._read_line():  # trailers
                    pass
                return b"".join(parts)
            parts.append(await self._read_exactly(size))
            await self._read_line()


# A response plan: ("write", bytes, content events in it) | ("sleep", seconds) | end.
Step = tuple[Literal["write"], bytes, int] | tuple[Literal["sleep"], float]
End = Literal["finish", "close", "drop", "reset"]


def abort(stream: anyio.abc.SocketStream) -> None:
    """Make the coming close send a TCP RST instead of a FIN."""
    with contextlib.suppress(Exception):
        sock: socket.socket = stream.extra(SocketAttribute.raw_socket)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def response_head(
    status: int,
    content_type: str | None,
    length: int | None,
    *,
    close: bool = False,
    extra: Sequence[tuple[str, str]] = (),
) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason_phrase(status)}"]
    if content_type is not None:
        lines.append(f"content-type: {content_type}")
    if length is None:
        lines.append("transfer-encoding: chunked")
    else:
        lines.append(f"content-length: {length}")
    lines.extend(f"{name}: {value}" for name, value in extra)
    if close:
        lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def stream_plan(
    answer: Answer, sse: bool, pause: float, faults: Sequence[Fault]
) -> tuple[str, list[Step], End]:
    """The body of a streamed answer as writes and sleeps, with the faults spliced in.

    Without pauses the frames are joined into writes of about ``_WRITE`` bytes
    (one chunked-encoding chunk each); the work per frame is C-level joins.
    """
    by_kind = {f.kind: f for f in faults}
    rendered = render_stream(answer, end="missing_end" not in by_kind)
    head, content, tail = rendered.head, rendered.chunks, rendered.tail
    end: End = "finish"
    if "malformed" in by_kind:
        at = min(by_kind["malformed"].after_chunks, len(content))
        content = [*content[:at], malformed_frame(answer.api, sse), *content[at:]]
    if "error_event" in by_kind:
        fault = by_kind["error_event"]
        content = [*content[: fault.after_chunks]]
        tail = [error_frame(answer.api, sse, fault.status, fault.message)]
        if not sse and answer.api == "gemini":
            tail.append(b"]")
    if "drop" in by_kind:
        content = content[: by_kind["drop"].after_chunks]
        tail = []
        end = "drop"
    frames = [*head, *content, *tail]
    flags = [0] * len(head) + [1] * len(content) + [0] * len(tail)
    if "malformed" in by_kind and len(content) > at:
        flags[len(head) + at] = 0
    # Sleeps, keyed by the index of the frame they come before.
    breaks: dict[int, float] = {}
    first, stop = len(head), len(head) + len(content)
    if pause:
        breaks = dict.fromkeys(range(first + 1, stop + (1 if tail else 0)), pause)
    stall = by_kind.get("stall")
    if stall is not None and stall.after_chunks >= 0:
        breaks[min(first + stall.after_chunks, len(frames))] = stall.seconds
    ends = list(itertools.accumulate(map(len, frames)))
    counts = list(itertools.accumulate(flags))
    steps: list[Step] = []
    start = 0
    for cut in [*sorted(breaks), len(frames)]:
        while start < cut:
            base = ends[start - 1] if start else 0
            stop_at = max(bisect.bisect_right(ends, base + _WRITE, start, cut), start + 1)
            sent = counts[stop_at - 1] - (counts[start - 1] if start else 0)
            steps.append(("write", chunk(b"".join(frames[start:stop_at])), sent))
            start = stop_at
        if cut in breaks:
            steps.append(("sleep", breaks[cut]))
    if end != "drop":
        last = steps[-1] if steps else None
        if last is not None and last[0] == "write":
            steps[-1] = ("write", last[1] + b"0\r\n\r\n", last[2])
        else:
            steps.append(("write", b"0\r\n\r\n", 0))
    return rendered.content_type, steps, end
