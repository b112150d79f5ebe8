"""The offline provider: answers without network or key, from what it measures.

It looks at each image (format, size, orientation, dominant colour,
brightness) and at the prompt, and streams a description word by word. It is
the CLI's default, the README's first example, and the fast workhorse of
tests: ``chunks`` forces the number of streamed chunks, ``delay`` pauses
between them, ``fail_after`` raises a mid-stream error after that many.

Like every provider it is sans-I/O. Its "server" runs in-process behind the
``offline://`` URL (see ``mmstream._offline_transport``), so offline calls go
through the same transport, decoder and middleware as real ones. Its wire
format is NDJSON: ``{"delta": ...}`` lines, then ``{"done": true, "usage": ...,
"finish_reason": ...}``, or ``{"error": {"type": ..., "message": ...}}``.
"""

from __future__ import annotations

import base64
import io
import itertools
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, final

from attrs import field, frozen

from mmstream.content import ImageBlock, TextBlock
from mmstream.errors import APIError, OverloadedError, ServerError
from mmstream.media.policy import ImagePolicy
from mmstream.media.sniff import encoded_form
from mmstream.metadata import MultiModalLLMMetadata
from mmstream.providers.base import (
    JSONLinesDecoder,
    OptionFields,
    default_parse_error,
)
from mmstream.request import ChatRequest, HTTPRequest
from mmstream.responses import ChatResponse, Usage

__all__ = ["Offline", "OfflineDecoder", "compose_answer", "describe_image"]

#: tokens counted per image, a rough stand-in for providers' image token costs.
IMAGE_TOKENS = 85


def _non_negative(instance: object, attribute: Any, value: float | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, not {value}")


@final
@frozen(kw_only=True)
class Offline(OptionFields):
    """A provider that needs no network and no key.

    Args:
        model: any name; it is echoed in the metadata.
        chunks: stream exactly this many chunks (the words are cycled or grouped).
        delay: seconds to pause between chunks.
        fail_after: raise a mid-stream :class:`~mmstream.errors.OverloadedError`
            after this many chunks.
    """

    name: ClassVar[str] = "offline"

    model: str = "default"
    chunks: int | None = field(default=None, validator=_non_negative)
    delay: float = field(default=0.0, validator=_non_negative)
    fail_after: int | None = field(default=None, validator=_non_negative)

    @property
    def metadata(self) -> MultiModalLLMMetadata:
        """Generous limits: the offline provider reads anything."""
        return MultiModalLLMMetadata(
            context_window=128_000,
            num_output=4096,
            num_input_files=100,
            model_name=self.model,
            is_chat_model=True,
        )

    @property
    def image_policy(self) -> ImagePolicy:
        """No limits but the common types; URLs are described, never fetched."""
        return ImagePolicy(accepts_urls=True, fit=False)

    def build_request(self, request: ChatRequest) -> HTTPRequest:
        """The request for the in-process offline server."""
        options = request.options
        return HTTPRequest(
            url="offline://local/v1/answer",
            json={
                "model": self.model,
                "messages": [_message(m.role.value, m.blocks) for m in request.messages],
                "chunks": self.chunks,
                "delay": self.delay,
                "fail_after": self.fail_after,
                "max_tokens": options.max_tokens,
            },
            stream_format="ndjson",
            timeout=options.timeout,
        )

    def new_decoder(self, request: ChatRequest) -> OfflineDecoder:
        """A decoder for one offline answer."""
        return OfflineDecoder(self.model)

    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> APIError:
        """The offline server's errors have the common JSON shape."""
        return default_parse_error(self.name, status, headers, body)


def _message(role: str, blocks: Sequence[TextBlock | ImageBlock]) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    for block in blocks:
        if isinstance(block, TextBlock):
            parts.append({"type": "text", "text": block.text})
        elif block.image is not None:
            parts.append(
                {
                    "type": "image",
                    "data": encoded_form(block, provider="offline").base64,
                    "mime_type": block.image_mimetype,
                }
            )
        else:
            parts.append({"type": "image_url", "url": block.url})
    return {"role": role, "content": parts}


@final
class OfflineDecoder(JSONLinesDecoder):
    """NDJSON lines of the offline server into chunks."""

    __slots__ = ()

    provider = "offline"
    end = 'its "done" line'

    def event(self, event: dict[str, Any], out: list[ChatResponse]) -> None:
        """One line: a delta, the ``done`` summary, or an error."""
        builder = self._builder
        delta = event.get("delta")
        if isinstance(delta, str):
            out.append(builder.text(delta, event))
        elif event.get("done"):
            usage = event.get("usage")
            usage = usage if isinstance(usage, dict) else {}
            builder.usage = Usage(
                input_tokens=_count(usage.get("input_tokens")),
                output_tokens=_count(usage.get("output_tokens")),
            )
            reason = event.get("finish_reason")
            builder.finish_reason = reason if isinstance(reason, str) and reason else "stop"
            out.append(builder.finish(event))
        elif "error" in event:
            error = event["error"] if isinstance(event["error"], dict) else {}
            cls = OverloadedError if error.get("type") == "overloaded_error" else ServerError
            raise cls(
                str(error.get("message") or event["error"]),
                status=200,
                provider="offline",
                type=error.get("type"),
                partial=builder.snapshot(event),
            )


def _count(value: Any) -> int | None:
    """A token count from the wire, or ``None`` when it is missing or not an integer."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# --- the answer (used by the in-process server) ------------------------------------

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
