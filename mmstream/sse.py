"""Incremental, pure decoders for streamed bodies: Server-Sent Events and NDJSON.

Both take bytes split at any offset (inside a CRLF, inside a multi-byte UTF-8
character) and return the complete events so far; ``flush()`` ends the body.
Framing follows the WHATWG HTML "event stream" interpretation rules
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):
lines end in CRLF, LF or CR; ``:`` starts a comment; ``data:`` lines of one
event are joined with ``\\n``; a blank line dispatches; one space after the
colon is dropped; ``id`` persists across events; ``retry`` takes digits only.
"""

from __future__ import annotations

from typing import final

__all__ = ["NDJSONDecoder", "SSEDecoder", "SSEEvent"]


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
        return f"SSEEvent(event={self.event!r}, data={self.data!r}, id={self.id!r})"


@final
class SSEDecoder:
    """Bytes in, :class:`SSEEvent` out; keeps only the unfinished line between calls."""

    __slots__ = ("_buffer", "_data", "_event", "_has_data", "_last_id", "_retry")

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []
        self._has_data = False
        self._event = ""
        self._last_id: str | None = None
        self._retry: int | None = None

    def feed(self, data: bytes) -> list[SSEEvent]:
        """Decode more of the body; return the events it completed."""
        buffer = self._buffer + data if self._buffer else data
        if b"\r" in buffer:
            # A CR at the very end may be the first half of a CRLF: keep it back.
            held = b""
            if buffer.endswith(b"\r"):
                buffer, held = buffer[:-1], b"\r"
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            lines = buffer.split(b"\n")
            self._buffer = lines.pop() + held
        else:
            lines = buffer.split(b"\n")
            self._buffer = lines.pop()
        events: list[SSEEvent] = []
        for line in lines:
            self._line(line, events)
        return events

    def flush(self) -> list[SSEEvent]:
        """End of body: finish a last line and dispatch an event left without its blank line.

        The spec drops such an event; many OpenAI-compatible servers end with
        ``data: [DONE]`` and no blank line, so it is kept.
        """
        events: list[SSEEvent] = []
        rest = self._buffer.rstrip(b"\r")
        self._buffer = b""
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
        text = value.decode("utf-8", "replace")
        if name == b"data":
            self._data.append(text)
            self._has_data = True
        elif name == b"event":
            self._event = text
        elif name == b"id":
            if "\x00" not in text:
                self._last_id = text
        elif name == b"retry" and text.isascii() and text.isdigit():
            self._retry = int(text)


@final
class NDJSONDecoder:
    """Bytes in, complete lines out (newline-delimited JSON); blank lines are skipped.

    The lines are returned as bytes: each provider parses them, so a malformed
    line becomes that provider's typed error.
    """

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        """Decode more of the body; return the lines it completed."""
        buffer = self._buffer + data if self._buffer else data
        lines = buffer.split(b"\n")
        self._buffer = lines.pop()
        return [stripped for line in lines if (stripped := line.strip())]

    def flush(self) -> list[bytes]:
        """End of body: a last line without its newline."""
        rest, self._buffer = self._buffer.strip(), b""
        return [rest] if rest else []
