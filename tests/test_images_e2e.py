"""Images end to end: the real providers, over real HTTP, to the loopback test server.

The 6 MB 4000×3000 photo with EXIF orientation 6 goes through each provider
(``MultiModalLLM`` → images → the provider's wire format → httpx → the
:class:`mmstream.testing.TestServer` on 127.0.0.1). The image is read back out
of the body the server received, in that provider's own shape, and checked:
within the provider's documented limits, its declared type equal to its real
type, upright, aspect kept. A small PNG arrives byte for byte, and a bad image
URL stops the call before the provider's endpoint is reached.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any, cast

import pytest
from PIL import Image

import mmstream as mm
from mmstream.images import ImagePolicy, sniff_mimetype
from mmstream.providers.anthropic import Anthropic
from mmstream.providers.azure import AzureOpenAI
from mmstream.providers.base import Provider
from mmstream.providers.gemini import Gemini
from mmstream.providers.ollama import Ollama
from mmstream.providers.openai import OpenAI, OpenAICompatible
from mmstream.testing import ALLOW_LOOPBACK, TestServer, answer_text
from tests.test_images import assert_within, is_marker, mean, photo, small_png

NAMES = ["openai", "azure", "anthropic", "gemini", "ollama", "openai-compatible"]


def provider(name: str, base_url: str) -> Provider:
    """Each provider pointed at the test server, configured as a user would."""
    if name == "openai":
        return OpenAI(model="gpt-4o-mini", api_key="sk-test", base_url=f"{base_url}/v1")
    if name == "azure":
        return AzureOpenAI(
            deployment="gpt-4o", endpoint=base_url, api_key="azure-key", api_version="2024-10-21"
        )
    if name == "anthropic":
        return Anthropic(model="claude-sonnet-4-5", api_key="sk-ant-test", base_url=base_url)
    if name == "gemini":
        return Gemini(model="gemini-2.5-flash", api_key="AIza-test", base_url=base_url)
    if name == "ollama":
        return Ollama(model="llama3.2-vision", base_url=base_url, api_key=None)
    return OpenAICompatible(model="local", base_url=f"{base_url}/v1", api_key="none")


def walk(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item)


def images_in(name: str, body: Any) -> list[tuple[str | None, str]]:
    """The (declared type, base64 text) of each inline image, read from the wire format."""
    found: list[tuple[str | None, str]] = []
    for node in walk(body):
        if name == "ollama" and isinstance(node.get("images"), list):
            found += [(None, text) for text in node["images"]]
        elif node.get("type") == "image_url":  # OpenAI, Azure, compatible: a data: URL
            url = node["image_url"]["url"]
            header, _, data = url.partition(",")
            assert header.startswith("data:image/") and header.endswith(";base64"), header
            found.append((header[5:].partition(";")[0], data))
        elif node.get("type") == "base64" and "media_type" in node:  # Anthropic
            found.append((node["media_type"], node["data"]))
        elif "inline_data" in node or "inlineData" in node:  # Gemini
            inline: dict[str, Any] = node.get("inline_data") or node["inlineData"]
            declared = inline.get("mime_type") or inline.get("mimeType")
            assert not inline["data"].startswith("data:")  # Gemini refuses the prefix
            found.append((declared, inline["data"]))
    return found


async def roundtrip(name: str, docs: list[mm.ImageDocument]) -> tuple[str, list[bytes], list[str]]:
    """Send ``docs`` through provider ``name``; the answer, the images received, their types."""
    async with TestServer() as server:
        chosen = provider(name, server.url())
        async with mm.MultiModalLLM(chosen) as llm:
            response = await llm.acomplete("Describe the picture", docs)
        [request] = server.requests
        parts = images_in(name, request.json)
    datas = [base64.b64decode(text, validate=True) for _, text in parts]
    types: list[str] = []
    for (declared, _), data in zip(parts, datas, strict=True):
        real = sniff_mimetype(data)
        assert real is not None
        assert declared in (None, real)  # the declared media type matches the bytes
        types.append(real)
    return response.text, datas, types


@pytest.mark.parametrize("name", NAMES)
async def test_the_photo_arrives_fitted_upright_and_in_proportion(name: str) -> None:
    text, [data], [mimetype] = await roundtrip(name, [mm.ImageDocument.from_bytes(photo())])
    assert text == answer_text("Describe the picture", images=1)
    policy = cast(ImagePolicy, provider(name, "http://x").image_policy)
    assert_within(policy, mimetype, data)
    image = Image.open(io.BytesIO(data)).convert("RGB")
    width, height = image.size
    assert abs(width / height - 0.75) < 0.01
    corner = max(8, width // 40)
    assert is_marker(mean(image, (width - corner, 0, width, corner)))
    assert not is_marker(mean(image, (0, 0, corner, corner)))


@pytest.mark.parametrize("name", NAMES)
async def test_a_small_png_arrives_byte_for_byte(name: str) -> None:
    _, [data], [mimetype] = await roundtrip(name, [mm.ImageDocument.from_bytes(small_png())])
    assert mimetype == "image/png"
    assert data == small_png()


@pytest.mark.parametrize("name", ["ollama", "gemini"])
async def test_a_dead_image_url_stops_the_call_before_the_provider(name: str) -> None:
    async with TestServer() as server:
        chosen = provider(name, server.url())
        dead = mm.ImageDocument(image_url=server.url("/no/such/image.png"))
        async with mm.MultiModalLLM(chosen) as llm:
            with pytest.raises(mm.InvalidImageError, match=r"image 1 .*HTTP 404") as info:
                await llm.acomplete("Describe", [dead], url_access=ALLOW_LOOPBACK)
        assert info.value.provider == chosen.name
        assert [(r.method, r.api) for r in server.requests] == [("GET", None)]
