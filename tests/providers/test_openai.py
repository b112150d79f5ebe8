"""OpenAI provider, bytes in and chunks out: requests as documented, streams as sent, errors."""

from __future__ import annotations

import base64
import email.utils
import io
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from PIL import Image

import mmstream as mm
from mmstream.errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ContentFilterError,
    IncompleteStreamError,
    InvalidImageError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    ProviderProtocolError,
    QuotaExceededError,
    RateLimitError,
    RequestTooLargeError,
    ServerError,
)
from mmstream.images import OPENAI_POLICY
from mmstream.providers.openai import OpenAI, OpenAIChatDecoder
from mmstream.request import ChatRequest
from mmstream.responses import ChatResponse, Usage


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(name, raising=False)


def png(width: int = 4, height: int = 3) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def chat(provider: Any, messages: list[mm.ChatMessage], **options: Any) -> ChatRequest:
    return ChatRequest(
        messages=messages, options=provider.options.merge(**options), provider=provider
    )


def user(text: str) -> mm.ChatMessage:
    return mm.ChatMessage(role="user", content=text)


# --- the official SDK as the oracle of the documented format ---------------------------


def sdk_request(call: Callable[[Any], Any], **client_kwargs: Any) -> dict[str, Any]:
    """What the official ``openai`` SDK sends for the same call (URL, headers, JSON body)."""
    openai = pytest.importorskip("openai")
    import importlib
    import sys

    http = sys.modules.get("httpx2") or importlib.import_module("httpx")
    seen: dict[str, Any] = {}

    def handler(request: Any) -> Any:
        seen["url"] = str(request.url)
        seen["headers"] = {k.lower(): v for k, v in request.headers.items()}
        seen["json"] = json.loads(request.content)
        return http.Response(
            200, headers={"content-type": "text/event-stream"}, content=b"data: [DONE]\n\n"
        )

    factory = client_kwargs.pop("factory", openai.OpenAI)
    client = factory(
        http_client=http.Client(transport=http.MockTransport(handler)), **client_kwargs
    )
    for _ in call(client):
        pass
    client.close()
    return seen


def ours(provider: Any, messages: list[mm.ChatMessage], **options: Any) -> dict[str, Any]:
    http = provider.build_request(chat(provider, messages, **options))
    return {
        "url": http.url,
        "headers": {k.lower(): v for k, v in http.headers.items()},
        "json": http.json,
        "method": http.method,
    }


def assert_same_as_sdk(mine: dict[str, Any], sdk: dict[str, Any]) -> None:
    assert mine["method"] == "POST"
    assert mine["url"] == sdk["url"]
    assert mine["json"] == sdk["json"]
    for name in ("authorization", "api-key", "openai-organization", "openai-project"):
        assert mine["headers"].get(name) == sdk["headers"].get(name), name


def test_text_only_request_matches_the_sdk() -> None:
    provider = OpenAI(model="gpt-4o-mini", api_key="sk-test")
    mine = ours(provider, [user("Hi")])
    sdk = sdk_request(
        lambda c: c.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Hi"}],
            stream=True,
            stream_options={"include_usage": True},
        ),
        api_key="sk-test",
    )
    assert_same_as_sdk(mine, sdk)
    assert mine["url"] == "https://api.openai.com/v1/chat/completions"
    assert mine["headers"]["authorization"] == "Bearer sk-test"
    assert mine["json"] == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_base64_image_request_matches_the_sdk() -> None:
    data = png()
    provider = OpenAI(model="gpt-4o", api_key="sk-test")
    message = mm.ChatMessage(
        role="user",
        blocks=[
            mm.ImageBlock(image=data, image_mimetype="image/png", detail="high"),
            mm.TextBlock("What is this?"),
        ],
    )
    mine = ours(provider, [message], max_tokens=50, temperature=0.1)
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    content = [
        {"type": "image_url", "image_url": {"url": url, "detail": "high"}},
        {"type": "text", "text": "What is this?"},
    ]
    sdk = sdk_request(
        lambda c: c.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": content}],
            stream=True,
            stream_options={"include_usage": True},
            max_completion_tokens=50,
            temperature=0.1,
        ),
        api_key="sk-test",
    )
    assert_same_as_sdk(mine, sdk)
    assert mine["json"]["messages"][0]["content"] == content


