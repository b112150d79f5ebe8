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
from mmstream.testing import Fault, Script, TestServer, ToolCall, answer_text, split_text

OPENAI_KEY = {"authorization": "Bearer sk-test"}
ANTHROPIC_KEY = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}
GEMINI_KEY = {"x-goog-api-key": "g-test"}


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def sse_events(body: bytes) -> list[tuple[str, str]]:
    decoder = SSEDecoder()
    events = decoder.feed(body) + decoder.flush()
    return [(e.event, e.data) for e in events]


def loopback(server: TestServer, **options: Any) -> httpx.AsyncClient:
    """An httpx client for the server: plain HTTP (no TLS context to build), no proxies."""
    options.setdefault("timeout", 10.0)
    return httpx.AsyncClient(base_url=server.base_url, verify=False, trust_env=False, **options)


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    async with TestServer() as running:
        yield running
    assert running.errors == []  # the server itself never failed


@pytest.fixture
async def client(server: TestServer) -> AsyncIterator[httpx.AsyncClient]:
    async with loopback(server) as http:
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
        async with loopback(server) as http:
            assert (await http.get("/health")).json() == {"status": "ok"}
    await server.wait_until(lambda s: s.connections_open == 0, timeout=5)
    assert server.connections_opened == 2
    assert [r.connection_id for r in server.requests] == [1, 2]


# ----------------------------------------------------------------------------- helpers for all APIs

APIS = ["openai", "azure", "anthropic", "gemini", "ollama"]


def call(api: str, text: str, *, stream: bool = True) -> tuple[str, dict[str, str], Any]:
    """(path, headers, JSON body) of a chat call in ``api``'s format."""
    if api == "openai":
        body = {"model": "gpt-4o-mini", "stream": stream, "messages": user(text)}
        return "/v1/chat/completions", OPENAI_KEY, body
    if api == "azure":
        body = {"stream": stream, "messages": user(text)}
        path = "/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21"
        return path, {"api-key": "az-test"}, body
    if api == "anthropic":
        body = {"model": "claude-x", "max_tokens": 50, "stream": stream, "messages": user(text)}
        return "/v1/messages", ANTHROPIC_KEY, body
    if api == "gemini":
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        body = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
        return f"/v1beta/models/gemini-2.0-flash:{method}", GEMINI_KEY, body
    body = {"model": "llava", "stream": stream, "messages": user(text)}
    return "/api/chat", {}, body


def decode(api: str, body: bytes) -> tuple[list[str], bool, list[Any]]:
    """(text pieces, completion signal seen, error events) of a streamed body."""
    pieces: list[str] = []
    errors: list[Any] = []
    done = False
    if api == "ollama":
        for line in body.splitlines():
            item = json.loads(line)
            if "error" in item:
                errors.append(item["error"])
            elif item["done"]:
                done = True
            else:
                pieces.append(item["message"]["content"])
        return pieces, done, errors
    for event, data in sse_events(body):
        if api in ("openai", "azure"):
            if data == "[DONE]":
                done = True
                continue
            item = json.loads(data)
            if "error" in item:
                errors.append(item["error"])
            for choice in item.get("choices", []):
                if choice["delta"].get("content"):
                    pieces.append(choice["delta"]["content"])
        elif api == "anthropic":
            item = json.loads(data)
            assert item["type"] == event
            if event == "error":
                errors.append(item["error"])
            elif event == "content_block_delta":
                pieces.append(item["delta"]["text"])
            elif event == "message_stop":
                done = True
        else:
            item = json.loads(data)
            if "error" in item:
                errors.append(item["error"])
                continue
            candidate = item["candidates"][0]
            pieces.extend(p["text"] for p in candidate["content"]["parts"] if p.get("text"))
            done = done or "finishReason" in candidate
    return pieces, done, errors


async def post(
    client: httpx.AsyncClient, api: str, text: str = "hi", *, stream: bool = True
) -> httpx.Response:
    path, headers, body = call(api, text, stream=stream)
    return await client.post(path, headers=headers, json=body)


# ----------------------------------------------------------------------------- every format


