"""Images, made ready for a provider: loaded, sniffed, fitted, off the event loop.

:func:`prepare_request` is the one I/O entry point. For every image of a call
it reads the file or downloads the URL (only when the provider cannot fetch
URLs itself), recognises the real type from the bytes (never from the file
name or the declared MIME type), and fits the image to the provider's
:class:`ImagePolicy`: a type the API refuses is converted (PNG keeps
transparency, JPEG is flattened on white), the EXIF orientation is applied,
a picture larger than the provider's recommended size is downscaled (aspect
kept), and it is recompressed until it fits the byte limits. An image already
within limits passes through byte for byte. Decoding, resizing, hashing and
base64 run in one worker thread (``anyio.to_thread``); results are cached by
content hash, so an image reused across calls is not encoded again.

Everything else here is pure: no anyio or httpx at import, and Pillow is
imported only when an image is touched.

Bad input (a missing file, zero bytes, truncated or corrupt data, a
decompression bomb, an unknown type, a non-http URL, a URL that answers 404 or
no image, too many images) raises :class:`~mmstream.errors.InvalidImageError`
naming the image and the reason, before anything is sent.

The policy comes from the provider's ``image_policy``; a call (or the
provider's ``extra``) may override it with the ``image_policy`` option, e.g.
``attrs.evolve(OPENAI_POLICY, fit=False)`` to send images untouched.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import math
import tempfile
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, final
from urllib.parse import urljoin, urlsplit

import attrs
from attrs import frozen

from mmstream.content import ChatMessage, ContentBlock, ImageBlock
from mmstream.errors import InvalidImageError
from mmstream.request import ChatRequest

if TYPE_CHECKING:
    import httpx
    from PIL.Image import Image as PILImage

__all__ = [
    "ANTHROPIC_POLICY",
    "AZURE_POLICY",
    "COMPATIBLE_POLICY",
    "DEFAULT_POLICY",
    "GEMINI_POLICY",
    "OLLAMA_POLICY",
    "OPENAI_POLICY",
    "FittedImage",
    "ImagePolicy",
    "base64_length",
    "clear_cache",
    "data_url",
    "encode_base64",
    "fit_image",
    "policy_for",
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
        own_urls: URL prefixes the API reads itself even when it fetches no other
            URL (Gemini: ``gs://`` and its Files API); passed on untouched.
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
    own_urls: tuple[str, ...] = ()
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
    # file_data takes Cloud Storage and Files API URIs:
    # https://ai.google.dev/gemini-api/docs/vision#upload-image
    own_urls=("gs://", "https://generativelanguage.googleapis.com/"),
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


#: the policy of a provider that declares none: common types, no limits, fitting on.
DEFAULT_POLICY = ImagePolicy()

#: the call option (and provider ``extra`` key) that overrides a provider's policy.
POLICY_OPTION = "image_policy"


# --- sniffing and base64 (pure) -------------------------------------------------------


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


def _raw_for_base64(limit: int) -> int:
    """The most raw bytes whose base64 text stays within ``limit`` characters."""
    return (limit // 4) * 3


#: base64 is encoded in slices of this many bytes (a multiple of 3), so that a
#: worker thread gives the GIL back between slices instead of holding it for
#: the whole image.
_B64_SLICE = 3 * 64 * 1024

_b64_lock = threading.Lock()
_b64_cache: OrderedDict[int, tuple[bytes, str]] = OrderedDict()
_B64_ENTRIES = 256
_B64_CHARS = 128 * 1024 * 1024
_b64_chars = 0


def _b64(data: bytes, *, share_gil: bool = False) -> str:
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
    """The base64 text of an image's bytes, from the cache :func:`prepare_request` filled.

    Providers call this in ``build_request``: for an image that went through
    :func:`prepare_request` the text was computed in the worker thread, so the
    event loop does not spend milliseconds encoding megabytes.
    """
    with _b64_lock:
        entry = _b64_cache.get(id(data))
        if entry is not None and entry[0] is data:
            _b64_cache.move_to_end(id(data))
            return entry[1]
    return _b64(data)


def _remember_base64(data: bytes) -> None:
    """Encode ``data`` now (in the worker thread) for :func:`encode_base64` to find later."""
    with _b64_lock:
        entry = _b64_cache.get(id(data))
        if entry is not None and entry[0] is data:
            _b64_cache.move_to_end(id(data))
            return
    global _b64_chars
    text = _b64(data, share_gil=True)
    with _b64_lock:
        old = _b64_cache.pop(id(data), None)
        if old is not None:
            _b64_chars -= len(old[1])
        _b64_cache[id(data)] = (data, text)  # holding data keeps its id unique
        _b64_chars += len(text)
        while len(_b64_cache) > 1 and (len(_b64_cache) > _B64_ENTRIES or _b64_chars > _B64_CHARS):
            _, (_, dropped) = _b64_cache.popitem(last=False)
            _b64_chars -= len(dropped)


def data_url(data: bytes, mimetype: str) -> str:
    """A ``data:`` URL for an image (what OpenAI and Azure take inline)."""
    return f"data:{mimetype};base64,{encode_base64(data)}"


# --- fitting one image (pure; Pillow is imported here, on first use) -------------------


@final
@frozen(kw_only=True)
class FittedImage:
    """An image made ready for a provider.

    Attributes:
        data: the bytes to send.
        mimetype: their real type.
        width: width in pixels, as it will be seen (after EXIF rotation).
        height: height in pixels, as it will be seen.
        changed: ``False`` when ``data`` is the input, byte for byte.
    """

    data: bytes = attrs.field(repr=False)
    mimetype: str
    width: int
    height: int
    changed: bool


@frozen
class _Target:
    """The limits one image must meet (derived from a policy, the image count and detail)."""

    edge: int | None  # the longest side to send
    pixels: int | None  # the most pixels to send
    hard_edge: int | None  # the longest side the API accepts (fit off: checked only)
    hard_pixels: int | None
    budget: int | None  # the most raw bytes (per-image limits and a share of the request's)
    hard_budget: int | None


def _least(*values: int | None) -> int | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _target(policy: ImagePolicy, count: int, detail: str | None, share: int | None) -> _Target:
    many = policy.many_images is not None and count > policy.many_images
    hard_edge = _least(policy.max_edge, policy.many_images_max_edge if many else None)
    low = policy.low_detail_edge if detail == "low" else None
    b64 = None if policy.max_base64_bytes is None else _raw_for_base64(policy.max_base64_bytes)
    hard_budget = _least(policy.max_bytes, b64)
    return _Target(
        edge=_least(hard_edge, policy.recommended_edge, low),
        pixels=_least(policy.max_pixels, policy.recommended_pixels),
        hard_edge=hard_edge,
        hard_pixels=policy.max_pixels,
        budget=_least(hard_budget, share),
        hard_budget=hard_budget,
    )


_PIL_FORMATS = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/gif": "GIF",
    "image/webp": "WEBP",
    "image/bmp": "BMP",
    "image/tiff": "TIFF",
    "image/avif": "AVIF",
    "image/heic": "HEIF",
    "image/heif": "HEIF",
}
_LOSSLESS_SOURCES = frozenset({"image/png", "image/gif", "image/bmp", "image/tiff"})
_REENCODABLE = frozenset({"image/png", "image/jpeg", "image/webp"})

#: EXIF orientation → the transpose that makes the picture upright.
_TRANSPOSE = {2: 0, 3: 3, 4: 1, 5: 5, 6: 4, 7: 6, 8: 2}  # PIL.Image.Transpose values

_warnings_lock = threading.Lock()


def _open(data: bytes, mimetype: str, where: str, index: int) -> PILImage:
    """Open an image with Pillow (header only), mapping its errors to InvalidImageError."""
    from PIL import Image, UnidentifiedImageError

    if mimetype in ("image/heic", "image/heif"):
        _register_heif()
    Image.init()
    fmt = _PIL_FORMATS.get(mimetype)
    if fmt is None or fmt not in Image.OPEN:
        if mimetype in ("image/heic", "image/heif"):
            raise InvalidImageError(
                f"{where} is {mimetype}, which needs the pillow-heif package to decode "
                "(pip install pillow-heif), or convert it to JPEG first",
                image_index=index,
            )
        raise InvalidImageError(
            f"{where} is {mimetype}, which this Pillow cannot decode; convert it to JPEG or PNG",
            image_index=index,
        )
    formats = [fmt]
    try:
        # Pillow warns (or raises) on images with too many pixels; make the warning an
        # error here only. catch_warnings is process-wide, hence the lock among our threads.
        with _warnings_lock, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=formats)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb(where, index, str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise InvalidImageError(
            f"{where} is truncated or corrupt (it starts like {mimetype}, but cannot be decoded)",
            image_index=index,
        ) from exc
    except Exception as exc:
        raise _corrupt(where, index, exc) from exc
    width, height = image.size
    limit = Image.MAX_IMAGE_PIXELS or 89_478_485
    if width * height > limit:  # also when the user switched Pillow's own check off
        image.close()
        raise _bomb(where, index, f"{width}x{height} pixels")
    return image


def _register_heif() -> bool:
    """Let Pillow open HEIC/HEIF when the optional pillow-heif package is installed."""
    try:
        import pillow_heif  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def _bomb(where: str, index: int, detail: str) -> InvalidImageError:
    return InvalidImageError(
        f"{where} is too large to decode safely, a possible decompression bomb ({detail})",
        image_index=index,
    )


def _corrupt(where: str, index: int, exc: BaseException) -> InvalidImageError:
    return InvalidImageError(
        f"{where} is truncated or corrupt ({type(exc).__name__}: {exc})", image_index=index
    )


def _orientation(image: PILImage) -> int:
    try:
        value = image.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block: treat the picture as upright
        return 1
    return value if isinstance(value, int) and value in range(1, 9) else 1


def _has_alpha(image: PILImage) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def _scaled_size(width: int, height: int, edge: int | None, pixels: int | None) -> tuple[int, int]:
    scale = 1.0
    if edge is not None and max(width, height) > edge:
        scale = edge / max(width, height)
    if pixels is not None and width * height * scale * scale > pixels:
        scale = math.sqrt(pixels / (width * height))
    if scale >= 1.0:
        return width, height
    return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))


def fit_image(
    data: bytes,
    policy: ImagePolicy,
    *,
    count: int = 1,
    detail: str | None = None,
    share: int | None = None,
    where: str = "image 1",
    index: int = 0,
) -> FittedImage:
    """Fit one image to a provider's policy (pure and blocking: call it in a worker thread).

    Args:
        data: the image's bytes.
        policy: the provider's limits.
        count: how many images the request has (some limits depend on it).
        detail: the block's ``detail`` (``"low"`` applies ``low_detail_edge``).
        share: the most raw bytes this image may take of the request's budget.
        where: how to name the image in errors.
        index: the image's position in the request, for errors.

    Returns:
        The :class:`FittedImage`; ``changed`` is ``False`` when the bytes pass through.

    Raises:
        InvalidImageError: the data is empty, of no known type, corrupt, a
            decompression bomb, or cannot be made to fit.
    """
    if not data:
        raise InvalidImageError(f"{where} is empty (0 bytes)", image_index=index)
    mimetype = sniff_mimetype(data)
    if mimetype is None:
        raise InvalidImageError(
            f"{where} is not an image of a known type (it starts with {data[:8]!r})",
            image_index=index,
        )
    target = _target(policy, count, detail, share)
    if not policy.fit:
        return _check_unfitted(data, mimetype, policy, target, where, index)
    key = (
        hashlib.sha256(data).digest(),
        mimetype,
        target,
        policy.accepted_types,
        policy.accepts_animation,
    )
    cached = _cache_get(key)
    if cached is not None:
        return cached if cached.changed else attrs.evolve(cached, data=data)
    fitted = _fit(data, mimetype, policy, target, where, index)
    _cache_put(key, fitted)
    return fitted


def _check_unfitted(
    data: bytes, mimetype: str, policy: ImagePolicy, target: _Target, where: str, index: int
) -> FittedImage:
    """Fitting is off: the bytes go as they are, but a limit the API enforces is checked."""
    what = f"{where} ({mimetype}, {len(data)} bytes)"
    off = "; turn image fitting on (the default) or send a smaller image"
    if mimetype not in policy.accepted_types:
        raise InvalidImageError(
            f"{what} is of a type the provider does not take "
            f"({', '.join(sorted(policy.accepted_types))}){off}",
            image_index=index,
        )
    if target.hard_budget is not None and len(data) > target.hard_budget:
        raise InvalidImageError(
            f"{what} is over the provider's limit of {_describe_budget(policy)}{off}",
            image_index=index,
        )
    width = height = 0
    if target.hard_edge is not None or target.hard_pixels is not None:
        with _open(data, mimetype, where, index) as image:
            width, height = image.size
        too_long = target.hard_edge is not None and max(width, height) > target.hard_edge
        too_many = target.hard_pixels is not None and width * height > target.hard_pixels
        if too_long or too_many:
            raise InvalidImageError(
                f"{what} is {width}x{height} pixels, over the provider's limit{off}",
                image_index=index,
            )
    return FittedImage(data=data, mimetype=mimetype, width=width, height=height, changed=False)


def _describe_budget(policy: ImagePolicy) -> str:
    if policy.max_base64_bytes is not None and (
        policy.max_bytes is None or _raw_for_base64(policy.max_base64_bytes) < policy.max_bytes
    ):
        return f"{policy.max_base64_bytes} bytes of base64 per image"
    return f"{policy.max_bytes} bytes per image"


def _fit(
    data: bytes, mimetype: str, policy: ImagePolicy, target: _Target, where: str, index: int
) -> FittedImage:
    if (
        mimetype in ("image/heic", "image/heif")
        and mimetype in policy.accepted_types
        and (target.budget is None or len(data) <= target.budget)
        and not _register_heif()
    ):
        # The provider reads HEIC (Gemini) but Pillow cannot without pillow-heif:
        # send it as it is rather than refuse it.
        return FittedImage(data=data, mimetype=mimetype, width=0, height=0, changed=False)
    # Not closed with ``with``: the picture is read from memory, and closing would
    # invalidate the decoded pixels we go on using.
    image = _open(data, mimetype, where, index)
    width, height = image.size
    orientation = _orientation(image)
    animated = bool(getattr(image, "is_animated", False))
    size = _scaled_size(width, height, target.edge, target.pixels)
    needs = (
        mimetype not in policy.accepted_types
        or orientation != 1
        or size != (width, height)
        or (target.budget is not None and len(data) > target.budget)
        or (animated and not policy.accepts_animation)
    )
    try:
        if not needs:
            _verify(image, mimetype)
            return FittedImage(
                data=data, mimetype=mimetype, width=width, height=height, changed=False
            )
        picture = _decode(image, mimetype, size)
    except Exception as exc:
        raise _corrupt(where, index, exc) from exc
    if picture.width < size[0] or picture.height < size[1]:
        size = picture.size  # a JPEG decoded a little under the target: never upscale
    out_type = _output_type(mimetype, policy, _has_alpha(picture))
    if out_type is None:
        raise InvalidImageError(
            f"{where} ({mimetype}) cannot be converted to a type the provider takes "
            f"({', '.join(sorted(policy.accepted_types))})",
            image_index=index,
        )
    transpose = _TRANSPOSE.get(orientation)
    return _encode(picture, size, transpose, out_type, policy, target, where, index)


def _verify(image: PILImage, mimetype: str) -> None:
    """Decode the whole image (JPEG at 1/8 scale: fast) so that truncation shows now."""
    if mimetype == "image/jpeg":
        image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
    image.load()


#: a JPEG may be decoded at a DCT scale down to this fraction of the target size.
#: Decoding 4000x3000 at 1/2 for a 2048 px target is four times less work, and the
#: allocation Pillow zeroes while it holds the GIL is four times smaller.
_DRAFT_SLACK = 0.95


def _decode(image: PILImage, mimetype: str, size: tuple[int, int]) -> PILImage:
    """The first frame, decoded (a JPEG at the smallest DCT scale near ``size``)."""
    if mimetype == "image/jpeg" and size != image.size:
        wanted = (math.ceil(size[0] * _DRAFT_SLACK), math.ceil(size[1] * _DRAFT_SLACK))
        image.draft(image.mode if image.mode in ("RGB", "L") else "RGB", wanted)
    _allocate_off_gil(image)
    image.load()
    if image.mode in ("RGB", "RGBA", "L"):
        return image
    if _has_alpha(image):
        return image.convert("RGBA")
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return image.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    return image.convert("RGB")


def _allocate_off_gil(image: PILImage) -> None:
    """Give Pillow the memory for a large decode, filled without holding the GIL.

    Pillow's own allocation for ``load()`` is a ``calloc``; when the C library
    serves it from the heap it zeroes every byte while holding the GIL, which
    stalled the event loop about 25 ms for 12 megapixels (measured). ``core.fill``
    makes the same memory and writes it with the GIL released. If Pillow's
    internals ever change shape, this does nothing and Pillow allocates as usual.
    """
    if image.width * image.height < 1_000_000 or image.mode not in ("RGB", "RGBA", "L"):
        return
    try:
        from PIL import Image

        if getattr(image, "_im", True) is not None:
            return
        image.im = Image.core.fill(image.mode, image.size, 0)  # type: ignore[attr-defined]
    except Exception:
        return


def _output_type(source: str, policy: ImagePolicy, alpha: bool) -> str | None:
    accepted = policy.accepted_types
    if source in accepted and source in _REENCODABLE:
        return source
    preference = ["image/png", "image/jpeg", "image/webp"]
    if not alpha and source not in _LOSSLESS_SOURCES:
        preference = ["image/jpeg", "image/webp", "image/png"]  # a photo: keep it lossy
    return next((t for t in preference if t in accepted), None)


def _flatten(picture: PILImage) -> PILImage:
    """Drop transparency by painting the picture on white (for JPEG)."""
    from PIL import Image

    if picture.mode == "RGB" or picture.mode == "L":
        return picture
    rgba = picture.convert("RGBA")
    white = Image.new("RGB", rgba.size, (255, 255, 255))
    white.paste(rgba, mask=rgba.getchannel("A"))
    return white


_JPEG_QUALITIES = (85, 75, 65, 50, 35)
_MAX_SHRINKS = 8


def _encode(
    picture: PILImage,
    size: tuple[int, int],
    transpose: int | None,
    out_type: str,
    policy: ImagePolicy,
    target: _Target,
    where: str,
    index: int,
) -> FittedImage:
    """Resize, rotate and encode; recompress, then shrink, until the bytes fit the budget."""
    from PIL import Image

    icc = picture.info.get("icc_profile")
    budget = target.budget
    for _ in range(_MAX_SHRINKS):
        frame = picture
        if frame.size != size:
            frame = frame.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
        if transpose is not None:
            frame = frame.transpose(Image.Transpose(transpose))
        kind = out_type
        if kind == "image/png":
            data = _save(frame, "PNG", icc, compress_level=3)
            if budget is not None and len(data) > budget and "image/jpeg" in policy.accepted_types:
                kind, frame = "image/jpeg", _flatten(frame)  # a photo in a PNG: try JPEG
        if kind == "image/jpeg":
            frame = _flatten(frame)
            for quality in _JPEG_QUALITIES:
                data = _save(frame, "JPEG", icc, quality=quality)
                if budget is None or len(data) <= budget:
                    break
        elif kind == "image/webp":
            for quality in _JPEG_QUALITIES:
                data = _save(frame, "WEBP", icc, quality=quality, method=4)
                if budget is None or len(data) <= budget:
                    break
        if budget is None or len(data) <= budget:
            width, height = frame.size
            return FittedImage(data=data, mimetype=kind, width=width, height=height, changed=True)
        ratio = max(0.5, min(0.9, math.sqrt(budget / len(data)) * 0.95))
        size = (max(1, math.floor(size[0] * ratio)), max(1, math.floor(size[1] * ratio)))
    raise InvalidImageError(
        f"{where} could not be compressed below {budget} bytes", image_index=index
    )


def _save(frame: PILImage, fmt: str, icc: Any, **params: Any) -> bytes:
    """Encode ``frame``; through a real (unlinked) temporary file, on purpose.

    Pillow releases the GIL while it encodes into a file descriptor, but holds it
    for the whole encoding into an ``io.BytesIO`` (measured: a 3-megapixel JPEG
    stalls the event loop ~20 ms that way, ~1-5 ms through a file).
    """
    if icc:
        params["icc_profile"] = icc
    with tempfile.TemporaryFile() as file:
        frame.save(file, format=fmt, **params)
        file.seek(0)
        return file.read()


# --- the cache of fitted images -------------------------------------------------------

_CACHE_ENTRIES = 64
_CACHE_BYTES = 256 * 1024 * 1024
_cache_lock = threading.Lock()
_cache: OrderedDict[object, FittedImage] = OrderedDict()
_cache_size = 0


def _cache_get(key: object) -> FittedImage | None:
    with _cache_lock:
        fitted = _cache.get(key)
        if fitted is not None:
            _cache.move_to_end(key)
        return fitted


def _cache_put(key: object, fitted: FittedImage) -> None:
    global _cache_size
    cost = len(fitted.data) if fitted.changed else 0  # an unchanged image is the caller's
    if cost > _CACHE_BYTES // 4:
        return
    if not fitted.changed:
        fitted = attrs.evolve(fitted, data=b"")  # keep only the verdict, not the bytes
    with _cache_lock:
        old = _cache.pop(key, None)
        if old is not None:
            _cache_size -= len(old.data)
        _cache[key] = fitted
        _cache_size += cost
        while len(_cache) > _CACHE_ENTRIES or _cache_size > _CACHE_BYTES:
            _, dropped = _cache.popitem(last=False)
            _cache_size -= len(dropped.data)


def clear_cache() -> None:
    """Forget every fitted image and base64 text (for tests and benchmarks)."""
    global _cache_size, _b64_chars
    with _cache_lock:
        _cache.clear()
        _cache_size = 0
    with _b64_lock:
        _b64_cache.clear()
        _b64_chars = 0


# --- a whole request ------------------------------------------------------------------


@frozen
class _Slot:
    """One image of the request, where it sits and how to name it."""

    message: int
    block: int
    index: int
    image: ImageBlock

    @property
    def where(self) -> str:
        name = f"image {self.index + 1}"
        image = self.image
        if image.path is not None:
            return f"{name} ({image.path})"
        if image.url is not None:
            url = image.url if len(image.url) <= 120 else image.url[:117] + "..."
            return f"{name} ({url})"
        if image.image is not None:
            return f"{name} ({len(image.image)} bytes)"
        return name


def _slots(request: ChatRequest) -> list[_Slot]:
    slots: list[_Slot] = []
    for m, message in enumerate(request.messages):
        for b, block in enumerate(message.blocks):
            if isinstance(block, ImageBlock):
                slots.append(_Slot(m, b, len(slots), block))
    return slots


def policy_for(request: ChatRequest) -> ImagePolicy:
    """The policy for a call: its ``image_policy`` option, else the provider's, else the default."""
    override = request.options.extra.get(POLICY_OPTION)
    if override is not None:
        if not isinstance(override, ImagePolicy):
            raise InvalidImageError(
                f"the {POLICY_OPTION} option must be an ImagePolicy, not {type(override).__name__}"
            )
        return override
    policy = getattr(request.provider, "image_policy", None)
    return policy if isinstance(policy, ImagePolicy) else DEFAULT_POLICY


