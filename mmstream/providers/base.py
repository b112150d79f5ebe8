"""The shared shell of every provider: configuration, decoding, errors, written once.

A provider is a frozen attrs class holding configuration only, on
[`BaseProvider`][mmstream.providers.base.BaseProvider]: the call options as
fields (declared once, in [`CallOptionFields`][mmstream.request.CallOptionFields]),
constant defaults, a named constructor that reads the environment
([`from_env`][mmstream.providers.base.BaseProvider.from_env]) and a
configuration check made before any work. It turns a
[`ChatRequest`][mmstream.request.ChatRequest] into an
[`HTTPRequest`][mmstream.request.HTTPRequest] (``build_request``), the
response body into chunks through a per-call decoder on
[`DecoderShell`][mmstream.providers.base.DecoderShell] (bytes in, chunks out),
a whole JSON answer into one chunk (``decode_json``) and an error response into
a typed [`APIError`][mmstream.errors.APIError] (``parse_error``).

Nothing here does I/O, awaits, or imports httpx/anyio; providers are tested
with bytes in and chunks out. ``docs/providers/writing-a-provider.md`` shows a
new provider written on this shell.
"""

from __future__ import annotations

import email.utils
import json
import math
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from attrs import frozen

from mmstream.content import ChatMessage, MessageRole
from mmstream.errors import (
    APIError,
    ConfigurationError,
    IncompleteStreamError,
    InvalidRequestError,
    MMStreamError,
    ProviderProtocolError,
    QuotaExceededError,
    error_class_for_status,
)
from mmstream.protocols import Provider, StreamDecoder
from mmstream.request import CallOptionFields, CallOptions
from mmstream.responses import (
    ChatResponse,
    FinishReason,
    Usage,
    _LazyText,
    _text_chunk,
    _TextAccumulator,
)
from mmstream.sse import DEFAULT_MAX_LINE, NDJSONDecoder, SSEDecoder

if TYPE_CHECKING:
    from mmstream.request import ChatRequest

__all__ = [
    "MMSTREAM_OPTIONS",
    "BaseProvider",
    "DecoderShell",
    "JSONLinesDecoder",
    "OptionFields",
    "Provider",
    "ResponseBuilder",
    "StreamDecoder",
    "count",
    "default_parse_error",
    "env_value",
    "error_message_from_body",
    "load_json",
    "longest_prefix",
    "max_line",
    "normalize_finish_reason",
    "parse_duration",
    "parse_retry_after",
    "passed_through",
    "request_id_from_headers",
    "require_key",
    "sampling",
    "split_system",
    "strip_slash",
    "to_headers",
]

P = TypeVar("P", bound="BaseProvider")
Entry = TypeVar("Entry", bound=tuple[Any, ...])

#: call options mmstream itself consumes (before a request is built); never sent to an API.
MMSTREAM_OPTIONS = frozenset({"image_policy", "max_line_bytes"})


# --- small shared helpers ------------------------------------------------------------