@pytest.mark.parametrize("api", APIS)
async def test_every_format_streams_the_same_text(
    api: str, server: TestServer, client: httpx.AsyncClient
) -> None:
    response = await post(client, api, "describe the cat")
    assert response.status_code == 200
    pieces, done, errors = decode(api, response.content)
    assert "".join(pieces) == answer_text("describe the cat")
    assert len(pieces) == len(split_text(answer_text("describe the cat")))
    assert done
    assert errors == []
    assert server.requests[-1].api == api
    assert server.requests[-1].stream is True


@pytest.mark.parametrize("api", APIS)
async def test_every_format_scripted_chunks_and_text(
    api: str, server: TestServer, client: httpx.AsyncClient
) -> None:
    server.enqueue(Script(text="abcdefghij", chunk_size=3))
    pieces, done, _ = decode(api, (await post(client, api)).content)
    assert pieces == ["abc", "def", "ghi", "j"]
    assert done
    server.enqueue(Script(chunks=7))
    pieces, _, _ = decode(api, (await post(client, api, "x y")).content)
    assert len(pieces) == 7
    assert server.requests[-1].answer == "".join(pieces)


async def test_anthropic_event_sequence_and_usage(client: httpx.AsyncClient) -> None:
    response = await post(client, "anthropic", "a b c")
    assert response.headers["request-id"].startswith("req_")
    events = sse_events(response.content)
    names = [name for name, _ in events]
    pieces = len(split_text(answer_text("a b c")))
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * pieces,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = json.loads(events[0][1])["message"]
    assert start["usage"]["input_tokens"] == 3
    assert start["usage"]["output_tokens"] == 1
    delta = json.loads(events[-2][1])
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"]["output_tokens"] == pieces


async def test_anthropic_requires_key_and_version(client: httpx.AsyncClient) -> None:
    body = {"model": "c", "max_tokens": 5, "messages": user("hi")}
    response = await client.post("/v1/messages", json=body)
    assert response.status_code == 401
    assert response.json() == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "x-api-key header is required"},
    }
    response = await client.post("/v1/messages", json=body, headers={"x-api-key": "k"})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_anthropic_non_streaming_and_tool_use(
    server: TestServer, client: httpx.AsyncClient
) -> None:
    body = (await post(client, "anthropic", "yo", stream=False)).json()
    assert body["content"] == [{"type": "text", "text": answer_text("yo")}]
    assert body["stop_reason"] == "end_turn"
    server.enqueue(Script(tool_calls=[ToolCall(name="f", arguments={"a": [1, 2]})]))
    events = sse_events((await post(client, "anthropic")).content)
    starts = [json.loads(d) for n, d in events if n == "content_block_start"]
    assert starts[0]["content_block"]["type"] == "tool_use"
    fragments = [
        json.loads(d)["delta"]["partial_json"] for n, d in events if n == "content_block_delta"
    ]
    assert json.loads("".join(fragments)) == {"a": [1, 2]}
    assert json.loads(events[-2][1])["delta"]["stop_reason"] == "tool_use"


async def test_gemini_sse_uses_crlf_and_usage_snapshots(client: httpx.AsyncClient) -> None:
    response = await post(client, "gemini", "one two three")
    assert response.headers["content-type"] == "text/event-stream"
    assert response.content.endswith(b"}\r\n\r\n")
    assert b"\n\n" not in response.content.replace(b"\r\n", b"")
    events = [json.loads(d) for _, d in sse_events(response.content)]
    counts = [e["usageMetadata"]["candidatesTokenCount"] for e in events]
    assert counts == sorted(counts)
    assert all(e["usageMetadata"]["promptTokenCount"] == 3 for e in events)
    assert events[-1]["candidates"][0]["finishReason"] == "STOP"
    assert all("finishReason" not in e["candidates"][0] for e in events[:-1])


