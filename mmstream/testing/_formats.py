"""The providers' wire formats, rendered to bytes: routing, prompts, streams (errors: ``_errors``).

Pure functions (no I/O). Each API's stream is rendered as three lists of
frames: ``head`` (before the first content event), ``chunks`` (one frame per
text piece) and ``tail`` (finish, usage and the completion signal), so the
server can pace them and faults can cut or splice them.

The shapes follow the providers' documentation:

- OpenAI Chat Completions streaming, ``stream_options.include_usage``:
  https://platform.openai.com/docs/api-reference/chat-streaming and
  https://platform.openai.com/docs/api-reference/chat/create#chat-create-stream_options
  ("an additional chunk will be streamed before the ``data: [DONE]`` message
  ... the ``choices`` field will always be an empty array; all other chunks
  will also include a ``usage`` field, but with a null value").
- Azure OpenAI: https://learn.microsoft.com/en-us/azure/ai-foundry/openai/reference
  (``api-key`` header, ``api-version`` query, ``prompt_filter_results`` in a
  first chunk with empty ``choices``, ``content_filter_results`` per choice).
- Anthropic Messages streaming: https://docs.anthropic.com/en/api/messages-streaming
  and errors: https://docs.anthropic.com/en/api/errors (``request-id`` header,
  ``{"type": "error", "error": {...}}``, 529 ``overloaded_error``).
- Gemini: https://ai.google.dev/api/generate-content#method:-models.streamgeneratecontent
  and https://ai.google.dev/gemini-api/docs/troubleshooting (error ``status``
  names; 429 carries ``google.rpc.RetryInfo``). With ``alt=sse`` events end in
  ``\\r\\n\\r\\n``; without it the body is one JSON array streamed piecewise.
- Ollama: https://github.com/ollama/ollama/blob/main/docs/api.md#generate-a-chat-completion
  (NDJSON; the last line has ``done: true``, ``done_reason`` and durations in
  nanoseconds) and https://github.com/ollama/ollama/blob/main/docs/api.md#errors.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from attrs import define, field

from mmstream.testing._errors import (
    _AZURE_FILTER,
    API,
    _dumps,
    _sse,
    error_body,
    error_frame,
    html_error_body,
    malformed_frame,
    reason_phrase,
)
from mmstream.testing._script import ToolCall

__all__ = [
    "API",
    "Answer",
    "Route",
    "Stream",
    "error_body",
    "error_frame",
    "html_error_body",
    "malformed_frame",
    "prompt_of",
    "render_json",
    "other_answer",
    "reason_phrase",
    "render_stream",
    "route",
]


_AZURE_DEPLOYMENT = re.compile(r"^/openai/deployments/([^/]+)/chat/completions$")
_GEMINI = re.compile(
    r"^/(v1beta|v1|v1alpha)/models/([^/:]+):(streamGenerateContent|generateContent)$"
)


@define(slots=True)
class Route:
    """Which API a request path speaks, and what the path says about the call."""

    api: API
    model: str | None = None
    stream: bool | None = None
    deployment: str | None = None
    sse: bool = True


def route(method: str, path: str, query: Mapping[str, str]) -> Route | None:
    """The API a ``POST`` path belongs to, or ``None`` when no provider serves it."""
    if method != "POST":
        return None
    if path == "/openai/v1/chat/completions":
        return Route(api="azure")
    match = _AZURE_DEPLOYMENT.match(path)
    if match:
        return Route(api="azure", deployment=match.group(1))
    if path.endswith("/chat/completions"):
        return Route(api="openai")
    if path.endswith("/v1/messages"):
        return Route(api="anthropic")
    if path == "/api/chat":
        return Route(api="ollama")
    match = _GEMINI.match(path)
    if match:
        streaming = match.group(3) == "streamGenerateContent"
        return Route(
            api="gemini",
            model=match.group(2),
            stream=streaming,
            sse=streaming and query.get("alt") == "sse",
        )
    return None


# --------------------------------------------------------------------------- prompts


def prompt_of(api: API, body: Any) -> tuple[str, int]:
    """The text of the last user message and the number of images in the whole request."""
    if not isinstance(body, dict):
        return "", 0
    if api == "gemini":
        return _gemini_prompt(body)
    messages = body.get("messages")
    if not isinstance(messages, list):
        return "", 0
    text = ""
    images = 0
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        texts: list[str] = []
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, dict):
                    continue
                kind = part.get("type")
                if kind == "text" and isinstance(part.get("text"), str):
                    texts.append(part["text"])
                elif kind in ("image_url", "image", "input_image"):
                    images += 1
        if api == "ollama" and isinstance(message.get("images"), list):
            images += len(message["images"])
        if message.get("role") == "user":
            text = " ".join(texts)
    return text, images


def _gemini_prompt(body: dict[str, Any]) -> tuple[str, int]:
    contents = body.get("contents")
    if isinstance(contents, dict):
        contents = [contents]
    if not isinstance(contents, list):
        return "", 0
    text = ""
    images = 0
    for content in contents:
        if not isinstance(content, dict):
            continue
        texts: list[str] = []
        for part in content.get("parts") or []:
            if not isinstance(part, dict):
                continue
            if isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif any(k in part for k in ("inline_data", "inlineData", "file_data", "fileData")):
                images += 1
        if content.get("role", "user") == "user":
            text = " ".join(texts)
    return text, images


# --------------------------------------------------------------------------- answers


@define(slots=True)
class Answer:
    """Everything one rendered answer needs, computed once per request."""

    api: API
    model: str
    pieces: list[str]
    input_tokens: int
    output_tokens: int
    finish_reason: str
    tool_calls: tuple[ToolCall, ...] = ()
    include_usage: bool = False
    sse: bool = True
    request_id: str = "req_0"
    serial: int = 0
    created: int = 0

    @property
    def text(self) -> str:
        """The full streamed text."""
        return "".join(self.pieces)


@define(slots=True)
class Stream:
    """A rendered streaming body: frames before, per text piece, and after the content."""

    content_type: str
    head: list[bytes] = field(factory=list)
    chunks: list[bytes] = field(factory=list)
    tail: list[bytes] = field(factory=list)


_FINISH: dict[str, dict[str, str]] = {
    "openai": {},
    "azure": {},
    "anthropic": {
        "stop": "end_turn",
        "length": "max_tokens",
        "tool_calls": "tool_use",
        "content_filter": "refusal",
    },
    "gemini": {
        "stop": "STOP",
        "length": "MAX_TOKENS",
        "tool_calls": "STOP",
        "content_filter": "SAFETY",
    },
    "ollama": {"tool_calls": "stop", "content_filter": "stop"},
}


def _finish(answer: Answer) -> str:
    return _FINISH[answer.api].get(answer.finish_reason, answer.finish_reason)


#: one encoder for every frame (``json.dumps`` would build a new one per call).
#: a str as a JSON string literal (the C encoder ``json`` uses inside).
_jstr: Callable[[str], str] = json.encoder.encode_basestring


def _frames(pieces: list[str], prefix: str, suffix: str) -> list[bytes]:
    """``prefix + JSON(piece) + suffix`` per piece, rendering each distinct piece once."""
    rendered = {p: f"{prefix}{_jstr(p)}{suffix}".encode() for p in set(pieces)}
    return [rendered[p] for p in pieces]


def _tool_id(answer: Answer, index: int, call: ToolCall) -> str:
    if call.id is not None:
        return call.id
    prefix = "toolu_" if answer.api == "anthropic" else "call_"
    return f"{prefix}mmstream{answer.serial}x{index}"


def _argument_fragments(arguments: Mapping[str, Any]) -> list[str]:
    """JSON text of the arguments cut in a few fragments, as models stream them."""
    text = _dumps(dict(arguments))
    size = max(1, len(text) // 3 + 1)
    return [text[i : i + size] for i in range(0, len(text), size)]


def render_stream(answer: Answer, *, end: bool = True) -> Stream:
    """The streaming body of ``answer``; ``end=False`` leaves out the completion signal."""
    renderer: Callable[[Answer, bool], Stream] = _STREAMERS[answer.api]
    return renderer(answer, end)


def render_json(answer: Answer) -> bytes:
    """The non-streaming response body of ``answer``."""
    return _dumps(_JSONERS[answer.api](answer)).encode()


# ---- OpenAI / Azure ----------------------------------------------------------------


def _openai_usage(answer: Answer) -> dict[str, Any]:
    return {
        "prompt_tokens": answer.input_tokens,
        "completion_tokens": answer.output_tokens,
        "total_tokens": answer.input_tokens + answer.output_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _openai_stream(answer: Answer, end: bool) -> Stream:
    azure = answer.api == "azure"
    envelope = (
        f'{{"id":"chatcmpl-mmstream{answer.serial}","object":"chat.completion.chunk",'
        f'"created":{answer.created},"model":{_dumps(answer.model)},'
        f'"system_fingerprint":"fp_mmstream","choices":['
    )
    usage_null = ',"usage":null' if answer.include_usage else ""
    filters = f',"content_filter_results":{_dumps(_AZURE_FILTER)}' if azure else ""
    close = f"]{usage_null}}}\n\n"
    stream = Stream(content_type="text/event-stream; charset=utf-8")
    if azure:
        prompt_filter = {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": _AZURE_FILTER}],
        }
        stream.head.append(f"data: {_dumps(prompt_filter)}\n\n".encode())
    role_content = "null" if answer.tool_calls and not answer.pieces else '""'
    role_filters = ',"content_filter_results":{}' if azure else ""
    stream.head.append(
        (
            f'data: {envelope}{{"index":0,"delta":{{"role":"assistant","content":{role_content},'
            f'"refusal":null}}{role_filters},"logprobs":null,"finish_reason":null}}{close}'
        ).encode()
    )
    prefix = f'data: {envelope}{{"index":0,"delta":{{"content":'
    suffix = f'}}{filters},"logprobs":null,"finish_reason":null}}{close}'
    stream.chunks = _frames(answer.pieces, prefix, suffix)
    for index, call in enumerate(answer.tool_calls):
        first = {
            "index": index,
            "id": _tool_id(answer, index, call),
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        frames = [first] + [
            {"index": index, "function": {"arguments": fragment}}
            for fragment in _argument_fragments(call.arguments)
        ]
        for frame in frames:
            delta = _dumps({"tool_calls": [frame]})
            stream.tail.append(
                (
                    f'data: {envelope}{{"index":0,"delta":{delta},'
                    f'"logprobs":null,"finish_reason":null}}{close}'
                ).encode()
            )
    stream.tail.append(
        (
            f'data: {envelope}{{"index":0,"delta":{{}}{filters},"logprobs":null,'
            f'"finish_reason":{_dumps(_finish(answer))}}}{close}'
        ).encode()
    )
    if answer.include_usage:
        stream.tail.append(
            f'data: {envelope}],"usage":{_dumps(_openai_usage(answer))}}}\n\n'.encode()
        )
    if end:
        stream.tail.append(b"data: [DONE]\n\n")
    return stream


def _openai_json(answer: Answer) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": answer.text if answer.pieces or not answer.tool_calls else None,
        "refusal": None,
        "annotations": [],
    }
    if answer.tool_calls:
        message["tool_calls"] = [
            {
                "id": _tool_id(answer, index, call),
                "type": "function",
                "function": {"name": call.name, "arguments": _dumps(dict(call.arguments))},
            }
            for index, call in enumerate(answer.tool_calls)
        ]
    choice: dict[str, Any] = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": _finish(answer),
    }
    body: dict[str, Any] = {
        "id": f"chatcmpl-mmstream{answer.serial}",
        "object": "chat.completion",
        "created": answer.created,
        "model": answer.model,
        "choices": [choice],
        "usage": _openai_usage(answer),
        "system_fingerprint": "fp_mmstream",
    }
    if answer.api == "azure":
        choice["content_filter_results"] = _AZURE_FILTER
        body["prompt_filter_results"] = [
            {"prompt_index": 0, "content_filter_results": _AZURE_FILTER}
        ]
    return body


# ---- Anthropic -----------------------------------------------------------------------


def _anthropic_stream(answer: Answer, end: bool) -> Stream:
    stream = Stream(content_type="text/event-stream; charset=utf-8")
    start = {
        "type": "message_start",
        "message": {
            "id": f"msg_mmstream{answer.serial}",
            "type": "message",
            "role": "assistant",
            "model": answer.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": answer.input_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 1,
            },
        },
    }
    stream.head.append(_sse("message_start", _dumps(start)))
    index = 0
    if answer.pieces:
        stream.head.append(
            _sse(
                "content_block_start",
                '{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}',
            )
        )
        stream.head.append(_sse("ping", '{"type": "ping"}'))
        prefix = (
            'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
            '"delta":{"type":"text_delta","text":'
        )
        stream.chunks = _frames(answer.pieces, prefix, "}}\n\n")
        stream.tail.append(_sse("content_block_stop", '{"type":"content_block_stop","index":0}'))
        index = 1
    else:
        stream.head.append(_sse("ping", '{"type": "ping"}'))
    for offset, call in enumerate(answer.tool_calls):
        block = index + offset
        begin = {
            "type": "content_block_start",
            "index": block,
            "content_block": {
                "type": "tool_use",
                "id": _tool_id(answer, offset, call),
                "name": call.name,
                "input": {},
            },
        }
        stream.tail.append(_sse("content_block_start", _dumps(begin)))
        for fragment in _argument_fragments(call.arguments):
            delta = {
                "type": "content_block_delta",
                "index": block,
                "delta": {"type": "input_json_delta", "partial_json": fragment},
            }
            stream.tail.append(_sse("content_block_delta", _dumps(delta)))
        stream.tail.append(
            _sse("content_block_stop", _dumps({"type": "content_block_stop", "index": block}))
        )
    message_delta = {
        "type": "message_delta",
        "delta": {"stop_reason": _finish(answer), "stop_sequence": None},
        "usage": {"output_tokens": answer.output_tokens},
    }
    stream.tail.append(_sse("message_delta", _dumps(message_delta)))
    if end:
        stream.tail.append(_sse("message_stop", '{"type":"message_stop"}'))
    return stream


def _anthropic_json(answer: Answer) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if answer.pieces:
        content.append({"type": "text", "text": answer.text})
    content.extend(
        {
            "type": "tool_use",
            "id": _tool_id(answer, index, call),
            "name": call.name,
            "input": dict(call.arguments),
        }
        for index, call in enumerate(answer.tool_calls)
    )
    return {
        "id": f"msg_mmstream{answer.serial}",
        "type": "message",
        "role": "assistant",
        "model": answer.model,
        "content": content,
        "stop_reason": _finish(answer),
        "stop_sequence": None,
        "usage": {
            "input_tokens": answer.input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": answer.output_tokens,
        },
    }


# ---- Gemini ----------------------------------------------------------------------------


def _gemini_usage(answer: Answer, candidates: int) -> dict[str, Any]:
    return {
        "promptTokenCount": answer.input_tokens,
        "candidatesTokenCount": candidates,
        "totalTokenCount": answer.input_tokens + candidates,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": answer.input_tokens}],
    }


def _gemini_event(answer: Answer, parts: list[dict[str, Any]], done: bool, count: int) -> str:
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}}
    if done:
        candidate["finishReason"] = _finish(answer)
    candidate["index"] = 0
    return _dumps(
        {
            "candidates": [candidate],
            "usageMetadata": _gemini_usage(answer, count),
            "modelVersion": answer.model,
            "responseId": f"mmstream{answer.serial}",
        }
    )


def _gemini_final_parts(answer: Answer) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [
        {"functionCall": {"name": call.name, "args": dict(call.arguments)}}
        for call in answer.tool_calls
    ]
    return parts or [{"text": ""}]


def _gemini_templates(answer: Answer) -> tuple[str, str, str]:
    """A text event cut around its piece and counts: ``a + JSON(text) + b + count + ... + c``."""
    marker = "\0piece\0"
    event = _gemini_event(answer, [{"text": marker}], False, 0)
    before, after = event.split(_jstr(marker))
    usage_at = after.index('"candidatesTokenCount":0,"totalTokenCount":')
    middle = after[: usage_at + len('"candidatesTokenCount":')]
    rest = after[usage_at + len('"candidatesTokenCount":0,"totalTokenCount":') :]
    total_end = rest.index(",")
    return before, middle, rest[total_end:]


def _gemini_stream(answer: Answer, end: bool) -> Stream:
    total = len(answer.pieces)
    before, middle, after = _gemini_templates(answer)
    prompt = answer.input_tokens
    # Each event reports a cumulative usage snapshot, growing to output_tokens.
    counts = [(i + 1) * answer.output_tokens // total for i in range(total)] if total else []
    texts = [
        f'{before}{_jstr(p)}{middle}{c},"totalTokenCount":{prompt + c}{after}'
        for p, c in zip(answer.pieces, counts, strict=True)
    ]
    final = _gemini_event(answer, _gemini_final_parts(answer), True, answer.output_tokens)
    if answer.sse:
        stream = Stream(content_type="text/event-stream")
        stream.chunks = [f"data: {t}\r\n\r\n".encode() for t in texts]
        if end:
            stream.tail.append(f"data: {final}\r\n\r\n".encode())
        return stream
    # Without alt=sse the body is one JSON array, streamed element by element.
    stream = Stream(content_type="application/json; charset=UTF-8")
    stream.chunks = [(("[" if i == 0 else ",\r\n") + t).encode() for i, t in enumerate(texts)]
    if end:
        stream.tail.append(((",\r\n" if texts else "[") + final + "]").encode())
    else:
        stream.tail.append(b"]" if texts else b"[]")
    return stream


def _gemini_json(answer: Answer) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"text": answer.text}] if answer.pieces else []
    parts.extend(
        {"functionCall": {"name": call.name, "args": dict(call.arguments)}}
        for call in answer.tool_calls
    )
    return {
        "candidates": [
            {
                "content": {"parts": parts or [{"text": ""}], "role": "model"},
                "finishReason": _finish(answer),
                "index": 0,
            }
        ],
        "usageMetadata": _gemini_usage(answer, answer.output_tokens),
        "modelVersion": answer.model,
        "responseId": f"mmstream{answer.serial}",
    }


# ---- Ollama ----------------------------------------------------------------------------

_OLLAMA_TIME = "2025-01-01T00:00:00.000000Z"


def _ollama_tool_calls(answer: Answer) -> list[dict[str, Any]]:
    return [
        {"function": {"name": call.name, "arguments": dict(call.arguments)}}
        for call in answer.tool_calls
    ]


def _ollama_final(answer: Answer) -> dict[str, Any]:
    return {
        "model": answer.model,
        "created_at": _OLLAMA_TIME,
        "message": {"role": "assistant", "content": ""},
        "done_reason": _finish(answer),
        "done": True,
        "total_duration": 1_000_000 * (answer.output_tokens + 1),
        "load_duration": 100_000,
        "prompt_eval_count": answer.input_tokens,
        "prompt_eval_duration": 10_000 * answer.input_tokens,
        "eval_count": answer.output_tokens,
        "eval_duration": 1_000_000 * answer.output_tokens,
    }


def _ollama_stream(answer: Answer, end: bool) -> Stream:
    stream = Stream(content_type="application/x-ndjson")
    prefix = (
        f'{{"model":{_dumps(answer.model)},"created_at":"{_OLLAMA_TIME}",'
        '"message":{"role":"assistant","content":'
    )
    stream.chunks = _frames(answer.pieces, prefix, '},"done":false}\n')
    if answer.tool_calls:
        # Ollama sends the calls whole, in a message line of their own before the last line.
        calls = {
            "model": answer.model,
            "created_at": _OLLAMA_TIME,
            "message": {
                "role": "assistant",
                "content": "",
                "tool_calls": _ollama_tool_calls(answer),
            },
            "done": False,
        }
        stream.tail.append(f"{_dumps(calls)}\n".encode())
    if end:
        stream.tail.append(f"{_dumps(_ollama_final(answer))}\n".encode())
    return stream


def _ollama_json(answer: Answer) -> dict[str, Any]:
    body = _ollama_final(answer)
    body["message"]["content"] = answer.text
    if answer.tool_calls:
        body["message"]["tool_calls"] = _ollama_tool_calls(answer)
    return body


_STREAMERS: dict[str, Callable[[Answer, bool], Stream]] = {
    "openai": _openai_stream,
    "azure": _openai_stream,
    "anthropic": _anthropic_stream,
    "gemini": _gemini_stream,
    "ollama": _ollama_stream,
}
_JSONERS: dict[str, Callable[[Answer], dict[str, Any]]] = {
    "openai": _openai_json,
    "azure": _openai_json,
    "anthropic": _anthropic_json,
    "gemini": _gemini_json,
    "ollama": _ollama_json,
}


def other_answer(method: str, path: str) -> tuple[int, bytes]:
    """Answers for paths no provider call uses: health checks and model lists."""
    if method == "GET" and path in ("/", "/health"):
        return 200, b'{"status":"ok"}'
    if method == "GET" and path.endswith("/models"):
        return 200, json.dumps(
            {"object": "list", "data": [{"id": "mmstream-test", "object": "model"}]}
        ).encode()
    if method == "GET" and path == "/api/tags":
        return 200, b'{"models":[{"name":"mmstream-test:latest","model":"mmstream-test:latest"}]}'
    if method == "GET" and path == "/api/version":
        return 200, b'{"version":"0.0.0-mmstream"}'
    return 404, json.dumps(
        {"error": {"message": f"no mmstream test route for {method} {path}", "code": 404}}
    ).encode()
