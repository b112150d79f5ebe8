"""Shared checks for stream decoders: the same wire bytes, split at every offset."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mmstream.errors import MMStreamError
from mmstream.providers.base import StreamDecoder
from mmstream.responses import ChatResponse

NewDecoder = Callable[[], StreamDecoder]


def decode_at_every_split(new_decoder: NewDecoder, wire: bytes) -> list[list[ChatResponse]]:
    """Decode ``wire`` split once at every offset, and byte by byte; callers check all agree."""
    results = []
    for cut in range(len(wire) + 1):
        decoder = new_decoder()
        results.append(decoder.feed(wire[:cut]) + decoder.feed(wire[cut:]) + decoder.flush())
    decoder = new_decoder()
    chunks = [chunk for i in range(len(wire)) for chunk in decoder.feed(wire[i : i + 1])]
    results.append(chunks + decoder.flush())
    return results


def errors_at_every_split(
    new_decoder: NewDecoder, wire: bytes, expected: type[MMStreamError]
) -> list[tuple[list[ChatResponse], MMStreamError]]:
    """For every split: the chunks decoded before the error, and the error (of ``expected``)."""
    outcomes = []
    for cut in range(len(wire) + 1):
        decoder = new_decoder()
        seen: list[ChatResponse] = []
        with pytest.raises(expected) as info:
            seen += decoder.feed(wire[:cut])
            seen += decoder.feed(wire[cut:])
            seen += decoder.flush()
        outcomes.append((seen, info.value))
    return outcomes


def text(chunks: list[ChatResponse]) -> str:
    """The answer the chunks spell out."""
    return "".join(chunk.delta or "" for chunk in chunks)