def count(value: Any) -> int | None:
    """A token count from the wire: an integer (not a bool), else ``None``."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def strip_slash(value: str) -> str:
    """attrs converter: a URL without its trailing slashes."""
    return value.rstrip("/")


def to_headers(value: Mapping[str, str] | None) -> Mapping[str, str]:
    """attrs converter: a private copy of extra headers."""
    return {} if value is None else dict(value)


def longest_prefix(table: Sequence[Entry], model: str) -> Entry | None:
    """The entry of ``table`` whose prefix (its first item) is the longest that starts ``model``.

    The comparison ignores case and a router's ``vendor/`` (or Gemini's
    ``models/``) prefix, so dated snapshots and aliases match their family and an
    unknown model matches nothing (it is never rejected).
    """
    name = model.rpartition("/")[2].lower()
    best: Entry | None = None
    for entry in table:
        prefix = entry[0]
        if name.startswith(prefix) and (best is None or len(prefix) > len(best[0])):
            best = entry
    return best


def env_value(environ: Mapping[str, str], *names: str) -> str | None:
    """The first non-empty environment variable among ``names``."""
    for name in names:
        value = environ.get(name)
        if value:
            return value
    return None


def sampling(options: CallOptions, names: Mapping[str, str]) -> dict[str, Any]:
    """The portable options that are set, under the API's own ``names`` for them.

    ``names`` maps ``temperature``, ``top_p``, ``max_tokens`` and ``stop`` to the
    wire's spelling; ``stop`` is sent as a list.
    """
    out: dict[str, Any] = {}
    for option, wire in names.items():
        value = getattr(options, option)
        if value is None or (option == "stop" and not value):
            continue
        out[wire] = list(value) if option == "stop" else value
    return out


def passed_through(options: CallOptions) -> Iterator[tuple[str, Any]]:
    """The ``extra`` options a provider passes to its API (mmstream's own are left out)."""
    for key, value in options.extra.items():
        if key not in MMSTREAM_OPTIONS:
            yield key, value


def max_line(request: ChatRequest | None) -> int:
    """The per-line cap of a call's decoder: its ``max_line_bytes`` option, else 16 MiB."""
    if request is None:
        return DEFAULT_MAX_LINE
    value = request.options.extra.get("max_line_bytes")
    return value if isinstance(value, int) and value > 0 else DEFAULT_MAX_LINE


def require_key(provider: str, key: object, *variables: str) -> None:
    """Raise a ConfigurationError naming the variables when a provider has no API key."""
    if not key:
        names = " or ".join(variables)
        raise ConfigurationError(
            f"{provider} needs an API key: pass api_key=..., or build the provider with "
            f"from_env() (or the '{provider}:MODEL' string), which reads {names}.",
            provider=provider,
        )


# --- the provider shell --------------------------------------------------------------


@frozen(kw_only=True)
class BaseProvider(CallOptionFields):
    """The shell every provider stands on: option fields, ``from_env``, ``check``, defaults.

    A provider subclasses it as a frozen attrs class, names itself (``name``),
    lists the environment variables of its fields (``environment``) and adds
    ``metadata``, ``image_policy``, ``build_request``, ``new_decoder`` and, when
    it differs from the common JSON shapes, ``parse_error``. Field defaults are
    constants: constructing a provider never reads the environment;
    [`from_env`][mmstream.providers.base.BaseProvider.from_env] does.
    """

    name: ClassVar[str]
    #: field name -> the environment variables that set it in ``from_env``, first wins.
    environment: ClassVar[Mapping[str, tuple[str, ...]]] = {}

    @classmethod
    def from_env(cls: type[P], environ: Mapping[str, str] | None = None, **overrides: Any) -> P:
        """The provider configured from the environment, with ``overrides`` on top.

        Args:
            environ: the variables to read (``os.environ`` by default).
            **overrides: fields given here win over the environment.

        Returns:
            ``cls(**fields)`` with each field of ``environment`` that is not
            overridden read from its variables (unset or empty ones are skipped).

        Example:
            ``OpenAI.from_env(model="gpt-4o-mini")`` reads ``OPENAI_API_KEY``,
            ``OPENAI_BASE_URL``, ``OPENAI_ORG_ID`` and ``OPENAI_PROJECT_ID``.
        """
        source = os.environ if environ is None else environ
        fields: dict[str, Any] = {}
        for field_name, variables in cls.environment.items():
            if field_name not in overrides:
                value = env_value(source, *variables)
                if value is not None:
                    fields[field_name] = value
        fields.update(overrides)
        return cls(**fields)

    @property
    def options(self) -> CallOptions:
        """The provider's default call options (its option fields)."""
        return CallOptions.of(self)

    @property
    def api_base(self) -> str:
        """The root URL of the API (``""`` when the provider has none)."""
        return ""

    def check(self) -> None:
        """Raise ConfigurationError when no request can be made as configured (nothing here)."""

    def require(self, field_name: str, value: object, what: str = "an API key") -> None:
        """Raise a ConfigurationError when ``value`` (the field ``field_name``) is missing.

        The message names the argument, ``from_env`` and the field's variables.
        """
        if value:
            return
        variables = " or ".join(self.environment.get(field_name, ()))
        where = (
            f", or build it with {type(self).__name__}.from_env(...) (or the "
            f"'{self.name}:MODEL' string), which reads {variables}"
            if variables
            else ""
        )
        raise ConfigurationError(
            f"{self.name} needs {what}: pass {field_name}=...{where}.", provider=self.name
        )

    def decode_json(self, body: bytes) -> ChatResponse:
        """A whole JSON answer as one chunk (a provider that can overrides this)."""
        raise ConfigurationError(f"{self.name} does not decode whole JSON answers")

    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> APIError:
        """The typed error for an HTTP error response in the common JSON shapes."""
        return default_parse_error(self.name, status, headers, body)


#: the shell's former name (providers and tests written against it keep working).
OptionFields = BaseProvider


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

    def finish(self, raw: Any = None) -> ChatResponse:
        """The final chunk, at the provider's completion signal."""
        self.done = True
        return self.snapshot(raw)

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
            if isinstance(exc.__cause__, json.JSONDecodeError):
                # The body ended inside its last event: the answer is cut, not garbled.
                raise builder.incomplete(self.end) from exc
            raise
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
            event = load_json(line, builder)
            if not isinstance(event, dict):
                raise builder.protocol_error(f"expected an object, got {line[:80]!r}")
            self.event(event, out)
        return out

    def _document(self, data: Any) -> None:
        if not isinstance(data, dict):
            raise self._builder.protocol_error(f"expected an object, got {str(data)[:80]!r}")
        self.event(data, [])

    def event(self, event: dict[str, Any], out: list[ChatResponse]) -> None:
        """Add the chunks of one decoded line to ``out`` (or raise its error)."""
        raise NotImplementedError


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


def _lowered(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date)."""
    lowered = _lowered(headers)
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
    lowered = _lowered(headers)
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
    provider: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    cls: type[APIError] | None = None,
    message: str | None = None,
    error_type: str | None = None,
    code: str | None = None,
    request_id: str | None = None,
    retry_after: float | None = None,
) -> APIError:
    """The typed error for an error response in the common JSON shapes.

    The class follows the status (a 429 ``insufficient_quota`` is a
    [`QuotaExceededError`][mmstream.errors.QuotaExceededError]); a provider's
    own reading of its body is passed as the keyword arguments, which win.
    """
    found, found_type, found_code, _ = error_message_from_body(body)
    type_ = found_type if error_type is None else error_type
    code = found_code if code is None else code
    if cls is None:
        cls = error_class_for_status(status)
        if status == 429 and "insufficient_quota" in (code, type_):
            cls = QuotaExceededError
    return cls(
        found if message is None else message,
        status=status,
        provider=provider,
        type=type_,
        code=code,
        request_id=request_id or request_id_from_headers(headers),
        retry_after=parse_retry_after(headers) if retry_after is None else retry_after,
        body=body[:4096].decode("utf-8", "replace"),
    )


def split_system(
    request: ChatRequest, provider: str, where: str
) -> tuple[list[str], list[ChatMessage]]:
    """The system (and developer) texts of a request, and its other messages in order.

    Raises:
        InvalidRequestError: a system message holds an image (``where`` names
            the API's place for system text).
    """
    system: list[str] = []
    others: list[ChatMessage] = []
    for message in request.messages:
        if message.role in (MessageRole.SYSTEM, MessageRole.DEVELOPER):
            if message.images:
                raise InvalidRequestError(
                    f"{provider} takes only text in {where}; move the images into a user message",
                    provider=provider,
                )
            system.append(message.content or "")
        else:
            others.append(message)
    return system, others