def test_url_image_request_matches_the_sdk() -> None:
    provider = OpenAI(model="gpt-4.1", api_key="sk-test")
    message = mm.ChatMessage(
        role="user",
        blocks=[mm.TextBlock("Compare"), mm.ImageBlock(url="https://example.com/cat.jpg")],
    )
    mine = ours(provider, [message])
    content = [
        {"type": "text", "text": "Compare"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]
    sdk = sdk_request(
        lambda c: c.chat.completions.create(
            model="gpt-4.1",
            messages=[{"role": "user", "content": content}],
            stream=True,
            stream_options={"include_usage": True},
        ),
        api_key="sk-test",
    )
    assert_same_as_sdk(mine, sdk)


def test_system_and_multi_turn_request_matches_the_sdk() -> None:
    provider = OpenAI(
        model="gpt-4o-mini", api_key="sk-test", organization="org-1", project="proj-1"
    )
    messages = [
        mm.ChatMessage(role="system", content="Be brief."),
        user("Hi"),
        mm.ChatMessage(role="assistant", content="Hello!"),
        user("What is 2+2?"),
    ]
    mine = ours(provider, messages, stop=["\n"], top_p=0.5, seed=7)
    wire = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "What is 2+2?"},
    ]
    sdk = sdk_request(
        lambda c: c.chat.completions.create(
            model="gpt-4o-mini",
            messages=wire,
            stream=True,
            stream_options={"include_usage": True},
            stop=["\n"],
            top_p=0.5,
            seed=7,
        ),
        api_key="sk-test",
        organization="org-1",
        project="proj-1",
    )
    assert_same_as_sdk(mine, sdk)
    assert mine["headers"]["openai-organization"] == "org-1"
    assert mine["headers"]["openai-project"] == "proj-1"


# --- request details -------------------------------------------------------------------


def test_options_and_extra_go_into_the_body() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    provider = OpenAI(model="o4-mini", api_key="k", max_tokens=100, extra={"seed": 1})
    body = provider.build_request(
        chat(
            provider,
            [user("x")],
            max_tokens=20,
            tools=tools,
            response_format={"type": "json_object"},
            reasoning_effort="low",
            image_policy=OPENAI_POLICY,  # mmstream's own option: never sent
            stream=False,  # the decoder reads a stream: stays true
        )
    ).json
    assert body["max_completion_tokens"] == 20  # the call's wins
    assert "max_tokens" not in body
    assert body["seed"] == 1
    assert body["tools"] == tools
    assert body["response_format"] == {"type": "json_object"}
    assert body["reasoning_effort"] == "low"
    assert body["stream"] is True
    assert "image_policy" not in body


def test_developer_role_and_tool_turns() -> None:
    provider = OpenAI(model="gpt-4o", api_key="k")
    calls = [{"id": "call_1", "name": "lookup", "arguments": {"q": "cats"}}]
    messages = [
        mm.ChatMessage(role="developer", content="Use tools."),
        user("Find cats"),
        mm.ChatMessage(role="assistant", blocks=[], additional_kwargs={"tool_calls": calls}),
        mm.ChatMessage(
            role="tool", content='{"n": 3}', additional_kwargs={"tool_call_id": "call_1"}
        ),
    ]
    wire = provider.build_request(chat(provider, messages)).json["messages"]
    assert wire[0] == {"role": "developer", "content": "Use tools."}
    assert wire[2] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "lookup", "arguments": '{"q": "cats"}'},
            }
        ],
    }
    assert wire[3] == {"role": "tool", "content": '{"n": 3}', "tool_call_id": "call_1"}


def test_image_without_mimetype_is_sniffed_and_path_images_must_be_loaded() -> None:
    provider = OpenAI(model="gpt-4o", api_key="k")
    jpeg = io.BytesIO()
    Image.new("RGB", (2, 2)).save(jpeg, format="JPEG")
    message = mm.ChatMessage(role="user", blocks=[mm.ImageBlock(image=jpeg.getvalue())])
    part = provider.build_request(chat(provider, [message])).json["messages"][0]["content"][0]
    assert part["image_url"]["url"].startswith("data:image/jpeg;base64,")
    unloaded = mm.ChatMessage(role="user", blocks=[mm.ImageBlock(path="cat.png")])
    with pytest.raises(InvalidImageError, match="not loaded"):
        provider.build_request(chat(provider, [unloaded]))


def test_key_and_urls_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9999/v1/")
    monkeypatch.setenv("OPENAI_ORG_ID", "org-env")
    provider = OpenAI.from_env(model="gpt-4o-mini")
    http = provider.build_request(chat(provider, [user("x")]))
    assert http.url == "http://127.0.0.1:9999/v1/chat/completions"
    assert http.headers["Authorization"] == "Bearer sk-env"
    assert http.headers["OpenAI-Organization"] == "org-env"
    assert "OpenAI-Project" not in http.headers


