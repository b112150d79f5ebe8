"""Gemini provider: request bodies and headers, CRLF streams at every split point, typed errors.

Request shapes follow https://ai.google.dev/api/generate-content and
https://ai.google.dev/gemini-api/docs/image-understanding; the streams are shaped
as ``streamGenerateContent?alt=sse`` sends them (``data: {...}`` + CRLF CRLF, each
event a whole GenerateContentResponse, the last with ``finishReason``).
"""

from __future__ import annotations

import base64
import io
import json
from typing import Any

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
    ContentFilterError,
    IncompleteStreamError,
    InvalidImageError,
    InvalidRequestError,
    MMStreamError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    ProviderProtocolError,
    RateLimitError,
    ServerError,
)
from mmstream.images import GEMINI_POLICY
from mmstream.providers import from_string
from mmstream.providers.gemini import Gemini, GeminiDecoder
from mmstream.request import ChatRequest
from mmstream.responses import ChatResponse
from mmstream.transport import Transport
from tests.providers._wire import decode_at_every_split, errors_at_every_split, text


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), (0, 128, 255)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _png()


def _provider(**fields: Any) -> Gemini:
    fields.setdefault("api_key", "AIza-test-key")
    return Gemini(model="gemini-2.5-flash", **fields)


def _request(provider: Gemini, *messages: ChatMessage, **options: Any) -> ChatRequest:
    return ChatRequest(
        messages=messages, options=provider.options.merge(**options), provider=provider
    )


def _body(provider: Gemini, *messages: ChatMessage, **options: Any) -> dict[str, Any]:
    body = provider.build_request(_request(provider, *messages, **options)).json
    assert isinstance(body, dict)
    return body


# --- requests --------------------------------------------------------------------------


def test_text_request_url_headers_and_body() -> None:
    provider = _provider()
    http = provider.build_request(_request(provider, ChatMessage("user", "Hello")))
    assert http.method == "POST"
    assert http.url == (
        "https://generativelanguage.googleapis.com/v1beta/models/"
        "gemini-2.5-flash:streamGenerateContent?alt=sse"
    )
    assert http.stream_format == "sse"
    assert http.headers["x-goog-api-key"] == "AIza-test-key"
    assert http.headers["content-type"] == "application/json"
    assert http.json == {"contents": [{"role": "user", "parts": [{"text": "Hello"}]}]}
    assert "AIza-test-key" not in repr(http)
    assert "AIza-test-key" not in repr(provider)


def test_model_paths() -> None:
    for model, path in [
        ("models/gemini-2.0-flash", "models/gemini-2.0-flash"),
        ("tunedModels/my-model-123", "tunedModels/my-model-123"),
    ]:
        provider = Gemini(model=model, api_key="k", base_url="http://127.0.0.1:8080/")
        http = provider.build_request(_request(provider, ChatMessage("user", "x")))
        assert http.url == f"http://127.0.0.1:8080/v1beta/{path}:streamGenerateContent?alt=sse"


def test_image_request_inline_data_without_data_prefix() -> None:
    provider = _provider()
    body = _body(
        provider,
        ChatMessage("user", blocks=[ImageBlock(image=PNG), TextBlock("Caption this image.")]),
    )
    part = body["contents"][0]["parts"][0]
    assert part == {
        "inline_data": {"mime_type": "image/png", "data": base64.b64encode(PNG).decode("ascii")}
    }
    assert not part["inline_data"]["data"].startswith("data:")
    assert body["contents"][0]["parts"][1] == {"text": "Caption this image."}


def test_file_uris_become_file_data() -> None:
    provider = _provider()
    files_uri = "https://generativelanguage.googleapis.com/v1beta/files/abc-123"
    body = _body(
        provider,
        ChatMessage(
            "user",
            blocks=[
                ImageBlock(url="gs://bucket/cat.jpg"),
                ImageBlock(url=files_uri, image_mimetype="image/webp"),
                TextBlock("Both?"),
            ],
        ),
    )
    assert body["contents"][0]["parts"][:2] == [
        {"file_data": {"file_uri": "gs://bucket/cat.jpg", "mime_type": "image/jpeg"}},
        {"file_data": {"file_uri": files_uri, "mime_type": "image/webp"}},
    ]


