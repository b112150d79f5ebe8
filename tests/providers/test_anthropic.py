"""Anthropic provider: request bodies and headers, streams at every split point, typed errors.

Streams are the documented ones from
https://docs.anthropic.com/en/docs/build-with-claude/streaming (basic text with a
ping, tool use with input_json_delta, extended thinking, an error event).
"""

from __future__ import annotations

import base64
import datetime
import io
import json

import httpx
import pytest
from PIL import Image

import mmstream as mm
from mmstream.content import ChatMessage, ImageBlock, TextBlock
from mmstream.errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    IncompleteStreamError,
    InvalidImageError,
    InvalidRequestError,
    MMStreamError,
    NotFoundError,
    OverloadedError,
    ProviderProtocolError,
    QuotaExceededError,
    RateLimitError,
    RequestTooLargeError,
    ServerError,
)
from mmstream.images import ANTHROPIC_POLICY
from mmstream.providers import from_string
from mmstream.providers.anthropic import Anthropic, AnthropicDecoder, retry_after_from_headers
from mmstream.request import ChatRequest
from mmstream.responses import ChatResponse
from mmstream.transport import Transport
from tests.providers._wire import decode_at_every_split, errors_at_every_split, text


def _png(color: tuple[int, int, int] = (255, 0, 0), size: tuple[int, int] = (4, 3)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _png()


def _provider(**fields: object) -> Anthropic:
    fields.setdefault("api_key", "sk-ant-test-key")
    return Anthropic(model="claude-sonnet-4-5", **fields)  # type: ignore[arg-type]


def _request(provider: Anthropic, *messages: ChatMessage, **options: object) -> ChatRequest:
    return ChatRequest(
        messages=messages, options=provider.options.merge(**options), provider=provider
    )


def _body(provider: Anthropic, *messages: ChatMessage, **options: object) -> dict[str, object]:
    body = provider.build_request(_request(provider, *messages, **options)).json
    assert isinstance(body, dict)
    return body


# --- requests --------------------------------------------------------------------------


def test_text_request_url_headers_and_body() -> None:
    provider = _provider()
    http = provider.build_request(_request(provider, ChatMessage("user", "Hello")))
    assert http.method == "POST"
    assert http.url == "https://api.anthropic.com/v1/messages"
    assert http.stream_format == "sse"
    assert http.headers["x-api-key"] == "sk-ant-test-key"
    assert http.headers["anthropic-version"] == "2023-06-01"
    assert http.headers["content-type"] == "application/json"
    assert "anthropic-beta" not in http.headers
    # https://docs.anthropic.com/en/api/messages: max_tokens is required; stream: true.
    assert http.json == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 8192,
        "messages": [{"role": "user", "content": "Hello"}],
        "stream": True,
    }
    assert "sk-ant-test-key" not in repr(http)
    assert "sk-ant-test-key" not in repr(provider)


def test_image_request_base64_and_url_sources() -> None:
    provider = _provider()
    message = ChatMessage(
        "user",
        blocks=[
            ImageBlock(image=PNG),
            ImageBlock(url="https://example.com/cat.jpg"),
            TextBlock("Compare these"),
        ],
    )
    body = _body(provider, message)
    # https://docs.anthropic.com/en/docs/build-with-claude/vision
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {
                    "type": "image",
                    "source": {
                        "type": "base64",
                        "media_type": "image/png",
                        "data": base64.b64encode(PNG).decode("ascii"),
                    },
                },
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                {"type": "text", "text": "Compare these"},
            ],
        }
    ]


def test_declared_mimetype_is_kept() -> None:
    provider = _provider()
    jpeg = io.BytesIO()
    Image.new("RGB", (2, 2)).save(jpeg, format="JPEG")
    body = _body(
        provider,
        ChatMessage(
            "user", blocks=[ImageBlock(image=jpeg.getvalue(), image_mimetype="image/jpeg")]
        ),
    )
    source = body["messages"][0]["content"][0]["source"]  # type: ignore[index]
    assert source["media_type"] == "image/jpeg"