def test_missing_key_fails_at_build_request_not_construction() -> None:
    provider = OpenAI(model="gpt-4o-mini")  # no error here
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        provider.build_request(chat(provider, [user("x")]))


def test_the_key_never_shows() -> None:
    provider = OpenAI(model="gpt-4o-mini", api_key="sk-secret-123")
    http = provider.build_request(chat(provider, [user("x")]))
    for text in (repr(provider), str(provider), repr(http), repr(provider.api_key)):
        assert "sk-secret-123" not in text


def test_string_form_and_lazy_attribute() -> None:
    llm = mm.MultiModalLLM("openai:gpt-4o-mini", api_key="k")
    assert isinstance(llm.provider, OpenAI)
    assert llm.provider.model == "gpt-4o-mini"
    assert mm.providers.OpenAI is OpenAI
    assert mm.providers.OpenAICompatible.name == "openai-compatible"
    assert mm.providers.AzureOpenAI.name == "azure"


@pytest.mark.parametrize(
    ("model", "context", "output", "files"),
    [
        ("gpt-4o-mini", 128_000, 16_384, 500),
        ("gpt-4o-2024-08-06", 128_000, 16_384, 500),
        ("gpt-4.1-nano", 1_047_576, 32_768, 500),
        ("o3", 200_000, 100_000, 500),
        ("o3-mini", 200_000, 100_000, 0),
        ("o1-mini", 128_000, 65_536, 0),
        ("gpt-5-mini", 400_000, 128_000, 500),
        ("gpt-5-chat-latest", 128_000, 16_384, 500),
        ("gpt-5.4", 1_050_000, 128_000, 500),
        ("gpt-7-turbo-from-the-future", 128_000, 16_384, 500),  # unknown: never rejected
    ],
)
def test_metadata(model: str, context: int, output: int, files: int) -> None:
    meta = OpenAI(model=model, api_key="k").metadata
    assert (meta.context_window, meta.num_output, meta.num_input_files) == (context, output, files)
    assert meta.model_name == model
    assert meta.is_chat_model


def test_image_policy_is_openais() -> None:
    policy = OpenAI(model="gpt-4o", api_key="k").image_policy
    assert policy.max_bytes == 20_000_000
    assert policy.max_request_bytes == 50_000_000
    assert policy.max_images == 500
    assert policy.accepts_urls
    assert not policy.accepts_animation


# --- decoding streams as the API sends them --------------------------------------------


def sse(*events: dict[str, Any] | str, eol: str = "\n") -> bytes:
    out = ""
    for event in events:
        data = event if isinstance(event, str) else json.dumps(event, ensure_ascii=False)
        out += f"data: {data}{eol}{eol}"
    return out.encode()


def chunk(content: str | None = None, finish: str | None = None, **delta: Any) -> dict[str, Any]:
    if content is not None:
        delta["content"] = content
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_1",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        "usage": None,
    }


USAGE = {
    "prompt_tokens": 20,
    "completion_tokens": 3,
    "total_tokens": 23,
    "prompt_tokens_details": {"cached_tokens": 8, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 1, "audio_tokens": 0},
}


def usage_chunk(usage: dict[str, Any] = USAGE) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [],
        "usage": usage,
    }


#: A stream as api.openai.com sends it: role chunk, text, finish on its own chunk with
#: an empty delta, the usage chunk with empty choices, [DONE]; CRLF and a keep-alive.
REAL = (
    sse(chunk("", role="assistant", refusal=None), eol="\r\n")
    + b": keep-alive\r\n\r\n"
    + sse(chunk("Gr\u00fc\u00df"), chunk(" dich \U0001f389"), chunk("!"), eol="\r\n")
    + sse(chunk(finish="stop"), usage_chunk(), "[DONE]", eol="\r\n")
)


def decode(make: Callable[[], OpenAIChatDecoder], pieces: list[bytes]) -> list[ChatResponse]:
    decoder = make()
    out: list[ChatResponse] = []
    for piece in pieces:
        out += decoder.feed(piece)
    return out + decoder.flush()


def every_split(body: bytes) -> Iterator[list[bytes]]:
    yield [body]
    yield [body[i : i + 1] for i in range(len(body))]
    for i in range(len(body) + 1):
        yield [body[:i], body[i:]]


def strict() -> OpenAIChatDecoder:
    return OpenAI(model="gpt-4o-mini", api_key="k").new_decoder(None)