def test_system_instruction_and_roles_in_a_multi_turn_chat() -> None:
    provider = _provider()
    body = _body(
        provider,
        ChatMessage("system", "You are a cat."),
        ChatMessage("user", "Hello"),
        ChatMessage("assistant", "Meow."),
        ChatMessage("user", blocks=[ImageBlock(image=PNG), TextBlock("And this?")]),
    )
    assert body["system_instruction"] == {"parts": [{"text": "You are a cat."}]}
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert body["contents"][1] == {"role": "model", "parts": [{"text": "Meow."}]}
    assert "inline_data" in body["contents"][2]["parts"][0]


def test_image_in_system_message_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="system"):
        _body(_provider(), ChatMessage("system", blocks=[ImageBlock(image=PNG)]))


def test_tool_call_and_result_turns() -> None:
    body = _body(
        _provider(),
        ChatMessage("user", "Weather in Paris?"),
        ChatMessage(
            "assistant",
            blocks=[],
            additional_kwargs={
                "tool_calls": [
                    {"id": None, "name": "get_weather", "arguments": '{"city": "Paris"}'}
                ]
            },
        ),
        ChatMessage("tool", '{"temp": 21}', additional_kwargs={"name": "get_weather"}),
    )
    assert body["contents"][1] == {
        "role": "model",
        "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}],
    }
    assert body["contents"][2] == {
        "role": "user",
        "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp": 21}}}],
    }


