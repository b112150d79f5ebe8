"""Anthropic's Messages API, sans-I/O: requests out, streamed events in, typed errors.

Wire format: https://docs.anthropic.com/en/api/messages (request) and
https://docs.anthropic.com/en/docs/build-with-claude/streaming (the event stream).
A stream is ``message_start``, then per content block ``content_block_start`` /
``content_block_delta``\\* / ``content_block_stop``, then ``message_delta`` (stop
reason and cumulative usage) and ``message_stop``, the completion signal.
``ping`` events may come anywhere, an ``error`` event may end the stream early,
and new event and block types are added over time (thinking, citations, server
tools): they are skipped, never fatal.
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, final

from attrs import field, frozen

from mmstream.content import ChatMessage, ImageBlock, MessageRole, TextBlock
from mmstream.errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    InvalidImageError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    RequestTooLargeError,
    ServerError,
)
from mmstream.media.policy import COMMON_TYPES, MB, ImagePolicy
from mmstream.media.sniff import encoded_form
from mmstream.metadata import MultiModalLLMMetadata
from mmstream.providers.base import (
    APIProvider,
    ResponseBuilder,
    SSEJSONDecoder,
    chat_metadata,
    conversation,
    count,
    default_parse_error,
    error_message_from_body,
    longest_prefix,
    max_line,
    parse_retry_after,
    passed_through,
    request_id_from_headers,
    sampling,
)
from mmstream.request import ChatRequest, HTTPRequest
from mmstream.responses import ChatResponse, Usage
from mmstream.sse import DEFAULT_MAX_LINE

__all__ = [
    "ANTHROPIC_POLICY",
    "Anthropic",
    "AnthropicDecoder",
    "retry_after_from_headers",
]

#: Anthropic Messages API. https://docs.anthropic.com/en/docs/build-with-claude/vision:
#: JPEG, PNG, GIF, WebP; 5 MB per image, measured on the base64 text (about 3.75 MB raw);
#: over 8000 px a side is refused, 2000 px when a request has more than 20 images; up to
#: 100 images per request; a long edge over 1568 px (or more than about 1.15 megapixels)
#: is downscaled by the API, which costs latency, so we send that size ourselves.
#: The whole request is at most 32 MB: https://docs.anthropic.com/en/api/overview
#: ("Request size limits"). The declared media_type must match the bytes.
ANTHROPIC_POLICY = ImagePolicy(
    accepted_types=COMMON_TYPES,
    max_base64_bytes=5 * 1024 * 1024,
    max_edge=8000,
    recommended_edge=1568,
    recommended_pixels=1_150_000,
    max_images=100,
    max_request_bytes=31 * MB,  # 32 MB for the whole body: keep 1 MB for the text
    accepts_urls=True,
    many_images=20,
    many_images_max_edge=2000,
)

DEFAULT_BASE_URL = "https://api.anthropic.com"
#: The API version header every request carries (https://docs.anthropic.com/en/api/versioning).
API_VERSION = "2023-06-01"
#: ``max_tokens`` is required by the API; without one from the caller we send the
#: model's output limit, capped here (a long answer is rarely wanted by default).
DEFAULT_MAX_TOKENS = 8192

#: (model prefix, context window, output limit), from
#: https://docs.anthropic.com/en/docs/about-claude/models/overview. The longest
#: matching prefix wins, so dated ids (``claude-sonnet-4-5-20250929``) and aliases
#: both match; an unknown model gets the defaults below and is never rejected.
_MODELS: tuple[tuple[str, int, int], ...] = (
    ("claude-opus-4-7", 1_000_000, 128_000),
    ("claude-opus-4-6", 1_000_000, 128_000),
    ("claude-sonnet-4-6", 1_000_000, 64_000),
    ("claude-opus-4-5", 200_000, 64_000),
    ("claude-sonnet-4-5", 200_000, 64_000),
    ("claude-haiku-4-5", 200_000, 64_000),
    ("claude-opus-4-1", 200_000, 32_000),
    ("claude-opus-4", 200_000, 32_000),
    ("claude-sonnet-4", 200_000, 64_000),
    ("claude-3-7-sonnet", 200_000, 64_000),
    ("claude-3-5-sonnet", 200_000, 8_192),
    ("claude-3-5-haiku", 200_000, 8_192),
    ("claude-3-opus", 200_000, 4_096),
    ("claude-3-haiku", 200_000, 4_096),
)
_DEFAULT_LIMITS = (200_000, 8_192)


def _limits(model: str) -> tuple[int, int]:
    best = longest_prefix(_MODELS, model)
    return _DEFAULT_LIMITS if best is None else (best[1], best[2])


#: portable options and their names in the Messages API (``max_tokens`` is always sent).
_SAMPLING = {"temperature": "temperature", "top_p": "top_p", "stop": "stop_sequences"}


def _to_betas(value: str | Sequence[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


@final
@frozen(kw_only=True)
class Anthropic(APIProvider):
    """Claude through Anthropic's Messages API (``"anthropic:MODEL"``).

    Args:
        model: the model id or alias (``"claude-sonnet-4-5"``, ``"claude-haiku-4-5"``, ...).
        api_key: the key (``ANTHROPIC_API_KEY``, read by
            [`from_env`][mmstream.providers.base.BaseProvider.from_env] and
            ``"anthropic:MODEL"``).
        base_url: the API root, ``https://api.anthropic.com`` (``ANTHROPIC_BASE_URL``).
        betas: beta features to turn on (sent as the ``anthropic-beta`` header).
        **options: default call options (``temperature``, ``max_tokens``, ``top_p``,
            ``stop``, ``timeout``, ``extra``); ``extra`` keys (``top_k``, ``tools``,
            ``tool_choice``, ``thinking``, ``metadata``, ...) go into the request body.

    Example:
        ``MultiModalLLM(Anthropic(model="claude-sonnet-4-5", max_tokens=1024))``
    """

    name: ClassVar[str] = "anthropic"
    environment: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "api_key": ("ANTHROPIC_API_KEY",),
        "base_url": ("ANTHROPIC_BASE_URL",),
    }

    DEFAULT_BASE_URL: ClassVar[str] = DEFAULT_BASE_URL

    betas: tuple[str, ...] = field(default=(), converter=_to_betas)

    @property
    def metadata(self) -> MultiModalLLMMetadata:
        """The model's context window and output limit (by model-name prefix)."""
        return chat_metadata(self.model, *_limits(self.model), ANTHROPIC_POLICY.max_images or 100)

    @property
    def image_policy(self) -> ImagePolicy:
        """Anthropic's documented image limits (``ANTHROPIC_POLICY``, defined in this module)."""
        return ANTHROPIC_POLICY

    def build_request(self, request: ChatRequest) -> HTTPRequest:
        """The streaming ``POST /v1/messages`` request for a call.

        Raises:
            ConfigurationError: no API key (``ANTHROPIC_API_KEY``).
            InvalidRequestError: an image in a system message (Anthropic takes only
                text there), or an image not loaded.
        """
        key = self.key()
        options = request.options
        system, messages = conversation(
            request, _message, system_in="system messages", provider="Anthropic"
        )
        limit = _limits(self.model)[1]
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": options.max_tokens or min(limit, DEFAULT_MAX_TOKENS),
            "messages": messages,
            "stream": True,
        }
        if system:
            body["system"] = "\n\n".join(system)
        body.update(sampling(options, _SAMPLING))
        body.update(passed_through(options))
        headers = {
            "x-api-key": key,
            "anthropic-version": API_VERSION,
            "content-type": "application/json",
            "accept": "text/event-stream",
        }
        if self.betas:
            headers["anthropic-beta"] = ",".join(self.betas)
        return HTTPRequest(
            url=f"{self.base_url}/v1/messages",
            headers=headers,
            json=body,
            stream_format="sse",
            timeout=options.timeout,
        )

    def new_decoder(self, request: ChatRequest | None = None) -> AnthropicDecoder:
        """A decoder for one call's event stream."""
        return AnthropicDecoder(self.model, max_line=max_line(request))

    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> APIError:
        """The typed error for an HTTP error response.

        ``{"type": "error", "error": {"type", "message"}, "request_id"}``
        (https://docs.anthropic.com/en/api/errors). 529 and ``overloaded_error`` are
        [`OverloadedError`][mmstream.errors.OverloadedError]; a 429 caused by a spend limit
        (``error.details.error_code == "enforced_spend_limit_reached"``) and a 402
        ``billing_error`` are [`QuotaExceededError`][mmstream.errors.QuotaExceededError], which
        is not retried.
        """
        _, type_, code, data = error_message_from_body(body)
        error = data.get("error") if isinstance(data, dict) else None
        details = error.get("details") if isinstance(error, dict) else None
        if isinstance(details, dict) and details.get("error_code"):
            code = str(details["error_code"])
        cls: type[APIError] | None = None
        if type_ == "overloaded_error":
            cls = OverloadedError
        elif type_ == "billing_error" or code in _SPEND_LIMIT_CODES:
            cls = QuotaExceededError
        request_id = request_id_from_headers(headers)
        if request_id is None and isinstance(data, dict) and data.get("request_id"):
            request_id = str(data["request_id"])
        return default_parse_error(
            self.name,
            status,
            headers,
            body,
            cls=cls,
            code=code,
            request_id=request_id,
            retry_after=retry_after_from_headers(headers),
        )


