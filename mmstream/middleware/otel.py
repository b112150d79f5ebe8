"""OpenTelemetry: one span and the GenAI client metrics per call (extra ``mmstream[otel]``).

Follows the OpenTelemetry semantic conventions for generative AI
(https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/ and
``gen-ai-metrics/``). The span starts when the stream starts and ends when
it really ends: after the last chunk, when the consumer leaves early, when
the call fails or is cancelled — never when the stream object is merely
created. How a call ended (``mmstream.outcome``) is decided by the observer
core, with the same rules as Tracing, Logging and Callbacks.

``opentelemetry-api`` is imported when an
[`OpenTelemetry`][mmstream.middleware.OpenTelemetry] middleware is
built, so ``import mmstream`` works without it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast, final
from urllib.parse import urlsplit

from attrs import field, frozen

from mmstream._version import __version__
from mmstream.content import ImageBlock, TextBlock
from mmstream.errors import ConfigurationError
from mmstream.middleware._observe import Observation, Observer, observe

if TYPE_CHECKING:
    from mmstream.middleware.chain import CallNext
    from mmstream.protocols import Provider
    from mmstream.request import ChatRequest
    from mmstream.responses import ChatResponse

__all__ = ["OpenTelemetry"]

#: mmstream provider names → ``gen_ai.provider.name`` well-known values; others pass as they are.
PROVIDER_NAMES: Mapping[str, str] = {
    "azure": "azure.ai.openai",
    "gemini": "gcp.gemini",
}

#: Bucket boundaries the conventions give for durations (seconds) and token counts.
DURATION_BUCKETS = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)
TOKEN_BUCKETS = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip

#: Options from ``CallOptions.extra`` recorded as request attributes.
_EXTRA_ATTRIBUTES = {
    "seed": "gen_ai.request.seed",
    "top_k": "gen_ai.request.top_k",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
}


@final
@frozen(kw_only=True)
class OpenTelemetry:
    """Traces and measures every call with OpenTelemetry's GenAI conventions.

    One span per call, named ``"chat {model}"``, kind ``CLIENT``, with the
    request (``gen_ai.request.*``), response (``gen_ai.response.model``,
    ``gen_ai.response.finish_reasons``, mmstream's normalized values) and
    usage (``gen_ai.usage.*``) attributes, a ``first_chunk`` event, and on
    failure status ``ERROR`` with ``error.type`` (the exception class name).
    Every mmstream call is a chat-API call, so ``gen_ai.operation.name`` is
    ``"chat"`` for ``complete`` too (``mmstream.operation`` says which method).
    Metrics: ``gen_ai.client.operation.duration``, ``gen_ai.client.token.usage``
    and ``gen_ai.client.operation.time_to_first_chunk``.

    Put it first in the middleware list for one span per call; inside a
    [`Retry`][mmstream.middleware.Retry] it makes one span per attempt.

    Args:
        tracer_provider: where spans go (the global provider by default).
        meter_provider: where metrics go (the global provider by default).
        capture_content: record the messages and the answer
            (``gen_ai.input.messages``, ``gen_ai.output.messages``). Off by
            default: prompts and answers often hold personal data.
        capture_images: with ``capture_content``, also record inline image
            bytes (base64); otherwise an image is recorded as its type and size.

    Raises:
        ConfigurationError: when ``opentelemetry-api`` is not installed.
    """

    tracer_provider: Any = None
    meter_provider: Any = None
    capture_content: bool = False
    capture_images: bool = False
    _tracer: Any = field(init=False, repr=False, eq=False)
    _duration: Any = field(init=False, repr=False, eq=False)
    _tokens: Any = field(init=False, repr=False, eq=False)
    _first_chunk: Any = field(init=False, repr=False, eq=False)
    _observer: Observer = field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        try:
            from opentelemetry import context, metrics, trace
        except ImportError as exc:
            raise ConfigurationError(
                "the OpenTelemetry middleware needs opentelemetry-api; "
                "install it with: pip install 'mmstream[otel]'"
            ) from exc
        tracer = trace.get_tracer("mmstream", __version__, tracer_provider=self.tracer_provider)
        meter = metrics.get_meter("mmstream", __version__, meter_provider=self.meter_provider)
        setattr_ = object.__setattr__
        setattr_(self, "_tracer", tracer)
        setattr_(
            self,
            "_duration",
            meter.create_histogram(
                "gen_ai.client.operation.duration",
                unit="s",
                description="GenAI operation duration.",
                explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
            ),
        )
        setattr_(
            self,
            "_tokens",
            meter.create_histogram(
                "gen_ai.client.token.usage",
                unit="{token}",
                description="Number of input and output tokens used.",
                explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
            ),
        )
        setattr_(
            self,
            "_first_chunk",
            meter.create_histogram(
                "gen_ai.client.operation.time_to_first_chunk",
                unit="s",
                description="Time from the request to the first chunk of the response stream.",
                explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
            ),
        )
        setattr_(
            self,
            "_observer",
            Observer(
                start=self._start,
                first_chunk=self._first,
                end=self._end,
                # The span is started, not made current: this generator yields to
                # its consumer between chunks, and a context attached across a
                # ``yield`` would stay attached in the consumer's task (or leak
                # into another task sharing the loop) until the next step. So
                # the span is current only *inside* each wait on the layers
                # inside (where no yield happens), and detached right after.
                attach=context.attach,
                detach=context.detach,
                context=_span_context,
            ),
        )

    def __call__(self, request: ChatRequest, call_next: CallNext) -> AsyncIterator[ChatResponse]:
        """Pass every chunk through inside one span."""
        return observe(request, call_next, self._observer)

    def _start(self, call: Observation) -> None:
        """Start the call's span (started, not made current: the core attaches it per wait)."""
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind

        request = call.request
        common = _common_attributes(request)
        attributes = {**common, **_request_attributes(request)}
        if self.capture_content:
            attributes["gen_ai.input.messages"] = _input_messages(request, self.capture_images)
        span = self._tracer.start_span(
            f"chat {request.model}", kind=SpanKind.CLIENT, attributes=attributes
        )
        call.state = _Span(span, trace.set_span_in_context(span), common)

    def _first(self, call: Observation) -> None:
        state: _Span = call.state
        first = call.time_to_first_chunk
        state.span.add_event("first_chunk", {"mmstream.time_to_first_chunk": first})
        self._first_chunk.record(first, state.common)

    def _end(self, call: Observation) -> None:
        """Set the response attributes and status, record the metrics, end the span."""
        from opentelemetry.trace import Status, StatusCode

        state: _Span = call.state
        span, last, error = state.span, call.last, call.error
        try:
            metric_attributes = dict(state.common)
            response = _response_attributes(call)
            span.set_attribute("mmstream.outcome", call.outcome)
            for key, value in response.items():
                span.set_attribute(key, value)
            if "gen_ai.response.model" in response:
                metric_attributes["gen_ai.response.model"] = response["gen_ai.response.model"]
            if error is not None:
                error_type = type(error).__qualname__
                span.set_attribute("error.type", error_type)
                span.set_status(Status(StatusCode.ERROR, str(error)))
                metric_attributes["error.type"] = error_type
            if self.capture_content and last is not None:
                span.set_attribute(
                    "gen_ai.output.messages", _output_messages(last, call.tool_calls)
                )
            self._duration.record(call.duration, metric_attributes)
            usage = call.usage
            if usage is not None:
                for kind, count in (("input", usage.input_tokens), ("output", usage.output_tokens)):
                    if count is not None:
                        self._tokens.record(count, {**metric_attributes, "gen_ai.token.type": kind})
        finally:
            span.end()


def _span_context(call: Observation) -> Any:
    """The context holding the call's span, made current around each wait."""
    state: _Span = call.state
    return state.context


@final
class _Span:
    """One call's span, the context that holds it, and the attributes its metrics share."""

    __slots__ = ("common", "context", "span")

    def __init__(self, span: Any, context: Any, common: dict[str, Any]) -> None:
        self.span = span
        self.context = context
        self.common = common


# --- attributes ----------------------------------------------------------------------


def _common_attributes(request: ChatRequest) -> dict[str, Any]:
    """What both the span and the metrics carry."""
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": PROVIDER_NAMES.get(request.provider_name, request.provider_name),
        "gen_ai.request.model": request.model,
    }
    address = _server(cast("Provider", request.provider).api_base)
    if address is not None:
        attributes["server.address"], attributes["server.port"] = address
    return attributes


