"""A call's images made ready for its provider: the one I/O entry point of the media package.

[`prepare_request`][mmstream.media.prepare.prepare_request] reads each image's
file, or downloads its URL when the provider cannot fetch URLs itself (through
[`mmstream.media.download`][mmstream.media.download], under the address
rules), recognises the real type from the bytes, fits it to the provider's
[`ImagePolicy`][mmstream.media.policy.ImagePolicy] and encodes it. The
prepared request's image blocks carry their wire form
([`EncodedImage`][mmstream.content.EncodedImage]), so the provider only copies it.

Where the work runs: a small image that needs no change (a few KB: a header
sniff, a decode of a few thousand pixels, base64) is done on the event loop,
since that costs less than a thread hop; everything that can stall the loop
(reading files, decoding, resizing, large encodes) goes to one worker thread
per call, through a limiter bounded per event loop. The whole preparation runs
under the call's deadline, and a worker is abandoned (and stops between
images) when the call is cancelled.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, final
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
import attrs
from anyio.lowlevel import RunVar
from attrs import frozen

from mmstream.content import ChatMessage, ContentBlock, ImageBlock
from mmstream.errors import (
    APITimeoutError,
    ForbiddenURLError,
    InvalidImageError,
    InvalidRequestError,
)
from mmstream.media.cache import CacheEntry, MediaCache
from mmstream.media.fit import SMALL_BYTES, fit_entry, load_pillow, pillow_loaded
from mmstream.media.netguard import Denied, URLAccess, redact_url
from mmstream.media.policy import DEFAULT_POLICY, POLICY_OPTION, URL_ACCESS_OPTION, ImagePolicy
from mmstream.media.sniff import raw_for_base64
from mmstream.request import ChatRequest

if TYPE_CHECKING:
    import httpx

    from mmstream.transport import Transport

__all__ = ["WORKER_THREADS", "policy_for", "prepare_request", "url_access_for"]

#: at most this many worker threads fit images at once, per event loop.
WORKER_THREADS = max(1, min(4, os.cpu_count() or 1))

_LIMITER: RunVar[anyio.CapacityLimiter] = RunVar("mmstream_media_limiter")
_PILLOW_LOCK: RunVar[anyio.Lock] = RunVar("mmstream_media_pillow_lock")


def _limiter() -> anyio.CapacityLimiter:
    """This event loop's limiter for image work in threads."""
    try:
        return _LIMITER.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(WORKER_THREADS)
        _LIMITER.set(limiter)
        return limiter


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
            return f"{name} ({redact_url(image.url)})"  # never a query: it may hold a token
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


def url_access_for(request: ChatRequest, policy: ImagePolicy) -> URLAccess:
    """Where a call may download from: its ``url_access`` option, else the policy's."""
    override = request.options.extra.get(URL_ACCESS_OPTION)
    if override is None:
        return policy.url_access
    if not isinstance(override, URLAccess):
        raise InvalidRequestError(
            f"the {URL_ACCESS_OPTION} option must be a URLAccess, not {type(override).__name__}; "
            "e.g. url_access=mmstream.URLAccess(allow=['images.internal'])"
        )
    return override


_OPTIONS = (POLICY_OPTION, URL_ACCESS_OPTION)