def test_real_stream_decodes_at_every_split_point() -> None:
    for pieces in every_split(REAL):
        chunks = decode(strict, pieces)
        assert "".join(c.delta or "" for c in chunks) == "Grüß dich 🎉!"
        final = chunks[-1]
        assert final.text == "Grüß dich 🎉!"
        assert final.finish_reason == "stop"
        assert final.usage == Usage(
            input_tokens=20,
            output_tokens=3,
            total_tokens=23,
            cache_read_tokens=8,
            reasoning_tokens=1,
        )
        assert final.additional_kwargs["provider_finish_reason"] == "stop"
        assert final.additional_kwargs["model"] == "gpt-4o-mini-2024-07-18"
        assert [c.finish_reason for c in chunks].count("stop") == 1
        assert all(c.usage is None for c in chunks[:-1])


def test_text_chunks_are_cumulative_and_empty_deltas_make_no_chunk() -> None:
    chunks = decode(strict, [REAL])
    assert [c.delta for c in chunks] == ["Grüß", " dich 🎉", "!", ""]
    assert [c.text for c in chunks] == ["Grüß", "Grüß dich 🎉", "Grüß dich 🎉!", "Grüß dich 🎉!"]


def test_no_usage_without_include_usage_is_none_not_zero() -> None:
    body = sse(chunk("a"), chunk(finish="length"), "[DONE]")
    final = decode(strict, [body])[-1]
    assert final.usage is None
    assert final.finish_reason == "length"


def test_tool_call_fragments_are_assembled() -> None:
    def call(index: int, **kwargs: Any) -> dict[str, Any]:
        return chunk(tool_calls=[{"index": index, **kwargs}])

    body = sse(
        chunk(None, role="assistant"),
        call(0, id="call_a", type="function", function={"name": "get", "arguments": ""}),
        call(0, function={"arguments": '{"city": '}),
        call(1, id="call_b", type="function", function={"name": "put", "arguments": "{}"}),
        call(0, function={"arguments": '"Oslo"}'}),
        chunk(finish="tool_calls"),
        usage_chunk(),
        "[DONE]",
    )
    for pieces in every_split(body):
        final = decode(strict, pieces)[-1]
        assert final.finish_reason == "tool_calls"
        assert final.additional_kwargs["tool_calls"] == [
            {"id": "call_a", "name": "get", "arguments": {"city": "Oslo"}},
            {"id": "call_b", "name": "put", "arguments": {}},
        ]
        assert final.text == ""


def test_error_after_http_200_keeps_the_partial_text() -> None:
    error = {
        "error": {
            "message": "The server had an error while processing your request.",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }
    body = sse(chunk("Hello"), chunk(" wor"), error)
    for pieces in every_split(body):
        with pytest.raises(ServerError) as info:
            decode(strict, pieces)
        assert info.value.status == 200
        assert info.value.type == "server_error"
        assert info.value.partial is not None
        assert info.value.partial.text == "Hello wor"
        assert "server had an error" in str(info.value)


@pytest.mark.parametrize(
    ("error", "cls"),
    [
        ({"type": "rate_limit_exceeded", "message": "slow"}, RateLimitError),
        ({"code": "insufficient_quota", "message": "pay"}, QuotaExceededError),
        ({"type": "invalid_request_error", "message": "bad"}, BadRequestError),
        ({"code": 503, "message": "busy"}, OverloadedError),
        ({"message": "unknown"}, ServerError),
        ("just a string", ServerError),
    ],
)
def test_stream_error_classes(error: Any, cls: type[APIError]) -> None:
    with pytest.raises(cls) as info:
        decode(strict, [sse(chunk("x"), {"error": error})])
    assert type(info.value) is cls
    assert info.value.partial is not None and info.value.partial.text == "x"


def test_body_ending_without_done_is_incomplete_even_after_finish_reason() -> None:
    """Strict: the usage chunk comes after finish_reason, so [DONE] is the only end."""
    for body in (sse(chunk("Hel"), chunk("lo")), sse(chunk("Hello"), chunk(finish="stop"))):
        for pieces in every_split(body):
            with pytest.raises(IncompleteStreamError) as info:
                decode(strict, pieces)
            assert info.value.partial is not None
            assert info.value.partial.text == "Hello"
            assert "[DONE]" in str(info.value)


def test_empty_body_is_incomplete() -> None:
    with pytest.raises(IncompleteStreamError):
        decode(strict, [b""])


def test_malformed_json_is_a_protocol_error_with_partial() -> None:
    with pytest.raises(ProviderProtocolError) as info:
        decode(strict, [sse(chunk("ok")) + b"data: {not json\n\n"])
    assert info.value.partial is not None and info.value.partial.text == "ok"
    with pytest.raises(ProviderProtocolError):
        decode(strict, [b"data: [1, 2]\n\n"])
    with pytest.raises(ProviderProtocolError):
        decode(strict, [b'data: {"choices": 5}\n\n'])


def test_nothing_after_done_counts() -> None:
    chunks = decode(strict, [sse(chunk("a"), "[DONE]", chunk("b"), {"error": {"message": "x"}})])
    assert chunks[-1].text == "a"


def test_only_the_first_choice_is_streamed() -> None:
    second = chunk("other")
    second["choices"][0]["index"] = 1
    chunks = decode(strict, [sse(chunk("first"), second, chunk(finish="stop"), "[DONE]")])
    assert chunks[-1].text == "first"


# --- HTTP errors -------------------------------------------------------------------------


def openai_error(message: str, type_: str | None, code: str | None = None) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": type_, "param": None, "code": code}}
    ).encode()


