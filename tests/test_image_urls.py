"""URLs a provider reads itself pass through image preparation untouched."""

from __future__ import annotations

import pytest

import mmstream as mm
from mmstream.images import prepare_request
from mmstream.providers import Gemini, Ollama


def _request(provider: mm.providers.Provider, url: str) -> mm.ChatRequest:
    message = mm.ChatMessage("user", blocks=[mm.ImageBlock(url=url), mm.TextBlock("what?")])
    return mm.ChatRequest(messages=[message], provider=provider)


@pytest.mark.parametrize(
    "url",
    ["gs://bucket/cat.png", "https://generativelanguage.googleapis.com/v1beta/files/abc123"],
)
async def test_gemini_file_uris_go_as_file_data(url: str) -> None:
    provider = Gemini(model="gemini-2.5-flash", api_key="k")
    prepared = await prepare_request(_request(provider, url))
    body = provider.build_request(prepared).json
    parts = body["contents"][0]["parts"]
    assert parts[0]["file_data"]["file_uri"] == url
    assert "inline_data" not in parts[0]


async def test_other_schemes_are_refused_before_sending() -> None:
    with pytest.raises(mm.InvalidImageError, match="only http and https"):
        await prepare_request(_request(Ollama(model="llava"), "gs://bucket/cat.png"))