def test_system_and_developer_messages_move_to_the_system_field() -> None:
    provider = _provider()
    body = _body(
        provider,
        ChatMessage("system", "You are terse."),
        ChatMessage("developer", "Answer in French."),
        ChatMessage("user", "Hi"),
    )
    assert body["system"] == "You are terse.\n\nAnswer in French."
    assert body["messages"] == [{"role": "user", "content": "Hi"}]


def test_image_in_system_message_is_refused() -> None:
    provider = _provider()
    with pytest.raises(InvalidRequestError, match="system"):
        _body(provider, ChatMessage("system", blocks=[ImageBlock(image=PNG)]))


def test_multi_turn_with_tool_call_and_result() -> None:
    provider = _provider()
    body = _body(
        provider,
        ChatMessage("user", "What is the weather in Paris?"),
        ChatMessage(
            "assistant",
            "Let me look.",
            additional_kwargs={
                "tool_calls": [
                    {"id": "toolu_1", "name": "get_weather", "arguments": {"city": "Paris"}}
                ]
            },
        ),
        ChatMessage("tool", '{"temp": 21}', additional_kwargs={"tool_call_id": "toolu_1"}),
        ChatMessage("assistant", "It is 21 degrees."),
        ChatMessage("user", "Thanks!"),
    )
    assert body["messages"] == [
        {"role": "user", "content": "What is the weather in Paris?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me look."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": '{"temp": 21}'}
            ],
        },
        {"role": "assistant", "content": "It is 21 degrees."},
        {"role": "user", "content": "Thanks!"},
    ]


def test_empty_text_blocks_are_dropped() -> None:
    provider = _provider()
    body = _body(provider, ChatMessage("user", blocks=[TextBlock(""), ImageBlock(image=PNG)]))
    content = body["messages"][0]["content"]  # type: ignore[index]
    assert [block["type"] for block in content] == ["image"]


def test_options_and_extra_pass_through() -> None:
    provider = _provider(temperature=0.3, extra={"top_k": 5})
    body = _body(
        provider,
        ChatMessage("user", "Hi"),
        max_tokens=100,
        top_p=0.9,
        stop=["END"],
        thinking={"type": "enabled", "budget_tokens": 2048},
        image_policy=ANTHROPIC_POLICY,
    )
    assert body["max_tokens"] == 100
    assert body["temperature"] == 0.3
    assert body["top_p"] == 0.9
    assert body["stop_sequences"] == ["END"]
    assert body["top_k"] == 5
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert "image_policy" not in body  # mmstream's own option, not the API's


def test_call_timeout_reaches_the_http_request() -> None:
    provider = _provider(timeout=12.0)
    assert provider.build_request(_request(provider, ChatMessage("user", "x"))).timeout == 12.0


def test_max_tokens_default_follows_the_model() -> None:
    provider = Anthropic(model="claude-3-haiku-20240307", api_key="k")
    assert _body(provider, ChatMessage("user", "x"))["max_tokens"] == 4096


def test_betas_header() -> None:
    provider = _provider(betas=["files-api-2025-04-14", "context-1m-2025-08-07"])
    http = provider.build_request(_request(provider, ChatMessage("user", "x")))
    assert http.headers["anthropic-beta"] == "files-api-2025-04-14,context-1m-2025-08-07"


def test_missing_key_raises_configuration_error_at_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    provider = Anthropic(model="claude-haiku-4-5")  # constructing needs no key
    assert provider.api_key is None
    with pytest.raises(ConfigurationError, match="ANTHROPIC_API_KEY"):
        provider.build_request(_request(provider, ChatMessage("user", "x")))


def test_key_and_base_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-from-env")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9999/")
    provider = from_string("anthropic:claude-opus-4-1")
    assert isinstance(provider, Anthropic)
    http = provider.build_request(_request(provider, ChatMessage("user", "x")))
    assert http.url == "http://127.0.0.1:9999/v1/messages"
    assert http.headers["x-api-key"] == "sk-from-env"
    assert "sk-from-env" not in repr(provider)


def test_unloaded_image_path_is_refused() -> None:
    provider = _provider()
    with pytest.raises(InvalidImageError, match="not loaded"):
        _body(provider, ChatMessage("user", blocks=[ImageBlock(path="cat.png")]))