@pytest.mark.parametrize(
    ("status", "cls", "type_", "code"),
    [
        (400, BadRequestError, "invalid_request_error", "context_length_exceeded"),
        (401, AuthenticationError, "invalid_request_error", "invalid_api_key"),
        (403, PermissionDeniedError, "invalid_request_error", "unsupported_country_region"),
        (404, NotFoundError, "invalid_request_error", "model_not_found"),
        (413, RequestTooLargeError, "invalid_request_error", None),
        (422, BadRequestError, "invalid_request_error", None),
        (429, RateLimitError, "requests", "rate_limit_exceeded"),
        (500, ServerError, "server_error", None),
        (502, ServerError, "server_error", None),
        (503, OverloadedError, "server_error", None),
        (529, OverloadedError, None, None),
    ],
)
def test_each_status_becomes_its_typed_error(
    status: int, cls: type[APIError], type_: str | None, code: str | None
) -> None:
    provider = OpenAI(model="gpt-4o", api_key="k")
    error = provider.parse_error(
        status, {"x-request-id": "req_abc123"}, openai_error(f"boom {status}", type_, code)
    )
    assert type(error) is cls
    assert error.status == status
    assert error.message == f"boom {status}"
    assert error.type == type_
    assert error.code == code
    assert error.request_id == "req_abc123"
    assert error.provider == "openai"
    assert f"boom {status}" in str(error) and "req_abc123" in str(error)


def test_insufficient_quota_is_not_retryable() -> None:
    body = openai_error(
        "You exceeded your current quota", "insufficient_quota", "insufficient_quota"
    )
    error = OpenAI(model="gpt-4o", api_key="k").parse_error(429, {}, body)
    assert isinstance(error, QuotaExceededError)
    assert isinstance(error, RateLimitError)
    assert not error.retryable


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"x-ratelimit-reset-requests": "6m0s", "x-ratelimit-reset-tokens": "20ms"}, 360.0),
        (
            {
                "x-ratelimit-reset-requests": "6m0s",
                "x-ratelimit-remaining-requests": "10",
                "x-ratelimit-reset-tokens": "1.5s",
                "x-ratelimit-remaining-tokens": "0",
            },
            1.5,
        ),
        ({"Retry-After": "2", "x-ratelimit-reset-tokens": "1m"}, 2.0),
        ({"Retry-After": "inf"}, None),
        ({"retry-after-ms": "nan", "Retry-After": "4"}, 4.0),
        ({}, None),
    ],
)
def test_retry_after(headers: dict[str, str], expected: float | None) -> None:
    body = openai_error("Rate limit reached", "requests", "rate_limit_exceeded")
    error = OpenAI(model="gpt-4o", api_key="k").parse_error(429, headers, body)
    assert isinstance(error, RateLimitError)
    assert error.retry_after == expected


def test_retry_after_as_http_date() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    error = OpenAI(model="gpt-4o", api_key="k").parse_error(429, {"Retry-After": when}, b"")
    assert error.retry_after is not None and 25 <= error.retry_after <= 31


@pytest.mark.parametrize("status", [413, 502, 504])
def test_html_error_page_from_a_proxy(status: int) -> None:
    page = (
        b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>"
        b"Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
    )
    error = OpenAI(model="gpt-4o", api_key="k").parse_error(status, {"cf-ray": "8a1-LHR"}, page)
    assert error.status == status
    assert "Bad Gateway" in error.message and "<" not in error.message
    assert error.request_id == "8a1-LHR"
    assert isinstance(error, RequestTooLargeError if status == 413 else ServerError)


def test_content_filter_code_is_a_content_filter_error() -> None:
    body = openai_error("filtered", None, "content_filter")
    assert isinstance(OpenAI(model="m", api_key="k").parse_error(400, {}, body), ContentFilterError)