def _without_option(request: ChatRequest) -> ChatRequest:
    extra = request.options.extra
    if POLICY_OPTION not in extra:
        return request
    options = attrs.evolve(
        request.options, extra={k: v for k, v in extra.items() if k != POLICY_OPTION}
    )
    return attrs.evolve(request, options=options)


def _check_count(slots: Sequence[_Slot], policy: ImagePolicy, provider: str) -> None:
    if policy.max_images is not None and len(slots) > policy.max_images:
        raise InvalidImageError(
            f"the request has {len(slots)} images, over {provider}'s limit of "
            f"{policy.max_images} per request; send at most {policy.max_images}",
            image_index=policy.max_images,
            provider=provider,
        )


def _check_url(slot: _Slot, policy: ImagePolicy, provider: str) -> None:
    url = slot.image.url
    if url is None or slot.image.image is not None or slot.image.path is not None:
        return
    if url.startswith(policy.own_urls):
        return
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise InvalidImageError(
            f"{slot.where}: only http and https image URLs are supported, "
            f"not {scheme or 'a bare path'!r}; pass a local file as path/image_path instead",
            image_index=slot.index,
            provider=provider,
        )


def _needs_fetch(slot: _Slot, policy: ImagePolicy) -> bool:
    image = slot.image
    return (
        image.image is None
        and image.path is None
        and image.url is not None
        and not policy.accepts_urls
        and not image.url.startswith(policy.own_urls)
    )


