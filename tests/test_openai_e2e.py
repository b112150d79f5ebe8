"""The OpenAI family end to end: real HTTP to the loopback test server, asyncio, trio and sync.

Every public method (``acomplete``, ``astream_complete``, ``achat``,
``astream_chat`` and their blocking twins) runs against
:class:`mmstream.testing.TestServer` speaking OpenAI's format; leaving a
stream early closes the server-side connection within a second and leaves no
connection checked out of the pool (a pool of one connection serves the next
call). Azure OpenAI and OpenAI-compatible servers get the same checks, briefly.
"""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from typing import Any, Literal

import anyio
import httpx
import pytest
from PIL import Image

import mmstream as mm
from mmstream.errors import (
    IncompleteStreamError,
    OverloadedError,
    ProviderProtocolError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
)
from mmstream.providers.azure import AzureOpenAI
from mmstream.providers.openai import OpenAI, OpenAICompatible
from mmstream.testing import IMAGE_TOKENS, Fault, Script, TestServer, ToolCall, answer_text
from mmstream.transport import Timeouts, Transport

PROMPT = "What is in this picture"
KEY = "sk-test-e2e"


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (20, 120, 220)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def image() -> mm.ImageDocument:
    return mm.ImageDocument.from_bytes(png_bytes())


def openai_for(server: TestServer, **kwargs: Any) -> OpenAI:
    return OpenAI(model="gpt-4o-mini", api_key=KEY, base_url=server.url("/v1"), **kwargs)


def expected_usage(prompt: str, images: int, events: int) -> mm.Usage:
    return mm.Usage(
        input_tokens=len(prompt.split()) + IMAGE_TOKENS * images,
        output_tokens=events,
        cache_read_tokens=0,
        reasoning_tokens=0,
    )


def one_connection_pool() -> Transport:
    """A pool of a single connection: a response left open would starve the next call."""
    return Transport(
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        timeout=Timeouts(connect=5, read=10, write=10, pool=3),
    )


# --- every method, on asyncio and trio ------------------------------------------------------


async def test_acomplete_with_an_image(
    mmstream_server: TestServer, image: mm.ImageDocument
) -> None:
    async with mm.MultiModalLLM(openai_for(mmstream_server)) as llm:
        response = await llm.acomplete(PROMPT, [image], max_tokens=200, temperature=0.3)
    expected = answer_text(PROMPT, images=1)
    assert isinstance(response, mm.CompletionResponse)
    assert response.text == expected
    assert response.delta is None
    assert response.finish_reason == "stop"
    events = len(expected.split())
    assert response.usage == expected_usage(PROMPT, 1, events)
    assert response.additional_kwargs["provider_finish_reason"] == "stop"

    recorded = mmstream_server.requests[-1]
    assert (recorded.api, recorded.path, recorded.status) == ("openai", "/v1/chat/completions", 200)
    assert recorded.headers["authorization"] == f"Bearer {KEY}"
    body = recorded.json
    assert body["model"] == "gpt-4o-mini"
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_completion_tokens"] == 200 and body["temperature"] == 0.3
    image_part, text_part = body["messages"][0]["content"]
    assert text_part == {"type": "text", "text": PROMPT}
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.partition(",")[2])[:8] == b"\x89PNG\r\n\x1a\n"


async def test_astream_complete_deltas_add_up(
    mmstream_server: TestServer, image: mm.ImageDocument
) -> None:
    async with mm.MultiModalLLM(openai_for(mmstream_server)) as llm:
        deltas: list[str] = []
        chunks: list[mm.CompletionResponse] = []
        async for chunk in await llm.astream_complete(PROMPT, [image]):  # LlamaIndex habit
            deltas.append(chunk.delta or "")
            chunks.append(chunk)
    expected = answer_text(PROMPT, images=1)
    assert "".join(deltas) == expected
    assert [c.text for c in chunks[:2]] == ["You ", "You said: "]
    assert chunks[-1].text == expected
    assert chunks[-1].usage is not None and chunks[-1].finish_reason == "stop"
    assert all(c.usage is None for c in chunks[:-1])


async def test_achat_multi_turn_with_system(mmstream_server: TestServer) -> None:
    messages = [
        mm.ChatMessage(role="system", content="You are terse."),
        mm.ChatMessage(role="user", content="hello"),
        mm.ChatMessage(role="assistant", content="hi"),
        mm.ChatMessage(role="user", content="tell me more"),
    ]
    async with mm.MultiModalLLM(openai_for(mmstream_server)) as llm:
        response = await llm.achat(messages)
    assert response.message.role is mm.MessageRole.ASSISTANT
    assert response.message.content == answer_text("tell me more")
    assert mmstream_server.requests[-1].json["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi"},
        {"role": "user", "content": "tell me more"},
    ]


async def test_astream_chat_with_a_scripted_answer(mmstream_server: TestServer) -> None:
    mmstream_server.enqueue(
        Script(text="Grüße aus dem Test 🎉", chunk_size=3, finish_reason="length")
    )
    llm = mm.MultiModalLLM(openai_for(mmstream_server))
    async with llm, llm.astream_chat(["hi"]) as stream:
        chunks = [chunk async for chunk in stream]
    assert "".join(c.delta or "" for c in chunks) == "Grüße aus dem Test 🎉"
    assert chunks[-1].finish_reason == "length"
    assert chunks[-1].message.content == "Grüße aus dem Test 🎉"


