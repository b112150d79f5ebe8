"""Helpers of the web tests: a real ASGI server on the test's loop, and an SSE reader."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import anyio
import httpx
from PIL import Image

from mmstream.sse import SSEDecoder
from mmstream.testing import TestServer
from mmstream.web import serve

KEY = "sk-test-0123456789abcdef"


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` over loopback (uvicorn on asyncio, hypercorn on trio); yield its base URL."""
    urls: list[str] = []
    async with anyio.create_task_group() as group:
        group.start_soon(partial(serve, app, on_ready=urls.append))
        with anyio.fail_after(10):
            while not urls:
                await anyio.sleep(0.01)
        try:
            yield urls[0]
        finally:
            group.cancel_scope.cancel()


def openai_for(server: TestServer) -> Any:
    """An OpenAI provider pointed at the loopback test server."""
    from mmstream.providers.openai import OpenAI

    return OpenAI(model="gpt-4o-mini", api_key=KEY, base_url=server.url("/v1"))


def parse_events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """The relay's events in ``raw`` (read with the project's own SSE decoder)."""
    decoder = SSEDecoder()
    events = decoder.feed(raw) + decoder.flush()
    return [(event.event, json.loads(event.data)) for event in events]


async def read_events(response: httpx.Response, limit: int | None = None) -> list[Any]:
    """Read SSE events from a streamed response; stop after ``limit`` ``text`` events."""
    decoder = SSEDecoder()
    events: list[tuple[str, dict[str, Any]]] = []
    texts = 0
    raw = response.aiter_raw()
    async for data in raw:
        for event in decoder.feed(data):
            events.append((event.event, json.loads(event.data)))
            texts += event.event == "text"
            if limit is not None and texts >= limit:
                # Leave like a browser: close the connection. One more step ends httpx's
                # nested body generators, which it never closes (trio warns about them).
                await response.aclose()
                with contextlib.suppress(Exception):
                    await raw.__anext__()
                return events
    return events + [(e.event, json.loads(e.data)) for e in decoder.flush()]


def png_bytes(
    size: tuple[int, int] = (48, 32), colour: tuple[int, int, int] = (200, 40, 40)
) -> bytes:
    """A real PNG image."""
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def text_of(events: list[tuple[str, dict[str, Any]]]) -> str:
    """The answer the ``text`` events spell out."""
    return "".join(payload["delta"] for name, payload in events if name == "text")
