"""Fitting one image to a provider's policy with Pillow (pure and blocking).

[`fit_image`][mmstream.media.fit.fit_image] converts a type the API refuses
(PNG keeps transparency, JPEG is flattened on white), applies the EXIF
orientation, downscales a picture larger than the provider's recommended size
(aspect kept) and recompresses until the bytes fit; an image already within
limits passes through byte for byte. Results go to the one
[`MediaCache`][mmstream.media.cache.MediaCache], with the base64 text.

Pillow is imported here on first use only. Three workarounds keep a worker
thread from stalling the event loop while it holds the GIL: JPEGs are decoded
at a reduced DCT scale where that is enough, large decodes get memory filled
without the GIL (``_allocate_off_gil``, which relies on Pillow internals that
a test watches), and encoding goes through a real file (Pillow releases the
GIL while writing to a file descriptor, not to ``io.BytesIO``).
"""

from __future__ import annotations

import hashlib
import io
import math
import tempfile
import threading
import warnings
from typing import TYPE_CHECKING, Any, final

import attrs
from attrs import frozen

from mmstream.content import EncodedImage
from mmstream.errors import InvalidImageError
from mmstream.media.cache import CacheEntry, MediaCache, shared_cache
from mmstream.media.policy import ImagePolicy
from mmstream.media.sniff import b64encode, raw_for_base64, sniff_mimetype

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = [
    "SMALL_BYTES",
    "SMALL_PIXELS",
    "FittedImage",
    "fit_entry",
    "fit_image",
    "load_pillow",
    "pillow_loaded",
]

#: an image this small (in bytes and, from its header, in pixels) that needs no change
#: is checked on the event loop: decoding it costs less than a thread hop.
SMALL_BYTES = 64 * 1024
SMALL_PIXELS = 256 * 256


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


_pillow = False


def pillow_loaded() -> bool:
    """Whether Pillow and its format plugins are imported (so opening costs microseconds)."""
    return _pillow


def load_pillow() -> None:
    """Import Pillow and its plugins (tens of milliseconds the first time: in a worker thread)."""
    global _pillow
    from PIL import Image

    Image.init()
    _pillow = True


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
    b64 = None if policy.max_base64_bytes is None else raw_for_base64(policy.max_base64_bytes)
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
    cache: MediaCache | None = None,
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
        cache: where results are kept (the shared cache by default).

    Returns:
        The [`FittedImage`][mmstream.media.fit.FittedImage]; ``changed`` is
        ``False`` when the bytes pass through (then ``data`` is the input object).

    Raises:
        InvalidImageError: the data is empty, of no known type, corrupt, a
            decompression bomb, or cannot be made to fit.
    """
    entry = fit_entry(
        data, policy, count=count, detail=detail, share=share, where=where, index=index, cache=cache
    )
    assert entry is not None
    return FittedImage(
        data=data if entry.data is None else entry.data,
        mimetype=entry.encoded.mimetype,
        width=entry.width,
        height=entry.height,
        changed=entry.data is not None,
    )


_HEIF = frozenset({"image/heic", "image/heif"})


def fit_entry(
    data: bytes,
    policy: ImagePolicy,
    *,
    count: int = 1,
    detail: str | None = None,
    share: int | None = None,
    where: str = "image 1",
    index: int = 0,
    cache: MediaCache | None = None,
    quick: bool = False,
    share_gil: bool = False,
) -> CacheEntry | None:
    """Fit one image and base64-encode the result: what a provider's body needs.

    With ``quick`` (on the event loop) only cheap work is done: ``None`` means
    the image is large, must change, or Pillow is not loaded yet, so the call
    goes to a worker thread. ``share_gil`` encodes base64 in GIL-sized slices.
    """
    if not data:
        raise InvalidImageError(f"{where} is empty (0 bytes)", image_index=index)
    if quick and len(data) > SMALL_BYTES:
        return None
    mimetype = sniff_mimetype(data)
    if mimetype is None:
        raise InvalidImageError(
            f"{where} is not an image of a known type (it starts with {data[:8]!r})",
            image_index=index,
        )
    target = _target(policy, count, detail, share)
    if not policy.fit:
        opens = target.hard_edge is not None or target.hard_pixels is not None
        if quick and opens and not _pillow:
            return None
        checked = _check_unfitted(data, mimetype, policy, target, where, index)
        encoded = EncodedImage(base64=b64encode(data, share_gil=share_gil), mimetype=mimetype)
        return CacheEntry(data=None, width=checked.width, height=checked.height, encoded=encoded)
    cache = shared_cache() if cache is None else cache
    key = (
        hashlib.sha256(data).digest(),
        mimetype,
        target,
        policy.accepted_types,
        policy.accepts_animation,
    )
    entry = cache.get(key)
    if entry is not None:
        return entry
    if quick and (not _pillow or mimetype in _HEIF):
        return None
    result = _fit(data, mimetype, policy, target, where, index, quick=quick)
    if result is None:
        return None
    entry = CacheEntry(
        data=result.data if result.changed else None,
        width=result.width,
        height=result.height,
        encoded=EncodedImage(
            base64=b64encode(result.data, share_gil=share_gil), mimetype=result.mimetype
        ),
    )
    cache.put(key, entry)
    return entry


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
        policy.max_bytes is None or raw_for_base64(policy.max_base64_bytes) < policy.max_bytes
    ):
        return f"{policy.max_base64_bytes} bytes of base64 per image"
    return f"{policy.max_bytes} bytes per image"


def _fit(
    data: bytes,
    mimetype: str,
    policy: ImagePolicy,
    target: _Target,
    where: str,
    index: int,
    *,
    quick: bool = False,
) -> FittedImage | None:
    """The fitted image; with ``quick``, ``None`` as soon as real work shows up."""
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
    if quick and width * height > SMALL_PIXELS:
        image.close()
        return None
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
    if quick and needs:
        image.close()
        return None
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
