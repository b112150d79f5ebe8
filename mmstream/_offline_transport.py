"""The offline server: answers ``offline://`` requests in-process, from what it measures.

It is an ``httpx.AsyncBaseTransport`` that the facade mounts on its transport
(``Transport(mounts=...)``), so an offline call travels the same path as a real
one: transport, status handling, streaming, decoder, closing. The provider
([`Offline`][mmstream.providers.offline.Offline]) is a pure codec like the
others; the answer is made here: it looks at each image (format, size,
orientation, dominant colour, brightness, with Pillow, in a worker thread) and
at the prompt, and streams a description word by word as NDJSON lines.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import anyio
import anyio.lowlevel
import httpx

from mmstream.responses import Usage

__all__ = ["IMAGE_TOKENS", "OFFLINE_MOUNTS", "OfflineServer", "compose_answer", "describe_image"]

#: tokens counted per image, a rough stand-in for providers' image token costs.
IMAGE_TOKENS = 85

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


class OfflineServer(httpx.AsyncBaseTransport):
    """Answers offline requests with the answer of `compose_answer`, streamed."""

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


#: the mounts the facade installs: ``offline://`` URLs go to the offline server.
OFFLINE_MOUNTS: Mapping[str, httpx.AsyncBaseTransport] = {"offline://": OfflineServer()}


# --- the answer: what the offline server says about a request ------------------------

_PALETTE: Sequence[tuple[str, tuple[int, int, int]]] = (
    ("black", (0, 0, 0)),
    ("white", (255, 255, 255)),
    ("gray", (128, 128, 128)),
    ("red", (220, 30, 30)),
    ("orange", (245, 140, 20)),
    ("yellow", (240, 220, 40)),
    ("green", (40, 170, 60)),
    ("cyan", (40, 200, 220)),
    ("blue", (40, 70, 210)),
    ("navy", (20, 30, 100)),
    ("purple", (140, 50, 180)),
    ("pink", (240, 130, 180)),
    ("brown", (130, 80, 40)),
)


def _colour_name(rgb: tuple[int, int, int]) -> str:
    return min(
        _PALETTE, key=lambda item: sum((a - b) ** 2 for a, b in zip(item[1], rgb, strict=True))
    )[0]


def describe_image(data: bytes) -> str:
    """One sentence about an image: format, size, orientation, colour, brightness."""
    from PIL import Image, ImageStat, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt = image.format or "image"
            width, height = image.size
            if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF: rotated a quarter turn
                width, height = height, width
            image.draft("RGB", (128, 128))  # JPEG: decode at a fraction of the size
            small = image.convert("RGB")
        small.thumbnail((64, 64))
        quantized = small.quantize(colors=8)
        palette = quantized.getpalette() or [0, 0, 0]
        index = max(quantized.getcolors(8) or [(1, 0)])[1]
        dominant = (palette[3 * index], palette[3 * index + 1], palette[3 * index + 2])
        brightness = ImageStat.Stat(small.convert("L")).mean[0]
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        return f"an image I could not read ({exc})"
    shape = "square" if width == height else "landscape" if width > height else "portrait"
    if brightness < 40:
        light = "very dark"
    elif brightness < 90:
        light = "dark"
    elif brightness > 170:
        light = "bright"
    else:
        light = "medium-bright"
    hex_colour = "#{:02x}{:02x}{:02x}".format(*dominant)
    return (
        f"a {width}×{height} {fmt} ({shape}), mostly {_colour_name(dominant)} ({hex_colour}), "
        f"{light} (average brightness {brightness:.0f}/255)"
    )


def compose_answer(body: Mapping[str, Any]) -> tuple[list[str], Usage]:
    """The answer's chunks and usage for an offline request body (pure, may use Pillow)."""
    messages = body.get("messages") or []
    prompt = ""
    images: list[str] = []
    input_words = 0
    for message in messages:
        for part in message.get("content") or []:
            kind = part.get("type")
            if kind == "text":
                input_words += len(part["text"].split())
                if message.get("role") == "user":
                    prompt = part["text"]
            elif kind == "image":
                images.append(describe_image(base64.b64decode(part["data"])))
            elif kind == "image_url":
                images.append(f"an image at {part['url']} (not fetched: offline)")
    sentences = ["Offline answer: no model was called."]
    if prompt:
        sentences.append(f"You asked: “{prompt.strip()}”.")
    if images:
        count = "one image" if len(images) == 1 else f"{len(images)} images"
        sentences.append(f"I see {count}.")
        sentences.extend(f"Image {i} is {text}." for i, text in enumerate(images, 1))
    else:
        sentences.append("There is no image to look at.")
    words = " ".join(sentences).split(" ")
    pieces = [word + " " for word in words[:-1]] + [words[-1]]
    chunks = body.get("chunks")
    if chunks is not None:
        pieces = _fit(pieces, int(chunks))
    usage = Usage(input_tokens=input_words + IMAGE_TOKENS * len(images), output_tokens=len(pieces))
    return pieces, usage


def _fit(pieces: list[str], n: int) -> list[str]:
    """Exactly ``n`` pieces: cycle the words when more are asked, group them when fewer."""
    if n <= 0:
        return []
    if n >= len(pieces):
        cycled = [p if p.endswith(" ") else p + " " for p in pieces]
        out = list(itertools.islice(itertools.cycle(cycled), n))
        out[-1] = out[-1].rstrip(" ")
        return out
    size, extra = divmod(len(pieces), n)
    out, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        out.append("".join(pieces[start:end]))
        start = end
    return out
