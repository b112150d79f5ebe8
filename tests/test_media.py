"""The media package's contracts: the wire form on prepared blocks, the one cache, threads.

- A prepared request's image blocks carry their ``EncodedImage``, and every
  provider copies it into its body as it is (nothing re-encoded, no side table).
- The one cache is bounded in entries and bytes and keyed by content.
- Small images are prepared on the event loop; other work waits for the
  per-loop bounded limiter; a cancelled preparation leaves its worker to stop.
- The Pillow internals ``_allocate_off_gil`` relies on are still there.
"""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
from typing import Any

import anyio
import pytest
from PIL import Image

import mmstream as mm
from mmstream.content import EncodedImage
from mmstream.media import fit as fit_module
from mmstream.media.cache import CacheEntry, MediaCache
from mmstream.media.prepare import WORKER_THREADS, _limiter, prepare_request
from mmstream.media.sniff import encoded_form
from mmstream.providers import Anthropic, AzureOpenAI, Gemini, Offline, Ollama, OpenAI
from mmstream.providers.openai import OpenAICompatible
from tests.test_images import noise_jpeg, small_png


def request_with(provider: Any, *blocks: mm.ImageBlock) -> mm.ChatRequest:
    message = mm.ChatMessage("user", blocks=[mm.TextBlock("look"), *blocks])
    return mm.ChatRequest(messages=[message], provider=provider)


PROVIDERS: dict[str, Any] = {
    "openai": OpenAI(model="gpt-4o-mini", api_key="k"),
    "azure": AzureOpenAI(deployment="d", endpoint="https://x.test", api_key="k", api_version="v"),
    "anthropic": Anthropic(model="claude-sonnet-4-5", api_key="k"),
    "gemini": Gemini(model="gemini-2.5-flash", api_key="k"),
    "ollama": Ollama(model="llava", api_key=None),
    "openai-compatible": OpenAICompatible(model="m", base_url="http://x.test/v1", api_key="k"),
    "offline": Offline(),
}


async def test_prepared_blocks_carry_their_wire_form() -> None:
    png = small_png()
    block = mm.ImageBlock(image=png, image_mimetype="image/jpeg")  # declared wrong
    prepared = await prepare_request(request_with(PROVIDERS["ollama"], block))
    [out] = prepared.messages[0].images
    assert out.encoded is not None
    assert out.encoded == EncodedImage(base64=base64.b64encode(png).decode(), mimetype="image/png")
    assert out.image_mimetype == "image/png"
    assert out.image is png  # passed through byte for byte, the very object
    assert encoded_form(out) is out.encoded


@pytest.mark.parametrize("name", list(PROVIDERS))
def test_every_provider_copies_the_prepared_wire_form(name: str) -> None:
    marker = EncodedImage(base64="UHJlcGFyZWQ=", mimetype="image/webp")
    block = mm.ImageBlock.from_encoded(small_png(), marker)
    body = PROVIDERS[name].build_request(request_with(PROVIDERS[name], block)).json
    text = str(body)
    assert "UHJlcGFyZWQ=" in text  # the prepared text, not an encoding of the bytes
    assert base64.b64encode(small_png()).decode() not in text
    if name != "ollama":  # Ollama's wire form has no type field
        assert "image/webp" in text


def test_an_unprepared_block_is_encoded_on_the_spot() -> None:
    block = mm.ImageBlock(image=small_png())
    encoded = encoded_form(block)
    assert encoded.mimetype == "image/png"
    assert encoded.data_url == "data:image/png;base64," + base64.b64encode(small_png()).decode()
    with pytest.raises(mm.InvalidImageError, match="was not loaded"):
        encoded_form(mm.ImageBlock(url="https://x.test/a.png"))


def test_evolving_a_prepared_block_drops_its_wire_form() -> None:
    import attrs

    block = mm.ImageBlock.from_encoded(b"abc", EncodedImage(base64="YWJj", mimetype="image/png"))
    assert attrs.evolve(block, image=b"xyz").encoded is None
    assert block == mm.ImageBlock(image=b"abc", image_mimetype="image/png")  # eq ignores it


async def test_an_image_sent_again_is_not_encoded_again() -> None:
    data = noise_jpeg(900, 700)
    first = await prepare_request(request_with(PROVIDERS["openai"], mm.ImageBlock(image=data)))
    again = await prepare_request(
        request_with(PROVIDERS["openai"], mm.ImageBlock(image=bytes(bytearray(data))))
    )
    assert first.messages[0].images[0].encoded is again.messages[0].images[0].encoded


# --- the one cache --------------------------------------------------------------------------


def entry(size: int, data: bytes | None = None) -> CacheEntry:
    return CacheEntry(
        data=data, width=1, height=1, encoded=EncodedImage(base64="A" * size, mimetype="image/png")
    )