async def prepare_request(
    request: ChatRequest, client: httpx.AsyncClient | None = None
) -> ChatRequest:
    """The request with every image loaded, checked and fitted to the provider's policy.

    URLs are passed on to a provider that fetches them itself and downloaded
    (with ``client``, or a short-lived client of its own) for one that needs
    inline data. The image work runs in one worker thread.

    Args:
        request: the call.
        client: the HTTP client to download images with (the transport's).

    Returns:
        The same request when it has no images; else a copy whose images carry
        their fitted bytes and real MIME type (URLs the provider fetches stay URLs).

    Raises:
        InvalidImageError: an image is missing, empty, corrupt, of no known type,
            too large to decode, at a bad URL, or there are too many; nothing is sent.
    """
    policy = policy_for(request)
    request = _without_option(request)
    slots = _slots(request)
    if not slots:
        return request
    provider = request.provider_name
    _check_count(slots, policy, provider)
    for slot in slots:
        _check_url(slot, policy, provider)
    downloads = [slot for slot in slots if _needs_fetch(slot, policy)]
    fetched: dict[int, bytes] = {}
    if downloads:
        fetched = await _fetch_all(downloads, policy, client, provider)

    import anyio.to_thread  # here, so that the rest of this module stays pure

    return await anyio.to_thread.run_sync(_prepare, request, slots, policy, fetched)