async def test_gemini_key_in_query_json_array_and_generate_content(
    client: httpx.AsyncClient,
) -> None:
    body = {"contents": [{"parts": [{"text": "hey"}]}]}
    path = "/v1beta/models/gemini-2.0-flash:streamGenerateContent?key=g-test"
    response = await client.post(path, json=body)
    assert response.status_code == 200
    array = response.json()
    assert isinstance(array, list)
    text = "".join(p.get("text", "") for e in array for p in e["candidates"][0]["content"]["parts"])
    assert text == answer_text("hey")
    one = (await post(client, "gemini", "hey", stream=False)).json()
    assert one["candidates"][0]["content"]["parts"] == [{"text": answer_text("hey")}]
    assert (
        one["usageMetadata"]["totalTokenCount"] == 1 + one["usageMetadata"]["candidatesTokenCount"]
    )
    missing = await client.post(path.split("?")[0], json=body)
    assert missing.status_code == 403
    [error] = missing.json()  # the JSON-array stream wraps its error in the array too
    assert error["error"]["status"] == "PERMISSION_DENIED"


async def test_gemini_counts_inline_images(client: httpx.AsyncClient) -> None:
    parts = [
        {"text": "what"},
        {"inline_data": {"mime_type": "image/png", "data": "AAAA"}},
        {"inlineData": {"mimeType": "image/jpeg", "data": "AAAA"}},
    ]
    response = await client.post(
        "/v1beta/models/g:generateContent",
        headers=GEMINI_KEY,
        json={"contents": [{"role": "user", "parts": parts}]},
    )
    assert response.json()["candidates"][0]["content"]["parts"][0]["text"] == answer_text("what", 2)


async def test_ollama_ndjson_final_line_and_non_streaming(client: httpx.AsyncClient) -> None:
    response = await post(client, "ollama", "hello")
    assert response.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in response.content.splitlines()]
    assert all(line["done"] is False for line in lines[:-1])
    final = lines[-1]
    assert final["done"] is True
    assert final["done_reason"] == "stop"
    assert final["prompt_eval_count"] == 1
    assert final["eval_count"] == len(lines) - 1
    assert {"total_duration", "load_duration", "eval_duration"} <= set(final)
    one = (await post(client, "ollama", "hello", stream=False)).json()
    assert one["message"]["content"] == answer_text("hello")
    assert one["done"] is True


async def test_ollama_counts_images(client: httpx.AsyncClient) -> None:
    message = {"role": "user", "content": "see", "images": ["AAAA", "BBBB"]}
    response = await client.post(
        "/api/chat", json={"model": "llava", "stream": False, "messages": [message]}
    )
    assert response.json()["message"]["content"] == answer_text("see", 2)


async def test_azure_paths_headers_and_prompt_filter_chunk(client: httpx.AsyncClient) -> None:
    response = await post(client, "azure", "hi")
    assert response.headers["apim-request-id"]
    first = json.loads(sse_events(response.content)[0][1])
    assert first["choices"] == []
    assert first["prompt_filter_results"][0]["prompt_index"] == 0
    v1 = await client.post(
        "/openai/v1/chat/completions",
        headers={"authorization": "Bearer az"},
        json={"model": "gpt-4o", "messages": user("hi")},
    )
    assert v1.json()["choices"][0]["message"]["content"] == answer_text("hi")
    no_version = await client.post(
        "/openai/deployments/d/chat/completions", headers={"api-key": "k"}, json={}
    )
    assert no_version.status_code == 404
    no_key = await client.post(
        "/openai/deployments/d/chat/completions?api-version=2024-10-21", json={}
    )
    assert no_key.status_code == 401
    assert no_key.json()["error"]["code"] == "401"


async def test_api_key_is_checked_when_given() -> None:
    async with TestServer(api_key="right") as server, loopback(server) as http:
        url = "/v1/chat/completions"
        body = {"model": "m", "messages": user("hi")}
        wrong = await http.post(url, json=body, headers={"authorization": "Bearer wrong"})
        right = await http.post(url, json=body, headers={"authorization": "Bearer right"})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "invalid_api_key"
    assert right.status_code == 200


async def test_unknown_path_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/nope", json={})
    assert response.status_code == 404


