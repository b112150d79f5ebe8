"""The streaming hot path's shortcuts build exactly what the public constructors build."""

from __future__ import annotations

import attrs

from mmstream.providers.base import ResponseBuilder
from mmstream.responses import ChatResponse


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
