"""Images, made ready for a provider: loaded, sniffed, off the event loop.

:func:`prepare_request` loads every image of a call (a file is read, base64 is
already decoded by :class:`~mmstream.ImageBlock`) and recognises its real type
from its bytes, in a worker thread. Everything but that one entry point is
pure (no anyio, no httpx at import), and Pillow is imported only when an image
is touched.
"""

from __future__ import annotations

from pathlib import Path
from typing import final

import attrs
from attrs import frozen

from mmstream.content import ChatMessage, ImageBlock
from mmstream.errors import InvalidImageError
from mmstream.request import ChatRequest

__all__ = ["ImagePolicy", "prepare_request", "sniff_mimetype"]


@final
@frozen(kw_only=True)
class ImagePolicy:
    """A provider's documented image limits, as data (``None`` means no limit).

    Attributes:
        accepted_types: MIME types the API takes; others are converted.
        max_bytes: largest raw image, in bytes.
        max_base64_bytes: largest image measured on its base64 text (Anthropic).
        max_edge: longest side the API accepts, in pixels.
        recommended_edge: longest side worth sending (larger is downscaled to it).
        max_pixels: most pixels (width × height) the API accepts.
        max_images: most images in one request.
        max_request_bytes: most bytes of images in one request, all together.
        accepts_urls: whether the API fetches http(s) URLs itself.
        fit: whether mmstream converts, rotates and shrinks images to fit.
    """

    accepted_types: frozenset[str] = frozenset(
        {"image/png", "image/jpeg", "image/gif", "image/webp"}
    )
    max_bytes: int | None = None
    max_base64_bytes: int | None = None
    max_edge: int | None = None
    recommended_edge: int | None = None
    max_pixels: int | None = None
    max_images: int | None = None
    max_request_bytes: int | None = None
    accepts_urls: bool = True
    fit: bool = True


def sniff_mimetype(data: bytes) -> str | None:
    """The image type from its first bytes, or ``None`` when it is no known image."""
    head = data[:32]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:2] == b"BM":
        return "image/bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "image/avif"
        if brand in (b"heic", b"heix", b"hevc", b"hevx", b"mif1", b"msf1"):
            return "image/heic"
    return None


def _images_in(request: ChatRequest) -> bool:
    return any(isinstance(b, ImageBlock) for m in request.messages for b in m.blocks)


async def prepare_request(request: ChatRequest) -> ChatRequest:
    """The request with every image loaded and typed; a request without images is returned as is.

    Raises:
        InvalidImageError: an image is missing, empty or of no known type; nothing is sent.
    """
    if not _images_in(request):
        return request
    import anyio.to_thread  # here, so that the rest of this module stays pure

    return await anyio.to_thread.run_sync(_prepare, request)


def _prepare(request: ChatRequest) -> ChatRequest:
    index = 0
    messages: list[ChatMessage] = []
    for message in request.messages:
        blocks = []
        for block in message.blocks:
            if isinstance(block, ImageBlock):
                block = _load(block, index, request.provider_name)
                index += 1
            blocks.append(block)
        messages.append(attrs.evolve(message, blocks=tuple(blocks)))
    return attrs.evolve(request, messages=tuple(messages))


def _load(block: ImageBlock, index: int, provider: str) -> ImageBlock:
    data = block.image
    where = f"image {index + 1}"
    if data is None and block.path is not None:
        where = f"image {index + 1} ({block.path})"
        try:
            data = Path(block.path).read_bytes()
        except OSError as exc:
            raise InvalidImageError(
                f"{where} cannot be read: {exc.strerror or exc}", image_index=index
            ) from exc
    if data is None:
        return block  # a URL: passed on as it is
    if not data:
        raise InvalidImageError(f"{where} is empty (0 bytes)", image_index=index)
    mimetype = sniff_mimetype(data)
    if mimetype is None:
        raise InvalidImageError(
            f"{where} is not an image of a known type (starts with {data[:8]!r})",
            image_index=index,
        )
    return attrs.evolve(block, image=data, path=None, image_mimetype=mimetype)