# ----------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("api", "check"),
    [
        ("openai", lambda b: b["error"]["type"] == "requests"),
        ("azure", lambda b: b["error"]["code"] == "429"),
        (
            "anthropic",
            lambda b: (
                b == {"type": "error", "error": b["error"]}
                and b["error"]["type"] == "rate_limit_error"
            ),
        ),
        (
            "gemini",
            lambda b: (
                b["error"]["status"] == "RESOURCE_EXHAUSTED"
                and b["error"]["details"][-1]["retryDelay"] == "2s"
            ),
        ),
        ("ollama", lambda b: isinstance(b["error"], str)),
    ],
)
async def test_status_fault_sends_provider_error_body_and_retry_headers(
    api: str, check: Any, server: TestServer, client: httpx.AsyncClient
) -> None:
    server.inject(Fault.http_status(429, retry_after=2, retry_after_ms=2000))
    response = await post(client, api)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"
    assert response.headers["retry-after-ms"] == "2000"
    assert check(response.json())
    assert server.requests[-1].fault == Fault.http_status(429, retry_after=2, retry_after_ms=2000)
    assert (await post(client, api)).status_code == 200  # the fault was used up


async def test_status_fault_overloaded_and_html_proxy_page(
    server: TestServer, client: httpx.AsyncClient
) -> None:
    server.inject(Fault.http_status(529))
    response = await post(client, "anthropic")
    assert response.status_code == 529
    assert response.json()["error"] == {"type": "overloaded_error", "message": "Overloaded"}
    server.inject(Fault.http_status(502, html=True))
    response = await post(client, "openai")
    assert response.status_code == 502
    assert response.headers["content-type"].startswith("text/html")
    assert b"<title>502 Bad Gateway</title>" in response.content


async def test_status_fault_with_the_providers_error_type(
    server: TestServer, client: httpx.AsyncClient
) -> None:
    server.inject(Fault.http_status(429, error_type="insufficient_quota"))
    error = (await post(client, "openai")).json()["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")
    server.inject(Fault.http_status(400, error_type="content_filter"))
    error = (await post(client, "azure")).json()["error"]
    assert error["code"] == "content_filter"
    assert error["innererror"]["code"] == "ResponsibleAIPolicyViolation"


async def test_faults_match_by_api_and_path_and_repeat(
    server: TestServer, client: httpx.AsyncClient
) -> None:
    server.inject(Fault.http_status(500), api="gemini", times=2)
    server.inject(Fault.http_status(503), path="/api/chat")
    assert (await post(client, "openai")).status_code == 200
    assert (await post(client, "ollama")).status_code == 503
    assert (await post(client, "gemini")).status_code == 500
    assert (await post(client, "gemini")).status_code == 500
    assert (await post(client, "gemini")).status_code == 200
    assert server.pending == 0


