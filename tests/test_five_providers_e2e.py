"""The same user code against all five wire formats, over real HTTP on 127.0.0.1.

One ``MultiModalLLM`` call with a prompt and two images runs unchanged against
OpenAI, Azure OpenAI, Anthropic, Gemini and Ollama, each served by
:class:`mmstream.testing.TestServer` in its own format, on asyncio, on trio and
from synchronous code, and gives the same text (the server's answer is a pure
function of the prompt and the image count). Mid-stream error events sent by
the server raise the provider's typed error holding the text received before it.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

import mmstream as mm
from mmstream.errors import OverloadedError, ServerError
from mmstream.providers import Anthropic, AzureOpenAI, Gemini, Ollama, OpenAI, Provider
from mmstream.testing import Fault, TestServer, answer_text, split_text

PROMPT = "Compare these two pictures"
EXPECTED = answer_text(PROMPT, images=2)  # "You said: Compare these two pictures. I see 2 images."
NAMES = ["openai", "azure", "anthropic", "gemini", "ollama"]


def _providers(base_url: str) -> dict[str, Provider]:
    """Each provider pointed at the test server, configured as a user would."""
    return {
        "openai": OpenAI(model="gpt-4o-mini", api_key="sk-test", base_url=f"{base_url}/v1"),
        "azure": AzureOpenAI(
            deployment="gpt-4o", endpoint=base_url, api_key="azure-key", api_version="2024-10-21"
        ),
        "anthropic": Anthropic(model="claude-sonnet-4-5", api_key="sk-ant-test", base_url=base_url),
        "gemini": Gemini(model="gemini-2.5-flash", api_key="AIza-test", base_url=base_url),
        "ollama": Ollama(model="llama3.2-vision", base_url=base_url, api_key=None),
    }


@pytest.fixture
def images(tmp_path: Path) -> list[mm.ImageDocument]:
    """Two images, as users pass them: PNG bytes, and a JPEG file on disk."""
    png = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(png, format="PNG")
    jpeg_path = tmp_path / "blue.jpg"
    Image.new("RGB", (40, 80), (30, 30, 200)).save(jpeg_path, format="JPEG")
    return [
        mm.ImageDocument.from_bytes(png.getvalue()),
        mm.ImageDocument(image_path=str(jpeg_path)),
    ]


# --- the user code, written once ----------------------------------------------------------


async def describe(llm: mm.MultiModalLLM, images: list[mm.ImageDocument]) -> tuple[str, str]:
    """Stream an answer about two images; return the joined deltas and the final text."""
    deltas = []
    final = None
    async with llm.astream_complete(PROMPT, images) as stream:
        async for chunk in stream:
            deltas.append(chunk.delta or "")
            final = chunk
    assert final is not None
    return "".join(deltas), final.text


def describe_sync(llm: mm.MultiModalLLM, images: list[mm.ImageDocument]) -> tuple[str, str]:
    """The same, from synchronous code."""
    deltas = []
    final = None
    with llm.stream_complete(PROMPT, images) as stream:
        for chunk in stream:
            deltas.append(chunk.delta or "")
            final = chunk
    assert final is not None
    return "".join(deltas), final.text


def _check_recorded(server: TestServer, name: str) -> None:
    """The server saw one request in the provider's own format, carrying both images."""
    request = server.requests[-1]
    assert request.api == name
    assert request.status == 200
    assert request.stream
    assert request.answer == EXPECTED


# --- same text on asyncio, trio and sync ----------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
async def test_same_user_code_same_text_async(name: str, images: list[mm.ImageDocument]) -> None:
    async with TestServer() as server:
        provider = _providers(server.base_url)[name]
        async with mm.MultiModalLLM(provider) as llm:
            streamed, text = await describe(llm, images)
            response = await llm.acomplete(PROMPT, images)
        assert streamed == text == EXPECTED
        assert response.text == EXPECTED
        assert response.finish_reason == "stop"
        assert response.usage is not None
        assert response.usage.input_tokens is not None and response.usage.input_tokens > 0
        assert response.usage.output_tokens is not None and response.usage.output_tokens > 0
        _check_recorded(server, name)
        assert len(server.requests) == 2