# --- metadata and image policy ----------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "context", "output"),
    [
        ("claude-opus-4-7", 1_000_000, 128_000),
        ("claude-sonnet-4-6", 1_000_000, 64_000),
        ("claude-sonnet-4-5-20250929", 200_000, 64_000),
        ("claude-haiku-4-5", 200_000, 64_000),
        ("claude-opus-4-1-20250805", 200_000, 32_000),
        ("claude-opus-4-20250514", 200_000, 32_000),
        ("claude-3-5-haiku-latest", 200_000, 8_192),
        ("claude-3-haiku-20240307", 200_000, 4_096),
        ("claude-someday-9", 200_000, 8_192),  # unknown: defaults, never rejected
    ],
)
def test_metadata_by_prefix(model: str, context: int, output: int) -> None:
    metadata = Anthropic(model=model, api_key="k").metadata
    assert (metadata.context_window, metadata.num_output) == (context, output)
    assert metadata.model_name == model
    assert metadata.is_chat_model and metadata.is_function_calling_model
    assert metadata.num_input_files == 100


def test_image_policy_is_the_documented_one() -> None:
    policy = _provider().image_policy
    assert policy is ANTHROPIC_POLICY
    assert policy.max_base64_bytes == 5 * 1024 * 1024
    assert policy.max_images == 100
    assert policy.max_edge == 8000
    assert policy.accepts_urls
    assert {"image/png", "image/jpeg", "image/gif", "image/webp"} == set(policy.accepted_types)


# --- streams ----------------------------------------------------------------------------


def _sse(*events: tuple[str, str]) -> bytes:
    return "".join(f"event: {name}\ndata: {data}\n\n" for name, data in events).encode()


BASIC = _sse(
    (
        "message_start",
        '{"type": "message_start", "message": {"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", '
        '"type": "message", "role": "assistant", "content": [], "model": "claude-opus-4-6", '
        '"stop_reason": null, "stop_sequence": null, '
        '"usage": {"input_tokens": 25, "output_tokens": 1}}}',
    ),
    (
        "content_block_start",
        '{"type": "content_block_start", "index": 0, '
        '"content_block": {"type": "text", "text": ""}}',
    ),
    ("ping", '{"type": "ping"}'),
    (
        "content_block_delta",
        '{"type": "content_block_delta", "index": 0, '
        '"delta": {"type": "text_delta", "text": "Hello"}}',
    ),
    (
        "content_block_delta",
        '{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": ""}}',
    ),
    (
        "content_block_delta",
        '{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}}',
    ),
    ("content_block_stop", '{"type": "content_block_stop", "index": 0}'),
    (
        "message_delta",
        '{"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence":null}, '
        '"usage": {"output_tokens": 15}}',
    ),
    ("message_stop", '{"type": "message_stop"}'),
)

TOOL_USE = _sse(
    (
        "message_start",
        '{"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message",'
        '"role":"assistant","model":"claude-opus-4-6","stop_sequence":null,'
        '"usage":{"input_tokens":472,"output_tokens":2},"content":[],"stop_reason":null}}',
    ),
    (
        "content_block_start",
        '{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}',
    ),
    ("ping", '{"type": "ping"}'),
    (
        "content_block_delta",
        '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay"}}',
    ),
    (
        "content_block_delta",
        '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta",'
        '"text":", let\'s check the weather."}}',
    ),
    ("content_block_stop", '{"type":"content_block_stop","index":0}'),
    (
        "content_block_start",
        '{"type":"content_block_start","index":1,"content_block":{"type":"tool_use",'
        '"id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}',
    ),
    (
        "content_block_delta",
        '{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta",'
        '"partial_json":""}}',
    ),
    (
        "content_block_delta",
        '{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta",'
        '"partial_json":"{\\"location\\":"}}',
    ),
    (
        "content_block_delta",
        '{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta",'
        '"partial_json":" \\"San Francisc"}}',
    ),
    (
        "content_block_delta",
        '{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta",'
        '"partial_json":"o, CA\\", \\"unit\\": \\"fah"}}',
    ),
    (
        "content_block_delta",
        '{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta",'
        '"partial_json":"renheit\\"}"}}',
    ),
    ("content_block_stop", '{"type":"content_block_stop","index":1}'),
    (
        "message_delta",
        '{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},'
        '"usage":{"output_tokens":89}}',
    ),
    ("message_stop", '{"type":"message_stop"}'),
)

