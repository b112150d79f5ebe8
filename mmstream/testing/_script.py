"""What the test server answers (a `Script`) and how it misbehaves (a `Fault`).

Both are frozen values ([`Script`][mmstream.testing.Script],
[`Fault`][mmstream.testing.Fault]). The answer text is a pure function of the
request ([`answer_text`][mmstream.testing.answer_text] of the last user message
and the number of images), so the same user code against every wire format sees
the same text, and tests can compute it; a `Script` replaces or shapes it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any, Literal, final, get_args

from attrs import evolve, field, frozen

__all__ = [
    "FAULT_KINDS",
    "IMAGE_TOKENS",
    "Fault",
    "FaultKind",
    "Script",
    "ToolCall",
    "answer_text",
    "split_text",
]

IMAGE_TOKENS = 85
"""Input tokens counted per image in the server's default usage numbers."""

FaultKind = Literal[
    "status",
    "drop",
    "reset",
    "stall",
    "malformed",
    "wrong_content_type",
    "huge_event",
    "error_event",
    "missing_end",
    "hang_up",
    "not_streamed",
]
"""The kinds of misbehaviour a [`Fault`][mmstream.testing.Fault] can inject."""
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)
"""Every fault kind as a tuple, in the order of `FaultKind` (every fault, every provider)."""


def answer_text(prompt: str, images: int = 0) -> str:
    """The server's default answer: an echo of the prompt's words and the image count.

    Args:
        prompt: the text of the request's last user message (its text parts
            joined with a space); whitespace is normalized.
        images: how many images the whole request carries.

    Returns:
        ``"You said: <words>."``, plus ``" I see N image(s)."`` when there are
        images; ``"Hello from the mmstream test server."`` for an empty prompt.
    """
    words = " ".join(prompt.split())
    text = f"You said: {words}." if words else "Hello from the mmstream test server."
    if images:
        text += f" I see {images} image{'' if images == 1 else 's'}."
    return text


