"""Chat Completions, the wire format of the OpenAI family: request bodies, answers, errors.

Shared by [`OpenAI`][mmstream.providers.openai.OpenAI],
[`AzureOpenAI`][mmstream.providers.azure.AzureOpenAI] and
[`OpenAICompatible`][mmstream.providers.openai.OpenAICompatible]. Wire format:
https://platform.openai.com/docs/api-reference/chat/create (request) and
https://platform.openai.com/docs/api-reference/chat/streaming (the chunk object).
A stream is a series of ``data: {chat.completion.chunk}`` events and ends with
``data: [DONE]``. Its traps, all handled by
[`OpenAIChatDecoder`][mmstream.providers.chat_completions.OpenAIChatDecoder]:

- the first chunk carries ``delta.role`` and an empty ``content``;
- ``finish_reason`` usually comes on its own chunk with an empty ``delta``;
- with ``stream_options.include_usage`` the usage comes on one more chunk whose
  ``choices`` is ``[]``, right before ``[DONE]`` (every other chunk has
  ``"usage": null``);
- an error can arrive after HTTP 200, as ``data: {"error": {...}}``;
- tool calls arrive as fragments (``delta.tool_calls[i].function.arguments``).

The lenient mode reads what OpenAI-compatible servers send (vLLM, llama.cpp, LM
Studio and friends): no usage, cumulative usage on every chunk, no ``[DONE]``,
``[DONE]`` without a blank line, old llama.cpp's ``error:`` lines, integer error
codes. Every mode decodes a whole ``chat.completion`` JSON body (a server that
ignored ``stream: true``) as a one-chunk answer.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any, final

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
from mmstream.media.sniff import encoded_form
from mmstream.providers.base import (
    DecoderShell,
    ResponseBuilder,
    count,
    default_parse_error,
    load_json,
    parse_duration,
    passed_through,
    sampling,
)
from mmstream.request import ChatRequest
from mmstream.responses import ChatResponse, Usage
from mmstream.sse import DEFAULT_MAX_LINE, SSEDecoder, SSEEvent

__all__ = [
    "OpenAIChatDecoder",
    "chat_body",
    "chat_messages",
    "parse_openai_error",
    "stream_error",
]

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


_SAMPLING = {"temperature": "temperature", "top_p": "top_p", "stop": "stop"}


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
    body.update(sampling(options, {**_SAMPLING, "max_tokens": max_tokens_field}))
    for key, value in passed_through(options):
        if value is not None:
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
    a 429 ``insufficient_quota`` is a
    [`QuotaExceededError`][mmstream.errors.QuotaExceededError] (not retryable)
    and a ``content_filter`` code a
    [`ContentFilterError`][mmstream.errors.ContentFilterError]. ``retry_after``
    comes from ``retry-after-ms``/``Retry-After``, else from the rate-limit reset
    headers. A body that is not JSON (a proxy's HTML page) gives its text.
    """
    error = default_parse_error(provider, status, headers, body)
    kind = _kind_class(error.type, error.code)
    cls: type[APIError] | None = None
    if not isinstance(error, QuotaExceededError) and kind in (
        QuotaExceededError,
        ContentFilterError,
    ):
        cls = kind
    retry_after = error.retry_after
    if retry_after is None and status == 429:
        retry_after = _reset_seconds(headers)
    request_id = None
    if request_id_header:
        request_id = {k.lower(): v for k, v in headers.items()}.get(request_id_header)
    if cls is None and retry_after == error.retry_after and request_id is None:
        return error
    return default_parse_error(
        provider,
        status,
        headers,
        body,
        cls=cls or type(error),
        request_id=request_id or error.request_id,
        retry_after=retry_after,
    )


def stream_error(
    provider: str, error: Any, builder: ResponseBuilder, raw: Any = None
) -> MMStreamError:
    """The typed error for an error object sent inside a 200 stream, with the partial answer.

    ``error`` is the ``error`` member (an object or a string), or a vLLM-style
    top-level ``{"object": "error", ...}``. The class follows its ``code`` (an
    HTTP status as an integer or, Azure's, as a string; or a name such as
    ``"rate_limit_exceeded"``) and ``type``; unknown errors are
    [`ServerError`][mmstream.errors.ServerError] (retryable).
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
    if isinstance(code, str) and code.isdigit():
        status_code = int(code)  # Azure's "code": "429"
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


def _usage(data: Mapping[str, Any]) -> Usage:
    prompt = data.get("prompt_tokens_details")
    completion = data.get("completion_tokens_details")
    return Usage(
        input_tokens=count(data.get("prompt_tokens")),
        output_tokens=count(data.get("completion_tokens")),
        total_tokens=count(data.get("total_tokens")),
        cache_read_tokens=count(prompt.get("cached_tokens")) if isinstance(prompt, dict) else None,
        reasoning_tokens=(
            count(completion.get("reasoning_tokens")) if isinstance(completion, dict) else None
        ),
    )


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
class OpenAIChatDecoder(DecoderShell):
    """Chat Completions SSE chunks into mmstream chunks; one decoder for the whole family.

    Args:
        provider: the provider's name, for errors.
        model: the requested model (the chunks' ``model`` replaces it).
        lenient: accept what OpenAI-compatible servers send. Strict (OpenAI,
            Azure), only ``data: [DONE]`` completes a stream: a body that ends
            without it raises
            [`IncompleteStreamError`][mmstream.errors.IncompleteStreamError]
            even after a ``finish_reason``, since the usage chunk comes last.
            Lenient, the end of the body after a ``finish_reason`` completes
            it too, and old llama.cpp's ``error:`` lines are errors.
        max_line: the longest SSE line held, in bytes.
    """

    __slots__ = ("_lenient", "_raw", "_template")

    end = "data: [DONE]"

    def __init__(
        self,
        provider: str,
        model: str | None = None,
        *,
        lenient: bool = False,
        max_line: int = DEFAULT_MAX_LINE,
    ) -> None:
        frames = SSEDecoder(data_fields=("error",) if lenient else (), max_line=max_line)
        super().__init__(ResponseBuilder(provider, model), frames, plain=True)
        self._lenient = lenient
        self._raw: Any = None
        self._template: _Template | None = None

    def _at_end(self) -> ChatResponse | None:
        if self._lenient and self._builder.finish_reason is not None:
            return self._builder.finish(self._raw)
        return None

    def _document(self, data: Any) -> None:
        if not isinstance(data, dict):
            raise self._builder.protocol_error(f"expected a JSON object, got {str(data)[:80]!r}")
        self._chunk(data, [])

    def _decode(self, frames: list[Any]) -> list[ChatResponse]:
        events: list[SSEEvent] = frames
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


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)  # some servers send parsed arguments