#: ``error.details.error_code`` values that mean "no more spending": retrying cannot help.
#: https://learn.microsoft.com/microsoft-cloud/dev/dev-proxy/concepts/anthropic-529-overloaded-error
#: summarises https://docs.anthropic.com/en/api/errors ("429 rate_limit_error with
#: error.details.error_code set to enforced_spend_limit_reached: do not retry").
_SPEND_LIMIT_CODES = frozenset({"enforced_spend_limit_reached"})


def _message(message: ChatMessage, image_index: int) -> tuple[dict[str, Any], int]:
    """One conversation message in Anthropic's shape, and the next image's index."""
    if message.role is MessageRole.TOOL:
        # A tool's answer goes back in a user turn, tied to the call by its id.
        # https://docs.anthropic.com/en/docs/agents-and-tools/tool-use/implement-tool-use
        return {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": message.additional_kwargs.get("tool_call_id"),
                    "content": message.content or "",
                }
            ],
        }, image_index
    role = "assistant" if message.role is MessageRole.ASSISTANT else "user"
    content: list[dict[str, Any]] = []
    for block in message.blocks:
        if isinstance(block, TextBlock):
            if block.text:  # the API refuses empty text blocks
                content.append({"type": "text", "text": block.text})
            continue
        content.append(_image(block, image_index))
        image_index += 1
    if role == "assistant":
        for call in message.additional_kwargs.get("tool_calls") or ():
            content.append(
                {
                    "type": "tool_use",
                    "id": call.get("id"),
                    "name": call.get("name"),
                    "input": _tool_input(call.get("arguments")),
                }
            )
    if len(content) == 1 and content[0]["type"] == "text":
        return {"role": role, "content": content[0]["text"]}, image_index
    return {"role": role, "content": content or ""}, image_index