THINKING = _sse(
    (
        "message_start",
        '{"type": "message_start", "message": {"id": "msg_01", "type": "message", '
        '"role": "assistant", "content": [], "model": "claude-opus-4-6", '
        '"stop_reason": null, "stop_sequence": null}}',
    ),
    (
        "content_block_start",
        '{"type": "content_block_start", "index": 0, '
        '"content_block": {"type": "thinking", "thinking": ""}}',
    ),
    (
        "content_block_delta",
        '{"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", '
        '"thinking": "1071 = 2 × 462 + 147"}}',
    ),
    (
        "content_block_delta",
        '{"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", '
        '"signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds..."}}',
    ),
    ("content_block_stop", '{"type": "content_block_stop", "index": 0}'),
    (
        "content_block_start",
        '{"type": "content_block_start", "index": 1, '
        '"content_block": {"type": "text", "text": ""}}',
    ),
    (
        "content_block_delta",
        '{"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", '
        '"text": "The greatest common divisor of 1071 and 462 is **21**."}}',
    ),
    ("content_block_stop", '{"type": "content_block_stop", "index": 1}'),
    (
        "message_delta",
        '{"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}}',
    ),
    ("message_stop", '{"type": "message_stop"}'),
)

OVERLOADED_MID_STREAM = BASIC.split(b"event: content_block_stop")[0] + _sse(
    (
        "error",
        '{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}',
    )
)


def _decode_at_every_split(wire: bytes) -> list[list[ChatResponse]]:
    return decode_at_every_split(lambda: AnthropicDecoder("claude-sonnet-4-5"), wire)


def _errors_at_every_split(
    wire: bytes, expected: type[MMStreamError]
) -> list[tuple[list[ChatResponse], MMStreamError]]:
    return errors_at_every_split(lambda: AnthropicDecoder("claude-sonnet-4-5"), wire, expected)


_text = text


def test_basic_stream_at_every_split() -> None:
    for chunks in _decode_at_every_split(BASIC):
        assert _text(chunks) == "Hello!"
        assert [c.delta for c in chunks[:-1]] == ["Hello", "!"]  # ping and empty delta: no chunk
        final = chunks[-1]
        assert final.text == "Hello!"
        assert final.finish_reason == "stop"
        assert final.additional_kwargs["provider_finish_reason"] == "end_turn"
        assert final.additional_kwargs["model"] == "claude-opus-4-6"
        assert final.usage is not None
        # output_tokens: message_delta's 15, not message_start's placeholder 1 added to it.
        assert (final.usage.input_tokens, final.usage.output_tokens) == (25, 15)
        assert final.usage.total_tokens == 40
        assert final.usage.cache_read_tokens is None


def test_tool_use_stream_at_every_split() -> None:
    for chunks in _decode_at_every_split(TOOL_USE):
        final = chunks[-1]
        assert final.text == "Okay, let's check the weather."
        assert final.finish_reason == "tool_calls"
        assert final.additional_kwargs["tool_calls"] == [
            {
                "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                "name": "get_weather",
                "arguments": {"location": "San Francisco, CA", "unit": "fahrenheit"},
            }
        ]
        assert final.usage is not None
        assert (final.usage.input_tokens, final.usage.output_tokens) == (472, 89)


def test_thinking_blocks_are_not_answer_text() -> None:
    for chunks in _decode_at_every_split(THINKING):
        final = chunks[-1]
        assert final.text == "The greatest common divisor of 1071 and 462 is **21**."
        assert "462 + 147" not in final.text
        assert final.usage is None  # nothing reported: None, never zeros