async def test_tool_calls_end_to_end(mmstream_server: TestServer) -> None:
    calls = (ToolCall(name="get_weather", arguments={"city": "Oslo", "days": 3}, id="call_w"),)
    mmstream_server.enqueue(Script(tool_calls=calls))
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    async with mm.MultiModalLLM(openai_for(mmstream_server)) as llm:
        response = await llm.achat(["weather?"], tools=tools)
    assert response.finish_reason == "tool_calls"
    assert response.additional_kwargs["tool_calls"] == [
        {"id": "call_w", "name": "get_weather", "arguments": {"city": "Oslo", "days": 3}}
    ]
    assert mmstream_server.requests[-1].json["tools"] == tools


# --- the blocking twins, on an asyncio and on a trio portal ---------------------------------


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_sync_methods(
    mmstream_thread_server: TestServer, image: mm.ImageDocument, backend: Literal["asyncio", "trio"]
) -> None:
    server = mmstream_thread_server
    with mm.MultiModalLLM(openai_for(server), sync_backend=backend) as llm:
        completion = llm.complete(PROMPT, [image])
        streamed = list(llm.stream_complete(PROMPT, [image]))
        reply = llm.chat([mm.ChatMessage(role="user", content="sync chat")])
        with llm.stream_chat(["sync stream"]) as stream:
            chat_chunks = list(stream)
    expected = answer_text(PROMPT, images=1)
    assert completion.text == expected and completion.finish_reason == "stop"
    assert "".join(c.delta or "" for c in streamed) == expected
    assert streamed[-1].usage == completion.usage
    assert reply.message.content == answer_text("sync chat")
    assert chat_chunks[-1].text == answer_text("sync stream")
    assert server.connections_opened == 1  # the portal's pool kept one connection alive


# --- leaving early: the server sees the disconnect, the pool gets its connection back ------


async def _leave(llm: mm.MultiModalLLM, how: str) -> None:
    if how == "break":
        async with llm.astream_complete("one two three") as stream:
            async for chunk in stream:
                if chunk.text.count(" ") >= 2:
                    break
    elif how == "exception":
        with pytest.raises(LookupError):
            async with llm.astream_chat(["one two three"]) as stream:
                async for _ in stream:
                    raise LookupError("consumer failed")
    else:
        with anyio.move_on_after(0.3) as scope:
            async with llm.astream_complete("one two three") as stream:
                async for _ in stream:
                    pass
        assert scope.cancelled_caught


@pytest.mark.parametrize("how", ["break", "exception", "cancel"])
async def test_leaving_a_stream_closes_the_connection(
    mmstream_server: TestServer, how: str
) -> None:
    server = mmstream_server
    server.enqueue(Script(chunks=400, pause=0.01))
    async with mm.MultiModalLLM(openai_for(server), transport=one_connection_pool()) as llm:
        await _leave(llm, how)
        disconnect = await server.wait_disconnect(timeout=1.0)
        assert 0 < disconnect.chunks_sent < 400
        assert disconnect.request.path == "/v1/chat/completions"
        # The only connection of the pool is free again: the next call gets it at once.
        assert (await llm.acomplete("again")).text == answer_text("again")
    assert server.connections_opened == 2  # the closed one, and a fresh one


def test_sync_stream_left_early_closes_the_connection(mmstream_thread_server: TestServer) -> None:
    server = mmstream_thread_server
    server.enqueue(Script(chunks=400, pause=0.01))
    with mm.MultiModalLLM(openai_for(server), transport=one_connection_pool()) as llm:
        with llm.stream_complete("one two three") as stream:
            for chunk in stream:
                if chunk.text:
                    break
        disconnect = server.wait_disconnect_blocking(timeout=1.0)
        assert disconnect.chunks_sent < 400
        assert llm.complete("again").text == answer_text("again")


# --- errors over HTTP ------------------------------------------------------------------------


async def test_http_errors_are_typed_with_message_and_request_id(
    mmstream_server: TestServer,
) -> None:
    server = mmstream_server
    async with mm.MultiModalLLM(openai_for(server)) as llm:
        server.inject(Fault.http_status(429, retry_after=2))
        with pytest.raises(RateLimitError) as info:
            await llm.acomplete("x")
        assert info.value.retry_after == 2.0
        assert info.value.request_id == server.requests[-1].request_id
        assert "Rate limit reached" in info.value.message

        server.inject(Fault.http_status(429, retry_after_ms=1500))
        with pytest.raises(RateLimitError) as info:
            await llm.acomplete("x")
        assert info.value.retry_after == 1.5

        quota = b'{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}'  # noqa: E501
        server.inject(Fault.http_status(429, body=quota))
        with pytest.raises(QuotaExceededError):
            await llm.acomplete("x")

        server.inject(Fault.http_status(503, html=True))
        with pytest.raises(OverloadedError) as overloaded:
            await llm.acomplete("x")
        assert "503" in overloaded.value.message and "<" not in overloaded.value.message

        assert (await llm.acomplete("fine")).text == answer_text("fine")