def _without_options(request: ChatRequest) -> ChatRequest:
    extra = request.options.extra
    if not any(name in extra for name in _OPTIONS):
        return request
    kept = {k: v for k, v in extra.items() if k not in _OPTIONS}
    return attrs.evolve(request, options=attrs.evolve(request.options, extra=kept))


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
    request: ChatRequest,
    *,
    transport: Transport | None = None,
    deadline: float | None = None,
    cache: MediaCache | None = None,
) -> ChatRequest:
    """The request with every image loaded, checked, fitted and encoded for its provider.

    URLs are passed on to a provider that fetches them itself, and downloaded
    (under the call's [`URLAccess`][mmstream.media.netguard.URLAccess]) for one
    that needs inline data.

    Args:
        request: the call (its ``image_policy`` and ``url_access`` options are
            consumed here and removed).
        transport: downloads go through its ``http_transport`` when it was given
            one, else through mmstream's guarded pool of this event loop.
        deadline: when the call's total timeout ends (``anyio.current_time()``
            clock); preparing past it raises ``APITimeoutError(kind="total")``.
            The caller's own cancel scopes apply as well.
        cache: the cache of prepared images (the shared one by default).

    Returns:
        The same request when it has no images; else a copy whose inline image
        blocks carry their fitted bytes, real MIME type and wire form
        (``ImageBlock.encoded``); URLs the provider fetches stay URLs.

    Raises:
        InvalidImageError: an image is missing, empty, corrupt, of no known type,
            too large to decode, at a bad URL, or there are too many; nothing is sent.
        ForbiddenURLError: an image URL points inside the server's network (or
            carries credentials) and ``url_access`` does not allow it.
        APITimeoutError: the deadline passed first (``kind="total"``).
    """
    policy = policy_for(request)
    access = url_access_for(request, policy)
    request = _without_options(request)
    slots = _slots(request)
    if not slots:
        return request
    provider = request.provider_name
    _check_count(slots, policy, provider)
    for slot in slots:
        _check_url(slot, policy, provider)
    try:
        if deadline is None:
            return await _prepare(request, slots, policy, access, transport, cache)
        with anyio.CancelScope(deadline=deadline) as scope:
            return await _prepare(request, slots, policy, access, transport, cache)
    except (InvalidImageError, ForbiddenURLError) as exc:
        exc.provider = exc.provider or provider
        raise
    assert scope.cancelled_caught  # only the deadline ends the scope without a return
    raise APITimeoutError(
        f"{provider}: the call's total timeout passed while its images were being prepared "
        "(downloads, fitting); raise the total timeout, or send smaller images",
        kind="total",
        provider=provider,
    )


async def _prepare(
    request: ChatRequest,
    slots: list[_Slot],
    policy: ImagePolicy,
    access: URLAccess,
    transport: Transport | None,
    cache: MediaCache | None,
) -> ChatRequest:
    fetched: dict[int, bytes] = {}
    downloads = [slot for slot in slots if _needs_fetch(slot, policy)]
    if downloads:
        http = None if transport is None else transport.http_transport
        for slot in downloads:
            fetched[slot.index] = await _fetch(slot, policy, access, http)
    inline: dict[int, bytes] = {}
    for slot in slots:
        data = fetched.get(slot.index, slot.image.image)
        if data is not None:
            inline[slot.index] = data
    count = len(slots)
    if policy.fit and not pillow_loaded() and any(len(d) <= SMALL_BYTES for d in inline.values()):
        await _load_pillow()
    done: dict[int, CacheEntry] = {}
    for slot in slots:  # on the event loop: only small images that pass unchanged
        data = inline.get(slot.index)
        if data is None:
            continue
        entry = fit_entry(
            data,
            policy,
            count=count,
            detail=slot.image.detail,
            where=slot.where,
            index=slot.index,
            cache=cache,
            quick=True,
        )
        if entry is not None:
            done[slot.index] = entry
    wanted = [s for s in slots if s.index in inline or s.image.path is not None]
    if len(done) < len(wanted) or _over_limit(done, policy):
        job = _Job(slots, policy, inline, done, cache, threading.Event())
        try:
            done = await anyio.to_thread.run_sync(
                job.run, abandon_on_cancel=True, limiter=_limiter()
            )
        finally:
            job.stop.set()  # an abandoned worker stops at the next image
    return _rebuild(request, slots, done, inline)


async def _load_pillow() -> None:
    """Import Pillow once per process, in a worker thread (one for every waiting call)."""
    try:
        lock = _PILLOW_LOCK.get()
    except LookupError:
        lock = anyio.Lock()
        _PILLOW_LOCK.set(lock)
    async with lock:
        if not pillow_loaded():
            await anyio.to_thread.run_sync(load_pillow, abandon_on_cancel=True, limiter=_limiter())


