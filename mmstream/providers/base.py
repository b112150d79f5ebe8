"""The sans-I/O provider contract and the helpers every provider shares.

A provider is a frozen attrs class holding configuration only. It turns a
:class:`~mmstream.request.ChatRequest` into an :class:`~mmstream.request.HTTPRequest`
(``build_request``), the response body into chunks through a per-call
:class:`StreamDecoder` (``new_decoder``: bytes in, chunks out), and an error
response into a typed :class:`~mmstream.errors.APIError` (``parse_error``).
Nothing here does I/O, awaits, or imports httpx/anyio; providers are tested
with bytes in and chunks out.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from attrs import field, frozen

from mmstream.errors import (
    APIError,
    ConfigurationError,
    IncompleteStreamError,
    ProviderProtocolError,
    QuotaExceededError,
    error_class_for_status,
)
from mmstream.request import CallOptions, Timeouts
from mmstream.responses import (
    ChatResponse,
    FinishReason,
    Usage,
    _LazyText,
    _text_chunk,
    _TextAccumulator,
)
from mmstream.sse import NDJSONDecoder

if TYPE_CHECKING:
    from mmstream.media.policy import ImagePolicy
    from mmstream.metadata import MultiModalLLMMetadata
    from mmstream.request import ChatRequest, HTTPRequest

__all__ = [
    "MMSTREAM_OPTIONS",
    "OptionFields",
    "JSONLinesDecoder",
    "Provider",
    "ResponseBuilder",
    "StreamDecoder",
    "default_parse_error",
    "env_value",
    "load_json",
    "require_key",
    "error_message_from_body",
    "normalize_finish_reason",
    "parse_duration",
    "parse_retry_after",
    "request_id_from_headers",
]


@runtime_checkable
class StreamDecoder(Protocol):
    """Per-call decoding state: bytes in, chunks out. Never blocks, never awaits."""

    def feed(self, data: bytes) -> list[ChatResponse]:
        """Decode the next bytes of the body (split anywhere) into zero or more chunks."""
        ...

    def flush(self) -> list[ChatResponse]:
        """End of body: return the last chunks; raise IncompleteStreamError if truncated."""
        ...


@runtime_checkable
class Provider(Protocol):
    """What every provider offers; see :mod:`mmstream.providers.base`."""

    name: ClassVar[str]

    @property
    def model(self) -> str:
        """The model (or deployment) that answers."""
        ...

    @property
    def options(self) -> CallOptions:
        """The provider's default call options."""
        ...

    @property
    def metadata(self) -> MultiModalLLMMetadata:
        """Context window, output limit and abilities of the model."""
        ...

    @property
    def image_policy(self) -> ImagePolicy:
        """The API's documented image limits (an ``ImagePolicy`` value)."""
        ...

    def build_request(self, request: ChatRequest) -> HTTPRequest:
        """The HTTP request for a call (pure; images are already loaded)."""
        ...

    def new_decoder(self, request: ChatRequest) -> StreamDecoder:
        """A fresh decoder for one call's response body."""
        ...

    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> APIError:
        """The typed error for an HTTP error response."""
        ...


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

    A decoder calls :meth:`text` for each text delta and :meth:`finish` once, at
    the provider's completion signal; the final chunk carries the usage, the
    finish reason and the assembled tool calls, so the last chunk of a stream
    always holds the whole outcome.
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

    def snapshot(self, raw: Any = None) -> ChatResponse:
        """The answer so far, as one chunk (for errors' ``partial``)."""
        return ChatResponse(
            text=_LazyText(self._acc, self._n),
            delta="",
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

    def finish(self, raw: Any = None) -> ChatResponse:
        """The final chunk, at the provider's completion signal."""
        self.done = True
        return self.snapshot(raw)

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


class JSONLinesDecoder:
    """The skeleton of an NDJSON stream decoder: lines, then JSON objects, then :meth:`event`.

    A subclass names its ``provider`` and its completion line (``end``, for the
    incomplete-stream error) and turns one decoded object into chunks.
    """

    __slots__ = ("_builder", "_lines")

    provider: ClassVar[str]
    end: ClassVar[str]

    def __init__(self, model: str | None = None) -> None:
        self._lines = NDJSONDecoder()
        self._builder = ResponseBuilder(self.provider, model)

    def feed(self, data: bytes) -> list[ChatResponse]:
        """Decode more of the body."""
        return self._decode(self._lines.feed(data))

    def flush(self) -> list[ChatResponse]:
        """End of body; a body without its completion line is incomplete."""
        chunks = self._decode(self._lines.flush())
        if not self._builder.done:
            raise self._builder.incomplete(self.end)
        return chunks

    def _decode(self, lines: list[bytes]) -> list[ChatResponse]:
        builder = self._builder
        out: list[ChatResponse] = []
        for line in lines:
            if builder.done:
                break
            event = load_json(line, builder)
            if not isinstance(event, dict):
                raise builder.protocol_error(f"expected an object, got {line[:80]!r}")
            self.event(event, out)
        return out

    def event(self, event: dict[str, Any], out: list[ChatResponse]) -> None:
        """Add the chunks of one decoded line to ``out`` (or raise its error)."""
        raise NotImplementedError


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


# --- errors ------------------------------------------------------------------------

_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)(ms|h|m|s))")


