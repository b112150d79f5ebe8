"""Ollama provider: request bodies and headers, NDJSON streams at every split point, errors.

Shapes follow https://github.com/ollama/ollama/blob/main/docs/api.md#generate-a-chat-completion
(streaming lines, the final ``done`` line with counts and timings, tool calls with
arguments as JSON objects, ``{"error": ...}`` lines).
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
    BadRequestError,
    IncompleteStreamError,
    InvalidImageError,
    MMStreamError,
    NotFoundError,
    OverloadedError,
    ProviderProtocolError,
    ServerError,
)
from mmstream.images import OLLAMA_POLICY
from mmstream.providers import from_string
from mmstream.providers.ollama import Ollama, OllamaDecoder
from mmstream.request import ChatRequest
from mmstream.responses import ChatResponse
from mmstream.transport import Transport
from tests.providers._wire import decode_at_every_split, errors_at_every_split, text


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), (10, 200, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _png()
B64 = base64.b64encode(PNG).decode("ascii")


def _provider(**fields: Any) -> Ollama:
    fields.setdefault("base_url", "http://localhost:11434")
    fields.setdefault("api_key", None)
    return Ollama(model="llama3.2-vision", **fields)


def _request(provider: Ollama, *messages: ChatMessage, **options: Any) -> ChatRequest:
    return ChatRequest(
        messages=messages, options=provider.options.merge(**options), provider=provider
    )


def _body(provider: Ollama, *messages: ChatMessage, **options: Any) -> dict[str, Any]:
    body = provider.build_request(_request(provider, *messages, **options)).json
    assert isinstance(body, dict)
    return body


# --- requests --------------------------------------------------------------------------


def test_text_request_url_headers_and_body() -> None:
    provider = _provider()
    http = provider.build_request(_request(provider, ChatMessage("user", "Why is the sky blue?")))
    assert http.method == "POST"
    assert http.url == "http://localhost:11434/api/chat"
    assert http.stream_format == "ndjson"
    assert dict(http.headers) == {"content-type": "application/json"}  # no key, no auth
    assert http.json == {
        "model": "llama3.2-vision",
        "messages": [{"role": "user", "content": "Why is the sky blue?"}],
        "stream": True,
    }


def test_image_request_base64_list_on_the_message() -> None:
    body = _body(
        _provider(),
        ChatMessage("user", blocks=[ImageBlock(image=PNG), TextBlock("what is in this image?")]),
    )
    assert body["messages"] == [
        {"role": "user", "content": "what is in this image?", "images": [B64]}
    ]


def test_url_images_are_refused_since_ollama_cannot_fetch() -> None:
    with pytest.raises(InvalidImageError, match="not inline") as info:
        _body(
            _provider(),
            ChatMessage("user", blocks=[ImageBlock(url="https://example.com/cat.png")]),
        )
    assert info.value.image_index == 0


def test_system_and_multi_turn_chat() -> None:
    body = _body(
        _provider(),
        ChatMessage("system", "You are terse."),
        ChatMessage("user", blocks=[ImageBlock(image=PNG), TextBlock("Colour?")]),
        ChatMessage("assistant", "Green."),
        ChatMessage("developer", "Answer in one word."),
        ChatMessage(
            "user", blocks=[ImageBlock(image=PNG), ImageBlock(image=PNG), TextBlock("Same?")]
        ),
    )
    assert body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Colour?", "images": [B64]},
        {"role": "assistant", "content": "Green."},
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "Same?", "images": [B64, B64]},
    ]


def test_tool_call_and_tool_result_turns() -> None:
    body = _body(
        _provider(),
        ChatMessage("user", "Weather in Paris?"),
        ChatMessage(
            "assistant",
            "",
            additional_kwargs={
                "tool_calls": [
                    {"id": "c1", "name": "get_weather", "arguments": '{"city": "Paris"}'}
                ]
            },
        ),
        ChatMessage("tool", "21 degrees", additional_kwargs={"name": "get_weather"}),
    )
    assert body["messages"][1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
    }
    assert body["messages"][2] == {
        "role": "tool",
        "content": "21 degrees",
        "tool_name": "get_weather",
    }


def test_options_keep_alive_and_extra_routing() -> None:
    provider = _provider(temperature=0.1, keep_alive="10m", num_ctx=8192, extra={"seed": 42})
    body = _body(
        provider,
        ChatMessage("user", "x"),
        max_tokens=128,
        top_p=0.8,
        stop=["</s>"],
        format="json",
        options={"top_k": 20},
        image_policy=OLLAMA_POLICY,
    )
    assert body["options"] == {
        "temperature": 0.1,
        "top_p": 0.8,
        "num_predict": 128,
        "stop": ["</s>"],
        "num_ctx": 8192,
        "seed": 42,
        "top_k": 20,
    }
    assert body["keep_alive"] == "10m"
    assert body["format"] == "json"
    assert "image_policy" not in body and "image_policy" not in body["options"]
    # keep_alive given for one call wins over the provider's.
    assert _body(provider, ChatMessage("user", "x"), keep_alive=0)["keep_alive"] == 0


def test_optional_bearer_key(monkeypatch: pytest.MonkeyPatch) -> None:
    provider = _provider(api_key="proxy-token")
    http = provider.build_request(_request(provider, ChatMessage("user", "x")))
    assert http.headers["authorization"] == "Bearer proxy-token"
    assert "proxy-token" not in repr(provider) and "proxy-token" not in repr(http)
    monkeypatch.setenv("OLLAMA_API_KEY", "cloud-key")
    provider = Ollama.from_env(model="gemma3")
    http = provider.build_request(_request(provider, ChatMessage("user", "x")))
    assert http.headers["authorization"] == "Bearer cloud-key"


@pytest.mark.parametrize(
    ("host", "base_url"),
    [
        ("", "http://localhost:11434"),
        ("gpu-box", "http://gpu-box:11434"),
        ("gpu-box:8080", "http://gpu-box:8080"),
        ("0.0.0.0", "http://localhost:11434"),
        ("0.0.0.0:11435", "http://localhost:11435"),
        ("https://ollama.example.com", "https://ollama.example.com"),
        ("http://10.0.0.5:11434/", "http://10.0.0.5:11434"),
        ("[::1]:9000", "http://[::1]:9000"),
        ("::1", "http://[::1]:11434"),
        ("http://proxy.local/ollama/", "http://proxy.local/ollama"),
    ],
)
def test_ollama_host_is_normalized(
    monkeypatch: pytest.MonkeyPatch, host: str, base_url: str
) -> None:
    monkeypatch.setenv("OLLAMA_HOST", host)
    provider = from_string("ollama:gemma3")
    assert isinstance(provider, Ollama)
    assert provider.base_url == base_url
    http = provider.build_request(_request(provider, ChatMessage("user", "x")))
    assert http.url == f"{base_url}/api/chat"


def test_metadata_reports_the_context_ollama_serves() -> None:
    assert _provider().metadata.context_window == 4096  # Ollama's default num_ctx
    assert _provider(num_ctx=32768).metadata.context_window == 32768
    assert _provider(extra={"num_ctx": 16384}).metadata.context_window == 16384
    assert Ollama(model="moondream", base_url="h").metadata.context_window == 2048
    assert Ollama(model="some-new-model:7b", base_url="h").metadata.context_window == 4096
    metadata = _provider(max_tokens=500).metadata
    assert metadata.num_output == 500
    assert metadata.model_name == "llama3.2-vision"
    assert metadata.is_chat_model


def test_image_policy_is_inline_only() -> None:
    policy = _provider().image_policy
    assert policy is OLLAMA_POLICY
    assert not policy.accepts_urls
    assert set(policy.accepted_types) == {"image/png", "image/jpeg"}


# --- streams ----------------------------------------------------------------------------


def _ndjson(*lines: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def _line(content: str, **more: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content, "images": None}
    message.update(more)
    return {
        "model": "llama3.2-vision",
        "created_at": "2023-08-04T08:52:19.385406455-07:00",
        "message": message,
        "done": False,
    }


DONE = {
    "model": "llama3.2-vision",
    "created_at": "2023-08-04T19:22:45.499127Z",
    "message": {"role": "assistant", "content": ""},
    "done": True,
    "done_reason": "stop",
    "total_duration": 4883583458,
    "load_duration": 1334875,
    "prompt_eval_count": 26,
    "prompt_eval_duration": 342546000,
    "eval_count": 282,
    "eval_duration": 4535599000,
}

BASIC = _ndjson(
    _line("The"), _line(" sky"), _line(""), _line(" is blue — "), _line("ünïcode."), DONE
)

TOOL_CALL = _ndjson(
    _line(
        "",
        tool_calls=[
            {
                "function": {
                    "name": "get_current_weather",
                    "arguments": {"format": "celsius", "location": "Paris, FR"},
                }
            }
        ],
    ),
    DONE,
)

THINKING = _ndjson(
    _line("", thinking="The user asks about colour. "),
    _line("", thinking="Green it is."),
    _line("Green"),
    DONE,
)


def _decode_at_every_split(wire: bytes) -> list[list[ChatResponse]]:
    return decode_at_every_split(lambda: OllamaDecoder("llama3.2-vision"), wire)


def _errors_at_every_split(
    wire: bytes, expected: type[MMStreamError]
) -> list[tuple[list[ChatResponse], MMStreamError]]:
    return errors_at_every_split(lambda: OllamaDecoder("llama3.2-vision"), wire, expected)


_text = text


def test_basic_stream_at_every_split() -> None:
    for chunks in _decode_at_every_split(BASIC):
        assert [c.delta for c in chunks[:-1]] == ["The", " sky", " is blue — ", "ünïcode."]
        final = chunks[-1]
        assert final.text == "The sky is blue — ünïcode."
        assert final.finish_reason == "stop"
        assert final.additional_kwargs["provider_finish_reason"] == "stop"
        assert final.usage is not None
        assert (final.usage.input_tokens, final.usage.output_tokens) == (26, 282)
        assert final.usage.total_tokens == 308
        # the timings stay available on the final chunk
        assert final.raw["eval_duration"] == 4535599000
        assert final.additional_kwargs["timings"] == {
            "total_duration": 4883583458,
            "load_duration": 1334875,
            "prompt_eval_duration": 342546000,
            "eval_duration": 4535599000,
        }


def test_tool_calls_arrive_whole() -> None:
    for chunks in _decode_at_every_split(TOOL_CALL):
        assert chunks[-1].additional_kwargs["tool_calls"] == [
            {
                "id": None,
                "name": "get_current_weather",
                "arguments": {"format": "celsius", "location": "Paris, FR"},
            }
        ]


def test_thinking_is_not_answer_text() -> None:
    for chunks in _decode_at_every_split(THINKING):
        assert chunks[-1].text == "Green"


def test_counts_not_reported_are_none() -> None:
    done = {k: v for k, v in DONE.items() if k != "prompt_eval_count"}
    done["done_reason"] = "length"
    chunks = _decode_at_every_split(_ndjson(_line("x"), done))[0]
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.input_tokens is None and usage.output_tokens == 282
    assert usage.total_tokens is None
    assert chunks[-1].finish_reason == "length"


def test_body_without_done_line_is_incomplete() -> None:
    wire = BASIC[: BASIC.rindex(b'{"model"')]
    for seen, error in _errors_at_every_split(wire, IncompleteStreamError):
        assert _text(seen) == "The sky is blue — ünïcode."
        assert error.partial is not None and error.partial.text == "The sky is blue — ünïcode."
        assert error.partial.usage is None  # the counts were on the missing line


def test_error_line_mid_stream_keeps_the_partial_text() -> None:
    wire = _ndjson(
        _line("The"),
        _line(" sky"),
        {"error": "an error was encountered while running the model: unexpected EOF"},
    )
    for seen, error in _errors_at_every_split(wire, ServerError):
        assert type(error) is ServerError
        assert error.partial is not None and error.partial.text == "The sky"
        assert _text(seen) in ("", "The", "The sky")
        assert error.status == 200
        assert "unexpected EOF" in error.message
    with pytest.raises(OverloadedError):
        OllamaDecoder().feed(
            _ndjson({"error": "server busy, please try again.  maximum pending requests exceeded"})
        )


def test_malformed_line_is_a_protocol_error() -> None:
    with pytest.raises(ProviderProtocolError):
        OllamaDecoder().feed(b'{"model": "x", "message": \n')
    with pytest.raises(ProviderProtocolError):
        OllamaDecoder().feed(b"[1]\n")


def test_lines_after_done_are_ignored() -> None:
    decoder = OllamaDecoder()
    chunks = decoder.feed(BASIC + _ndjson(_line("extra")))
    assert chunks[-1].text == "The sky is blue — ünïcode."
    assert decoder.flush() == []


# --- HTTP errors ------------------------------------------------------------------------


def test_model_not_found() -> None:
    error = _provider().parse_error(
        404, {}, b'{"error":"model \\"llava:13b\\" not found, try pulling it first"}'
    )
    assert type(error) is NotFoundError
    assert error.message == 'model "llava:13b" not found, try pulling it first'
    assert error.provider == "ollama"


def test_other_http_errors() -> None:
    busy = _provider().parse_error(503, {}, b'{"error":"server busy, please try again."}')
    assert type(busy) is OverloadedError and busy.retryable
    bad = _provider().parse_error(400, {}, b'{"error":"invalid options: num_gpu"}')
    assert type(bad) is BadRequestError and bad.message == "invalid options: num_gpu"
    crash = _provider().parse_error(500, {}, b'{"error":"llama runner process has terminated"}')
    assert type(crash) is ServerError


# --- through MultiModalLLM ----------------------------------------------------------------


async def test_through_multimodal_llm_with_an_injected_transport() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=BASIC, headers={"content-type": "application/x-ndjson"})

    transport = Transport(http_transport=httpx.MockTransport(handler))
    async with mm.MultiModalLLM(_provider(), transport=transport) as llm:
        response = await llm.acomplete("Colour?", [mm.ImageDocument.from_bytes(PNG)])
    assert response.text == "The sky is blue — ünïcode."
    assert response.usage is not None and response.usage.output_tokens == 282
    sent = json.loads(seen[0].content)
    assert sent["messages"] == [{"role": "user", "content": "Colour?", "images": [B64]}]
    assert str(seen[0].url) == "http://localhost:11434/api/chat"


def test_wrong_typed_fields_are_skipped() -> None:
    wire = _ndjson(
        {"model": 3, "message": {"content": 5, "tool_calls": 5}, "done": False},
        {"message": {"content": "ok", "tool_calls": [{"function": {"name": "f"}, "id": 9}]}},
        {"error": None, "done": True, "eval_count": "many", "done_reason": "stop"},
    )
    final = _decode_at_every_split(wire)[0][-1]
    assert final.text == "ok"
    assert final.additional_kwargs["tool_calls"] == [{"id": None, "name": "f", "arguments": {}}]
    assert final.usage is not None and final.usage.output_tokens is None


def test_tool_call_arguments_in_every_form() -> None:
    calls = [
        {"name": "a", "arguments": {"x": 1}},
        {"name": "b", "arguments": "not json"},
        {"name": "c", "arguments": None},
    ]
    body = _body(_provider(), ChatMessage("assistant", "", additional_kwargs={"tool_calls": calls}))
    arguments = [c["function"]["arguments"] for c in body["messages"][0]["tool_calls"]]
    assert arguments == [{"x": 1}, {"input": "not json"}, {}]
