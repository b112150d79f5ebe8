"""Every public type round-trips through the one cattrs converter, as JSON-safe data."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, ClassVar

import attrs
import pytest

import mmstream as mm
from mmstream._secret import to_secret
from mmstream.middleware import TraceRecord
from mmstream.providers import Offline
from mmstream.providers.base import OptionFields
from mmstream.serde import converter, from_json, structure_provider, to_json

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(40))

VALUES: list[Any] = [
    mm.TextBlock("hello"),
    mm.ImageBlock(image=PNG, image_mimetype="image/png", detail="high"),
    mm.ImageBlock(path=Path("/tmp/cat.png")),
    mm.ImageBlock(url="https://example.com/cat.jpg"),
    mm.ChatMessage("user", "hi"),
    mm.ChatMessage(
        mm.MessageRole.USER,
        blocks=[
            mm.TextBlock("compare"),
            mm.ImageBlock(image=PNG),
            mm.ImageBlock(url="https://x/y.png"),
        ],
        additional_kwargs={"name": "ada"},
    ),
    mm.ImageDocument(image_path="cat.png", text="a cat", metadata={"k": 1}),
    mm.ImageDocument.from_bytes(PNG, image_mimetype="image/png"),
    mm.ImageDocument(image_url="https://example.com/cat.jpg"),
    mm.Usage(input_tokens=3, output_tokens=4, cache_read_tokens=1),
    mm.Usage(),
    mm.ChatResponse(
        text="abc",
        delta="c",
        usage=mm.Usage(input_tokens=1, output_tokens=2),
        finish_reason="stop",
        raw={"id": "x"},
        additional_kwargs={"tool_calls": [{"id": "1", "name": "f", "arguments": {"a": 1}}]},
    ),
    mm.CompletionResponse(text="done", delta=None, finish_reason="length"),
    mm.MultiModalLLMMetadata(),
    mm.MultiModalLLMMetadata(context_window=128_000, model_name="m", is_chat_model=True),
    mm.CallOptions(temperature=0.2, stop="END", extra={"seed": 7}),
    mm.CallOptions(timeout=2.5),
    mm.CallOptions(timeout=mm.Timeouts(connect=1, total=30)),
    TraceRecord(
        event="chat.complete",
        outcome="complete",
        provider="offline",
        model="default",
        operation="chat",
        started_at=1.0,
        time_to_first_chunk=0.1,
        duration=0.5,
        chunks=3,
        usage=mm.Usage(input_tokens=1, output_tokens=2),
    ),
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_round_trip(value: Any) -> None:
    data = converter.unstructure(value)
    json.dumps(data)  # JSON-safe: bytes are base64 text, paths are strings
    assert converter.structure(data, type(value)) == value
    assert from_json(to_json(value), type(value)) == value


def test_content_blocks_are_a_tagged_union() -> None:
    message = mm.ChatMessage("user", blocks=[mm.TextBlock("a"), mm.ImageBlock(image=PNG)])
    data = converter.unstructure(message)
    assert data["blocks"][0] == {"type": "text", "text": "a"}
    assert data["blocks"][1]["type"] == "image"
    assert base64.b64decode(data["blocks"][1]["image"]) == PNG
    assert "path" not in data["blocks"][1]  # absent fields are omitted


def test_streamed_chunk_serializes_its_cumulative_text() -> None:
    llm = mm.MultiModalLLM(Offline(chunks=5))
    chunks = list(llm.stream_complete("hi"))
    llm.close()
    data = converter.unstructure(chunks[2])
    assert data["text"] == chunks[2].text
    assert data["delta"] == chunks[2].delta
    assert from_json(to_json(chunks[2]), mm.CompletionResponse) == chunks[2]


@attrs.frozen(kw_only=True)
class Keyed(OptionFields):
    """A provider-shaped config holding a key, as the HTTP providers do."""

    name: ClassVar[str] = "offline"
    model: str = "default"
    api_key: mm.Secret | None = attrs.field(default=None, converter=to_secret, repr=False)

    def build_request(self) -> None:
        """Marks the class as a provider for the converter."""


def test_provider_config_serializes_without_its_secret() -> None:
    provider = Keyed(model="m", api_key="sk-very-secret-123", temperature=0.3)
    data = converter.unstructure(provider)
    assert "sk-very-secret-123" not in json.dumps(data)
    assert "api_key" not in data
    assert data == {**data, "provider": "offline", "model": "m", "temperature": 0.3}
    assert "sk-very-secret-123" not in repr(provider)
    assert "sk-very-secret-123" not in str(provider.api_key)


def test_offline_provider_round_trips() -> None:
    provider = Offline(model="m", chunks=4, delay=0.5, fail_after=2, temperature=0.1, stop=["x"])
    data = converter.unstructure(provider)
    assert data["provider"] == "offline"
    assert structure_provider(json.loads(json.dumps(data))) == provider


def test_unknown_provider_data_is_a_configuration_error() -> None:
    with pytest.raises(mm.ConfigurationError):
        structure_provider({"model": "x"})