def parse_duration(value: str) -> float | None:
    """Seconds in a duration such as ``"6m0s"``, ``"1.5s"``, ``"20ms"`` or ``"30"``."""
    value = value.strip()
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(number) * scale[unit] for number, unit in parts)


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    millis = lowered.get("retry-after-ms")
    if millis:
        try:
            seconds = float(millis) / 1000.0
        except ValueError:
            pass
        else:
            if math.isfinite(seconds):  # "inf" / "nan" are no waits
                return max(0.0, seconds)
    value = lowered.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


_REQUEST_ID_HEADERS = (
    "x-request-id",
    "request-id",
    "apim-request-id",
    "x-ms-request-id",
    "x-goog-request-id",
    "cf-ray",
)


def request_id_from_headers(headers: Mapping[str, str]) -> str | None:
    """The provider's request id, from the usual headers."""
    lowered = {k.lower(): v for k, v in headers.items()}
    for name in _REQUEST_ID_HEADERS:
        if lowered.get(name):
            return lowered[name]
    return None


def error_message_from_body(body: bytes) -> tuple[str, str | None, str | None, Any]:
    """(message, type, code, parsed JSON) from an error body, JSON or not.

    Understands ``{"error": {"message", "type", "code"}}`` (OpenAI, Anthropic,
    Gemini's ``status``), ``{"error": "text"}`` (Ollama) and ``{"message": ...}``;
    anything else (a proxy's HTML page) gives its text, tags stripped and cut short.
    """
    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text) if text.strip() else None
    except ValueError:
        data = None
    if isinstance(data, list) and data and isinstance(data[0], dict):
        data = data[0]  # Gemini's non-SSE error body is a one-element array
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, str):
            return error, None, None, data
        if isinstance(error, dict):
            message = error.get("message") or error.get("msg") or json.dumps(error)[:500]
            type_ = error.get("type") or error.get("status")
            code = error.get("code")
            return (
                str(message),
                None if type_ is None else str(type_),
                None if code is None else str(code),
                data,
            )
    stripped = re.sub(r"<[^>]+>", " ", text)
    stripped = " ".join(stripped.split())
    return (stripped[:300] or "(empty body)"), None, None, data


def default_parse_error(
    provider: str, status: int, headers: Mapping[str, str], body: bytes
) -> APIError:
    """The typed error for an error response in the common JSON shapes."""
    message, type_, code, _ = error_message_from_body(body)
    cls = error_class_for_status(status)
    if status == 429 and (code == "insufficient_quota" or type_ == "insufficient_quota"):
        cls = QuotaExceededError
    return cls(
        message,
        status=status,
        provider=provider,
        type=type_,
        code=code,
        request_id=request_id_from_headers(headers),
        retry_after=parse_retry_after(headers),
        body=body[:4096].decode("utf-8", "replace"),
    )


# --- configuration -----------------------------------------------------------------


def env_value(environ: Mapping[str, str], *names: str) -> str | None:
    """The first non-empty environment variable among ``names``."""
    for name in names:
        value = environ.get(name)
        if value:
            return value
    return None


def require_key(provider: str, key: object, *variables: str) -> None:
    """Raise a clear ConfigurationError when a provider has no API key."""
    if not key:
        names = " or ".join(variables)
        raise ConfigurationError(
            f"{provider} needs an API key: pass api_key=... or set {names}.",
            provider=provider,
        )


# --- call options as provider fields -----------------------------------------------

#: call options mmstream itself consumes (before a request is built); never sent to an API.
MMSTREAM_OPTIONS = frozenset({"image_policy", "url_access"})


def _to_extra(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """attrs converter: a private copy (typed, so ``extra={...}`` type-checks)."""
    return {} if value is None else dict(value)


def _to_stop(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return (value,) if isinstance(value, str) else tuple(value)


@frozen(kw_only=True)
class OptionFields:
    """The call options every provider accepts as defaults (a call's own win)."""

    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: tuple[str, ...] | None = field(default=None, converter=_to_stop)
    timeout: float | Timeouts | None = None
    extra: Mapping[str, Any] = field(factory=dict, converter=_to_extra)

    @property
    def options(self) -> CallOptions:
        """These defaults as :class:`~mmstream.request.CallOptions`."""
        return CallOptions(
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            top_p=self.top_p,
            stop=self.stop,
            timeout=self.timeout,
            extra=self.extra,
        )