async def test_fault_and_script_from_request_headers(client: httpx.AsyncClient) -> None:
    path, headers, body = call("openai", "hi")
    script = {"x-mmstream-script": json.dumps({"text": "scripted", "finish_reason": "length"})}
    response = await client.post(path, headers={**headers, **script}, json=body)
    chunks = [json.loads(d) for _, d in sse_events(response.content)[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "scripted"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    fault = {"x-mmstream-fault": json.dumps({"kind": "status", "status": 503})}
    response = await client.post(path, headers={**headers, **fault}, json=body)
    assert response.status_code == 503


@pytest.mark.parametrize("api", APIS)
async def test_drop_fault_cuts_the_body_after_k_events(
    api: str, server: TestServer, client: httpx.AsyncClient
) -> None:
    server.inject(Fault.drop(after_chunks=2))
    path, headers, body = call(api, "one two three four five")
    received = b""
    with pytest.raises(httpx.RemoteProtocolError):
        async with client.stream("POST", path, headers=headers, json=body) as response:
            async for data in response.aiter_bytes():
                received += data
    pieces, done, _ = decode(api, received)
    assert pieces == split_text(answer_text("one two three four five"))[:2]
    assert not done
    assert server.requests[-1].answer == "".join(pieces)


async def test_reset_fault_resets_before_the_response(
    server: TestServer, client: httpx.AsyncClient
) -> None:
    server.inject(Fault.reset())
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        await post(client, "openai")
    assert server.requests[-1].status is None
    assert (await post(client, "openai")).status_code == 200
    assert server.connections_opened == 2


async def test_stall_before_first_byte_then_client_timeout_is_a_disconnect(
    server: TestServer,
) -> None:
    server.inject(Fault.stall(30.0))
    path, headers, body = call("openai", "hi")
    async with loopback(server, timeout=0.2) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post(path, headers=headers, json=body)
    gone = await server.wait_disconnect(timeout=5)
    assert gone.chunks_sent == 0
    assert gone.request.path == "/v1/chat/completions"


async def test_stall_after_k_events(server: TestServer) -> None:
    server.inject(Fault.stall(30.0, after_chunks=2))
    path, headers, body = call("ollama", "a b c d")
    received = b""
    async with loopback(server, timeout=0.3) as http:
        with pytest.raises(httpx.ReadTimeout):
            async with http.stream("POST", path, headers=headers, json=body) as response:
                async for data in response.aiter_bytes():
                    received += data
    assert decode("ollama", received)[0] == split_text(answer_text("a b c d"))[:2]
    assert (await server.wait_disconnect(timeout=5)).chunks_sent == 2


@pytest.mark.parametrize("api", APIS)
async def test_malformed_event(api: str, server: TestServer, client: httpx.AsyncClient) -> None:
    server.inject(Fault.malformed(after_chunks=1))
    response = await post(client, api)
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        decode(api, response.content)


async def test_wrong_content_type(server: TestServer, client: httpx.AsyncClient) -> None:
    server.inject(Fault.wrong_content_type())
    response = await post(client, "openai")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert b"<html>" in response.content


@pytest.mark.parametrize("api", APIS)
async def test_huge_event(api: str, server: TestServer, client: httpx.AsyncClient) -> None:
    server.inject(Fault.huge_event(size=300_000, after_chunks=1))
    pieces, done, _ = decode(api, (await post(client, api, "hi")).content)
    assert pieces[1] == "x" * 300_000
    assert done
    assert server.requests[-1].answer == "".join(pieces)


@pytest.mark.parametrize("api", APIS)
async def test_error_event_inside_a_200_stream(
    api: str, server: TestServer, client: httpx.AsyncClient
) -> None:
    server.inject(Fault.error_event(after_chunks=2))
    response = await post(client, api, "one two three four")
    assert response.status_code == 200
    pieces, done, errors = decode(api, response.content)
    assert len(pieces) == 2
    assert server.requests[-1].answer == "".join(pieces)
    assert not done
    assert len(errors) == 1
    if api == "anthropic":
        assert errors[0] == {"type": "overloaded_error", "message": "Overloaded"}
    if api == "openai":
        assert errors[0]["type"] == "server_error"


@pytest.mark.parametrize("api", APIS)
async def test_missing_end(api: str, server: TestServer, client: httpx.AsyncClient) -> None:
    server.inject(Fault.missing_end())
    response = await post(client, api, "a b")
    pieces, done, errors = decode(api, response.content)
    assert "".join(pieces) == answer_text("a b")
    assert not done
    assert errors == []
    if api == "openai":
        assert b"[DONE]" not in response.content


# ----------------------------------------------------------------------------- disconnects


@pytest.mark.parametrize("api", APIS)
async def test_leaving_a_stream_early_is_noticed(
    api: str, server: TestServer, client: httpx.AsyncClient
) -> None:
    server.enqueue(Script(chunks=200, pause=0.02))
    path, headers, body = call(api, "hi")
    # Leave right after the headers (iterating httpx's nested async generators
    # part-way leaves them to the garbage collector on trio).
    async with client.stream("POST", path, headers=headers, json=body) as response:
        assert response.status_code == 200
    gone = await server.wait_disconnect(timeout=1.0)
    assert gone.request is server.requests[-1]
    assert 1 <= gone.chunks_sent < 200
    await server.wait_until(lambda s: s.connections_open == 0, timeout=1.0)


async def test_wait_disconnect_times_out_without_one(server: TestServer) -> None:
    with pytest.raises(TimeoutError):
        await server.wait_disconnect(timeout=0.05)


async def test_pause_paces_events(server: TestServer, client: httpx.AsyncClient) -> None:
    server.enqueue(Script(chunks=3, pause=0.01))
    path, headers, body = call("ollama", "hi")
    reads = 0
    async with client.stream("POST", path, headers=headers, json=body) as response:
        async for _ in response.aiter_raw():
            reads += 1
    assert reads >= 3  # each paced event is its own write
    assert server.disconnects == []


# ----------------------------------------------------------------------------- ways to run


async def test_pytest_fixture(mmstream_server: TestServer) -> None:
    async with loopback(mmstream_server) as http:
        response = await post(http, "ollama", "fixture")
    assert decode("ollama", response.content)[0] == split_text(answer_text("fixture"))


def test_server_in_a_thread_for_sync_code(mmstream_thread_server: TestServer) -> None:
    server = mmstream_thread_server
    path, headers, body = call("anthropic", "sync")
    with httpx.Client(base_url=server.base_url, verify=False, trust_env=False) as http:
        response = http.post(path, headers=headers, json=body)
        assert "".join(decode("anthropic", response.content)[0]) == answer_text("sync")
        server.enqueue(Script(chunks=100, pause=0.02))
        with http.stream("POST", path, headers=headers, json=body) as streamed:
            for _ in streamed.iter_bytes():
                break
    assert server.wait_disconnect_blocking(timeout=1.0).chunks_sent < 100


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_start_in_thread_on_each_backend(backend: str) -> None:
    with TestServer.start_in_thread(backend=backend, script=Script(text="fixed")) as server:
        body = call("ollama", "x", stream=False)[2]
        response = httpx.post(server.url("/api/chat"), json=body, verify=False, trust_env=False)
    assert response.json()["message"]["content"] == "fixed"


def test_command_line_serves_until_interrupted() -> None:
    import signal
    import subprocess
    import sys

    process = subprocess.Popen(
        [sys.executable, "-m", "mmstream.testing", "--text", "from the shell"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        url = first.rsplit(" ", 1)[-1].strip()
        assert url.startswith("http://127.0.0.1:")
        body = call("ollama", "x", stream=False)[2]
        response = httpx.post(url + "/api/chat", json=body, verify=False, trust_env=False)
        assert response.json()["message"]["content"] == "from the shell"
    finally:
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=10)
    assert process.returncode == 0
    assert "stopped" in out


# ----------------------------------------------------------------------------- scripting per API


def usage_and_finish(api: str, body: bytes) -> tuple[int, int, str]:
    """(input tokens, output tokens, raw finish reason) reported by a streamed body."""
    if api == "ollama":
        final = json.loads(body.splitlines()[-1])
        return final["prompt_eval_count"], final["eval_count"], final["done_reason"]
    items = [(e, json.loads(d)) for e, d in sse_events(body) if d != "[DONE]"]
    if api in ("openai", "azure"):
        usage = items[-1][1]["usage"]
        finish = next(
            c["finish_reason"] for _, i in items for c in i["choices"] if c["finish_reason"]
        )
        return usage["prompt_tokens"], usage["completion_tokens"], finish
    if api == "anthropic":
        start = next(i for e, i in items if e == "message_start")
        delta = next(i for e, i in items if e == "message_delta")
        return (
            start["message"]["usage"]["input_tokens"],
            delta["usage"]["output_tokens"],
            delta["delta"]["stop_reason"],
        )
    last = items[-1][1]
    meta = last["usageMetadata"]
    assert meta["totalTokenCount"] == meta["promptTokenCount"] + meta["candidatesTokenCount"]
    return (
        meta["promptTokenCount"],
        meta["candidatesTokenCount"],
        last["candidates"][0]["finishReason"],
    )


@pytest.mark.parametrize(
    ("api", "length"),
    [
        ("openai", "length"),
        ("azure", "length"),
        ("anthropic", "max_tokens"),
        ("gemini", "MAX_TOKENS"),
        ("ollama", "length"),
    ],
)
async def test_scripted_usage_and_finish_reason_in_each_format(
    api: str, length: str, server: TestServer, client: httpx.AsyncClient
) -> None:
    server.script = Script(input_tokens=11, output_tokens=22, finish_reason="length")
    path, headers, body = call(api, "hi")
    if api in ("openai", "azure"):
        body["stream_options"] = {"include_usage": True}
    response = await client.post(path, headers=headers, json=body)
    assert usage_and_finish(api, response.content) == (11, 22, length)


@pytest.mark.parametrize("api", ["gemini", "ollama"])
async def test_tool_calls_in_gemini_and_ollama_streams(
    api: str, server: TestServer, client: httpx.AsyncClient
) -> None:
    server.enqueue(Script(tool_calls=[ToolCall(name="lookup", arguments={"q": "cats"})]))
    response = await post(client, api)
    if api == "gemini":
        events = [json.loads(d) for _, d in sse_events(response.content)]
        parts = events[-1]["candidates"][0]["content"]["parts"]
        assert parts == [{"functionCall": {"name": "lookup", "args": {"q": "cats"}}}]
    else:
        lines = [json.loads(line) for line in response.content.splitlines()]
        assert lines[-2]["message"]["tool_calls"] == [
            {"function": {"name": "lookup", "arguments": {"q": "cats"}}}
        ]
        assert lines[-1]["done"] is True
    assert server.requests[-1].answer == ""


async def test_large_identical_answers_are_rendered_once_and_reused(
    server: TestServer, client: httpx.AsyncClient
) -> None:
    server.script = Script(chunks=300)
    first = await post(client, "openai", "same")
    second = await post(client, "openai", "same")
    other = await post(client, "openai", "different")
    assert first.content == second.content
    assert first.headers["x-request-id"] != second.headers["x-request-id"]
    assert other.content != first.content
    assert len(decode("openai", first.content)[0]) == 300
    assert server.requests[0].answer == server.requests[1].answer


async def test_bad_control_headers_are_400(client: httpx.AsyncClient) -> None:
    path, headers, body = call("anthropic", "hi")
    bad_fault = {"x-mmstream-fault": json.dumps({"kind": "explode"})}
    response = await client.post(path, headers={**headers, **bad_fault}, json=body)
    assert response.status_code == 400
    assert "explode" in response.json()["error"]["message"]
    bad_script = {"x-mmstream-script": "{not json"}
    response = await client.post(path, headers={**headers, **bad_script}, json=body)
    assert response.status_code == 400


async def test_invalid_json_body_is_a_provider_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/chat/completions",
        headers={**OPENAI_KEY, "content-type": "application/json"},
        content=b"{oops",
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"NONSENSE\r\n\r\n",
        b"POST /api/chat HTTP/1.1\r\nno-colon-here\r\n\r\n",
        b"POST /api/chat HTTP/1.1\r\ncontent-length: many\r\n\r\n",
    ],
)
async def test_malformed_http_request_gets_400_and_close(
    server: TestServer, request_bytes: bytes
) -> None:
    import anyio

    async with await anyio.connect_tcp("127.0.0.1", server.port) as stream:
        await stream.send(request_bytes)
        data = b""
        with pytest.raises(anyio.EndOfStream):
            while True:
                data += await stream.receive()
    assert data.startswith(b"HTTP/1.1 400 ")
    assert b"connection: close" in data


async def test_chunked_request_body_is_read(server: TestServer, client: httpx.AsyncClient) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b'{"model": "m", "stream": false, '
        yield b'"messages": [{"role": "user", "content": "chunked"}]}'

    response = await client.post("/api/chat", content=body())
    assert response.json()["message"]["content"] == answer_text("chunked")
    assert server.requests[-1].headers["transfer-encoding"] == "chunked"


async def test_clear_forgets_records_and_queued_items(
    server: TestServer, client: httpx.AsyncClient
) -> None:
    await post(client, "ollama")
    server.inject(Fault.reset())
    server.enqueue(Script(text="never"))
    assert server.pending == 2
    server.clear()
    assert server.pending == 0
    assert server.requests == []
    assert decode("ollama", (await post(client, "ollama", "ok")).content)[0] == split_text(
        answer_text("ok")
    )


def test_fault_from_dict_round_trip_and_validation() -> None:
    assert Fault.from_dict({"kind": "drop", "after_chunks": 3}) == Fault.drop(after_chunks=3)
    assert Fault.from_dict({"kind": "status", "status": 429, "retry_after": 1.5}) == (
        Fault.http_status(429, retry_after=1.5)
    )
    with pytest.raises(ValueError, match="unknown fault kind"):
        Fault.from_dict({"kind": "nope"})
