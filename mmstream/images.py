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

__all__ = [
    "ANTHROPIC_POLICY",
    "AZURE_POLICY",
    "COMPATIBLE_POLICY",
    "GEMINI_POLICY",
    "OLLAMA_POLICY",
    "OPENAI_POLICY",
    "ImagePolicy",
    "prepare_request",
    "sniff_mimetype",
]


MB = 1_000_000
"""A megabyte as the providers' documents count it (decimal)."""


@final
@frozen(kw_only=True)
class ImagePolicy:
    """A provider's documented image limits, as data (``None`` means no limit).

    Byte limits on the whole request (``max_request_bytes``) are measured on
    the base64 text of the images, since that is what travels in the JSON body.

    Attributes:
        accepted_types: MIME types the API takes; others are converted.
        max_bytes: largest raw image, in bytes.
        max_base64_bytes: largest image measured on its base64 text (Anthropic).
        max_edge: longest side the API accepts, in pixels.
        recommended_edge: longest side worth sending (larger is downscaled to it).
        max_pixels: most pixels (width × height) the API accepts.
        max_images: most images in one request.
        max_request_bytes: most bytes of images in one request, all together (base64).
        accepts_urls: whether the API fetches http(s) URLs itself.
        fit: whether mmstream converts, rotates and shrinks images to fit.
        recommended_pixels: most pixels worth sending (larger is downscaled to it).
        many_images: above this many images in a request, ``many_images_max_edge``
            applies instead of ``max_edge`` (Anthropic: 20 images, 2000 px).
        many_images_max_edge: the longest side accepted in a many-image request.
        low_detail_edge: longest side worth sending for an image whose ``detail``
            is ``"low"`` (OpenAI looks at a 512 px version only).
        accepts_animation: whether animated GIF/WebP are taken (else the first frame
            is sent as a still image).
        fetch_max_bytes: the largest image mmstream downloads from a URL.
        fetch_timeout: seconds allowed to download one image from a URL.

    Example:
        Turn fitting off, or tighten a limit, for every call of a provider or for one call::

            policy = attrs.evolve(OPENAI_POLICY, recommended_edge=1024)
            await llm.acomplete("...", docs, image_policy=policy)
            OpenAI(model="gpt-4o", extra={"image_policy": attrs.evolve(OPENAI_POLICY, fit=False)})
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
    recommended_pixels: int | None = None
    many_images: int | None = None
    many_images_max_edge: int | None = None
    low_detail_edge: int | None = None
    accepts_animation: bool = True
    fetch_max_bytes: int = 50 * MB
    fetch_timeout: float = 30.0


_COMMON_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})

#: OpenAI (Chat Completions / Responses).
#: https://platform.openai.com/docs/guides/images-vision ("Image input requirements"):
#: PNG, JPEG, WEBP, non-animated GIF; up to 50 MB total payload per request and up to
#: 500 images per request; 20 MB per image (the older vision guide). "high" detail first
#: fits the image in 2048x2048 (then 768 px on the short side); "low" looks at 512x512.
#: Inline images go as data: URLs; http(s) URLs are fetched by OpenAI.
OPENAI_POLICY = ImagePolicy(
    accepted_types=_COMMON_TYPES,
    max_bytes=20 * MB,
    recommended_edge=2048,
    max_images=500,
    max_request_bytes=50 * MB,
    accepts_urls=True,
    low_detail_edge=512,
    accepts_animation=False,
)

#: Azure OpenAI: OpenAI's models and rules; inline images must be data: URLs (bare base64
#: is refused). https://learn.microsoft.com/azure/ai-services/openai/how-to/gpt-with-vision
#: and https://learn.microsoft.com/azure/ai-services/openai/quotas-limits (images per
#: request: 50 for GPT-4o class models, 10 for the older gpt-4 vision-preview; 20 MB each).
AZURE_POLICY = ImagePolicy(
    accepted_types=_COMMON_TYPES,
    max_bytes=20 * MB,
    recommended_edge=2048,
    max_images=50,
    max_request_bytes=50 * MB,
    accepts_urls=True,
    low_detail_edge=512,
    accepts_animation=False,
)

#: Anthropic Messages API. https://docs.anthropic.com/en/docs/build-with-claude/vision:
#: JPEG, PNG, GIF, WebP; 5 MB per image, measured on the base64 text (about 3.75 MB raw);
#: over 8000 px a side is refused, 2000 px when a request has more than 20 images; up to
#: 100 images per request; a long edge over 1568 px (or more than about 1.15 megapixels)
#: is downscaled by the API, which costs latency, so we send that size ourselves.
#: The whole request is at most 32 MB: https://docs.anthropic.com/en/api/overview
#: ("Request size limits"). The declared media_type must match the bytes.
ANTHROPIC_POLICY = ImagePolicy(
    accepted_types=_COMMON_TYPES,
    max_base64_bytes=5 * 1024 * 1024,
    max_edge=8000,
    recommended_edge=1568,
    recommended_pixels=1_150_000,
    max_images=100,
    max_request_bytes=31 * MB,  # 32 MB for the whole body: keep 1 MB for the text
    accepts_urls=True,
    many_images=20,
    many_images_max_edge=2000,
)

#: Gemini API. https://ai.google.dev/gemini-api/docs/image-understanding: PNG, JPEG, WEBP,
#: HEIC, HEIF; inline data counts against a 20 MB total request size (text included);
#: up to 3600 images per request; larger images are scaled down to fit 3072x3072.
#: Only Files API URIs are fetched by Gemini, so mmstream downloads http(s) URLs.
#: Its inline base64 must not carry a ``data:`` prefix.
GEMINI_POLICY = ImagePolicy(
    accepted_types=frozenset({"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"}),
    recommended_edge=3072,
    max_images=3600,
    max_request_bytes=19 * MB,  # 20 MB for the whole request: keep 1 MB for the text
    accepts_urls=False,
)

#: Ollama. https://github.com/ollama/ollama/blob/main/docs/api.md: ``images`` is a list of
#: base64 strings (no URLs, no data: prefix); the server decodes PNG and JPEG. No size
#: limits are documented; its vision models look at 336-1120 px, so 2048 px is plenty
#: (mmstream's choice, to keep the local request small).
OLLAMA_POLICY = ImagePolicy(
    accepted_types=frozenset({"image/png", "image/jpeg"}),
    recommended_edge=2048,
    accepts_urls=False,
    accepts_animation=False,
)

#: OpenAI-compatible servers (vLLM, llama.cpp, LM Studio): OpenAI's wire format, but not
#: every server fetches URLs (llama.cpp does not), so images are sent inline.
COMPATIBLE_POLICY = ImagePolicy(
    accepted_types=_COMMON_TYPES,
    recommended_edge=2048,
    accepts_urls=False,
    accepts_animation=False,
)


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
