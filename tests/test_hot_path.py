"""The streaming hot path's shortcuts build exactly what the public constructors build."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import AsyncIterator

import attrs
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mmstream as mm
from mmstream.images import OPENAI_POLICY
from mmstream.providers.base import ResponseBuilder
from mmstream.providers.openai import OpenAI
from mmstream.request import ChatRequest
from mmstream.responses import ChatResponse
from mmstream.transport import Transport, _dumps


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


# --- request bodies: long plain strings spliced in, bytes identical to json.dumps -------


def _reference(body: object) -> bytes:
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8")


_long = st.builds(
    lambda head, fill, tail: head + fill * 40_000 + tail,
    st.text(max_size=3),
    st.sampled_from(["A", "b/+=", "é", '"', "\\", "\n", "\x7f", "\x1f", "mmstream-splice-"]),
    st.text(max_size=3),
)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5) | _long,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=60, deadline=None)
@given(body=_json)
def test_request_bodies_are_byte_identical_to_json_dumps(body: object) -> None:
    assert _dumps(body) == _reference(body)


def test_a_body_that_is_not_json_is_refused() -> None:
    circular: list[object] = []
    circular.append(circular)
    for bad in (circular, {"x": float("nan")}, {"x": object()}):
        with pytest.raises(mm.InvalidRequestError, match="cannot be sent as JSON"):
            _dumps(bad)


async def test_an_image_request_goes_out_as_the_provider_built_it() -> None:
    image = b"\xff\xd8\xff" + bytes(range(256)) * 800  # 200 KiB that sniff as a JPEG
    sent: list[bytes] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.content)
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, stream=_Body(_EVENTS)
        )

    provider = OpenAI(model="gpt-4o-mini", api_key="sk-test", base_url="http://test/v1")
    transport = Transport(http_transport=httpx.MockTransport(handler))
    message = mm.ChatMessage("user", blocks=[mm.ImageBlock(image=image), mm.TextBlock("What?")])
    policy = attrs.evolve(OPENAI_POLICY, fit=False)
    async with mm.MultiModalLLM(provider, transport=transport) as llm:
        assert (await llm.achat([message], image_policy=policy)).text == "Hello"
    request = ChatRequest(messages=(message,), provider=provider)
    expected = provider.build_request(request).json
    assert json.loads(sent[0]) == expected
    assert sent[0] == _reference(expected)
    url = expected["messages"][0]["content"][0]["image_url"]["url"]
    assert url == "data:image/jpeg;base64," + base64.b64encode(image).decode()
