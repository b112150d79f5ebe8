"""Incremental, pure decoders for streamed bodies: Server-Sent Events and NDJSON.

Both take bytes split at any offset (inside a CRLF, inside a multi-byte UTF-8
character, inside the byte order mark) and return the complete events so far;
``flush()`` ends the body. Framing follows the WHATWG HTML "event stream"
interpretation rules
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):
a leading UTF-8 BOM is dropped; lines end in CRLF, LF or CR; ``:`` starts a
comment; ``data:`` lines of one event are joined with ``\\n``; a blank line
dispatches; one space after the colon is dropped; ``id`` persists across
events (unless it holds NUL); ``retry`` takes ASCII digits only; unknown fields
are ignored.

Lines are only ever split at CR or LF bytes, which never occur inside a
multi-byte UTF-8 sequence, so each line is decoded whole and a character split
across two reads is never mangled.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import final

__all__ = ["NDJSONDecoder", "SSEDecoder", "SSEEvent"]

_BOM = b"\xef\xbb\xbf"


@final
class SSEEvent:
    """One dispatched event: ``event`` (default ``"message"``), ``data``, ``id``, ``retry``."""

    __slots__ = ("data", "event", "id", "retry")

    def __init__(
        self, data: str, event: str = "message", id: str | None = None, retry: int | None = None
    ) -> None:
        self.data = data
        self.event = event
        self.id = id
        self.retry = retry

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SSEEvent):
            return NotImplemented
        return (self.data, self.event, self.id, self.retry) == (
            other.data,
            other.event,
            other.id,
            other.retry,
        )

    def __hash__(self) -> int:
        return hash((self.data, self.event, self.id, self.retry))

    def __repr__(self) -> str:
        retry = "" if self.retry is None else f", retry={self.retry!r}"
        return f"SSEEvent(event={self.event!r}, data={self.data!r}, id={self.id!r}{retry})"


@final
class SSEDecoder:
    """Bytes in, :class:`SSEEvent` out; keeps only the unfinished line between calls.

    Args:
        data_fields: non-standard field names whose value is the data of an
            event of that name. Older llama.cpp servers report a failure as an
            ``error: {...}`` line, which the spec would ignore;
            ``SSEDecoder(data_fields=("error",))`` turns it into
            ``SSEEvent(event="error", data="{...}")``.
    """

    __slots__ = (
        "_at_start",
        "_buffer",
        "_data",
        "_data_fields",
        "_event",
        "_has_data",
        "_last_id",
        "_retry",
        "_skip_lf",
    )

    def __init__(self, *, data_fields: Iterable[str] = ()) -> None:
        self._buffer = b""
        self._at_start = True  # the BOM may still come
        self._skip_lf = False  # the last byte seen was a CR ending a line
        self._data: list[str] = []
        self._has_data = False
        self._event = ""
        self._last_id: str | None = None
        self._retry: int | None = None
        self._data_fields = frozenset(name.encode("ascii") for name in data_fields)

    def feed(self, data: bytes) -> list[SSEEvent]:
        """Decode more of the body; return the events it completed."""
        if not data:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if data[:1] == b"\n":  # the LF of a CRLF split across two reads
                data = data[1:]
                if not data:
                    return []
        buffer = self._buffer + data if self._buffer else data
        if self._at_start:
            if len(buffer) < len(_BOM) and _BOM.startswith(buffer):
                self._buffer = buffer  # maybe the start of a BOM: wait for more
                return []
            self._at_start = False
            if buffer.startswith(_BOM):
                buffer = buffer[len(_BOM) :]
        if b"\r" in buffer:
            # A CR ends a line at once; if the next read starts with LF, it is skipped.
            self._skip_lf = buffer.endswith(b"\r")
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buffer.split(b"\n")
        self._buffer = lines.pop()
        events: list[SSEEvent] = []
        line = self._line
        for raw in lines:
            # The two lines of nearly every event, inline: "data: ..." and the blank line.
            if raw.startswith(b"data: "):
                self._data.append(raw[6:].decode("utf-8", "replace"))
                self._has_data = True
            elif raw or self._event or self._retry is not None:
                line(raw, events)
            elif self._has_data:
                events.append(SSEEvent("\n".join(self._data), "message", self._last_id))
                self._data = []
                self._has_data = False
        return events

    def flush(self) -> list[SSEEvent]:
        """End of body: finish a last line and dispatch an event left without its blank line.

        The spec drops such an event; many OpenAI-compatible servers end with
        ``data: [DONE]`` and no blank line, so it is kept.
        """
        events: list[SSEEvent] = []
        rest = self._buffer
        self._buffer = b""
        if self._at_start and _BOM.startswith(rest):
            rest = b""  # a body that is nothing but (part of) a BOM
        self._at_start = False
        if rest:
            self._line(rest, events)
        if self._has_data:
            self._line(b"", events)
        return events

    def _line(self, line: bytes, events: list[SSEEvent]) -> None:
        if not line:
            if self._has_data:
                events.append(
                    SSEEvent("\n".join(self._data), self._event or "message", self._last_id)
                    if self._retry is None
                    else SSEEvent(
                        "\n".join(self._data), self._event or "message", self._last_id, self._retry
                    )
                )
                self._data = []
                self._has_data = False
            self._event = ""
            self._retry = None
            return
        if line[0] == 0x3A:  # ":" comment / keep-alive
            return
        name, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value.decode("utf-8", "replace"))
            self._has_data = True
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\x00" not in value:
                self._last_id = value.decode("utf-8", "replace")
        elif name == b"retry":
            if value.isdigit():  # bytes.isdigit is ASCII digits only
                self._retry = int(value)
        elif name in self._data_fields:
            self._event = name.decode("ascii")
            self._data.append(value.decode("utf-8", "replace"))
            self._has_data = True


@final
class NDJSONDecoder:
    """Bytes in, complete lines out (newline-delimited JSON); blank lines are skipped.

    Lines end in LF or CRLF. The lines are returned as bytes: each provider
    parses them, so a malformed line becomes that provider's typed error.
    """

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        """Decode more of the body; return the lines it completed."""
        buffer = self._buffer + data if self._buffer else data
        if b"\n" not in data:
            self._buffer = buffer
            return []
        lines = buffer.split(b"\n")
        self._buffer = lines.pop()
        return [stripped for line in lines if (stripped := line.strip())]

    def flush(self) -> list[bytes]:
        """End of body: a last line without its newline."""
        rest, self._buffer = self._buffer.strip(), b""
        return [rest] if rest else []