def _server(url: str) -> tuple[str, int] | None:
    """(host, port) of a provider's ``api_base``, or ``None`` when it has no network address."""
    if not url:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or parts.scheme not in ("http", "https"):
        return None
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return parts.hostname, port


def _request_attributes(request: ChatRequest) -> dict[str, Any]:
    options = request.options
    attributes: dict[str, Any] = {"mmstream.operation": request.operation}
    if options.max_tokens is not None:
        attributes["gen_ai.request.max_tokens"] = options.max_tokens
    if options.temperature is not None:
        attributes["gen_ai.request.temperature"] = float(options.temperature)
    if options.top_p is not None:
        attributes["gen_ai.request.top_p"] = float(options.top_p)
    if options.stop:
        attributes["gen_ai.request.stop_sequences"] = list(options.stop)
    for key, name in _EXTRA_ATTRIBUTES.items():
        value = options.extra.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            attributes[name] = value
    if request.attempt != 1:
        attributes["mmstream.attempt"] = request.attempt
    return attributes


def _response_attributes(call: Observation) -> dict[str, Any]:
    """What the answer said: the model that answered, the finish reason, the usage."""
    attributes: dict[str, Any] = {}
    model = call.response_model
    if model is not None:
        attributes["gen_ai.response.model"] = model
    if call.finish_reason is not None:
        attributes["gen_ai.response.finish_reasons"] = [call.finish_reason]
    usage = call.usage
    if usage is not None:
        for name, value in (
            ("gen_ai.usage.input_tokens", usage.input_tokens),
            ("gen_ai.usage.output_tokens", usage.output_tokens),
            ("gen_ai.usage.cache_read.input_tokens", usage.cache_read_tokens),
            ("gen_ai.usage.cache_creation.input_tokens", usage.cache_creation_tokens),
        ):
            if value is not None:
                attributes[name] = value
    return attributes