def test_generation_config_and_extra_routing() -> None:
    provider = _provider(temperature=0.2, extra={"topK": 40})
    body = _body(
        provider,
        ChatMessage("user", "x"),
        max_tokens=256,
        top_p=0.95,
        stop=["\n\n"],
        thinkingConfig={"thinkingBudget": 0},
        safetySettings=[{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
        generationConfig={"seed": 7},
        image_policy=GEMINI_POLICY,
    )
    assert body["generationConfig"] == {
        "temperature": 0.2,
        "topP": 0.95,
        "maxOutputTokens": 256,
        "stopSequences": ["\n\n"],
        "topK": 40,
        "thinkingConfig": {"thinkingBudget": 0},
        "seed": 7,
    }
    assert body["safetySettings"] == [
        {"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}
    ]
    assert "image_policy" not in body and "image_policy" not in body["generationConfig"]


def test_missing_key_raises_configuration_error_at_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    provider = Gemini(model="gemini-2.5-pro")
    with pytest.raises(ConfigurationError, match="GEMINI_API_KEY or GOOGLE_API_KEY"):
        provider.build_request(_request(provider, ChatMessage("user", "x")))


def test_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.setenv("GOOGLE_API_KEY", "google-key")
    provider = from_string("gemini:gemini-2.5-flash")
    http = provider.build_request(_request(provider, ChatMessage("user", "x")))  # type: ignore[arg-type]
    assert http.headers["x-goog-api-key"] == "google-key"
    monkeypatch.setenv("GEMINI_API_KEY", "gemini-key")
    provider = from_string("gemini:gemini-2.5-flash")
    http = provider.build_request(_request(provider, ChatMessage("user", "x")))  # type: ignore[arg-type]
    assert http.headers["x-goog-api-key"] == "gemini-key"


def test_unloaded_image_path_is_refused() -> None:
    with pytest.raises(InvalidImageError, match="not loaded"):
        _body(_provider(), ChatMessage("user", blocks=[ImageBlock(path="cat.png")]))


@pytest.mark.parametrize(
    ("model", "context", "output"),
    [
        ("gemini-3-pro-preview", 1_048_576, 65_536),
        ("gemini-2.5-pro", 1_048_576, 65_536),
        ("gemini-2.5-flash-lite", 1_048_576, 65_536),
        ("gemini-2.5-flash-image", 32_768, 32_768),
        ("models/gemini-2.0-flash-001", 1_048_576, 8_192),
        ("gemini-1.5-pro-002", 2_097_152, 8_192),
        ("gemini-99-ultra", 1_048_576, 8_192),  # unknown: defaults, never rejected
    ],
)
def test_metadata_by_prefix(model: str, context: int, output: int) -> None:
    metadata = Gemini(model=model, api_key="k").metadata
    assert (metadata.context_window, metadata.num_output) == (context, output)
    assert metadata.num_input_files == 3600
    assert metadata.is_chat_model and metadata.is_function_calling_model


def test_image_policy_is_the_documented_one() -> None:
    policy = _provider().image_policy
    assert policy is GEMINI_POLICY
    assert not policy.accepts_urls  # mmstream downloads http(s) URLs for Gemini
    assert "image/gif" not in policy.accepted_types
    assert {"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"} == set(
        policy.accepted_types
    )
    assert policy.max_images == 3600


# --- streams ----------------------------------------------------------------------------


def _sse(*events: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + json.dumps(e).encode() + b"\r\n\r\n" for e in events)


def _usage(prompt: int, candidates: int | None = None, **more: int) -> dict[str, Any]:
    usage: dict[str, Any] = {"promptTokenCount": prompt}
    total = prompt
    if candidates is not None:
        usage["candidatesTokenCount"] = candidates
        total += candidates
    total += more.get("thoughtsTokenCount", 0)
    usage.update(more)
    usage["totalTokenCount"] = total
    usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
    return usage


def _event(
    parts: list[dict[str, Any]], finish: str | None = None, usage: dict[str, Any] | None = None
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    event: dict[str, Any] = {"candidates": [candidate]}
    if usage is not None:
        event["usageMetadata"] = usage
    event["modelVersion"] = "gemini-2.5-flash"
    event["responseId"] = "mWlmaLrWM5SCz7IPo-3ZmQo"
    return event


BASIC = _sse(
    _event([{"text": "The"}], usage=_usage(8)),
    _event([{"text": " sky is blue"}], usage=_usage(8, 4)),
    _event([{"text": ""}], usage=_usage(8, 4)),
    _event([{"text": " because of Rayleigh scattering."}], "STOP", _usage(8, 11)),
)

THINKING = _sse(
    _event([{"text": "**Weighing the question**\n\n", "thought": True}], usage=_usage(12)),
    _event([{"text": "Forty-two"}], usage=_usage(12, 3, thoughtsTokenCount=150)),
    _event([{"text": "."}], "STOP", _usage(12, 4, thoughtsTokenCount=150)),
)

FUNCTION_CALL = _sse(
    _event(
        [{"functionCall": {"name": "get_weather", "args": {"city": "Paris", "unit": "celsius"}}}],
        "STOP",
        _usage(30, 9),
    )
)


def _decode_at_every_split(wire: bytes) -> list[list[ChatResponse]]:
    return decode_at_every_split(lambda: GeminiDecoder("gemini-2.5-flash"), wire)


def _errors_at_every_split(
    wire: bytes, expected: type[MMStreamError]
) -> list[tuple[list[ChatResponse], MMStreamError]]:
    return errors_at_every_split(lambda: GeminiDecoder("gemini-2.5-flash"), wire, expected)


_text = text


def test_wire_uses_crlf() -> None:
    assert b"\r\n\r\n" in BASIC and b"\n\n" not in BASIC.replace(b"\r\n", b"")


def test_basic_stream_at_every_split() -> None:
    for chunks in _decode_at_every_split(BASIC):
        assert [c.delta for c in chunks[:-1]] == [
            "The",
            " sky is blue",
            " because of Rayleigh scattering.",
        ]
        final = chunks[-1]
        assert final.text == "The sky is blue because of Rayleigh scattering."
        assert final.finish_reason == "stop"
        assert final.additional_kwargs["provider_finish_reason"] == "STOP"
        assert final.additional_kwargs["model"] == "gemini-2.5-flash"
        assert final.usage is not None
        # the last snapshot, not a sum of the four
        assert (final.usage.input_tokens, final.usage.output_tokens) == (8, 11)
        assert final.usage.total_tokens == 19
        assert final.usage.reasoning_tokens is None


def test_thought_parts_are_not_answer_text_and_count_apart() -> None:
    for chunks in _decode_at_every_split(THINKING):
        final = chunks[-1]
        assert final.text == "Forty-two."
        assert final.usage is not None
        assert final.usage.output_tokens == 4
        assert final.usage.reasoning_tokens == 150
        assert final.usage.total_tokens == 12 + 4 + 150


def test_function_call_arrives_whole() -> None:
    for chunks in _decode_at_every_split(FUNCTION_CALL):
        final = chunks[-1]
        assert final.text == ""
        assert final.additional_kwargs["tool_calls"] == [
            {"id": None, "name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}
        ]


def test_cached_tokens_and_max_tokens() -> None:
    wire = _sse(
        _event(
            [{"text": "Long answer"}], "MAX_TOKENS", _usage(2000, 64, cachedContentTokenCount=1500)
        )
    )
    final = _decode_at_every_split(wire)[0][-1]
    assert final.finish_reason == "length"
    assert final.usage is not None and final.usage.cache_read_tokens == 1500


def test_blocked_prompt_is_a_content_filter_error() -> None:
    wire = _sse(
        {
            "promptFeedback": {
                "blockReason": "SAFETY",
                "safetyRatings": [
                    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}
                ],
            },
            "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9},
            "modelVersion": "gemini-2.5-flash",
        }
    )
    for seen, error in _errors_at_every_split(wire, ContentFilterError):
        assert seen == []
        assert isinstance(error, ContentFilterError)
        assert error.code == "SAFETY"
        assert "prompt" in error.message
        assert error.partial is not None and error.partial.text == ""


def test_answer_stopped_for_safety_keeps_the_partial_text() -> None:
    wire = _sse(
        _event([{"text": "Here is how"}], usage=_usage(10, 3)),
        _event([], "SAFETY", _usage(10, 3)),
    )
    for _, error in _errors_at_every_split(wire, ContentFilterError):
        assert error.partial is not None
        assert error.partial.text == "Here is how"
        assert error.partial.finish_reason == "content_filter"
        assert isinstance(error, ContentFilterError) and error.code == "SAFETY"


def test_body_without_finish_reason_is_incomplete() -> None:
    wire = BASIC.rsplit(b"data: ", 1)[0]
    for seen, error in _errors_at_every_split(wire, IncompleteStreamError):
        assert _text(seen) == "The sky is blue"
        assert error.partial is not None and error.partial.text == "The sky is blue"
        assert "finishReason" in str(error)


def test_error_event_inside_the_stream() -> None:
    wire = _sse(_event([{"text": "Partial"}], usage=_usage(5, 1))) + _sse(
        {
            "error": {
                "code": 503,
                "message": "The model is overloaded. Please try again later.",
                "status": "UNAVAILABLE",
            }
        }
    )
    for _, error in _errors_at_every_split(wire, OverloadedError):
        assert isinstance(error, OverloadedError)
        assert error.partial is not None and error.partial.text == "Partial"
        assert error.message == "The model is overloaded. Please try again later."
        assert error.type == "UNAVAILABLE"
        assert error.status == 200
    with pytest.raises(ServerError):
        GeminiDecoder().feed(_sse({"error": {"message": "internal"}}))


def test_malformed_event_is_a_protocol_error() -> None:
    with pytest.raises(ProviderProtocolError):
        GeminiDecoder().feed(b'data: {"candidates": [\r\n\r\n')
    with pytest.raises(ProviderProtocolError):
        GeminiDecoder().feed(b'data: "text"\r\n\r\n')


# --- HTTP errors ------------------------------------------------------------------------

BAD_KEY = json.dumps(
    {
        "error": {
            "code": 400,
            "message": "API key not valid. Please pass a valid API key.",
            "status": "INVALID_ARGUMENT",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                },
                {
                    "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                    "locale": "en-US",
                    "message": "API key not valid. Please pass a valid API key.",
                },
            ],
        }
    }
).encode()

QUOTA = json.dumps(
    {
        "error": {
            "code": 429,
            "message": "You exceeded your current quota, please check your plan and billing "
            "details.",
            "status": "RESOURCE_EXHAUSTED",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [
                        {
                            "quotaMetric": "generativelanguage.googleapis.com/"
                            "generate_content_free_tier_requests",
                            "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                        }
                    ],
                },
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "30s"},
            ],
        }
    }
).encode()