def test_cache_counts_and_message_delta_updates() -> None:
    wire = _sse(
        (
            "message_start",
            '{"type":"message_start","message":{"model":"claude-sonnet-4-5","usage":'
            '{"input_tokens":12,"cache_creation_input_tokens":1000,'
            '"cache_read_input_tokens":3000,"output_tokens":1}}}',
        ),
        (
            "content_block_delta",
            '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}',
        ),
        (
            "message_delta",
            '{"type":"message_delta","delta":{"stop_reason":"max_tokens"},'
            '"usage":{"output_tokens":7}}',
        ),
        (
            "message_delta",
            '{"type":"message_delta","delta":{},"usage":{"input_tokens":15,'
            '"cache_read_input_tokens":3100,"output_tokens":9}}',
        ),
        ("message_stop", '{"type":"message_stop"}'),
    )
    for chunks in _decode_at_every_split(wire):
        usage = chunks[-1].usage
        assert usage is not None
        assert usage.output_tokens == 9  # cumulative: the last count, not 7 + 9
        assert usage.cache_read_tokens == 3100
        assert usage.cache_creation_tokens == 1000
        assert usage.input_tokens == 15 + 3100 + 1000  # the whole prompt
        assert chunks[-1].finish_reason == "length"


def test_unknown_events_and_blocks_are_skipped() -> None:
    wire = _sse(
        ("message_start", '{"type":"message_start","message":{"usage":{"input_tokens":3}}}'),
        ("content_block_start", '{"type":"content_block_start","index":0,'
         '"content_block":{"type":"server_tool_use","id":"srvtoolu_1","name":"web_search",'
         '"input":{}}}'),
        ("content_block_delta", '{"type":"content_block_delta","index":0,'
         '"delta":{"type":"input_json_delta","partial_json":"{\\"query\\": \\"x\\"}"}}'),
        ("brand_new_event", '{"type":"brand_new_event","anything":[1,2]}'),
        ("content_block_start", '{"type":"content_block_start","index":1,'
         '"content_block":{"type":"text","text":"Found"}}'),
        ("content_block_delta", '{"type":"content_block_delta","index":1,'
         '"delta":{"type":"citations_delta","citation":{"type":"char_location"}}}'),
        ("content_block_delta", '{"type":"content_block_delta","index":1,'
         '"delta":{"type":"text_delta","text":" it."}}'),
        ("message_delta", '{"type":"message_delta","delta":{"stop_reason":"end_turn"},'
         '"usage":{"output_tokens":4}}'),
        ("message_stop", '{"type":"message_stop"}'),
    )  # fmt: skip
    for chunks in _decode_at_every_split(wire):
        assert chunks[-1].text == "Found it."
        assert "tool_calls" not in chunks[-1].additional_kwargs  # server tools are not ours


def test_events_after_message_stop_are_ignored() -> None:
    decoder = AnthropicDecoder()
    chunks = decoder.feed(BASIC + BASIC)
    assert [c.delta for c in chunks if c.delta] == ["Hello", "!"]
    assert decoder.flush() == []


def test_overloaded_error_event_keeps_the_partial_text_at_every_split() -> None:
    for seen, error in _errors_at_every_split(OVERLOADED_MID_STREAM, OverloadedError):
        assert isinstance(error, OverloadedError)
        assert error.partial is not None
        assert error.partial.text == "Hello!"
        assert _text(seen) in ("", "Hello", "Hello!")  # what was handed out before the error
        assert error.status == 200
        assert error.type == "overloaded_error"
        assert error.message == "Overloaded"
        assert error.retryable
        assert "inside the stream" in str(error)


@pytest.mark.parametrize(
    ("error_type", "cls"),
    [
        ("api_error", ServerError),
        ("rate_limit_error", RateLimitError),
        ("invalid_request_error", BadRequestError),
        ("billing_error", QuotaExceededError),
        ("shiny_new_error", ServerError),
    ],
)
def test_error_event_types(error_type: str, cls: type[APIError]) -> None:
    wire = _sse(
        ("message_start", '{"type":"message_start","message":{"usage":{"input_tokens":3}}}'),
        (
            "error",
            json.dumps({"type": "error", "error": {"type": error_type, "message": "nope"},
                        "request_id": "req_011"}),
        ),
    )  # fmt: skip
    with pytest.raises(cls) as info:
        AnthropicDecoder().feed(wire)
    assert type(info.value) is cls
    assert info.value.request_id == "req_011"
    assert info.value.partial is not None and info.value.partial.text == ""


def test_truncated_stream_is_incomplete_with_partial() -> None:
    wire = BASIC.split(b"event: message_stop")[0]
    for seen, error in _errors_at_every_split(wire, IncompleteStreamError):
        assert error.partial is not None
        assert error.partial.text == "Hello!"
        assert _text(seen) == "Hello!"
        assert "message_stop" in str(error)


