"""The streaming hot path's shortcuts build exactly what the public constructors build."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator

import attrs
import httpx
import pytest

import mmstream as mm
from mmstream.providers.base import ResponseBuilder
from mmstream.providers.openai import OpenAI
from mmstream.responses import ChatResponse
from mmstream.transport import Transport


def test_builder_text_chunks_equal_constructed_ones_field_by_field() -> None:
    builder = ResponseBuilder("openai", "gpt-4o-mini")
    raw: dict[str, list[object]] = {"choices": []}
    first = builder.text("Hello", raw)
    second = builder.text(", world")
    for chunk, text, delta, chunk_raw in (
        (first, "Hello", "Hello", raw),
        (second, "Hello, world", ", world", None),
    ):
        built = ChatResponse(text=text, delta=delta, raw=chunk_raw)
        assert type(chunk) is ChatResponse
        for field in attrs.fields(ChatResponse):
            if field.name == "_text":
                continue  # a lazy view of the shared accumulator, compared through .text
            assert getattr(chunk, field.name) == getattr(built, field.name), field.name
        assert chunk.text == text
        assert chunk == built
    assert first.additional_kwargs is not second.additional_kwargs  # a fresh dict each


# --- the transport reads the raw body unless it has a content-encoding --------------------

_EVENTS = [
    b'data: {"choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n',
    b'data: {"choices":[{"index":0,"delta":{"content":"lo"}}]}\n\n',
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n',
    b"data: [DONE]\n\n",
]


class _Body(httpx.AsyncByteStream):
    """A response body sent in pieces, not read before the client iterates it."""

    def __init__(self, parts: list[bytes]) -> None:
        self.parts = parts
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            yield part

    async def aclose(self) -> None:
        self.closed = True


async def _answer(headers: dict[str, str], parts: list[bytes]) -> str:
    body = _Body(parts)

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=headers, stream=body)

    provider = OpenAI(model="gpt-4o-mini", api_key="sk-test", base_url="http://test/v1")
    transport = Transport(http_transport=httpx.MockTransport(handler))
    async with mm.MultiModalLLM(provider, transport=transport) as llm:
        response = await llm.achat(["Hi"])
    assert body.closed
    return response.text


@pytest.mark.parametrize("encoding", [None, "identity", "gzip", "GZIP"])
async def test_plain_and_compressed_bodies_decode(encoding: str | None) -> None:
    headers = {"content-type": "text/event-stream"}
    data = b"".join(_EVENTS)
    if encoding and encoding.lower() == "gzip":
        headers["content-encoding"] = encoding
        data = gzip.compress(data)
    parts = [data[i : i + 7] for i in range(0, len(data), 7)]
    assert await _answer(headers, parts) == "Hello"


class _Broken(_Body):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.parts[0]
        raise httpx.ReadError("connection reset by peer")


async def test_a_read_error_mid_stream_is_mapped_with_the_partial_answer() -> None:
    body = _Broken(_EVENTS)

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=body)

    provider = OpenAI(model="gpt-4o-mini", api_key="sk-test", base_url="http://test/v1")
    transport = Transport(http_transport=httpx.MockTransport(handler))
    async with mm.MultiModalLLM(provider, transport=transport) as llm:
        with pytest.raises(mm.APIConnectionError, match="dropped mid-stream") as caught:
            await llm.achat(["Hi"])
    assert isinstance(caught.value.__cause__, httpx.ReadError)
    assert caught.value.partial is not None
    assert caught.value.partial.text == "Hel"
