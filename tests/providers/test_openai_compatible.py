"""OpenAI-compatible servers (vLLM, llama.cpp, LM Studio): the lenient decoder, bytes in."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import mmstream as mm
from mmstream.errors import (
    APIError,
    BadRequestError,
    IncompleteStreamError,
    NotFoundError,
    ProviderProtocolError,
    RateLimitError,
    ServerError,
)
from mmstream.providers.openai import OpenAIChatDecoder, OpenAICompatible
from mmstream.request import ChatRequest
from mmstream.responses import ChatResponse, Usage


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_COMPATIBLE_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_COMPATIBLE_API_KEY", raising=False)


def provider(**kwargs: Any) -> OpenAICompatible:
    values: dict[str, Any] = {"model": "Qwen/Qwen2.5-VL-7B-Instruct"}
    values.update(kwargs)
    return OpenAICompatible(**values)


def chat(p: Any, messages: list[mm.ChatMessage], **options: Any) -> ChatRequest:
    return ChatRequest(messages=messages, options=p.options.merge(**options), provider=p)


def user(text: str) -> mm.ChatMessage:
    return mm.ChatMessage(role="user", content=text)


# --- requests ------------------------------------------------------------------------------


def test_request_without_a_key_has_no_authorization() -> None:
    p = provider(base_url="http://127.0.0.1:8000/v1/")
    http = p.build_request(chat(p, [user("Hi")], max_tokens=64))
    assert http.url == "http://127.0.0.1:8000/v1/chat/completions"
    assert "Authorization" not in http.headers
    assert http.json == {
        "model": "Qwen/Qwen2.5-VL-7B-Instruct",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 64,
    }


def test_request_options_for_picky_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_COMPATIBLE_BASE_URL", "http://localhost:1234/v1")
    monkeypatch.setenv("OPENAI_COMPATIBLE_API_KEY", "lm-studio")
    p = OpenAICompatible.from_env(
        model="Qwen/Qwen2.5-VL-7B-Instruct",
        include_usage=False,
        max_tokens_field="max_completion_tokens",
    )
    messages = [mm.ChatMessage(role="developer", content="Be terse."), user("Hi")]
    http = p.build_request(chat(p, messages, max_tokens=8, top_k=20))
    assert http.url == "http://localhost:1234/v1/chat/completions"
    assert http.headers["Authorization"] == "Bearer lm-studio"
    assert "stream_options" not in http.json
    assert http.json["max_completion_tokens"] == 8
    assert http.json["top_k"] == 20  # server-specific extras pass through
    assert http.json["messages"][0] == {"role": "system", "content": "Be terse."}


def test_system_multi_turn_and_images_match_the_official_sdk() -> None:
    """The body the official SDK sends to a compatible server for the same call."""
    openai = pytest.importorskip("openai")
    import base64
    import importlib
    import sys

    http = sys.modules.get("httpx2") or importlib.import_module("httpx")
    seen: dict[str, Any] = {}

    def handler(request: Any) -> Any:
        seen["url"] = str(request.url)
        seen["json"] = json.loads(request.content)
        return http.Response(200, content=b"data: [DONE]\n\n")

    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    wire = [
        {"role": "system", "content": "Describe images."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": url}},
                {"type": "image_url", "image_url": {"url": "https://x.test/b.jpg"}},
                {"type": "text", "text": "Compare"},
            ],
        },
    ]
    client = openai.OpenAI(
        api_key="k",
        base_url="http://127.0.0.1:8000/v1",
        http_client=http.Client(transport=http.MockTransport(handler)),
    )
    for _ in client.chat.completions.create(
        model="llava",
        messages=wire,
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=32,
    ):
        pass
    client.close()

    p = provider(model="llava", base_url="http://127.0.0.1:8000/v1", api_key="k")
    messages = [
        mm.ChatMessage(role="system", content="Describe images."),
        user("Hi"),
        mm.ChatMessage(role="assistant", content="Hello"),
        mm.ChatMessage(
            role="user",
            blocks=[
                mm.ImageBlock(image=png, image_mimetype="image/png"),
                mm.ImageBlock(url="https://x.test/b.jpg"),
                mm.TextBlock("Compare"),
            ],
        ),
    ]
    http_request = p.build_request(chat(p, messages, max_tokens=32))
    assert http_request.url == seen["url"]
    assert http_request.json == seen["json"]


def test_images_are_sent_inline_as_data_urls() -> None:
    p = provider()
    gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"
    message = mm.ChatMessage(role="user", blocks=[mm.ImageBlock(image=gif), mm.TextBlock("?")])
    part = p.build_request(chat(p, [message])).json["messages"][0]["content"][0]
    assert part["type"] == "image_url"
    assert part["image_url"]["url"].startswith("data:image/gif;base64,")
    assert not p.image_policy.accepts_urls  # URLs are downloaded by mmstream first


def test_string_form_and_metadata() -> None:
    llm = mm.MultiModalLLM("openai-compatible:llava", base_url="http://127.0.0.1:8080/v1")
    assert isinstance(llm.provider, OpenAICompatible)
    meta = llm.metadata
    assert (meta.context_window, meta.num_output, meta.model_name) == (32_768, 4_096, "llava")
    assert not meta.is_function_calling_model
    configured = provider(context_window=131_072, num_output=8_192, function_calling=True)
    assert (configured.metadata.context_window, configured.metadata.num_output) == (
        131_072,
        8_192,
    )
    assert configured.metadata.is_function_calling_model
    routed = provider(model="openai/gpt-4o").metadata  # a gateway's name of a known model
    assert routed.context_window == 128_000
    assert routed.is_function_calling_model


# --- streams as compatible servers send them ---------------------------------------------


def chunk(content: str | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    delta: dict[str, Any] = {} if content is None and finish else {"content": content}
    if "role" in extra:
        delta["role"] = extra.pop("role")
    out: dict[str, Any] = {
        "id": "chatcmpl-v1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "served-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    out.update(extra)
    return out


def usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def sse(*events: dict[str, Any] | str, end: bytes = b"\n\n") -> bytes:
    parts = [b"data: " + (e if isinstance(e, str) else json.dumps(e)).encode() for e in events]
    return b"\n\n".join(parts) + end


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


def lenient() -> OpenAIChatDecoder:
    return provider().new_decoder(None)


def final_at_every_split(body: bytes) -> ChatResponse:
    results = [decode(lenient, pieces) for pieces in every_split(body)]
    first = results[0]
    for other in results[1:]:
        assert [c.delta for c in other] == [c.delta for c in first]
        assert other[-1].usage == first[-1].usage
        assert other[-1].finish_reason == first[-1].finish_reason
    return first[-1]


def test_no_usage_at_all_is_none() -> None:
    final = final_at_every_split(sse(chunk("Hi"), chunk(" there"), chunk(finish="stop"), "[DONE]"))
    assert final.text == "Hi there"
    assert final.usage is None
    assert final.finish_reason == "stop"


def test_cumulative_usage_on_every_chunk_takes_the_last() -> None:
    body = sse(
        chunk("a", usage=usage(5, 1)),
        chunk("b", usage=usage(5, 2)),
        chunk(finish="stop", usage=usage(5, 3)),
        "[DONE]",
    )
    assert final_at_every_split(body).usage == Usage(input_tokens=5, output_tokens=3)


def test_usage_on_the_last_content_chunk() -> None:
    body = sse(chunk("a"), chunk("b", finish="length", usage=usage(7, 2)), "[DONE]")
    final = final_at_every_split(body)
    assert final.text == "ab"
    assert final.usage == Usage(input_tokens=7, output_tokens=2, total_tokens=9)
    assert final.finish_reason == "length"


def test_no_done_after_a_finish_reason_is_complete() -> None:
    final = final_at_every_split(sse(chunk("Hello"), chunk(finish="stop", usage=usage(3, 1))))
    assert final.text == "Hello"
    assert final.finish_reason == "stop"
    assert final.usage == Usage(input_tokens=3, output_tokens=1)


def test_no_done_and_no_finish_reason_is_incomplete() -> None:
    for pieces in every_split(sse(chunk("Hel"), chunk("lo"))):
        with pytest.raises(IncompleteStreamError) as info:
            decode(lenient, pieces)
        assert info.value.partial is not None and info.value.partial.text == "Hello"


def test_done_without_a_blank_line_after_it() -> None:
    for end in (b"", b"\n", b"\r\n"):
        final = final_at_every_split(sse(chunk("ok"), chunk(finish="stop"), "[DONE]", end=end))
        assert final.text == "ok"


def test_llama_cpp_first_chunk_with_null_content_and_extra_fields() -> None:
    body = sse(
        chunk(None, role="assistant") | {"system_fingerprint": "b5966"},
        chunk("x", timings={"predicted_ms": 1.5}),
        {
            **chunk(finish="stop"),
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "stop_reason": None}],
        },
        "[DONE]",
    )
    final = final_at_every_split(body)
    assert final.text == "x"
    assert final.additional_kwargs["model"] == "served-model"


def test_empty_data_frames_are_skipped() -> None:
    body = b"data:\n\n" + sse(chunk("a"), chunk(finish="stop"), "[DONE]")
    assert final_at_every_split(body).text == "a"


@pytest.mark.parametrize(
    ("error", "cls", "code"),
    [
        (  # vLLM: integer code
            {
                "object": "error",
                "message": "max_tokens is too large",
                "type": "BadRequestError",
                "param": None,
                "code": 400,
            },
            BadRequestError,
            "400",
        ),
        ({"message": "model gone", "code": 404}, NotFoundError, "404"),
        ({"message": "busy", "type": "server_error", "code": 500}, ServerError, "500"),
        (
            {"message": "slow down", "code": "rate_limit_exceeded"},
            RateLimitError,
            "rate_limit_exceeded",
        ),
    ],
)
def test_error_object_followed_by_done(
    error: dict[str, Any], cls: type[APIError], code: str
) -> None:
    body = sse(chunk("par"), chunk("tial"), {"error": error}, "[DONE]")
    for pieces in every_split(body):
        with pytest.raises(cls) as info:
            decode(lenient, pieces)
        assert type(info.value) is cls
        assert info.value.code == code
        assert info.value.status == 200
        assert info.value.partial is not None and info.value.partial.text == "partial"
        assert error["message"] in str(info.value)


def test_vllm_bare_error_object() -> None:
    bare = {"object": "error", "message": "bad", "type": "BadRequestError", "code": 400}
    with pytest.raises(BadRequestError):
        decode(lenient, [sse(chunk("a"), bare)])


def test_old_llama_cpp_error_line_then_done() -> None:
    body = (
        sse(chunk("so far"))
        + b'error: {"code":400,"message":"the request exceeds the available context size",'
        + b'"type":"invalid_request_error"}\n\ndata: [DONE]\n\n'
    )
    for pieces in every_split(body):
        with pytest.raises(BadRequestError) as info:
            decode(lenient, pieces)
        assert "context size" in str(info.value)
        assert info.value.partial is not None and info.value.partial.text == "so far"


def test_a_plain_json_body_from_a_server_that_ignored_stream() -> None:
    body = json.dumps(
        {
            "id": "chatcmpl-x",
            "object": "chat.completion",
            "model": "served-model",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Whole answer."},
                    "finish_reason": "stop",
                }
            ],
            "usage": usage(4, 3),
        },
        indent=2,
    ).encode()
    final = final_at_every_split(body)
    assert final.text == "Whole answer."
    assert final.finish_reason == "stop"
    assert final.usage == Usage(input_tokens=4, output_tokens=3)


def test_a_plain_json_error_body_with_status_200() -> None:
    body = json.dumps({"error": {"message": "no such model", "code": 404}}).encode()
    with pytest.raises(NotFoundError):
        decode(lenient, [body])


def test_garbage_is_incomplete_or_a_protocol_error() -> None:
    with pytest.raises(IncompleteStreamError):
        decode(lenient, [b"<html>hello</html>"])
    with pytest.raises(ProviderProtocolError):
        decode(lenient, [b"data: {oops\n\n"])


# --- HTTP errors ---------------------------------------------------------------------------


def test_vllm_error_body_without_an_error_wrapper() -> None:
    body = json.dumps(
        {
            "object": "error",
            "message": "The model `x` does not exist.",
            "type": "NotFoundError",
            "param": None,
            "code": 404,
        }
    ).encode()
    error = provider().parse_error(404, {}, body)
    assert isinstance(error, NotFoundError)
    assert error.message == "The model `x` does not exist."
    assert error.code == "404"
    assert error.provider == "openai-compatible"
