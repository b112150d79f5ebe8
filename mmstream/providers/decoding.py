"""Decoding answers, shared by every provider: the response builder and the decoder shell.

A provider's per-call decoder stands on
[`DecoderShell`][mmstream.providers.decoding.DecoderShell] (or its JSON-event
skeletons, [`SSEJSONDecoder`][mmstream.providers.decoding.SSEJSONDecoder] and
[`JSONLinesDecoder`][mmstream.providers.decoding.JSONLinesDecoder]) and builds
its chunks with a [`ResponseBuilder`][mmstream.providers.decoding.ResponseBuilder]:
bytes in, chunks out, split anywhere, with the same answers to a cut stream, a
line over the cap and a whole JSON body for every provider. Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

from mmstream.errors import IncompleteStreamError, MMStreamError, ProviderProtocolError
from mmstream.responses import (
    ChatResponse,
    FinishReason,
    Usage,
    _LazyText,
    _text_chunk,
    _TextAccumulator,
)
from mmstream.sse import DEFAULT_MAX_LINE, NDJSONDecoder, SSEDecoder, SSEEvent

__all__ = [
    "DecoderShell",
    "JSONLinesDecoder",
    "ResponseBuilder",
    "SSEJSONDecoder",
    "load_json",
    "normalize_finish_reason",
]

# --- the per-call response builder -------------------------------------------------

_FINISH_REASONS: Mapping[str, FinishReason] = {
    # OpenAI / Azure / compatible servers
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    # Anthropic
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    # Gemini (upper case on the wire; looked up lower-cased)
    "finish_reason_unspecified": "stop",
    "safety": "content_filter",
    "recitation": "content_filter",
    "blocklist": "content_filter",
    "prohibited_content": "content_filter",
    "spii": "content_filter",
    "image_safety": "content_filter",
    "language": "content_filter",
    "malformed_function_call": "error",
    "unexpected_tool_call": "error",
    "other": "stop",
    # Ollama
    "load": "stop",
    "unload": "stop",
    "error": "error",
}


def normalize_finish_reason(value: object) -> FinishReason | None:
    """Map a provider's finish/stop reason onto mmstream's five values (garbage → None)."""
    if not value or not isinstance(value, str):
        return None
    return _FINISH_REASONS.get(value.lower(), "stop")


class ResponseBuilder:
    """Per-call state shared by every decoder: text, tool calls, usage, finish reason.

    ``model`` is the model that answered (decoders update it from the response).

    A decoder calls ``text`` for each text delta and ``finish`` once, at the
    provider's completion signal; the final chunk carries the usage, the finish
    reason and the assembled tool calls, so the last chunk of a stream always
    holds the whole outcome.
    """

    __slots__ = (
        "_acc",
        "_n",
        "_tool_calls",
        "done",
        "finish_reason",
        "model",
        "provider",
        "usage",
    )

    def __init__(self, provider: str, model: str | None = None) -> None:
        self.provider = provider
        self.model = model
        self._acc = _TextAccumulator()
        self._n = 0
        self._tool_calls: dict[int, dict[str, Any]] = {}
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.done = False

    def text(self, delta: str, raw: Any = None) -> ChatResponse:
        """A chunk adding ``delta`` to the answer."""
        acc = self._acc
        acc.pieces.append(delta)
        self._n = n = len(acc.pieces)
        return _text_chunk(_LazyText(acc, n), delta, raw)

    def snapshot(self, raw: Any = None, delta: str = "") -> ChatResponse:
        """The answer so far, as one chunk (for errors' ``partial``)."""
        return ChatResponse(
            text=_LazyText(self._acc, self._n),
            delta=delta,
            usage=self.usage,
            finish_reason=normalize_finish_reason(self.finish_reason),
            raw=raw,
            additional_kwargs=self._extras(),
        )

    def tool_call_delta(
        self,
        index: int,
        *,
        id: str | None = None,
        name: str | None = None,
        arguments: str | None = None,
    ) -> None:
        """Add a fragment of a streamed tool call (OpenAI/Anthropic style)."""
        call = self._tool_calls.setdefault(index, {"id": None, "name": None, "arguments": ""})
        if id:
            call["id"] = id
        if name:
            call["name"] = name
        if arguments:
            call["arguments"] += arguments

    def tool_call(self, *, id: str | None, name: str, arguments: Any) -> None:
        """Add a tool call that arrived whole (Gemini/Ollama style)."""
        self._tool_calls[len(self._tool_calls)] = {"id": id, "name": name, "arguments": arguments}

    def finish(self, raw: Any = None, delta: str = "") -> ChatResponse:
        """The final chunk, at the provider's completion signal (adding ``delta`` to the text)."""
        if delta:
            acc = self._acc
            acc.pieces.append(delta)
            self._n = len(acc.pieces)
        self.done = True
        return self.snapshot(raw, delta)

    def whole(self, raw: Any = None) -> ChatResponse:
        """The whole answer as one final chunk (its delta is all the text): a JSON answer."""
        self.done = True
        return self.snapshot(raw, delta="".join(self._acc.pieces[: self._n]))

    def _extras(self) -> dict[str, Any]:
        extras: dict[str, Any] = {"provider": self.provider}
        if self.model:
            extras["model"] = self.model
        if self.finish_reason is not None:
            extras["provider_finish_reason"] = self.finish_reason
        if self._tool_calls:
            extras["tool_calls"] = [
                {
                    "id": call["id"],
                    "name": call["name"],
                    "arguments": _parse_arguments(call["arguments"]),
                }
                for _, call in sorted(self._tool_calls.items())
            ]
        return extras

    def incomplete(self, what: str = "the completion signal") -> IncompleteStreamError:
        """The error for a body that ended before ``what``, holding the partial answer."""
        return IncompleteStreamError(
            f"the {self.provider} stream ended before {what}",
            provider=self.provider,
            partial=self.snapshot(),
        )

    def protocol_error(self, detail: str) -> ProviderProtocolError:
        """The error for bytes that break the provider's wire format."""
        return ProviderProtocolError(
            f"{self.provider} sent a malformed event: {detail}",
            provider=self.provider,
            partial=self.snapshot() if self._n else None,
        )

    def attach(self, error: MMStreamError) -> MMStreamError:
        """``error`` with this call's provider and, when text had arrived, the partial answer."""
        error.provider = error.provider or self.provider
        if error.partial is None and self._n:
            error.partial = self.snapshot()
        return error


def _parse_arguments(arguments: Any) -> Any:
    if not isinstance(arguments, str):
        return arguments
    if not arguments:
        return {}
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def load_json(data: bytes | str, builder: ResponseBuilder) -> Any:
    """``json.loads`` that raises the provider's protocol error instead of ValueError."""
    try:
        return json.loads(data)
    except ValueError as exc:
        text = data if isinstance(data, str) else data.decode("utf-8", "replace")
        raise builder.protocol_error(f"{exc} in {text[:200]!r}") from exc


# --- the decoder shell ---------------------------------------------------------------

#: what wire data of an unexpected shape raises in a decoder: a protocol error.
_DECODING_BUGS = (TypeError, AttributeError, ValueError, KeyError, IndexError)

#: a body kept whole, until its first frame, in case it is one JSON answer.
_MAX_PLAIN_BODY = 8 * 1024 * 1024


class DecoderShell:
    """The skeleton of every stream decoder: framing, frames into chunks, the end of the body.

    A subclass sets ``end`` (the completion signal, named in the
    incomplete-stream error), decodes a list of frames in ``_decode`` and a whole
    JSON document in ``_document``. The shell gives it, for every provider:

    - frames split anywhere (SSE or NDJSON, with the per-line cap);
    - a body that ends inside its last event (JSON cut short, no blank line) is
      an [`IncompleteStreamError`][mmstream.errors.IncompleteStreamError] with
      the partial answer, like a body that ends before its completion signal;
    - a body that is one JSON document instead of a stream (a gateway that
      ignored ``stream: true``) is decoded as a one-chunk answer, and its
      ``{"error": ...}`` object raises its typed error (SSE formats: the NDJSON
      formats read such a body as their own last line);
    - ``whole(body)``: a non-streamed answer as one chunk (``decode_json``).
    """

    __slots__ = ("_builder", "_frames", "_plain", "_plain_size")

    end: ClassVar[str] = "the completion signal"

    def __init__(
        self, builder: ResponseBuilder, frames: SSEDecoder | NDJSONDecoder, *, plain: bool
    ) -> None:
        self._builder = builder
        self._frames = frames
        self._plain: list[bytes] | None = [] if plain else None
        self._plain_size = 0

    def feed(self, data: bytes) -> list[ChatResponse]:
        """Decode more of the body (split anywhere)."""
        try:
            frames = self._frames.feed(data)
        except ProviderProtocolError as exc:
            raise self._builder.attach(exc) from None
        plain = self._plain
        if plain is not None:
            self._plain_size += len(data)
            if frames or self._plain_size > _MAX_PLAIN_BODY:
                self._plain = None
            else:
                plain.append(data)
        if not frames:
            return []
        try:
            return self._decode(frames)
        except MMStreamError:
            raise
        except _DECODING_BUGS as exc:  # a field of an unexpected type, ...
            raise self._builder.protocol_error(repr(exc)) from exc

    def flush(self) -> list[ChatResponse]:
        """End of body: the final chunk, or IncompleteStreamError without the completion signal."""
        builder = self._builder
        try:
            frames = self._frames.flush()
        except ProviderProtocolError as exc:
            raise builder.attach(exc) from None
        try:
            out = self._decode(frames) if frames else []
        except ProviderProtocolError as exc:
            if not isinstance(exc.__cause__, (json.JSONDecodeError, UnicodeDecodeError)):
                raise
            # The body ended inside its last event: the answer is cut, not garbled; it
            # is as complete as the body before that event.
            final = None if builder.done else self._at_end()
            if final is None:
                raise builder.incomplete(self.end) from exc
            return [final]
        except MMStreamError:
            raise
        except _DECODING_BUGS as exc:
            raise builder.protocol_error(repr(exc)) from exc
        if not frames and self._plain and not builder.done:
            whole = self._whole(b"".join(self._plain))
            if whole is not None:
                out.append(whole)
        if not builder.done:
            final = self._at_end()
            if final is None:
                raise builder.incomplete(self.end)
            out.append(final)
        return out

    def whole(self, body: bytes) -> ChatResponse:
        """A whole JSON answer (not a stream) as one chunk, or the error it holds.

        Raises:
            APIError: the body is an error object (the class its code or type maps to).
            ProviderProtocolError: the body is not an answer of this provider.
        """
        chunk = self._whole(body)
        if chunk is None:
            raise self._builder.protocol_error(f"not a whole answer: {body[:200]!r}")
        return chunk

    def _whole(self, body: bytes) -> ChatResponse | None:
        text = body.strip()
        if not text.startswith((b"{", b"[")):
            return None
        try:
            data = json.loads(text)
        except ValueError:
            return None
        builder = self._builder
        try:
            self._document(data)
        except MMStreamError:
            raise
        except _DECODING_BUGS as exc:
            raise builder.protocol_error(repr(exc)) from exc
        if builder.finish_reason is None and builder.usage is None and not builder._n:
            return None
        return builder.whole(data)

    def _object(self, data: Any) -> dict[str, Any]:
        """``data`` (JSON text, or already parsed) as a JSON object, else a protocol error."""
        value = load_json(data, self._builder) if isinstance(data, (str, bytes)) else data
        if not isinstance(value, dict):
            raise self._builder.protocol_error(f"expected an object, got {str(data)[:80]!r}")
        return value

    def _decode(self, frames: list[Any]) -> list[ChatResponse]:
        """The chunks of a list of frames (a subclass decodes its format here)."""
        raise NotImplementedError

    def _document(self, data: Any) -> None:
        """Take in a whole JSON answer (text, tool calls, usage, finish) or raise its error."""
        raise NotImplementedError

    def _at_end(self) -> ChatResponse | None:
        """The final chunk when the end of the body completes the answer without its signal."""
        return None


class JSONLinesDecoder(DecoderShell):
    """The skeleton of an NDJSON stream decoder: lines, then JSON objects, then ``event``.

    A subclass names its ``provider`` and its completion line (``end``, for the
    incomplete-stream error) and turns one decoded object into chunks.
    """

    __slots__ = ()

    provider: ClassVar[str]

    def __init__(self, model: str | None = None, *, max_line: int = DEFAULT_MAX_LINE) -> None:
        super().__init__(
            ResponseBuilder(self.provider, model), NDJSONDecoder(max_line=max_line), plain=False
        )

    def _decode(self, frames: list[Any]) -> list[ChatResponse]:
        builder = self._builder
        out: list[ChatResponse] = []
        for line in frames:
            if builder.done:
                break
            self.event(self._object(line), out)
        return out

    def _document(self, data: Any) -> None:
        self.event(self._object(data), [])

    def event(self, event: dict[str, Any], out: list[ChatResponse]) -> None:
        """Add the chunks of one decoded line to ``out`` (or raise its error)."""
        raise NotImplementedError


class SSEJSONDecoder(DecoderShell):
    """The skeleton of an SSE decoder whose events carry JSON objects: events, objects, ``event``.

    A subclass passes its builder, sets ``end`` and turns one object (with the
    SSE event's name) into chunks. Events with empty data are skipped; a whole
    JSON body, an object or an array of them, goes through ``event`` too.
    """

    __slots__ = ()

    def __init__(self, builder: ResponseBuilder, *, max_line: int = DEFAULT_MAX_LINE) -> None:
        super().__init__(builder, SSEDecoder(max_line=max_line), plain=True)

    def _decode(self, frames: list[Any]) -> list[ChatResponse]:
        events: list[SSEEvent] = frames
        builder = self._builder
        out: list[ChatResponse] = []
        for frame in events:
            if builder.done:
                break
            if frame.data.strip():
                self.event(self._object(frame.data), frame.event, out)
        return out

    def _document(self, data: Any) -> None:
        for item in data if isinstance(data, list) else [data]:
            self.event(self._object(item), "message", [])

    def event(self, payload: dict[str, Any], name: str, out: list[ChatResponse]) -> None:
        """Add the chunks of one event's object to ``out`` (or raise its error)."""
        raise NotImplementedError
