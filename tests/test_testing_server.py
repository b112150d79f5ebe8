"""The loopback test server: each wire format's framing, recording, connections, faults.

Every test talks to the server with raw httpx, on asyncio and on trio.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from mmstream.sse import SSEDecoder
from mmstream.testing import Script, TestServer, ToolCall, answer_text, split_text

OPENAI_KEY = {"authorization": "Bearer sk-test"}
ANTHROPIC_KEY = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}
GEMINI_KEY = {"x-goog-api-key": "g-test"}


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def sse_events(body: bytes) -> list[tuple[str, str]]:
    decoder = SSEDecoder()
    events = decoder.feed(body) + decoder.flush()
    return [(e.event, e.data) for e in events]


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    async with TestServer() as running:
        yield running


@pytest.fixture
async def client(server: TestServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10.0) as http:
        yield http


# ----------------------------------------------------------------------------- texts


def test_answer_text_echoes_prompt_and_counts_images() -> None:
    assert answer_text("  hello   world ") == "You said: hello world."
    assert answer_text("look", 1) == "You said: look. I see 1 image."
    assert answer_text("look", 3) == "You said: look. I see 3 images."
    assert answer_text("") == "Hello from the mmstream test server."


@pytest.mark.parametrize(
    ("chunks", "chunk_size", "expected"),
    [
        (None, None, ["a ", "b ", "c"]),
        (2, None, ["a b ", "c"]),
        (5, None, ["a ", "b ", "c ", "a ", "b"]),
        (None, 2, ["a ", "b ", "c"]),
        (3, 4, ["a b ", "ca b", " ca "]),
        (0, None, []),
    ],
)
def test_split_text(chunks: int | None, chunk_size: int | None, expected: list[str]) -> None:
    assert split_text("a b c", chunks, chunk_size) == expected


# ----------------------------------------------------------------------------- OpenAI


async def test_openai_stream_framing_and_usage_chunk(
    server: TestServer, client: httpx.AsyncClient
) -> None:
    response = await client.post(
        "/v1/chat/completions",
        headers=OPENAI_KEY,
        json={
            "model": "gpt-4o-mini",
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": user("hello there world"),
        },
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-request-id"].startswith("req_")
    assert response.text.endswith("data: [DONE]\n\n")
    events = sse_events(response.content)
    assert events[-1] == ("message", "[DONE]")
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == answer_text("hello there world")
    finish = chunks[-2]
    assert finish["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    usage = chunks[-1]
    assert usage["choices"] == []
    assert usage["usage"]["prompt_tokens"] == 3
    assert usage["usage"]["completion_tokens"] == len(split_text(text))
    assert all(c["usage"] is None for c in chunks[:-1])
    assert server.requests[-1].answer == text


async def test_openai_stream_without_include_usage_has_no_usage(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/v1/chat/completions",
        headers=OPENAI_KEY,
        json={"model": "m", "stream": True, "messages": user("hi")},
    )
    chunks = [json.loads(d) for _, d in sse_events(response.content)[:-1]]
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_openai_non_streaming(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/chat/completions",
        headers=OPENAI_KEY,
        json={"model": "gpt-4o", "messages": user("one two")},
    )
    body = response.json()
    assert response.headers["content-type"] == "application/json"
    assert body["object"] == "chat.completion"
    assert body["model"] == "gpt-4o"
    assert body["choices"][0]["message"]["content"] == answer_text("one two")
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["prompt_tokens"] == 2


async def test_openai_counts_images_in_the_answer(client: httpx.AsyncClient) -> None:
    content = [
        {"type": "text", "text": "compare"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/b.png"}},
    ]
    response = await client.post(
        "/v1/chat/completions",
        headers=OPENAI_KEY,
        json={"model": "m", "messages": [{"role": "user", "content": content}]},
    )
    assert response.json()["choices"][0]["message"]["content"] == answer_text("compare", 2)


async def test_openai_missing_key_is_401_with_openai_error_body(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/v1/chat/completions", json={"model": "m", "messages": user("hi")}
    )
    assert response.status_code == 401
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "API key" in error["message"]


async def test_openai_scripted_tool_calls_stream(
    server: TestServer, client: httpx.AsyncClient
) -> None:
    server.enqueue(
        Script(tool_calls=[ToolCall(name="get_weather", arguments={"city": "Paris"}, id="c1")])
    )
    response = await client.post(
        "/v1/chat/completions",
        headers=OPENAI_KEY,
        json={"model": "m", "stream": True, "messages": user("weather?")},
    )
    chunks = [json.loads(d) for _, d in sse_events(response.content)[:-1]]
    calls = [call for c in chunks for call in c["choices"][0]["delta"].get("tool_calls") or []]
    assert calls[0]["id"] == "c1"
    assert calls[0]["function"]["name"] == "get_weather"
    arguments = "".join(c["function"]["arguments"] for c in calls)
    assert json.loads(arguments) == {"city": "Paris"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[0]["choices"][0]["delta"]["content"] is None


# ----------------------------------------------------------------------------- recording


async def test_records_every_request(server: TestServer, client: httpx.AsyncClient) -> None:
    await client.post(
        "/v1/chat/completions?x=1",
        headers={**OPENAI_KEY, "x-custom": "yes"},
        json={"model": "m", "messages": user("first")},
    )
    await client.get("/health")
    first, second = server.requests
    assert first.method == "POST"
    assert first.path == "/v1/chat/completions"
    assert first.query == {"x": "1"}
    assert first.headers["x-custom"] == "yes"
    assert first.headers["authorization"] == "Bearer sk-test"
    assert first.json == {"model": "m", "messages": user("first")}
    assert first.api == "openai"
    assert first.status == 200
    assert first.stream is False
    assert first.answer == answer_text("first")
    assert second.path == "/health"
    assert second.api is None
    assert second.connection_id == first.connection_id  # keep-alive: one connection
    assert second.monotonic >= first.monotonic


async def test_keep_alive_reuses_one_connection(
    server: TestServer, client: httpx.AsyncClient
) -> None:
    for word in ("a", "b", "c"):
        response = await client.post(
            "/v1/chat/completions",
            headers=OPENAI_KEY,
            json={"model": "m", "stream": True, "messages": user(word)},
        )
        assert response.text.endswith("data: [DONE]\n\n")
    assert server.connections_opened == 1
    assert server.connections_open == 1
    assert {r.connection_id for r in server.requests} == {1}


async def test_counts_connections_and_their_closing(server: TestServer) -> None:
    for _ in range(2):
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            assert (await http.get("/health")).json() == {"status": "ok"}
    await server.wait_until(lambda s: s.connections_open == 0, timeout=5)
    assert server.connections_opened == 2
    assert [r.connection_id for r in server.requests] == [1, 2]