def test_malformed_json_is_a_protocol_error() -> None:
    decoder = AnthropicDecoder()
    with pytest.raises(ProviderProtocolError, match="malformed"):
        decoder.feed(b'event: content_block_delta\ndata: {"type": "content_block_delta", \n\n')
    with pytest.raises(ProviderProtocolError, match="object"):
        AnthropicDecoder().feed(b"data: [1, 2]\n\n")


# --- HTTP errors ------------------------------------------------------------------------


def _error_body(error_type: str, message: str, **extra: object) -> bytes:
    error: dict[str, object] = {"type": error_type, "message": message, **extra}
    return json.dumps({"type": "error", "error": error, "request_id": "req_011CSHoE"}).encode()


@pytest.mark.parametrize(
    ("status", "error_type", "cls"),
    [
        (400, "invalid_request_error", BadRequestError),
        (401, "authentication_error", AuthenticationError),
        (402, "billing_error", QuotaExceededError),
        (404, "not_found_error", NotFoundError),
        (413, "request_too_large", RequestTooLargeError),
        (429, "rate_limit_error", RateLimitError),
        (500, "api_error", ServerError),
        (529, "overloaded_error", OverloadedError),
    ],
)
def test_http_errors_map_to_typed_errors(status: int, error_type: str, cls: type[APIError]) -> None:
    error = _provider().parse_error(status, {}, _error_body(error_type, "the provider's words"))
    assert type(error) is cls
    assert error.status == status
    assert error.message == "the provider's words"
    assert error.type == error_type
    assert error.request_id == "req_011CSHoE"
    assert error.provider == "anthropic"
    assert "the provider's words" in str(error)


def test_overloaded_type_wins_over_status() -> None:
    error = _provider().parse_error(500, {}, _error_body("overloaded_error", "Overloaded"))
    assert isinstance(error, OverloadedError)


def test_spend_limit_429_is_not_retryable() -> None:
    body = _error_body(
        "rate_limit_error",
        "You have reached your monthly spend limit.",
        details={"error_code": "enforced_spend_limit_reached"},
    )
    error = _provider().parse_error(429, {"retry-after": "60"}, body)
    assert type(error) is QuotaExceededError
    assert error.code == "enforced_spend_limit_reached"
    assert not error.retryable
    plain = _provider().parse_error(
        429, {"retry-after": "60"}, _error_body("rate_limit_error", "x")
    )
    assert type(plain) is RateLimitError and plain.retryable
    assert plain.retry_after == 60.0


def test_request_id_header_wins() -> None:
    error = _provider().parse_error(
        401, {"request-id": "req_header"}, _error_body("authentication_error", "invalid x-api-key")
    )
    assert error.request_id == "req_header"


def test_non_json_error_body() -> None:
    error = _provider().parse_error(502, {}, b"<html><body><h1>502 Bad Gateway</h1></body></html>")
    assert type(error) is ServerError
    assert error.message == "502 Bad Gateway"


def _rfc3339(at: float) -> str:
    when = datetime.datetime.fromtimestamp(at, datetime.timezone.utc)
    return when.isoformat().replace("+00:00", "Z")


def test_retry_after_from_rate_limit_resets() -> None:
    now = 1_750_000_000.0
    headers = {
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": _rfc3339(now + 20),
        "anthropic-ratelimit-tokens-remaining": "5000",
        "anthropic-ratelimit-tokens-reset": _rfc3339(now + 50),
    }
    # The exhausted limit decides, not the later reset of one that has room.
    assert retry_after_from_headers(headers, now=now) == pytest.approx(20.0)
    headers["anthropic-ratelimit-tokens-remaining"] = "0"
    assert retry_after_from_headers(headers, now=now) == pytest.approx(50.0)
    # retry-after wins when sent.
    assert retry_after_from_headers({**headers, "retry-after": "3"}, now=now) == 3.0
    # No remaining counts: the latest reset; a past reset is 0; junk is ignored.
    assert retry_after_from_headers(
        {"anthropic-ratelimit-input-tokens-reset": "2025-06-15T15:07:00+00:00"},
        now=datetime.datetime(2025, 6, 15, 15, 6, 30, tzinfo=datetime.timezone.utc).timestamp(),
    ) == pytest.approx(30.0)
    assert (
        retry_after_from_headers({"anthropic-ratelimit-tokens-reset": _rfc3339(now - 9)}, now=now)
        == 0.0
    )
    assert retry_after_from_headers({"anthropic-ratelimit-tokens-reset": "soon"}, now=now) is None
    assert retry_after_from_headers({}, now=now) is None


