"""An image's real type from its first bytes, and its base64 wire form (pure, stdlib only).

Providers read an image's [`EncodedImage`][mmstream.content.EncodedImage] with
[`encoded_form`][mmstream.media.sniff.encoded_form]: preparation computed it
(off the event loop when it is large); a block that never went through
preparation is encoded on the spot.
"""

from __future__ import annotations

import base64
import time

from mmstream.content import EncodedImage, ImageBlock
from mmstream.errors import InvalidImageError

__all__ = [
    "b64encode",
    "base64_length",
    "data_url",
    "encode_base64",
    "encoded_form",
    "raw_for_base64",
    "sniff_mimetype",
]


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
    if head[:2] == b"BM" and len(head) >= 26:
        return "image/bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "image/avif"
        if brand in (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis"):
            return "image/heic"
        if brand in (b"mif1", b"msf1", b"heif"):
            return "image/heif"
    return None


def base64_length(size: int) -> int:
    """The length of the base64 text of ``size`` bytes (padding included)."""
    return 4 * ((size + 2) // 3)


def raw_for_base64(limit: int) -> int:
    """The most raw bytes whose base64 text stays within ``limit`` characters."""
    return (limit // 4) * 3


#: base64 is encoded in slices of this many bytes (a multiple of 3), so that a
#: worker thread gives the GIL back between slices instead of holding it for
#: the whole image.
_B64_SLICE = 3 * 64 * 1024


def b64encode(data: bytes, *, share_gil: bool = False) -> str:
    """Base64 text of ``data``; with ``share_gil`` (in a worker thread), in GIL-sized steps.

    ``b64encode`` holds the GIL, so a worker thread encoding megabytes in one
    call would make the event loop wait. In slices, with a ``sleep(0)`` after
    each, the loop thread gets the GIL within a fraction of a millisecond
    instead of after the interpreter's 5 ms switch interval.
    """
    if len(data) <= _B64_SLICE:
        return base64.b64encode(data).decode("ascii")
    view = memoryview(data)
    parts: list[str] = []
    for start in range(0, len(data), _B64_SLICE):
        parts.append(base64.b64encode(view[start : start + _B64_SLICE]).decode("ascii"))
        if share_gil:
            time.sleep(0)
    return "".join(parts)


def encode_base64(data: bytes) -> str:
    """The base64 text of an image's bytes (standard alphabet, padded)."""
    return b64encode(data)


def data_url(data: bytes, mimetype: str) -> str:
    """A ``data:`` URL for an image (what OpenAI and Azure take inline)."""
    return f"data:{mimetype};base64,{b64encode(data)}"


def encoded_form(block: ImageBlock, *, provider: str = "", index: int = 0) -> EncodedImage:
    """The base64 text and MIME type of an inline image, as a provider puts them in a body.

    A prepared block carries them (computed once, off the event loop when large);
    any other inline block is encoded here, its type taken from ``image_mimetype``
    or sniffed from the bytes.

    Raises:
        InvalidImageError: the block holds no bytes (a path or URL not loaded).
    """
    if block.encoded is not None:
        return block.encoded
    if block.image is None:
        where = block.url if block.url is not None else block.path
        raise InvalidImageError(
            f"image {index + 1} ({where}) was not loaded; send requests through "
            "MultiModalLLM, which loads files and downloads URLs first",
            image_index=index,
            provider=provider or None,
        )
    mimetype = block.image_mimetype or sniff_mimetype(block.image) or "image/png"
    return EncodedImage(base64=b64encode(block.image), mimetype=mimetype)