def split_text(text: str, chunks: int | None = None, chunk_size: int | None = None) -> list[str]:
    """Cut ``text`` into the pieces the server streams, one piece per content event.

    - neither given: one piece per word (each word keeps its trailing space);
    - ``chunk_size`` only: pieces of that many characters;
    - ``chunks`` only: exactly that many pieces; words are grouped evenly when
      there are enough of them, otherwise they are cycled (``"a b"`` in 5
      chunks streams ``"a b a b a"``), so the streamed text grows;
    - both: ``chunks`` pieces of ``chunk_size`` characters, cycling the text.

    The concatenation of the pieces is the streamed text (``RecordedRequest.answer``).
    """
    if chunks is not None and chunks <= 0:
        return []
    if chunk_size is not None:
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be > 0, not {chunk_size}")
        if chunks is None:
            return [text[i : i + chunk_size] for i in range(0, len(text), chunk_size)] or [""]
        source = text or " "
        need = chunks * chunk_size
        repeated = (source * (need // len(source) + 1))[:need]
        return [repeated[i : i + chunk_size] for i in range(0, need, chunk_size)]
    words = _words(text)
    if chunks is None:
        return words or [""]
    if not words:
        return [""] * chunks
    if chunks <= len(words):
        size, extra = divmod(len(words), chunks)
        pieces: list[str] = []
        start = 0
        for index in range(chunks):
            end = start + size + (1 if index < extra else 0)
            pieces.append("".join(words[start:end]))
            start = end
        return pieces
    bare = [w.strip() for w in words]
    cycled = list(itertools.islice(itertools.cycle(bare), chunks))
    return [w + " " for w in cycled[:-1]] + [cycled[-1]]


def _words(text: str) -> list[str]:
    """Split on spaces, keeping each space with the word before it."""
    pieces: list[str] = []
    start = 0
    length = len(text)
    while start < length:
        end = text.find(" ", start)
        if end < 0:
            pieces.append(text[start:])
            break
        while end + 1 < length and text[end + 1] == " ":
            end += 1
        pieces.append(text[start : end + 1])
        start = end + 1
    return pieces


@final
@frozen(kw_only=True)
class ToolCall:
    """A tool (function) call the scripted model makes.

    Args:
        name: the function's name.
        arguments: the JSON arguments (a dict), streamed as JSON text fragments.
        id: the call id; ``call_<n>`` / ``toolu_<n>`` is made up when ``None``.
    """

    name: str
    arguments: Mapping[str, Any] = field(factory=dict)
    id: str | None = None


def _tool_calls(value: Iterable[ToolCall]) -> tuple[ToolCall, ...]:
    return tuple(value)


@final
@frozen(kw_only=True)
class Script:
    """How the server answers: text, chunking, pacing, usage, finish reason, tool calls.

    Every field left ``None`` keeps the default behaviour. A script set on the
    server applies to every request; one queued with ``TestServer.enqueue``
    applies to the next matching request; a JSON object of these fields in
    the ``x-mmstream-script`` request header applies to that request.

    Args:
        text: the answer; default [`answer_text`][mmstream.testing.answer_text] of the
            request (``""`` when ``tool_calls`` are given).
        chunks: stream exactly this many content events (see
            [`split_text`][mmstream.testing.split_text]).
        chunk_size: characters per content event.
        pause: seconds between content events (0: the whole body in large writes).
        input_tokens: reported prompt tokens (default: prompt words + 85 per image).
        output_tokens: reported completion tokens (default: the number of events).
        finish_reason: ``"stop"``, ``"length"``, ``"tool_calls"`` or
            ``"content_filter"`` (mapped to each provider's own value), or any
            other string, sent as is. Default ``"stop"`` (``"tool_calls"`` with tools).
        tool_calls: tool calls made after the text.
        model: the model name reported (default: the requested one).
    """

    text: str | None = None
    chunks: int | None = None
    chunk_size: int | None = None
    pause: float = 0.0
    input_tokens: int | None = None
    output_tokens: int | None = None
    finish_reason: str | None = None
    tool_calls: tuple[ToolCall, ...] = field(default=(), converter=_tool_calls)
    model: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Script:
        """A script from JSON-like data (the ``x-mmstream-script`` header, the CLI)."""
        values = dict(data)
        calls = values.pop("tool_calls", None) or ()
        values["tool_calls"] = tuple(
            c if isinstance(c, ToolCall) else ToolCall(**dict(c)) for c in calls
        )
        return cls(**values)

    def merged(self, other: Script | None) -> Script:
        """This script with ``other``'s non-default fields laid over it."""
        if other is None:
            return self
        changes: dict[str, Any] = {
            name: getattr(other, name)
            for name in _OPTIONAL_FIELDS
            if getattr(other, name) is not None
        }
        if other.pause:
            changes["pause"] = other.pause
        if other.tool_calls:
            changes["tool_calls"] = other.tool_calls
        return evolve(self, **changes) if changes else self


_OPTIONAL_FIELDS = (
    "text",
    "chunks",
    "chunk_size",
    "input_tokens",
    "output_tokens",
    "finish_reason",
    "model",
)


@final
@frozen(kw_only=True)
class Fault:
    """One way for the server to misbehave on a request; build it with the classmethods.

    ``after_chunks`` counts content events (text pieces) already sent.
    """

    kind: FaultKind
    status: int | None = None
    retry_after: str | None = None
    retry_after_ms: int | None = None
    html: bool = False
    message: str | None = None
    after_chunks: int = 0
    seconds: float = 0.0
    size: int = 0
    content_type: str = "text/html; charset=utf-8"
    body: bytes | None = None
    error_type: str | None = None

    @classmethod
    def http_status(
        cls,
        status: int,
        *,
        retry_after: float | str | None = None,
        retry_after_ms: int | None = None,
        message: str | None = None,
        html: bool = False,
        body: bytes | None = None,
        error_type: str | None = None,
    ) -> Fault:
        """Answer with an error status and the provider's real error body.

        Args:
            status: the HTTP status (429, 500, 529, ...).
            retry_after: a ``Retry-After`` header (seconds, or an HTTP date string).
            retry_after_ms: a ``retry-after-ms`` header (OpenAI's).
            message: the error message (default: the provider's usual one).
            html: send a proxy's HTML page instead (as a gateway would for 413/502/503/504).
            body: send exactly these bytes instead.
            error_type: the provider's error type instead of the status's usual one:
                OpenAI ``type``/``code`` (``"insufficient_quota"``), Azure ``code``
                (``"content_filter"``), Anthropic ``error.type``, Gemini ``status``.
        """
        return cls(
            kind="status",
            error_type=error_type,
            status=status,
            retry_after=None if retry_after is None else _header_number(retry_after),
            retry_after_ms=retry_after_ms,
            message=message,
            html=html,
            body=body,
        )

    @classmethod
    def drop(cls, after_chunks: int = 1) -> Fault:
        """Close the connection mid-body after that many content events (no chunked terminator)."""
        return cls(kind="drop", after_chunks=after_chunks)

    @classmethod
    def reset(cls) -> Fault:
        """Reset the connection (TCP RST) after reading the request, before any response byte."""
        return cls(kind="reset")

    @classmethod
    def hang_up(cls) -> Fault:
        """Close the connection (FIN) after reading the request, before any response byte.

        What a server does to an idle keep-alive connection just as a request
        arrives on it: the client sees the connection closed with no response.
        """
        return cls(kind="hang_up")

    @classmethod
    def not_streamed(cls) -> Fault:
        """Answer a streaming request with the whole, non-streamed JSON answer (status 200).

        What a gateway that ignores ``stream: true`` (or Gemini's ``alt=sse``) sends.
        """
        return cls(kind="not_streamed")

    @classmethod
    def stall(cls, seconds: float, *, after_chunks: int | None = None) -> Fault:
        """Send nothing for ``seconds``: before the status line, or after that many events."""
        if after_chunks is None:
            return cls(kind="stall", seconds=seconds, after_chunks=-1)
        return cls(kind="stall", seconds=seconds, after_chunks=after_chunks)

    @classmethod
    def malformed(cls, after_chunks: int = 1) -> Fault:
        """Insert an event whose data is not valid JSON after that many events."""
        return cls(kind="malformed", after_chunks=after_chunks)

    @classmethod
    def wrong_content_type(
        cls, content_type: str = "text/html; charset=utf-8", body: bytes | None = None
    ) -> Fault:
        """Answer 200 with another content type (a captive portal's HTML page by default)."""
        return cls(kind="wrong_content_type", content_type=content_type, body=body)

    @classmethod
    def huge_event(cls, size: int = 1 << 20, *, after_chunks: int = 0) -> Fault:
        """Insert one content event carrying ``size`` characters of text after that many events."""
        return cls(kind="huge_event", size=size, after_chunks=after_chunks)

    @classmethod
    def error_event(
        cls, after_chunks: int = 1, *, status: int | None = None, message: str | None = None
    ) -> Fault:
        """Send the provider's in-stream error event after that many events, then end the body.

        ``status`` picks the error type as for
        [`http_status`][mmstream.testing.Fault.http_status] (default: the provider's
        "overloaded" error: OpenAI ``server_error``, Anthropic
        ``overloaded_error``, Gemini ``UNAVAILABLE``).
        """
        return cls(kind="error_event", after_chunks=after_chunks, status=status, message=message)

    @classmethod
    def missing_end(cls) -> Fault:
        """End the body cleanly but without the completion signal.

        OpenAI: no ``data: [DONE]``; Anthropic: no ``message_stop``; Gemini: no
        ``finishReason``; Ollama: no ``"done": true`` line.
        """
        return cls(kind="missing_end")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fault:
        """A fault from JSON-like data (the ``x-mmstream-fault`` header)."""
        values = dict(data)
        kind = values.get("kind")
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; use one of {', '.join(FAULT_KINDS)}")
        if "retry_after" in values and values["retry_after"] is not None:
            values["retry_after"] = _header_number(values["retry_after"])
        if isinstance(values.get("body"), str):
            values["body"] = values["body"].encode()
        return cls(**values)


def _header_number(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else str(value)