def _tool_input(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments) if arguments else {}
        except ValueError:
            return {"input": arguments}
    return {} if arguments is None else arguments


def _image(block: ImageBlock, index: int) -> dict[str, Any]:
    """An image block: base64 ``source`` for bytes, ``url`` source for a URL.

    https://docs.anthropic.com/en/docs/build-with-claude/vision#base64-encoded-image-example
    """
    if block.image is not None:
        encoded = encoded_form(block, provider="anthropic", index=index)
        return {
            "type": "image",
            "source": {
                "type": "base64",
                "media_type": encoded.mimetype,
                "data": encoded.base64,
            },
        }
    if block.url is not None:
        return {"type": "image", "source": {"type": "url", "url": block.url}}
    raise InvalidImageError(
        f"image {index + 1} ({block.path}) was not loaded; send it through MultiModalLLM, "
        "which reads image files off the event loop",
        image_index=index,
        provider="anthropic",
    )


# --- retry-after ---------------------------------------------------------------------

_RESET_KINDS = ("requests", "tokens", "input-tokens", "output-tokens")


def retry_after_from_headers(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait: ``retry-after`` when sent, else the rate-limit reset times.

    Anthropic sends ``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-reset``
    as RFC 3339 timestamps (https://docs.anthropic.com/en/api/rate-limits#response-headers).
    Without ``retry-after``, the latest reset among the limits whose ``-remaining`` is 0
    is used (all resets when none says 0).
    """
    seconds = parse_retry_after(headers, now)
    if seconds is not None:
        return seconds
    lowered = {k.lower(): v for k, v in headers.items()}
    exhausted: list[float] = []
    every: list[float] = []
    for kind in _RESET_KINDS:
        reset = lowered.get(f"anthropic-ratelimit-{kind}-reset")
        when = _parse_rfc3339(reset) if reset else None
        if when is None:
            continue
        every.append(when)
        if lowered.get(f"anthropic-ratelimit-{kind}-remaining", "").strip() == "0":
            exhausted.append(when)
    chosen = exhausted or every
    if not chosen:
        return None
    return max(0.0, max(chosen) - (time.time() if now is None else now))


def _parse_rfc3339(value: str) -> float | None:
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


# --- the stream ----------------------------------------------------------------------

#: Error ``type`` values of an ``error`` event, and the class each raises.
_ERROR_EVENT_CLASSES: Mapping[str, type[APIError]] = {
    "overloaded_error": OverloadedError,
    "api_error": ServerError,
    "timeout_error": ServerError,
    "rate_limit_error": RateLimitError,
    "billing_error": QuotaExceededError,
    "invalid_request_error": BadRequestError,
    "authentication_error": AuthenticationError,
    "permission_error": PermissionDeniedError,
    "not_found_error": NotFoundError,
    "request_too_large": RequestTooLargeError,
}


@final
class AnthropicDecoder(SSEJSONDecoder):
    """Anthropic's event stream into chunks: text deltas, tool calls, usage, stop reason.

    Usage: ``message_start`` gives the input and cache counts (its ``output_tokens``
    is a placeholder); ``message_delta`` gives the output count, *cumulative*
    (replaced, never added), and may update the input and cache counts too.
    ``input_tokens`` of the result is the whole prompt (uncached + cache read +
    cache written, as OpenAI and Gemini count it); the cache parts are also given apart.
    A whole Message object (a non-streamed answer) decodes as one chunk.
    """

    __slots__ = ("_cache_creation", "_cache_read", "_input", "_output", "_tool_blocks")

    end = "its message_stop event"

    def __init__(self, model: str | None = None, *, max_line: int = DEFAULT_MAX_LINE) -> None:
        super().__init__(ResponseBuilder("anthropic", model), max_line=max_line)
        self._tool_blocks: set[int] = set()
        self._input: int | None = None
        self._cache_read: int | None = None
        self._cache_creation: int | None = None
        self._output: int | None = None

    def event(self, payload: dict[str, Any], name: str, out: list[ChatResponse]) -> None:
        """One event: a text or tool-call delta, a block start, the message's start or end."""
        kind = payload.get("type") or name
        if kind == "content_block_delta":
            self._delta(payload, out)
        elif kind == "content_block_start":
            self._block_start(payload, out)
        elif kind == "message_start":
            self._message_start(payload)
        elif kind == "message_delta":
            self._message_delta(payload)
        elif kind == "message_stop":
            out.append(self._builder.finish(payload))
        elif kind == "error":
            raise self._error(payload)
        # ping, content_block_stop and event types added later: nothing to do.

    def _document(self, data: Any) -> None:
        """A Message object (https://docs.anthropic.com/en/api/messages), or an error object."""
        message = self._object(data)
        if message.get("type") == "error":
            raise self._error(message)
        self._message_start({"message": message})
        for index, block in enumerate(message.get("content") or ()):
            self._block_start({"index": index, "content_block": block}, [])
        self._message_delta({"delta": message, "usage": message.get("usage")})

    def _delta(self, payload: dict[str, Any], out: list[ChatResponse]) -> None:
        delta = payload.get("delta")
        if not isinstance(delta, dict):
            return
        kind = delta.get("type")
        if kind == "text_delta":
            self._text(delta.get("text"), payload, out)
        elif kind == "input_json_delta":
            index = payload.get("index")
            fragment = delta.get("partial_json")
            if isinstance(index, int) and index in self._tool_blocks and isinstance(fragment, str):
                self._builder.tool_call_delta(index, arguments=fragment)
        # thinking_delta, signature_delta, citations_delta, ...: not answer text.

    def _text(self, text: Any, payload: dict[str, Any], out: list[ChatResponse]) -> None:
        if isinstance(text, str) and text:
            out.append(self._builder.text(text, payload))

    def _block_start(self, payload: dict[str, Any], out: list[ChatResponse]) -> None:
        block = payload.get("content_block")
        index = payload.get("index")
        if not isinstance(block, dict) or not isinstance(index, int):
            return
        kind = block.get("type")
        if kind == "text":
            self._text(block.get("text"), payload, out)
        elif kind == "tool_use":
            self._tool_blocks.add(index)
            start_input = block.get("input")
            call_id, name = block.get("id"), block.get("name")
            self._builder.tool_call_delta(
                index,
                id=call_id if isinstance(call_id, str) else None,
                name=name if isinstance(name, str) else None,
                arguments=json.dumps(start_input) if start_input else None,
            )
        # thinking, redacted_thinking, server_tool_use, ...: skipped.

    def _message_start(self, payload: dict[str, Any]) -> None:
        message = payload.get("message")
        if not isinstance(message, dict):
            return
        if isinstance(message.get("model"), str):
            self._builder.model = message["model"]
        usage = message.get("usage")
        if isinstance(usage, dict):
            # output_tokens here is a placeholder (1 or so): message_delta has the count.
            self._update_usage(usage, with_output=False)

    def _message_delta(self, payload: dict[str, Any]) -> None:
        delta = payload.get("delta")
        if isinstance(delta, dict) and delta.get("stop_reason"):
            self._builder.finish_reason = str(delta["stop_reason"])
        usage = payload.get("usage")
        if isinstance(usage, dict):
            self._update_usage(usage, with_output=True)

    def _update_usage(self, usage: dict[str, Any], *, with_output: bool) -> None:
        value = count(usage.get("input_tokens"))
        if value is not None:
            self._input = value
        value = count(usage.get("cache_read_input_tokens"))
        if value is not None:
            self._cache_read = value
        value = count(usage.get("cache_creation_input_tokens"))
        if value is not None:
            self._cache_creation = value
        if with_output:
            value = count(usage.get("output_tokens"))
            if value is not None:
                self._output = value  # cumulative: replace, never add
        total_input = None
        if self._input is not None:
            total_input = self._input + (self._cache_read or 0) + (self._cache_creation or 0)
        self._builder.usage = Usage(
            input_tokens=total_input,
            output_tokens=self._output,
            cache_read_tokens=self._cache_read,
            cache_creation_tokens=self._cache_creation,
        )

    def _error(self, payload: dict[str, Any]) -> APIError:
        error = payload.get("error")
        if not isinstance(error, dict):
            error = {"message": str(error)}
        type_ = error.get("type")
        cls = _ERROR_EVENT_CLASSES.get(str(type_), ServerError)
        request_id = payload.get("request_id")
        return cls(
            str(error.get("message") or type_ or "error event"),
            status=200,
            provider="anthropic",
            type=None if type_ is None else str(type_),
            request_id=None if request_id is None else str(request_id),
            body=json.dumps(payload)[:4096],
            partial=self._builder.snapshot(payload),
        )