def _google_error(code: int, status: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message, "status": status}}).encode()


def test_bad_key_400_is_an_authentication_error() -> None:
    error = _provider().parse_error(400, {}, BAD_KEY)
    assert type(error) is AuthenticationError
    assert error.status == 400
    assert error.code == "API_KEY_INVALID"
    assert error.type == "INVALID_ARGUMENT"
    assert error.message == "API key not valid. Please pass a valid API key."


def test_bad_key_without_details_is_still_an_authentication_error() -> None:
    body = _google_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.")
    assert type(_provider().parse_error(400, {}, body)) is AuthenticationError
    other = _google_error(400, "INVALID_ARGUMENT", "Request contains an invalid argument.")
    assert type(_provider().parse_error(400, {}, other)) is BadRequestError


def test_quota_429_with_retry_delay() -> None:
    error = _provider().parse_error(429, {}, QUOTA)
    assert type(error) is RateLimitError
    assert error.retry_after == 30.0
    assert error.type == "RESOURCE_EXHAUSTED"
    assert "exceeded your current quota" in str(error)
    assert _provider().parse_error(429, {"Retry-After": "7"}, QUOTA).retry_after == 7.0
    # The non-streaming endpoints wrap the error in a one-element array.
    listed = _provider().parse_error(429, {}, b"[" + QUOTA + b"]")
    assert listed.retry_after == 30.0 and listed.message == error.message