def _over_limit(done: Mapping[int, CacheEntry], policy: ImagePolicy) -> bool:
    limit = policy.max_request_bytes
    return limit is not None and _total(done) > limit


def _total(entries: Mapping[int, CacheEntry]) -> int:
    return sum(len(entry.encoded.base64) for entry in entries.values())


def _size(entry: CacheEntry, source: bytes) -> int:
    """The raw bytes an image will send (the fitted ones, or its own when unchanged)."""
    return len(entry.data) if entry.data is not None else len(source)


class _Abandoned(Exception):
    """The call was cancelled: the worker stops between images."""


@final
@attrs.define
class _Job:
    """The blocking half of a preparation (runs in a worker thread)."""

    slots: list[_Slot]
    policy: ImagePolicy
    inline: dict[int, bytes]
    done: dict[int, CacheEntry]
    cache: MediaCache | None
    stop: threading.Event

    def run(self) -> dict[int, CacheEntry]:
        done = dict(self.done)
        count = len(self.slots)
        for slot in self.slots:
            if slot.index in done:
                continue
            data = self.inline.get(slot.index)
            if data is None and slot.image.path is not None:
                data = self.inline[slot.index] = _read(slot)
            if data is None:
                continue  # a URL the provider fetches itself
            done[slot.index] = self._fit(slot, data, count, None)
        limit = self.policy.max_request_bytes
        if limit is not None and _total(done) > limit:
            if self.policy.fit:
                fair = raw_for_base64(limit // max(1, len(done)))
                for slot in self.slots:
                    entry = done.get(slot.index)
                    if entry is not None and _size(entry, self.inline[slot.index]) > fair:
                        done[slot.index] = self._fit(slot, self.inline[slot.index], count, fair)
            if _total(done) > limit:
                raise InvalidImageError(
                    f"the {len(done)} images together take {_total(done)} bytes of base64, over "
                    f"the provider's limit of {limit} per request; send fewer or smaller images",
                )
        return done

    def _fit(self, slot: _Slot, data: bytes, count: int, share: int | None) -> CacheEntry:
        if self.stop.is_set():
            raise _Abandoned
        entry = fit_entry(
            data,
            self.policy,
            count=count,
            detail=slot.image.detail,
            share=share,
            where=slot.where,
            index=slot.index,
            cache=self.cache,
            share_gil=True,
        )
        assert entry is not None
        return entry


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
    request: ChatRequest,
    slots: list[_Slot],
    done: Mapping[int, CacheEntry],
    inline: Mapping[int, bytes],
) -> ChatRequest:
    by_message: dict[int, dict[int, ImageBlock]] = {}
    for slot in slots:
        entry = done.get(slot.index)
        if entry is None:
            continue  # a URL the provider fetches itself
        data = entry.data if entry.data is not None else inline[slot.index]
        block = ImageBlock.from_encoded(data, entry.encoded, detail=slot.image.detail)
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


# --- downloading ------------------------------------------------------------------------


async def _fetch(
    slot: _Slot, policy: ImagePolicy, access: URLAccess, http: httpx.AsyncBaseTransport | None
) -> bytes:
    """Download one image (see [`download`][mmstream.media.download.download])."""
    from mmstream.media.download import download  # httpcore only when something is fetched

    url = slot.image.url
    assert url is not None
    where, index = slot.where, slot.index

    def fail(reason: str) -> InvalidImageError:
        return InvalidImageError(f"{where} {reason}", image_index=index)

    def forbidden(denied: Denied, at: str) -> ForbiddenURLError:
        subject = where if at == url else f"{where}: its redirect to {redact_url(at)}"
        return denied.error(subject, at, image_index=index)

    return await download(
        url,
        access=access,
        max_bytes=policy.fetch_max_bytes,
        timeout=policy.fetch_timeout,
        fail=fail,
        forbidden=forbidden,
        transport=http,
    )
