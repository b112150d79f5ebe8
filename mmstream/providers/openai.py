"""OpenAI's Chat Completions API, and servers that speak it, sans-I/O.

Wire format: https://platform.openai.com/docs/api-reference/chat/create (request)
and https://platform.openai.com/docs/api-reference/chat/streaming (the chunk
object). A stream is a series of ``data: {chat.completion.chunk}`` events and
ends with ``data: [DONE]``. Its traps, all handled by :class:`OpenAIChatDecoder`:

- the first chunk carries ``delta.role`` and an empty ``content``;
- ``finish_reason`` usually comes on its own chunk with an empty ``delta``;
- with ``stream_options.include_usage`` the usage comes on one more chunk whose
  ``choices`` is ``[]``, right before ``[DONE]`` (every other chunk has
  ``"usage": null``);
- an error can arrive after HTTP 200, as ``data: {"error": {...}}``;
- tool calls arrive as fragments (``delta.tool_calls[i].function.arguments``).

:class:`OpenAICompatible` uses the same decoder in its lenient mode for vLLM,
llama.cpp, LM Studio and friends (no usage, cumulative usage on every chunk,
no ``[DONE]``, ``[DONE]`` without a blank line, old llama.cpp's ``error:``
lines, integer error codes, a plain JSON body when streaming is ignored).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, final

from attrs import Factory, field, frozen

from mmstream._secret import Secret, to_secret
from mmstream.content import ChatMessage, ImageBlock, MessageRole, TextBlock
from mmstream.errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ContentFilterError,
    InvalidImageError,
    MMStreamError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    RequestTooLargeError,
    ServerError,
    error_class_for_status,
)
from mmstream.media.policy import COMMON_TYPES, MB, ImagePolicy
from mmstream.media.sniff import encoded_form
from mmstream.metadata import MultiModalLLMMetadata
from mmstream.providers.base import (
    MMSTREAM_OPTIONS,
    OptionFields,
    ResponseBuilder,
    default_parse_error,
    env_value,
    load_json,
    parse_duration,
    require_key,
)
from mmstream.request import ChatRequest, HTTPRequest
from mmstream.responses import ChatResponse, Usage
from mmstream.sse import SSEDecoder, SSEEvent

__all__ = [
    "COMPATIBLE_POLICY",
    "OPENAI_POLICY",
    "OpenAI",
    "OpenAIChatDecoder",
    "OpenAICompatible",
    "chat_body",
    "chat_messages",
    "openai_metadata",
    "parse_openai_error",
    "stream_error",
]

#: OpenAI (Chat Completions / Responses).
#: https://platform.openai.com/docs/guides/images-vision ("Image input requirements"):
#: PNG, JPEG, WEBP, non-animated GIF; up to 50 MB total payload per request and up to
#: 500 images per request; 20 MB per image (the older vision guide). "high" detail first
#: fits the image in 2048x2048 (then 768 px on the short side); "low" looks at 512x512.
#: Inline images go as data: URLs; http(s) URLs are fetched by OpenAI.
OPENAI_POLICY = ImagePolicy(
    accepted_types=COMMON_TYPES,
    max_bytes=20 * MB,
    recommended_edge=2048,
    max_images=500,
    max_request_bytes=50 * MB,
    accepts_urls=True,
    low_detail_edge=512,
    accepts_animation=False,
)

#: OpenAI-compatible servers (vLLM, llama.cpp, LM Studio): OpenAI's wire format, but not
#: every server fetches URLs (llama.cpp does not), so images are sent inline.
COMPATIBLE_POLICY = ImagePolicy(
    accepted_types=COMMON_TYPES,
    recommended_edge=2048,
    accepts_urls=False,
    accepts_animation=False,
)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
#: vLLM's default address; LM Studio listens on :1234/v1, llama.cpp on :8080/v1.
DEFAULT_COMPATIBLE_BASE_URL = "http://localhost:8000/v1"

# --- models --------------------------------------------------------------------------

#: (model prefix, context window, output limit, takes images), from OpenAI's model
#: pages (https://platform.openai.com/docs/models): gpt-4o and gpt-4o-mini 128k/16k;
#: the gpt-4.1 family 1,047,576/32,768; o1, o3, o4-mini 200k/100k (o1-mini,
#: o1-preview and o3-mini read no images); gpt-5, 5.1, 5.2 400k/128k, gpt-5.4 and
#: 5.5 1,050,000/128k; the ``*-chat`` models 128k/16k. The longest matching prefix
#: wins, so dated snapshots match their family. Azure's ``gpt-35-turbo`` is listed.
_MODELS: tuple[tuple[str, int, int, bool], ...] = (
    ("gpt-5.5", 1_050_000, 128_000, True),
    ("gpt-5.4", 1_050_000, 128_000, True),
    ("gpt-5.2-chat", 128_000, 16_384, True),
    ("gpt-5.1-chat", 128_000, 16_384, True),
    ("gpt-5-chat", 128_000, 16_384, True),
    ("gpt-5", 400_000, 128_000, True),
    ("gpt-4.5", 128_000, 16_384, True),
    ("gpt-4.1", 1_047_576, 32_768, True),
    ("gpt-4o-2024-05-13", 128_000, 4_096, True),
    ("gpt-4o", 128_000, 16_384, True),
    ("chatgpt-4o", 128_000, 16_384, True),
    ("gpt-4-turbo", 128_000, 4_096, True),
    ("gpt-4-32k", 32_768, 4_096, False),
    ("gpt-4", 8_192, 8_192, False),
    ("gpt-3.5-turbo", 16_385, 4_096, False),
    ("gpt-35-turbo", 16_385, 4_096, False),
    ("o1-mini", 128_000, 65_536, False),
    ("o1-preview", 128_000, 32_768, False),
    ("o1", 200_000, 100_000, True),
    ("o3-mini", 200_000, 100_000, False),
    ("o3", 200_000, 100_000, True),
    ("o4-mini", 200_000, 100_000, True),
)
#: an OpenAI model not in the table (a newer one): today's common limits, images on.
_DEFAULT_MODEL = ("", 128_000, 16_384, True)
#: models that cannot call tools.
_NO_TOOLS = ("o1-mini", "o1-preview")


def _model_entry(model: str) -> tuple[str, int, int, bool] | None:
    name = model.rsplit("/", 1)[-1].lower()  # "openai/gpt-4o" from a router
    best: tuple[str, int, int, bool] | None = None
    for entry in _MODELS:
        if name.startswith(entry[0]) and (best is None or len(entry[0]) > len(best[0])):
            best = entry
    return best


def openai_metadata(
    model: str, *, max_images: int | None = None, default: tuple[int, int] | None = None
) -> MultiModalLLMMetadata:
    """Context window, output limit and abilities of an OpenAI model, by longest prefix.

    An unknown model gets ``default`` (context, output) or OpenAI's current
    common limits; it is never rejected.
    """
    entry = _model_entry(model)
    if entry is None:
        context, output = default or _DEFAULT_MODEL[1:3]
        vision, tools = True, default is None
    else:
        _, context, output, vision = entry
        tools = not entry[0].startswith(_NO_TOOLS)
    images = max_images if max_images is not None else OPENAI_POLICY.max_images or 0
    return MultiModalLLMMetadata(
        context_window=context,
        num_output=output,
        num_input_files=images if vision else 0,
        is_function_calling_model=tools,
        model_name=model,
        is_chat_model=True,
    )


# --- configuration helpers -----------------------------------------------------------


def _strip_slash(value: str) -> str:
    return value.rstrip("/")


def _to_headers(value: Mapping[str, str] | None) -> Mapping[str, str]:
    return {} if value is None else dict(value)


def _env(*names: str) -> Any:
    """An attrs Factory reading the first non-empty environment variable (or None)."""
    return Factory(lambda: env_value(os.environ, *names))


def _env_or(default: str, *names: str) -> Any:
    return Factory(lambda: env_value(os.environ, *names) or default)


# --- request -------------------------------------------------------------------------


def _image_part(block: ImageBlock, provider: str) -> dict[str, Any]:
    """An ``image_url`` content part: a data: URL for bytes, the URL itself otherwise."""
    if block.image is not None:
        url = encoded_form(block, provider=provider).data_url
    elif block.url is not None:
        url = block.url
    else:
        raise InvalidImageError(
            f"{provider}: an image given by path ({block.path}) was not loaded; send requests "
            "through MultiModalLLM, which loads and fits images first",
            provider=provider,
        )
    image_url: dict[str, Any] = {"url": url}
    if block.detail:
        image_url["detail"] = block.detail
    return {"type": "image_url", "image_url": image_url}


def _tool_calls(calls: Any) -> list[dict[str, Any]]:
    """mmstream's tool calls (``id``, ``name``, parsed ``arguments``) in OpenAI's shape."""
    out = []
    for call in calls or ():
        if not isinstance(call, Mapping):
            continue
        if "function" in call:  # already in OpenAI's shape
            out.append(dict(call))
            continue
        arguments = call.get("arguments")
        if not isinstance(arguments, str):
            arguments = json.dumps({} if arguments is None else arguments, ensure_ascii=False)
        out.append(
            {
                "id": call.get("id"),
                "type": "function",
                "function": {"name": call.get("name"), "arguments": arguments},
            }
        )
    return out


def _message(message: ChatMessage, provider: str, developer_role: str) -> dict[str, Any]:
    role = message.role
    wire_role = developer_role if role is MessageRole.DEVELOPER else role.value
    content: Any
    if all(isinstance(block, TextBlock) for block in message.blocks):
        content = message.content or ""
    else:
        content = [
            {"type": "text", "text": block.text}
            if isinstance(block, TextBlock)
            else _image_part(block, provider)
            for block in message.blocks
        ]
    out: dict[str, Any] = {"role": wire_role, "content": content}
    extras = message.additional_kwargs
    if role is MessageRole.ASSISTANT and extras.get("tool_calls"):
        out["tool_calls"] = _tool_calls(extras["tool_calls"])
        if not content:
            out["content"] = None
    if role is MessageRole.TOOL and extras.get("tool_call_id"):
        out["tool_call_id"] = extras["tool_call_id"]
    if extras.get("name"):
        out["name"] = extras["name"]
    return out


def chat_messages(
    request: ChatRequest, provider: str, *, developer_role: str = "developer"
) -> list[dict[str, Any]]:
    """The ``messages`` array of a Chat Completions request.

    Text-only messages carry their text as a string (what every compatible
    server takes); a message with images carries a list of ``text`` and
    ``image_url`` parts, in order. Images must be loaded (bytes become
    ``data:`` URLs; Azure refuses bare base64) or be http(s) URLs.
    """
    return [_message(m, provider, developer_role) for m in request.messages]


def chat_body(
    request: ChatRequest,
    provider: str,
    *,
    model: str | None,
    max_tokens_field: str = "max_completion_tokens",
    include_usage: bool = True,
    developer_role: str = "developer",
) -> dict[str, Any]:
    """A streaming Chat Completions body: messages, options, then ``extra`` passed through.

    ``extra`` keys (``tools``, ``seed``, ``response_format``, ...) go into the
    body as they are and may override what mmstream set, except ``stream``,
    which is always true (the decoder reads a stream).
    """
    options = request.options
    body: dict[str, Any] = {}
    if model is not None:
        body["model"] = model
    body["messages"] = chat_messages(request, provider, developer_role=developer_role)
    body["stream"] = True
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    if options.max_tokens is not None:
        body[max_tokens_field] = options.max_tokens
    if options.temperature is not None:
        body["temperature"] = options.temperature
    if options.top_p is not None:
        body["top_p"] = options.top_p
    if options.stop:
        body["stop"] = list(options.stop)
    for key, value in options.extra.items():
        if key not in MMSTREAM_OPTIONS and value is not None:
            body[key] = value
    body["stream"] = True
    return body


# --- errors --------------------------------------------------------------------------

#: error ``type``/``code`` values (OpenAI, Azure, vLLM, llama.cpp) and their classes.
_ERROR_KINDS: Mapping[str, type[APIError]] = {
    "insufficient_quota": QuotaExceededError,
    "rate_limit_exceeded": RateLimitError,
    "rate_limit_error": RateLimitError,
    "tokens": RateLimitError,
    "requests": RateLimitError,
    "content_filter": ContentFilterError,
    "server_error": ServerError,
    "internal_error": ServerError,
    "api_error": ServerError,
    "overloaded": OverloadedError,
    "overloaded_error": OverloadedError,
    "service_unavailable": OverloadedError,
    "engine_overloaded": OverloadedError,
    "invalid_request_error": BadRequestError,
    "context_length_exceeded": BadRequestError,
    "badrequesterror": BadRequestError,
    "invalid_api_key": AuthenticationError,
    "authentication_error": AuthenticationError,
    "permission_error": PermissionDeniedError,
    "model_not_found": NotFoundError,
    "not_found_error": NotFoundError,
    "request_too_large": RequestTooLargeError,
}


def _kind_class(type_: str | None, code: str | None) -> type[APIError] | None:
    for value in (code, type_):
        if value:
            cls = _ERROR_KINDS.get(value.lower())
            if cls is not None:
                return cls
    return None


def _reset_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds until the exhausted rate limit resets, from ``x-ratelimit-reset-*``.

    OpenAI sends durations such as ``6m0s`` or ``20ms``
    (https://platform.openai.com/docs/guides/rate-limits#rate-limits-in-headers). The
    limit whose ``remaining`` is 0 decides; without that hint, the longer wait.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    waits: dict[str, float] = {}
    for kind in ("requests", "tokens"):
        value = lowered.get(f"x-ratelimit-reset-{kind}")
        seconds = parse_duration(value) if value else None
        if seconds is not None and math.isfinite(seconds) and seconds >= 0:
            waits[kind] = seconds
    if not waits:
        return None
    exhausted = [
        waits[kind]
        for kind in waits
        if lowered.get(f"x-ratelimit-remaining-{kind}", "").strip() == "0"
    ]
    return max(exhausted or waits.values())


def parse_openai_error(
    provider: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    request_id_header: str | None = None,
) -> APIError:
    """The typed error for an error response of the OpenAI family.

    The class follows the status (400/422, 401, 403, 404, 413, 429, 5xx, 503/529);
    a 429 ``insufficient_quota`` is a :class:`QuotaExceededError` (not retryable)
    and a ``content_filter`` code a :class:`ContentFilterError`. ``retry_after``
    comes from ``retry-after-ms``/``Retry-After``, else from the rate-limit reset
    headers. A body that is not JSON (a proxy's HTML page) gives its text.
    """
    error = default_parse_error(provider, status, headers, body)
    if not isinstance(error, QuotaExceededError):
        kind = _kind_class(error.type, error.code)
        if kind is QuotaExceededError or kind is ContentFilterError:
            error = _retyped(error, kind)
    if error.retry_after is None and status == 429:
        error.retry_after = _reset_seconds(headers)
    if error.retry_after is not None and not math.isfinite(error.retry_after):
        error.retry_after = None
    if request_id_header:
        value = {k.lower(): v for k, v in headers.items()}.get(request_id_header)
        if value:
            error.request_id = value
    return error


def _retyped(error: APIError, cls: type[APIError]) -> APIError:
    return cls(
        error.message,
        status=error.status,
        provider=error.provider,
        type=error.type,
        code=error.code,
        request_id=error.request_id,
        retry_after=error.retry_after,
        body=error.body,
    )


def stream_error(
    provider: str, error: Any, builder: ResponseBuilder, raw: Any = None
) -> MMStreamError:
    """The typed error for an error object sent inside a 200 stream, with the partial answer.

    ``error`` is the ``error`` member (an object or a string), or a vLLM-style
    top-level ``{"object": "error", ...}``. The class follows its ``code`` (an
    HTTP status as an integer, or a string such as ``"rate_limit_exceeded"``) and
    ``type``; unknown errors are :class:`ServerError` (retryable).
    """
    if isinstance(error, Mapping):
        message = error.get("message") or error.get("msg") or json.dumps(error)[:500]
        type_ = error.get("type")
        code = error.get("code")
    else:
        message, type_, code = str(error), None, None
    type_s = None if type_ is None else str(type_)
    code_s = None if code is None else str(code)
    cls = _kind_class(type_s, code_s)
    status_code = code if isinstance(code, int) and not isinstance(code, bool) else None
    if cls is None and status_code is not None and 400 <= status_code < 600:
        cls = error_class_for_status(status_code)
    return (cls or ServerError)(
        str(message),
        status=200,
        provider=provider,
        type=type_s,
        code=code_s,
        partial=builder.snapshot(raw),
    )


# --- the stream decoder --------------------------------------------------------------


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _usage(data: Mapping[str, Any]) -> Usage:
    prompt = data.get("prompt_tokens_details")
    completion = data.get("completion_tokens_details")
    return Usage(
        input_tokens=_count(data.get("prompt_tokens")),
        output_tokens=_count(data.get("completion_tokens")),
        total_tokens=_count(data.get("total_tokens")),
        cache_read_tokens=(
            _count(prompt.get("cached_tokens")) if isinstance(prompt, dict) else None
        ),
        reasoning_tokens=(
            _count(completion.get("reasoning_tokens")) if isinstance(completion, dict) else None
        ),
    )


#: a body kept whole (in lenient mode) in case it is plain JSON rather than a stream.
_MAX_PLAIN_BODY = 8 * 1024 * 1024


#: the C scanner of one JSON string literal: (text, index after its closing quote).
_scanstring: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]
_JSON_SPACE = " \t\n\r"


@final
class _Template:
    """A text chunk's JSON split around its ``delta.content`` string (the decoder's fast path).

    Consecutive text chunks of one stream differ only in that string (same
    id, model, created, fingerprint). When an event's data is the template's
    ``prefix``, a JSON string literal, and the template's ``suffix``, it parses
    to the template's chunk with that string as its content; so the string is
    read with the C ``scanstring`` alone, and ``raw`` is rebuilt from the
    template (fresh dicts, as ``json.loads`` gives) without parsing the rest.
    """

    __slots__ = ("choice", "chunk", "model", "prefix", "raw", "suffix")

    def __init__(
        self, prefix: str, suffix: str, chunk: dict[str, Any], choice: dict[str, Any]
    ) -> None:
        self.prefix = prefix
        self.suffix = suffix
        self.chunk = chunk
        self.choice = choice
        self.raw: dict[str, Any] = chunk
        model = chunk.get("model")
        self.model: str | None = model if model and isinstance(model, str) else None

    @classmethod
    def of(cls, data: str, chunk: dict[str, Any]) -> _Template | None:
        """The template of a parsed plain text chunk, or ``None`` for any other chunk."""
        if chunk.get("error") or chunk.get("object") == "error" or chunk.get("usage") is not None:
            return None
        choices = chunk.get("choices")
        if type(choices) is not list or len(choices) != 1:
            return None
        choice = choices[0]
        if type(choice) is not dict or choice.get("index", 0) not in (0, None):
            return None
        delta = choice.get("delta")
        if (
            type(delta) is not dict
            or len(delta) != 1
            or type(delta.get("content")) is not str
            or choice.get("finish_reason") is not None
            or data.count('"content"') != 1  # so the key found is the delta's, and only once
        ):
            return None
        start = data.find('"content"') + len('"content"')
        length = len(data)
        while start < length and data[start] in _JSON_SPACE:
            start += 1
        if data[start : start + 1] != ":":
            return None
        start += 1
        while start < length and data[start] in _JSON_SPACE:
            start += 1
        if data[start : start + 1] != '"':
            return None
        start += 1
        try:
            content, end = _scanstring(data, start)
        except ValueError:
            return None
        if content != delta["content"]:
            return None
        return cls(data[:start], data[end:], chunk, choice)

    def match(self, data: str) -> str | None:
        """The content of ``data`` if it fits the template (prefix already checked), else None.

        On a match, ``raw`` is the chunk ``data`` parses to.
        """
        try:
            content, end = _scanstring(data, len(self.prefix))
        except ValueError:
            return None
        if len(data) - end != len(self.suffix) or not data.endswith(self.suffix):
            return None
        chunk = self.chunk.copy()
        choice = self.choice.copy()
        choice["delta"] = {"content": content}
        chunk["choices"] = [choice]
        self.raw = chunk
        return content


@final
class OpenAIChatDecoder:
    """Chat Completions SSE chunks into mmstream chunks; one decoder for the whole family.

    Args:
        provider: the provider's name, for errors.
        model: the requested model (the chunks' ``model`` replaces it).
        lenient: accept what OpenAI-compatible servers send. Strict (OpenAI,
            Azure), only ``data: [DONE]`` completes a stream: a body that ends
            without it raises :class:`~mmstream.errors.IncompleteStreamError`
            even after a ``finish_reason``, since the usage chunk comes last.
            Lenient, the end of the body after a ``finish_reason`` completes
            it too, old llama.cpp's ``error:`` lines are errors, and a plain
            JSON ``chat.completion`` body (streaming ignored) is decoded whole.
    """

    __slots__ = ("_builder", "_lenient", "_plain", "_plain_size", "_raw", "_sse", "_template")

    def __init__(self, provider: str, model: str | None = None, *, lenient: bool = False) -> None:
        self._builder = ResponseBuilder(provider, model)
        self._lenient = lenient
        self._sse = SSEDecoder(data_fields=("error",) if lenient else ())
        self._plain: list[bytes] | None = [] if lenient else None
        self._plain_size = 0
        self._raw: Any = None
        self._template: _Template | None = None

    def feed(self, data: bytes) -> list[ChatResponse]:
        """Decode more of the body (split anywhere)."""
        events = self._sse.feed(data)
        plain = self._plain
        if plain is not None:
            self._plain_size += len(data)
            if events or self._plain_size > _MAX_PLAIN_BODY:
                self._plain = None
            else:
                plain.append(data)
        return self._decode(events) if events else []

    def flush(self) -> list[ChatResponse]:
        """End of body: the final chunk, or IncompleteStreamError without the completion signal."""
        builder = self._builder
        events = self._sse.flush()
        out = self._decode(events) if events else []
        if not events and self._plain and not builder.done:
            out += self._decode_plain(b"".join(self._plain))
        if builder.done:
            return out
        if self._lenient and builder.finish_reason is not None:
            out.append(builder.finish(self._raw))
            return out
        raise builder.incomplete("data: [DONE]")

    def _decode(self, events: list[SSEEvent]) -> list[ChatResponse]:
        try:
            return self._events(events)
        except MMStreamError:
            raise
        except (TypeError, AttributeError, ValueError, KeyError) as exc:
            raise self._builder.protocol_error(repr(exc)) from exc

    def _events(self, events: list[SSEEvent]) -> list[ChatResponse]:
        builder = self._builder
        out: list[ChatResponse] = []
        for event in events:
            if builder.done:
                break  # nothing counts after [DONE]
            data = event.data
            if data.startswith("[DONE]"):
                out.append(builder.finish(self._raw))
                continue
            if event.event == "error":  # "event: error", or llama.cpp's "error:" line
                payload = load_json(data, builder) if data.strip() else {}
                error = payload.get("error", payload) if isinstance(payload, dict) else data
                raise stream_error(builder.provider, error, builder, payload)
            template = self._template
            if template is not None and data.startswith(template.prefix):
                content = template.match(data)
                if content is not None:  # the template's chunk with another text: no JSON parse
                    self._raw = raw = template.raw
                    if template.model:
                        builder.model = template.model
                    if content:
                        out.append(builder.text(content, raw))
                    continue
            if not data.strip():
                continue  # an empty data: frame (some proxies' keep-alive)
            chunk = load_json(data, builder)
            if not isinstance(chunk, dict):
                raise builder.protocol_error(f"expected a JSON object, got {data[:80]!r}")
            self._chunk(chunk, out)
            self._template = _Template.of(data, chunk)
        return out

    def _chunk(self, chunk: Mapping[str, Any], out: list[ChatResponse]) -> None:
        builder = self._builder
        error = chunk.get("error")
        if error:
            raise stream_error(builder.provider, error, builder, chunk)
        if chunk.get("object") == "error":  # vLLM's bare error object
            raise stream_error(builder.provider, chunk, builder, chunk)
        self._raw = chunk
        model = chunk.get("model")
        if model and isinstance(model, str):
            builder.model = model
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            builder.usage = _usage(usage)  # cumulative where repeated: the last wins
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) not in (0, None):
                continue  # n > 1: only the first answer is streamed
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                delta = choice.get("message")  # a server that sends whole messages
            if isinstance(delta, dict):
                self._delta(delta, chunk, out)
            finish = choice.get("finish_reason")
            if finish and isinstance(finish, str):
                builder.finish_reason = finish

    def _delta(
        self, delta: Mapping[str, Any], chunk: Mapping[str, Any], out: list[ChatResponse]
    ) -> None:
        builder = self._builder
        content = delta.get("content")
        if isinstance(content, str) and content:
            out.append(builder.text(content, chunk))
        for call in delta.get("tool_calls") or ():
            if not isinstance(call, dict):
                continue
            function = call.get("function")
            function = function if isinstance(function, dict) else {}
            index = call.get("index")
            builder.tool_call_delta(
                index if isinstance(index, int) else 0,
                id=call.get("id"),
                name=function.get("name"),
                arguments=_text(function.get("arguments")),
            )
        legacy = delta.get("function_call")
        if isinstance(legacy, dict):
            builder.tool_call_delta(
                0, name=legacy.get("name"), arguments=_text(legacy.get("arguments"))
            )

    def _decode_plain(self, body: bytes) -> list[ChatResponse]:
        """A whole ``chat.completion`` (or error) JSON body, from a server that did not stream."""
        text = body.strip()
        if not text.startswith(b"{"):
            return []
        builder = self._builder
        try:
            data = json.loads(text)
        except ValueError:
            return []
        if not isinstance(data, dict):
            return []
        out = self._decode_chunk_safely(data)
        if builder.finish_reason is not None or builder.usage is not None:
            out.append(builder.finish(data))
        return out

    def _decode_chunk_safely(self, data: Mapping[str, Any]) -> list[ChatResponse]:
        out: list[ChatResponse] = []
        try:
            self._chunk(data, out)
        except MMStreamError:
            raise
        except (TypeError, AttributeError, ValueError, KeyError) as exc:
            raise self._builder.protocol_error(repr(exc)) from exc
        return out


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)  # some servers send parsed arguments


# --- the providers -------------------------------------------------------------------


def _bearer(key: Secret | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}


@final
@frozen(kw_only=True)
class OpenAI(OptionFields):
    """OpenAI's models through the Chat Completions API (``"openai:MODEL"``).

    Args:
        model: the model (``"gpt-4o-mini"``, ``"gpt-4.1"``, ``"o4-mini"``, ``"gpt-5"``, ...).
        api_key: the key; read from ``OPENAI_API_KEY`` when not given. A missing
            key is reported when a call is made, not here.
        base_url: the API root; ``OPENAI_BASE_URL`` or ``https://api.openai.com/v1``.
        organization: sent as ``OpenAI-Organization``; ``OPENAI_ORG_ID`` by default.
        project: sent as ``OpenAI-Project``; ``OPENAI_PROJECT_ID`` by default.
        headers: more headers for every request (proxies, gateways).
        **options: default call options (``temperature``, ``max_tokens``, ``top_p``,
            ``stop``, ``timeout``, ``extra``); ``extra`` keys (``tools``, ``seed``,
            ``response_format``, ``reasoning_effort``, ...) go into the body.

    ``max_tokens`` is sent as ``max_completion_tokens`` (the only spelling the
    o-series and gpt-5 take). Images go as ``image_url`` parts: bytes as
    ``data:`` URLs, http(s) URLs as they are, with ``ImageBlock.detail``.

    Example:
        ``MultiModalLLM(OpenAI(model="gpt-4o-mini", temperature=0.2))``, or
        ``MultiModalLLM("openai:gpt-4o-mini")``.
    """

    name: ClassVar[str] = "openai"

    model: str
    api_key: Secret | None = field(default=_env("OPENAI_API_KEY"), converter=to_secret, repr=False)
    base_url: str = field(
        default=_env_or(DEFAULT_BASE_URL, "OPENAI_BASE_URL"), converter=_strip_slash
    )
    organization: str | None = _env("OPENAI_ORG_ID")
    project: str | None = _env("OPENAI_PROJECT_ID")
    headers: Mapping[str, str] = field(factory=dict, converter=_to_headers, repr=False)

    @property
    def metadata(self) -> MultiModalLLMMetadata:
        """The model's limits (known models by prefix; others get common limits)."""
        return openai_metadata(self.model)

    @property
    def image_policy(self) -> ImagePolicy:
        """OpenAI's documented image limits (``OPENAI_POLICY``, defined in this module)."""
        return OPENAI_POLICY

    def build_request(self, request: ChatRequest) -> HTTPRequest:
        """``POST {base_url}/chat/completions`` with a bearer key and a streaming body.

        Raises:
            ConfigurationError: no API key (pass ``api_key`` or set ``OPENAI_API_KEY``).
        """
        require_key(self.name, self.api_key, "OPENAI_API_KEY")
        headers = {**self.headers, **_bearer(self.api_key)}
        if self.organization:
            headers["OpenAI-Organization"] = self.organization
        if self.project:
            headers["OpenAI-Project"] = self.project
        return HTTPRequest(
            url=f"{self.base_url}/chat/completions",
            headers=headers,
            json=chat_body(request, self.name, model=self.model),
            timeout=request.options.timeout,
        )

    def new_decoder(self, request: ChatRequest) -> OpenAIChatDecoder:
        """A strict decoder: only ``data: [DONE]`` completes the stream."""
        return OpenAIChatDecoder(self.name, self.model)

    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> APIError:
        """The typed error for an HTTP error (request id from ``x-request-id``)."""
        return parse_openai_error(self.name, status, headers, body)


def _compatible_base_url() -> str:
    return env_value(os.environ, "OPENAI_COMPATIBLE_BASE_URL") or DEFAULT_COMPATIBLE_BASE_URL


@final
@frozen(kw_only=True)
class OpenAICompatible(OptionFields):
    """A server that speaks OpenAI's Chat Completions (``"openai-compatible:MODEL"``).

    vLLM, llama.cpp's ``llama-server``, LM Studio, LocalAI, text-generation-inference
    and gateways such as LiteLLM or OpenRouter.

    Args:
        model: the model name the server knows.
        base_url: the API root, up to and including ``/v1``;
            ``OPENAI_COMPATIBLE_BASE_URL`` or ``http://localhost:8000/v1``.
        api_key: optional; ``OPENAI_COMPATIBLE_API_KEY`` when set. Sent as a bearer token.
        headers: more headers for every request.
        max_tokens_field: how ``max_tokens`` is spelled in the body
            (``"max_tokens"``, which every server knows, or ``"max_completion_tokens"``).
        include_usage: send ``stream_options.include_usage`` (turn off for a
            server that rejects unknown fields).
        context_window / num_output: the model's limits, for ``metadata`` (a
            known OpenAI model name is looked up; otherwise 32768 / 4096).
        function_calling: whether the served model can call tools.

    The stream is decoded leniently: no usage (``usage`` is then ``None``),
    usage on every chunk (the last counts), no ``[DONE]`` (the end of the body
    after a ``finish_reason`` completes the answer; without one it is an
    :class:`~mmstream.errors.IncompleteStreamError`), and error objects with
    string or integer codes.
    """

    name: ClassVar[str] = "openai-compatible"

    model: str
    base_url: str = field(default=Factory(_compatible_base_url), converter=_strip_slash)
    api_key: Secret | None = field(
        default=_env("OPENAI_COMPATIBLE_API_KEY"), converter=to_secret, repr=False
    )
    headers: Mapping[str, str] = field(factory=dict, converter=_to_headers, repr=False)
    max_tokens_field: str = "max_tokens"
    include_usage: bool = True
    context_window: int | None = None
    num_output: int | None = None
    function_calling: bool = False

    @property
    def metadata(self) -> MultiModalLLMMetadata:
        """The configured limits, else an OpenAI model's by name, else 32768 / 4096."""
        known = _model_entry(self.model)
        base = openai_metadata(self.model, default=(32_768, 4_096))
        return MultiModalLLMMetadata(
            context_window=self.context_window or base.context_window,
            num_output=self.num_output or base.num_output,
            num_input_files=base.num_input_files,
            is_function_calling_model=self.function_calling
            or (known is not None and base.is_function_calling_model),
            model_name=self.model,
            is_chat_model=True,
        )

    @property
    def image_policy(self) -> ImagePolicy:
        """Inline images only: not every server fetches URLs (llama.cpp does not)."""
        return COMPATIBLE_POLICY

    def build_request(self, request: ChatRequest) -> HTTPRequest:
        """``POST {base_url}/chat/completions``; the ``developer`` role is sent as ``system``."""
        return HTTPRequest(
            url=f"{self.base_url}/chat/completions",
            headers={**self.headers, **_bearer(self.api_key)},
            json=chat_body(
                request,
                self.name,
                model=self.model,
                max_tokens_field=self.max_tokens_field,
                include_usage=self.include_usage,
                developer_role="system",
            ),
            timeout=request.options.timeout,
        )

    def new_decoder(self, request: ChatRequest) -> OpenAIChatDecoder:
        """A lenient decoder (see the class docstring)."""
        return OpenAIChatDecoder(self.name, self.model, lenient=True)

    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> APIError:
        """The typed error for an HTTP error (OpenAI's shapes and vLLM's bare one)."""
        return parse_openai_error(self.name, status, headers, body)
