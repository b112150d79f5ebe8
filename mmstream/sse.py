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

Decoding is linear in the bytes read whatever the line length: the pieces of
an unfinished line are kept apart and joined once, when the line ends. A line
longer than ``max_line`` bytes (16 MiB by default,
[`DEFAULT_MAX_LINE`][mmstream.sse.DEFAULT_MAX_LINE]) raises
[`ProviderProtocolError`][mmstream.errors.ProviderProtocolError] instead of
growing without bound; the events completed before it are returned first.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import final

from mmstream.errors import ProviderProtocolError

__all__ = ["DEFAULT_MAX_LINE", "NDJSONDecoder", "SSEDecoder", "SSEEvent"]

#: The longest line a decoder holds: 16 MiB. A whole long answer in one event is
#: well under 1 MiB (128k tokens of text); the largest events real APIs send are
#: inline generated images (base64 of a 2048x2048 PNG is about 8-11 MB), which
#: still fit. Past this a stream is broken or hostile, and each open stream's
#: memory stays bounded.
DEFAULT_MAX_LINE = 16 * 1024 * 1024

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


class _LineBuffer:
    """The unfinished line of a body, kept as pieces (joined once) under a cap.

    The decoders' ``feed`` use the slots inline on the hot path (an event per
    read leaves nothing held); the methods here are the rarer paths.
    """

    __slots__ = ("_max_line", "_parts", "_size", "_too_long")

    def __init__(self, max_line: int) -> None:
        if max_line < 1:
            raise ValueError(f"max_line must be at least 1 byte, not {max_line}")
        self._max_line = max_line
        self._parts: list[bytes] = []
        self._size = 0
        self._too_long = False

    def _hold(self, data: bytes) -> None:
        """Keep ``data``, a piece of a line that has not ended yet."""
        if self._too_long:
            raise self._line_error()
        self._parts.append(data)
        self._size += len(data)
        if self._size > self._max_line:
            raise self._line_error()

    def _joined(self, data: bytes) -> bytes:
        """The held pieces followed by ``data`` (which ends at least one line)."""
        parts = self._parts
        parts.append(data)
        joined = b"".join(parts)
        parts.clear()
        self._size = 0
        return joined

    def _lines(self, buffer: bytes) -> tuple[list[bytes], bool]:
        """The complete lines of ``buffer`` (up to one over the cap: then True); the rest held."""
        if self._too_long:
            raise self._line_error()
        lines = buffer.split(b"\n")
        rest = lines.pop()
        if rest:
            self._parts.append(rest)
            self._size = len(rest)
        if len(buffer) > self._max_line:
            return self._within_cap(lines)
        return lines, False

    def _within_cap(self, lines: list[bytes]) -> tuple[list[bytes], bool]:
        """``lines`` up to the first one over the cap, and whether one was (it raises later)."""
        for index, line in enumerate(lines):
            if len(line) > self._max_line:
                self._too_long = True
                return lines[:index], True
        if self._size > self._max_line:
            self._too_long = True
        return lines, self._too_long

    def _rest(self) -> bytes:
        """End of body: the line left without its end."""
        if self._too_long:
            raise self._line_error()
        rest = b"".join(self._parts)
        self._parts.clear()
        self._size = 0
        return rest

    def _line_error(self) -> ProviderProtocolError:
        """The error for a line over the cap (it stays: the body cannot be read further)."""
        self._too_long = True
        self._parts.clear()
        self._size = 0
        return ProviderProtocolError(
            f"the stream sent a line longer than {self._max_line:,} bytes; a provider that "
            "really sends such lines needs a larger max_line_bytes option"
        )


@final
class SSEDecoder(_LineBuffer):
    """Bytes in, [`SSEEvent`][mmstream.sse.SSEEvent] out; keeps only the unfinished line.

    Args:
        data_fields: non-standard field names whose value is the data of an
            event of that name. Older llama.cpp servers report a failure as an
            ``error: {...}`` line, which the spec would ignore;
            ``SSEDecoder(data_fields=("error",))`` turns it into
            ``SSEEvent(event="error", data="{...}")``.
        max_line: the longest line held, in bytes; a longer one raises
            [`ProviderProtocolError`][mmstream.errors.ProviderProtocolError].
    """

    __slots__ = (
        "_at_start",
        "_data",
        "_data_fields",
        "_event",
        "_has_data",
        "_last_id",
        "_retry",
        "_skip_lf",
    )

    def __init__(
        self, *, data_fields: Iterable[str] = (), max_line: int = DEFAULT_MAX_LINE
    ) -> None:
        super().__init__(max_line)
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
        has_cr = b"\r" in data
        if (self._parts or self._at_start) and not has_cr and b"\n" not in data:
            self._hold(data)  # inside a long line (or a BOM): nothing to join or scan yet
            return []
        buffer = self._joined(data) if self._parts else data
        if self._at_start:
            self._at_start = False
            if buffer.startswith(_BOM):
                buffer = buffer[len(_BOM) :]
        if has_cr:  # (held pieces never hold a CR or LF)
            # A CR ends a line at once; if the next read starts with LF, it is skipped.
            self._skip_lf = buffer.endswith(b"\r")
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        # (inline: the hot path; NDJSONDecoder calls _lines for the same)
        if self._too_long:
            raise self._line_error()
        lines = buffer.split(b"\n")
        rest = lines.pop()
        if rest:
            self._parts.append(rest)
            self._size = len(rest)
        cut = False
        if len(buffer) > self._max_line:
            lines, cut = self._within_cap(lines)
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
        if cut and not events:
            raise self._line_error()  # (with events, at the next call: they come first)
        return events

    def flush(self) -> list[SSEEvent]:
        """End of body: finish a last line and dispatch an event left without its blank line.

        The spec drops such an event; many OpenAI-compatible servers end with
        ``data: [DONE]`` and no blank line, so it is kept.
        """
        events: list[SSEEvent] = []
        rest = self._rest()
        if self._at_start:
            self._at_start = False
            if rest.startswith(_BOM):
                rest = rest[len(_BOM) :]
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
class NDJSONDecoder(_LineBuffer):
    """Bytes in, complete lines out (newline-delimited JSON); blank lines are skipped.

    Lines end in LF or CRLF. The lines are returned as bytes: each provider
    parses them, so a malformed line becomes that provider's typed error.

    Args:
        max_line: the longest line held, in bytes; a longer one raises
            [`ProviderProtocolError`][mmstream.errors.ProviderProtocolError].
    """

    __slots__ = ()

    def __init__(self, *, max_line: int = DEFAULT_MAX_LINE) -> None:
        super().__init__(max_line)

    def feed(self, data: bytes) -> list[bytes]:
        """Decode more of the body; return the lines it completed."""
        if b"\n" not in data:
            if data:
                self._hold(data)
            return []
        buffer = self._joined(data) if self._parts else data
        lines, cut = self._lines(buffer)
        found = [stripped for line in lines if (stripped := line.strip())]
        if cut and not found:
            raise self._line_error()
        return found

    def flush(self) -> list[bytes]:
        """End of body: a last line without its newline."""
        rest = self._rest().strip()
        return [rest] if rest else []
