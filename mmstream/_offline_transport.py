"""The in-process server behind ``offline://`` URLs (the I/O half of the offline provider).

It is an ``httpx.AsyncBaseTransport``, so an offline call travels the same
path as a real one: transport, status handling, streaming, decoder, closing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel
import httpx

from mmstream.providers.offline import compose_answer

__all__ = ["OfflineTransport"]

#: with no delay, lines are sent in blocks of about this many bytes.
_BLOCK = 64 * 1024


class _Body(httpx.AsyncByteStream):
    def __init__(self, lines: AsyncIterator[bytes]) -> None:
        self._lines = lines

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for block in self._lines:
            yield block

    async def aclose(self) -> None:
        await self._lines.aclose()  # type: ignore[attr-defined]


class OfflineTransport(httpx.AsyncBaseTransport):
    """Answers offline requests from :func:`~mmstream.providers.offline.compose_answer`."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Compute the answer (in a worker thread when images are involved) and stream it."""
        body: dict[str, Any] = json.loads(await request.aread())
        has_images = any(
            part.get("type") == "image"
            for message in body.get("messages") or []
            for part in message.get("content") or []
        )
        if has_images:
            pieces, usage = await anyio.to_thread.run_sync(compose_answer, body)
        else:
            pieces, usage = compose_answer(body)
        return httpx.Response(
            200,
            headers={"content-type": "application/x-ndjson"},
            stream=_Body(_lines(body, pieces, usage.input_tokens, usage.output_tokens)),
        )


async def _lines(
    body: dict[str, Any], pieces: list[str], input_tokens: int | None, output_tokens: int | None
) -> AsyncIterator[bytes]:
    delay = float(body.get("delay") or 0.0)
    fail_after = body.get("fail_after")
    max_tokens = body.get("max_tokens")
    finish = "stop"
    if max_tokens is not None and len(pieces) > max_tokens:
        pieces, finish = pieces[:max_tokens], "length"
        output_tokens = len(pieces)
    dumps = json.dumps
    block: list[bytes] = []
    size = 0
    for index, piece in enumerate(pieces):
        if fail_after is not None and index >= fail_after:
            break
        line = b'{"delta":' + dumps(piece).encode() + b"}\n"
        if delay:
            if index:
                await anyio.sleep(delay)
            yield line
            continue
        block.append(line)
        size += len(line)
        if size >= _BLOCK:
            yield b"".join(block)
            block, size = [], 0
            await anyio.lowlevel.checkpoint()
    if fail_after is not None and fail_after < len(pieces):
        error = {
            "type": "overloaded_error",
            "message": f"the offline provider fails after {fail_after} chunks, as asked",
        }
        block.append(dumps({"error": error}).encode() + b"\n")
    else:
        usage = {"input_tokens": input_tokens, "output_tokens": output_tokens}
        block.append(
            dumps({"done": True, "finish_reason": finish, "usage": usage}).encode() + b"\n"
        )
    if delay and pieces:
        await anyio.sleep(delay)
    yield b"".join(block)