@pytest.mark.parametrize(
    ("status", "name", "cls"),
    [
        (400, "INVALID_ARGUMENT", BadRequestError),
        (403, "PERMISSION_DENIED", PermissionDeniedError),
        (404, "NOT_FOUND", NotFoundError),
        (500, "INTERNAL", ServerError),
        (503, "UNAVAILABLE", OverloadedError),
    ],
)
def test_http_errors_map_to_typed_errors(status: int, name: str, cls: type[APIError]) -> None:
    error = _provider().parse_error(
        status, {"x-goog-request-id": "g-1"}, _google_error(status, name, "Google's words")
    )
    assert type(error) is cls
    assert error.message == "Google's words"
    assert error.type == name
    assert error.request_id == "g-1"
    assert error.provider == "gemini"


# --- through MultiModalLLM ----------------------------------------------------------------


async def test_through_multimodal_llm_with_an_injected_transport() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=BASIC, headers={"content-type": "text/event-stream"})

    transport = Transport(http_transport=httpx.MockTransport(handler))
    async with mm.MultiModalLLM(_provider(), transport=transport) as llm:
        chunks = [c async for c in llm.astream_complete("Why?", [mm.ImageDocument.from_bytes(PNG)])]
    assert chunks[-1].text == "The sky is blue because of Rayleigh scattering."
    assert chunks[-1].usage is not None and chunks[-1].usage.output_tokens == 11
    assert seen[0].url.params["alt"] == "sse"
    sent = json.loads(seen[0].content)
    parts = sent["contents"][0]["parts"]
    assert base64.b64decode(parts[0]["inline_data"]["data"]) == PNG
    assert parts[1] == {"text": "Why?"}


def test_wrong_typed_fields_are_skipped() -> None:
    wire = _sse(
        {"error": None, "modelVersion": 2, "candidates": ["x", {"content": "y"}]},
        {"candidates": [{"content": {"parts": [
            {"text": 1}, "p", {"functionCall": {"name": "f", "id": 3}}
        ]}, "finishReason": 9}]},
        _event([{"text": "ok"}], "STOP", {"promptTokenCount": "ten", "candidatesTokenCount": 1}),
    )  # fmt: skip
    final = _decode_at_every_split(wire)[0][-1]
    assert final.text == "ok"
    assert final.additional_kwargs["tool_calls"] == [{"id": None, "name": "f", "arguments": {}}]
    assert final.usage is not None
    assert (final.usage.input_tokens, final.usage.output_tokens) == (None, 1)


def test_tool_turn_details() -> None:
    body = _body(
        _provider(),
        ChatMessage(
            "assistant",
            blocks=[TextBlock("")],
            additional_kwargs={"tool_calls": [{"name": "f", "arguments": {"a": 1}}]},
        ),
        ChatMessage("tool", "", additional_kwargs={"name": "f", "tool_call_id": "call-1"}),
        ChatMessage("tool", "plain words", additional_kwargs={"name": "g"}),
        ChatMessage("tool", "[1, 2]", additional_kwargs={"name": "h"}),
    )
    assert body["contents"][0]["parts"] == [{"functionCall": {"name": "f", "args": {"a": 1}}}]
    responses = [c["parts"][0]["functionResponse"] for c in body["contents"][1:]]
    assert responses == [
        {"name": "f", "response": {}, "id": "call-1"},
        {"name": "g", "response": {"result": "plain words"}},
        {"name": "h", "response": {"result": [1, 2]}},
    ]


def test_uri_without_a_known_type_has_no_mime_type() -> None:
    body = _body(_provider(), ChatMessage("user", blocks=[ImageBlock(url="gs://bucket/blob")]))
    assert body["contents"][0]["parts"][0] == {"file_data": {"file_uri": "gs://bucket/blob"}}


def test_bad_key_error_event_and_second_flush() -> None:
    event = json.loads(BAD_KEY)
    with pytest.raises(AuthenticationError):
        GeminiDecoder().feed(_sse(event))
    decoder = GeminiDecoder()
    assert decoder.feed(BASIC)
    assert len(decoder.flush()) == 1
    assert decoder.flush() == []