def _prepare(
    request: ChatRequest, slots: list[_Slot], policy: ImagePolicy, fetched: dict[int, bytes]
) -> ChatRequest:
    """The blocking half of :func:`prepare_request` (runs in a worker thread)."""
    provider = request.provider_name
    try:
        return _prepare_images(request, slots, policy, fetched)
    except InvalidImageError as exc:
        exc.provider = exc.provider or provider
        raise


def _prepare_images(
    request: ChatRequest, slots: list[_Slot], policy: ImagePolicy, fetched: dict[int, bytes]
) -> ChatRequest:
    count = len(slots)
    inline: dict[int, bytes] = {}
    for slot in slots:
        data = fetched.get(slot.index, slot.image.image)
        if data is None and slot.image.path is not None:
            data = _read(slot)
        if data is not None:
            inline[slot.index] = data
    fitted: dict[int, FittedImage] = {}
    for slot in slots:
        if slot.index in inline:
            fitted[slot.index] = fit_image(
                inline[slot.index],
                policy,
                count=count,
                detail=slot.image.detail,
                where=slot.where,
                index=slot.index,
            )
    limit = policy.max_request_bytes
    if limit is not None and _total(fitted) > limit:
        if policy.fit:
            fair = _raw_for_base64(limit // max(1, len(fitted)))
            for slot in slots:
                if slot.index in fitted and len(fitted[slot.index].data) > fair:
                    fitted[slot.index] = fit_image(
                        inline[slot.index],
                        policy,
                        count=count,
                        detail=slot.image.detail,
                        share=fair,
                        where=slot.where,
                        index=slot.index,
                    )
        if _total(fitted) > limit:
            raise InvalidImageError(
                f"the {len(fitted)} images together take {_total(fitted)} bytes of base64, "
                f"over the provider's limit of {limit} per request; send fewer or smaller images",
            )
    for image in fitted.values():
        _remember_base64(image.data)
    return _rebuild(request, slots, fitted)


def _total(fitted: dict[int, FittedImage]) -> int:
    return sum(base64_length(len(image.data)) for image in fitted.values())


def _read(slot: _Slot) -> bytes:
    assert slot.image.path is not None
    try:
        return Path(slot.image.path).read_bytes()
    except OSError as exc:
        raise InvalidImageError(
            f"{slot.where} cannot be read: {exc.strerror or exc}; check the path",
            image_index=slot.index,
        ) from exc


def _rebuild(
    request: ChatRequest, slots: list[_Slot], fitted: dict[int, FittedImage]
) -> ChatRequest:
    by_message: dict[int, dict[int, ImageBlock]] = {}
    for slot in slots:
        image = fitted.get(slot.index)
        if image is None:
            continue  # a URL the provider fetches itself
        block = attrs.evolve(
            slot.image, image=image.data, path=None, url=None, image_mimetype=image.mimetype
        )
        by_message.setdefault(slot.message, {})[slot.block] = block
    messages: list[ChatMessage] = []
    for m, message in enumerate(request.messages):
        changes = by_message.get(m)
        if not changes:
            messages.append(message)
            continue
        blocks: list[ContentBlock] = [
            changes.get(b, block) for b, block in enumerate(message.blocks)
        ]
        messages.append(attrs.evolve(message, blocks=tuple(blocks)))
    return attrs.evolve(request, messages=tuple(messages))


# --- downloading (the I/O half) -------------------------------------------------------

_MAX_REDIRECTS = 5
#: the only headers an image download sends.
_FETCH_HEADERS = frozenset({"host", "accept", "accept-encoding", "user-agent", "connection"})


async def _fetch_all(
    slots: list[_Slot], policy: ImagePolicy, client: httpx.AsyncClient | None, provider: str
) -> dict[int, bytes]:
    import httpx

    own = client is None
    http = httpx.AsyncClient(follow_redirects=False) if client is None else client
    try:
        fetched: dict[int, bytes] = {}
        for slot in slots:
            try:
                fetched[slot.index] = await _fetch(http, slot, policy)
            except InvalidImageError as exc:
                exc.provider = provider
                raise
        return fetched
    finally:
        if own:
            await http.aclose()


async def _fetch(client: httpx.AsyncClient, slot: _Slot, policy: ImagePolicy) -> bytes:
    """Download one image: http(s) only, bounded in size and time, an image type or bytes."""
    import anyio
    import httpx

    url = slot.image.url
    assert url is not None
    where, index = slot.where, slot.index
    timeout = policy.fetch_timeout
    try:
        with anyio.fail_after(timeout):
            for _ in range(_MAX_REDIRECTS + 1):
                request = client.build_request(
                    "GET", url, headers={"accept": "image/*"}, timeout=timeout
                )
                # The transport's client may carry headers and cookies meant for the
                # provider (a gateway's key, say): none of them go to an image host.
                for name in list(request.headers):
                    if name.lower() not in _FETCH_HEADERS:
                        del request.headers[name]
                response = await client.send(request, stream=True, follow_redirects=False)
                try:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        if urlsplit(url).scheme.lower() not in ("http", "https"):
                            raise InvalidImageError(
                                f"{where} redirects to a non-http URL ({url[:120]})",
                                image_index=index,
                            )
                        continue
                    return await _read_image_body(response, where, index, policy.fetch_max_bytes)
                finally:
                    await response.aclose()
            raise InvalidImageError(
                f"{where} redirects more than {_MAX_REDIRECTS} times", image_index=index
            )
    except TimeoutError as exc:
        raise InvalidImageError(
            f"{where} could not be downloaded within {timeout:g} s; "
            "download it yourself or raise fetch_timeout in the image policy",
            image_index=index,
        ) from exc
    except httpx.HTTPError as exc:
        raise InvalidImageError(
            f"{where} could not be downloaded ({type(exc).__name__}: {exc})", image_index=index
        ) from exc


async def _read_image_body(response: httpx.Response, where: str, index: int, limit: int) -> bytes:
    if response.status_code != 200:
        raise InvalidImageError(
            f"{where} could not be downloaded: the server answered HTTP {response.status_code}",
            image_index=index,
        )
    content_type = response.headers.get("content-type", "").partition(";")[0].strip().lower()
    if content_type and not (
        content_type.startswith("image/")
        or content_type in ("application/octet-stream", "binary/octet-stream")
    ):
        raise InvalidImageError(
            f"{where} is not an image: the server sent {content_type}", image_index=index
        )
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise InvalidImageError(
            f"{where} is {int(declared)} bytes, over the download limit of {limit} bytes",
            image_index=index,
        )
    chunks: list[bytes] = []
    size = 0
    body = response.aiter_bytes()
    try:
        async for chunk in body:
            size += len(chunk)
            if size > limit:
                raise InvalidImageError(
                    f"{where} is over the download limit of {limit} bytes", image_index=index
                )
            chunks.append(chunk)
    finally:
        await _end(response, body)
    return b"".join(chunks)


async def _end(response: httpx.Response, body: AsyncIterator[bytes]) -> None:
    """Close the response, then end httpx's nested body generators (trio warns otherwise).

    httpx never closes the async generators it reads a body through; once the
    response is closed, one more step ends them all (as the transport does).
    """
    import anyio

    with anyio.CancelScope(shield=True):
        await response.aclose()
        with contextlib.suppress(Exception):
            await body.__anext__()
            await body.aclose()  # type: ignore[attr-defined]