@pytest.mark.parametrize("sync_backend", ["asyncio", "trio"])
@pytest.mark.parametrize("name", NAMES)
def test_same_user_code_same_text_sync(
    name: str, sync_backend: str, images: list[mm.ImageDocument]
) -> None:
    with TestServer.start_in_thread() as server:
        provider = _providers(server.base_url)[name]
        with mm.MultiModalLLM(provider, sync_backend=sync_backend) as llm:  # type: ignore[arg-type]
            streamed, text = describe_sync(llm, images)
            response = llm.complete(PROMPT, images)
        assert streamed == text == EXPECTED
        assert response.text == EXPECTED
        assert response.finish_reason == "stop"
        _check_recorded(server, name)


async def test_all_five_in_one_loop_give_one_answer(images: list[mm.ImageDocument]) -> None:
    async with TestServer() as server:
        texts = {}
        for name, provider in _providers(server.base_url).items():
            async with mm.MultiModalLLM(provider) as llm:
                texts[name] = (await describe(llm, images))[1]
        assert texts == dict.fromkeys(NAMES, EXPECTED)
        assert [r.api for r in server.requests] == NAMES


# --- mid-stream error events over HTTP -------------------------------------------------------


def _first_pieces(n: int) -> str:
    return "".join(split_text(EXPECTED)[:n])


@pytest.mark.parametrize(
    ("name", "error_class", "check_message"),
    [
        ("anthropic", OverloadedError, lambda m: m == "Overloaded"),
        ("ollama", ServerError, lambda m: "error was encountered" in m),
        ("gemini", OverloadedError, lambda m: "overloaded" in m),
    ],
)
async def test_mid_stream_error_event_raises_typed_error_with_partial(
    name: str,
    error_class: type[mm.MMStreamError],
    check_message: Callable[[str], bool],
    images: list[mm.ImageDocument],
) -> None:
    async with TestServer() as server:
        server.inject(Fault.error_event(after_chunks=3), api=name)
        received: list[str] = []
        async with mm.MultiModalLLM(_providers(server.base_url)[name]) as llm:
            with pytest.raises(error_class) as info:
                async with llm.astream_complete(PROMPT, images) as stream:
                    async for chunk in stream:
                        received.append(chunk.delta or "")
        error = info.value
        assert type(error) is error_class
        assert error.partial is not None
        assert error.partial.text == _first_pieces(3)
        assert "".join(received) == _first_pieces(3)  # what the caller saw is what .partial holds
        assert error.provider == name
        assert isinstance(error, mm.APIError) and error.status == 200
        assert check_message(error.message)
        assert server.requests[-1].fault is not None


def test_mid_stream_error_event_from_sync_code(images: list[mm.ImageDocument]) -> None:
    with TestServer.start_in_thread() as server:
        server.inject(Fault.error_event(after_chunks=2), api="anthropic")
        llm = mm.MultiModalLLM(_providers(server.base_url)["anthropic"])
        with llm, pytest.raises(OverloadedError) as info:
            llm.complete(PROMPT, images)
        assert info.value.partial is not None
        assert info.value.partial.text == _first_pieces(2)


# --- HTTP errors, the same way everywhere ---------------------------------------------------


@pytest.mark.parametrize("name", ["openai", "azure", "anthropic", "gemini"])
async def test_wrong_key_is_an_authentication_error(
    name: str, images: list[mm.ImageDocument]
) -> None:
    async with TestServer(api_key="the-right-key") as server:
        async with mm.MultiModalLLM(_providers(server.base_url)[name]) as llm:
            with pytest.raises(mm.AuthenticationError) as info:
                await llm.acomplete(PROMPT, images)
        assert info.value.provider == name
        assert info.value.partial is None  # nothing had arrived
        assert "the-right-key" not in str(info.value)


@pytest.mark.parametrize("name", NAMES)
async def test_rate_limit_with_retry_after(name: str, images: list[mm.ImageDocument]) -> None:
    async with TestServer() as server:
        server.inject(Fault.http_status(429, retry_after=7), api=name)
        async with mm.MultiModalLLM(_providers(server.base_url)[name]) as llm:
            with pytest.raises(mm.RateLimitError) as info:
                await llm.acomplete(PROMPT, images)
        assert info.value.retry_after == 7.0
        assert info.value.status == 429
        assert info.value.retryable