def test_the_cache_is_bounded_in_entries_and_bytes_least_recent_out() -> None:
    cache = MediaCache(max_entries=3, max_bytes=1000)
    for key in "abc":
        cache.put(key, entry(100))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("d", entry(100))
    assert [k for k in "abcd" if cache.get(k) is not None] == ["a", "c", "d"]
    cache.put("e", entry(200, data=b"x" * 50))  # 250 bytes: base64 and fitted bytes count
    assert cache.size <= 1000 and len(cache) == 3
    cache.put("huge", entry(251))  # over a quarter of the bound: not kept
    assert cache.get("huge") is None
    cache.put("f", entry(240))
    cache.put("g", entry(240))
    cache.put("h", entry(240))
    assert cache.size <= 1000
    cache.clear()
    assert (len(cache), cache.size) == (0, 0)


def test_clear_cache_forgets_prepared_images() -> None:
    data = noise_jpeg(700, 500)
    policy = mm.images.ImagePolicy(recommended_edge=300)
    first = mm.images.fit_image(data, policy)
    assert mm.images.fit_image(data, policy).data is first.data
    mm.images.clear_cache()
    assert mm.images.fit_image(data, policy).data is not first.data


# --- where the work runs ---------------------------------------------------------------------


async def test_small_images_need_no_thread_and_big_ones_wait_for_the_bounded_limiter() -> None:
    fit_module.load_pillow()
    limiter = _limiter()
    assert limiter.total_tokens == WORKER_THREADS
    holders = [object() for _ in range(WORKER_THREADS)]
    for holder in holders:  # every worker slot taken: any thread hop would wait
        await limiter.acquire_on_behalf_of(holder)
    try:
        with anyio.fail_after(5):
            tiny = await prepare_request(
                request_with(PROVIDERS["anthropic"], mm.ImageBlock(image=small_png()))
            )
        assert tiny.messages[0].images[0].encoded is not None
        big = mm.ImageBlock(image=noise_jpeg(1600, 1200))
        with anyio.move_on_after(0.3) as scope:
            await prepare_request(request_with(PROVIDERS["anthropic"], big))
        assert scope.cancelled_caught  # it waited for a worker slot
    finally:
        for holder in holders:
            limiter.release_on_behalf_of(holder)


async def test_a_cancelled_preparation_leaves_its_worker_to_stop_between_images() -> None:
    cache = MediaCache()
    images = [mm.ImageBlock(image=noise_jpeg(3000, 2000, quality=60)) for _ in range(4)]
    request = request_with(PROVIDERS["ollama"], *images)  # 2048 px: each must be resized

    async def watch(scope: anyio.CancelScope) -> None:
        while len(cache) == 0:  # the worker is through its first image
            await anyio.sleep(0.005)
        scope.cancel()

    async with anyio.create_task_group() as tg:
        with anyio.CancelScope() as scope:
            tg.start_soon(watch, scope)
            await prepare_request(request, cache=cache)
    assert scope.cancelled_caught
    assert len(cache) < 4  # the call returned while the worker was still busy
    seen, still = len(cache), 0
    while still < 40:  # wait until the worker has been idle for a while
        await anyio.sleep(0.05)
        still = still + 1 if len(cache) == seen else 0
        seen = len(cache)
    assert len(cache) <= 2  # it stopped at the next image instead of doing all four


# --- Pillow internals ---------------------------------------------------------------------


def test_the_off_gil_allocation_still_matches_pillows_internals() -> None:
    """``_allocate_off_gil`` hands Pillow pre-filled memory; this fails when Pillow changes.

    It relies on: a lazily opened image has ``_im`` set to ``None``; ``Image.core.fill``
    exists and makes the core image of a mode and size; assigning it to ``image.im``
    before ``load()`` makes ``load()`` decode into that memory instead of its own.
    """
    raw = os.urandom(1200 * 1000 * 3)
    source = Image.frombytes("RGB", (1200, 1000), raw)
    buffer = io.BytesIO()
    source.save(buffer, "PNG")
    image = Image.open(io.BytesIO(buffer.getvalue()))
    assert getattr(image, "_im", "gone") is None, "Pillow no longer opens lazily with _im = None"
    assert hasattr(getattr(Image, "core", None), "fill"), "Pillow's core has no fill() any more"
    fit_module._allocate_off_gil(image)
    allocated = image.im
    assert allocated is not None
    image.load()
    assert image.im is allocated, "Pillow's load() no longer decodes into a preset core image"
    assert image.tobytes() == raw


def test_importing_the_media_package_imports_neither_pillow_nor_httpcore() -> None:
    code = (
        "import sys, mmstream, mmstream.media, mmstream.images; "
        "print(sorted(m for m in ('PIL', 'httpcore') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