async def test_wrong_key_is_an_authentication_error() -> None:
    async with TestServer(api_key="the-right-key") as server:
        llm = mm.MultiModalLLM(openai_for(server))
        async with llm:
            with pytest.raises(mm.AuthenticationError, match="Incorrect API key"):
                await llm.acomplete("x")


@pytest.mark.parametrize(
    ("fault", "cls"),
    [
        (Fault.error_event(after_chunks=2), ServerError),
        (Fault.drop(after_chunks=2), IncompleteStreamError),
        (Fault.missing_end(), IncompleteStreamError),
        (Fault.malformed(after_chunks=2), ProviderProtocolError),
    ],
)
async def test_mid_stream_failures_keep_the_partial_answer(
    mmstream_server: TestServer, fault: Fault, cls: type[mm.MMStreamError]
) -> None:
    mmstream_server.inject(fault)
    async with mm.MultiModalLLM(openai_for(mmstream_server)) as llm:
        with pytest.raises(cls) as info:
            await llm.acomplete("alpha beta gamma delta")
    partial = info.value.partial
    assert partial is not None
    expected = answer_text("alpha beta gamma delta")
    if fault.kind == "missing_end":
        assert partial.text == expected
    else:
        assert partial.text == "You said: "


# --- Azure OpenAI, briefly ---------------------------------------------------------------


@pytest.mark.parametrize("api_version", ["2024-10-21", "v1"])
async def test_azure_end_to_end(
    mmstream_server: TestServer, image: mm.ImageDocument, api_version: str
) -> None:
    server = mmstream_server
    provider = AzureOpenAI(
        deployment="gpt4o-prod", endpoint=server.base_url, api_key="az-key", api_version=api_version
    )
    async with mm.MultiModalLLM(provider, transport=one_connection_pool()) as llm:
        response = await llm.acomplete(PROMPT, [image])
        assert response.text == answer_text(PROMPT, images=1)
        assert response.usage is not None and response.usage.input_tokens is not None
        recorded = server.requests[-1]
        assert recorded.api == "azure" and recorded.headers["api-key"] == "az-key"
        if api_version == "v1":
            assert recorded.path == "/openai/v1/chat/completions"
            assert recorded.json["model"] == "gpt4o-prod"
        else:
            assert recorded.path == "/openai/deployments/gpt4o-prod/chat/completions"
            assert recorded.query["api-version"] == "2024-10-21"

        server.inject(Fault.http_status(429))
        with pytest.raises(RateLimitError) as info:
            await llm.acomplete("x")
        assert info.value.request_id == server.requests[-1].request_id  # apim-request-id

        server.enqueue(Script(chunks=400, pause=0.01))
        async with llm.astream_chat(["one two"]) as stream:
            async for _ in stream:
                break
        assert (await server.wait_disconnect(timeout=1.0)).chunks_sent < 400
        assert (await llm.achat(["after"])).message.content == answer_text("after")


def test_azure_sync(mmstream_thread_server: TestServer) -> None:
    server = mmstream_thread_server
    provider = AzureOpenAI(deployment="d", endpoint=server.base_url, api_key="k")
    with mm.MultiModalLLM(provider) as llm:
        assert llm.complete("sync azure").text == answer_text("sync azure")


# --- OpenAI-compatible servers, briefly ------------------------------------------------------


async def test_compatible_end_to_end_without_key_usage_or_done() -> None:
    async with TestServer(require_auth=False) as server:
        provider = OpenAICompatible(model="llava", base_url=server.url("/v1"), include_usage=False)
        async with mm.MultiModalLLM(provider, transport=one_connection_pool()) as llm:
            response = await llm.acomplete("local model")
            assert response.text == answer_text("local model")
            assert response.usage is None  # the server was not asked for usage
            recorded = server.requests[-1]
            assert "authorization" not in recorded.headers
            assert "stream_options" not in recorded.json

            server.inject(Fault.missing_end())  # no [DONE]: the finish_reason completes it
            done = await llm.acomplete("no done")
            assert done.text == answer_text("no done") and done.finish_reason == "stop"

            server.enqueue(Script(chunks=400, pause=0.01))
            async with llm.astream_complete("leave") as stream:
                async for _ in stream:
                    break
            assert (await server.wait_disconnect(timeout=1.0)).chunks_sent < 400
            assert (await llm.acomplete("after")).text == answer_text("after")


async def _count(stream: AsyncIterator[Any]) -> int:
    return len([chunk async for chunk in stream])


async def test_compatible_with_key_and_usage(mmstream_server: TestServer) -> None:
    provider = OpenAICompatible(model="m", base_url=mmstream_server.url("/v1"), api_key=KEY)
    async with mm.MultiModalLLM(provider) as llm:
        response = await llm.acomplete("with usage")
        assert (
            response.usage is not None
            and response.usage.output_tokens == await _count(llm.astream_complete("with usage")) - 1
        )
    assert mmstream_server.requests[-1].headers["authorization"] == f"Bearer {KEY}"