def test_parse_error_reads_the_reset_headers() -> None:
    in_a_minute = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=60)
    headers = {
        "anthropic-ratelimit-tokens-remaining": "0",
        "anthropic-ratelimit-tokens-reset": in_a_minute.isoformat(),
    }
    error = _provider().parse_error(429, headers, _error_body("rate_limit_error", "slow down"))
    assert error.retry_after is not None and 0 < error.retry_after <= 60


# --- through MultiModalLLM ----------------------------------------------------------------


async def test_through_multimodal_llm_with_an_injected_transport() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=TOOL_USE, headers={"content-type": "text/event-stream"})

    transport = Transport(http_transport=httpx.MockTransport(handler))
    async with mm.MultiModalLLM(_provider(), transport=transport) as llm:
        response = await llm.acomplete("Weather?", [mm.ImageDocument.from_bytes(PNG)])
    assert response.text == "Okay, let's check the weather."
    assert response.additional_kwargs["tool_calls"][0]["name"] == "get_weather"
    sent = json.loads(seen[0].content)
    assert seen[0].headers["x-api-key"] == "sk-ant-test-key"
    content = sent["messages"][0]["content"]
    assert [block["type"] for block in content] == ["image", "text"]
    assert base64.b64decode(content[0]["source"]["data"]) == PNG


def test_wrong_typed_fields_are_skipped() -> None:
    wire = _sse(
        ("message_start", '{"type":"message_start","message":{"model":7,'
         '"usage":{"input_tokens":"x"}}}'),
        ("content_block_start", '{"type":"content_block_start","index":0,'
         '"content_block":{"type":"tool_use","id":5,"name":["n"],"input":{}}}'),
        ("content_block_delta", '{"type":"content_block_delta","index":0,'
         '"delta":{"type":"input_json_delta","partial_json":true}}'),
        ("content_block_delta", '{"type":"content_block_delta","index":[0],'
         '"delta":{"type":"input_json_delta","partial_json":"{}"}}'),
        ("content_block_delta", '{"type":"content_block_delta","index":1,'
         '"delta":{"type":"text_delta","text":42}}'),
        ("message_delta", '{"type":"message_delta","delta":"?","usage":{"output_tokens":true}}'),
        ("message_stop", '{"type":"message_stop"}'),
    )  # fmt: skip
    final = _decode_at_every_split(wire)[0][-1]
    assert final.text == ""
    assert final.additional_kwargs["tool_calls"] == [{"id": None, "name": None, "arguments": {}}]
    assert final.usage is not None and final.usage.output_tokens is None


def test_tool_call_arguments_given_as_text() -> None:
    calls = [
        {"id": "t1", "name": "a", "arguments": '{"x": 1}'},
        {"id": "t2", "name": "b", "arguments": "not json"},
        {"id": "t3", "name": "c", "arguments": ""},
    ]
    body = _body(_provider(), ChatMessage("assistant", "", additional_kwargs={"tool_calls": calls}))
    inputs = [block["input"] for block in body["messages"][0]["content"]]  # type: ignore[index]
    assert inputs == [{"x": 1}, {"input": "not json"}, {}]


def test_error_event_without_an_error_object() -> None:
    with pytest.raises(ServerError, match="boom"):
        AnthropicDecoder().feed(b'event: error\ndata: {"type": "error", "error": "boom"}\n\n')


def test_reset_without_a_timezone_is_utc() -> None:
    now = datetime.datetime(2025, 1, 1, 0, 0, 0, tzinfo=datetime.timezone.utc).timestamp()
    headers = {"anthropic-ratelimit-tokens-reset": "2025-01-01T00:00:10"}
    assert retry_after_from_headers(headers, now=now) == pytest.approx(10.0)