# --- content (only when the user opts in) --------------------------------------------


def _input_messages(request: ChatRequest, with_images: bool) -> str:
    """The conversation in the conventions' input-messages JSON shape."""
    messages = []
    for message in request.messages:
        parts: list[dict[str, Any]] = []
        for block in message.blocks:
            if isinstance(block, TextBlock):
                parts.append({"type": "text", "content": block.text})
            elif isinstance(block, ImageBlock):
                parts.append(_image_part(block, with_images))
        messages.append({"role": message.role.value, "parts": parts})
    return json.dumps(messages, ensure_ascii=False)


def _image_part(block: ImageBlock, with_bytes: bool) -> dict[str, Any]:
    if block.url is not None:
        return {
            "type": "file_data",
            "modality": "image",
            "uri": block.url,
            "mime_type": block.image_mimetype,
        }
    if block.path is not None:
        return {
            "type": "file_data",
            "modality": "image",
            "uri": block.path.absolute().as_uri(),
            "mime_type": block.image_mimetype,
        }
    data = block.image or b""
    if with_bytes:
        import base64

        return {
            "type": "blob",
            "modality": "image",
            "mime_type": block.image_mimetype,
            "content": base64.b64encode(data).decode("ascii"),
        }
    return {
        "type": "image",
        "modality": "image",
        "mime_type": block.image_mimetype,
        "size": len(data),
    }


def _output_messages(last: ChatResponse, tool_calls: Sequence[Mapping[str, Any]]) -> str:
    """The answer in the conventions' output-messages JSON shape."""
    parts: list[dict[str, Any]] = []
    if last.text:
        parts.append({"type": "text", "content": last.text})
    for tool_call in tool_calls:
        parts.append(
            {
                "type": "tool_call",
                "id": tool_call.get("id"),
                "name": tool_call.get("name"),
                "arguments": tool_call.get("arguments"),
            }
        )
    message = {"role": "assistant", "parts": parts, "finish_reason": last.finish_reason or "error"}
    return json.dumps([message], ensure_ascii=False, default=str)
