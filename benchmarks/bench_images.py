"""Benchmark: preparing a 12-megapixel photo for each provider, and what the event loop feels.

For each provider policy it times :func:`mmstream.images.prepare_request` on a
4000x3000 noise JPEG (about 6-8 MB, EXIF orientation 6), with the cache cleared
before every run, and measures the event loop's longest stall while that runs
next to a streaming offline answer: a ticker task sleeps 1 ms in a loop and
records the largest gap beyond the 1 ms it asked for (target: under 5 ms); the
table gives the median over the runs of that longest stall, and the worst.
"(stream only)" is the floor: the same measurement with no image work. The
"(whole call)" rows time an ``acomplete`` through a real provider to an
``httpx.MockTransport``: images, ``build_request`` and the JSON body included.
Both asyncio and trio are measured.

The second table is about small images: 100 calls at once, each with its own
64x48 PNG (new bytes, so no cache answers), prepared on the event loop; beside
it the floor of the old way, one worker-thread hop per image, and the threads
each way leaves behind.

Run: ``python benchmarks/bench_images.py [--repeat 3]``
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio

import mmstream as mm
from mmstream import images
from mmstream.images import ImagePolicy
from mmstream.media.fit import load_pillow
from mmstream.providers import Offline
from mmstream.request import ChatRequest

POLICIES: dict[str, ImagePolicy] = {
    "openai": images.OPENAI_POLICY,
    "azure": images.AZURE_POLICY,
    "anthropic": images.ANTHROPIC_POLICY,
    "gemini": images.GEMINI_POLICY,
    "ollama": images.OLLAMA_POLICY,
    "compatible": images.COMPATIBLE_POLICY,
}


def make_photo() -> bytes:
    """A 4000x3000 noise JPEG with EXIF orientation 6 (noise keeps it large)."""
    from PIL import Image

    picture = Image.frombytes("RGB", (4000, 3000), os.urandom(4000 * 3000 * 3))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=70, exif=exif)
    return buffer.getvalue()


def make_request(photo: bytes, policy: ImagePolicy) -> ChatRequest:
    message = mm.ChatMessage(
        "user", blocks=[mm.ImageBlock(image=photo), mm.TextBlock("What is this?")]
    )
    return ChatRequest(
        messages=(message,),
        provider=Offline(),
        options=mm.CallOptions(extra={"image_policy": policy}),
    )


async def ticker(stop: anyio.Event, gaps: list[float]) -> None:
    """Sleep 1 ms again and again; record how much later than asked each wake-up came."""
    last = time.perf_counter()
    while not stop.is_set():
        await anyio.sleep(0.001)
        now = time.perf_counter()
        gaps.append(now - last - 0.001)
        last = now


async def stream_until(stop: anyio.Event) -> int:
    """Stream an offline answer (one chunk every 2 ms) until told to stop."""
    llm = mm.MultiModalLLM(Offline(chunks=100_000, delay=0.002))
    count = 0
    async with llm, llm.astream_chat(["Tell me a long story"]) as stream:
        async for _ in stream:
            count += 1
            if stop.is_set():
                break
    return count


async def measure(work: Callable[[], Any]) -> tuple[float, float]:
    """Run ``work`` next to a stream and the ticker: (seconds it took, longest stall)."""
    gaps: list[float] = []
    stop = anyio.Event()
    elapsed = 0.0
    async with anyio.create_task_group() as group:
        group.start_soon(ticker, stop, gaps)
        group.start_soon(stream_until, stop)
        await anyio.sleep(0.05)  # let the stream get going
        start = time.perf_counter()
        await work()
        elapsed = time.perf_counter() - start
        await anyio.sleep(0.02)
        stop.set()
    return elapsed, max(gaps[5:] or [0.0])


async def run(backend: str, photo: bytes, repeat: int) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []

    async def nothing() -> None:
        await anyio.sleep(0.3)

    _, idle = await measure(nothing)
    idles = [idle] + [(await measure(nothing))[1] for _ in range(repeat - 1)]
    rows.append(
        (
            backend,
            "(stream only)",
            "-",
            "-",
            "-",
            f"{statistics.median(idles) * 1000:.1f} / {max(idles) * 1000:.1f}",
        )
    )
    for name, policy in POLICIES.items():
        times: list[float] = []
        stalls: list[float] = []
        prepared: ChatRequest | None = None
        for _ in range(repeat):
            images.clear_cache()
            request = make_request(photo, policy)

            async def work(request: ChatRequest = request) -> None:
                nonlocal prepared
                prepared = await images.prepare_request(request)

            elapsed, stall = await measure(work)
            times.append(elapsed)
            stalls.append(stall)
        assert prepared is not None
        block = prepared.messages[0].images[0]
        assert block.image is not None
        from PIL import Image

        size = Image.open(io.BytesIO(block.image)).size
        cached_start = time.perf_counter()
        await images.prepare_request(make_request(photo, policy))
        cached = time.perf_counter() - cached_start
        rows.append(
            (
                backend,
                name,
                f"{statistics.median(times) * 1000:.0f}",
                f"{cached * 1000:.1f}",
                f"{size[0]}x{size[1]} {len(block.image) / 1e6:.2f} MB",
                f"{statistics.median(stalls) * 1000:.1f} / {max(stalls) * 1000:.1f}",
            )
        )
    rows.extend(await end_to_end(backend, photo, repeat))
    return rows


async def end_to_end(backend: str, photo: bytes, repeat: int) -> list[tuple[str, ...]]:
    """A whole ``acomplete`` per provider, to a MockTransport: images, build_request, JSON."""
    import httpx

    from mmstream.providers.anthropic import Anthropic
    from mmstream.providers.base import Provider
    from mmstream.providers.gemini import Gemini
    from mmstream.providers.ollama import Ollama
    from mmstream.providers.openai import OpenAI

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, json={"error": {"message": "benchmark"}})

    providers: dict[str, Provider] = {
        "openai": OpenAI(model="gpt-4o", api_key="sk-bench"),
        "anthropic": Anthropic(model="claude-sonnet-4-5", api_key="sk-bench"),
        "gemini": Gemini(model="gemini-2.5-flash", api_key="bench"),
        "ollama": Ollama(model="llava", api_key=None),
    }
    rows: list[tuple[str, ...]] = []
    for name, chosen in providers.items():
        stalls: list[float] = []
        times: list[float] = []
        for _ in range(repeat):
            images.clear_cache()
            transport = mm.Transport(http_transport=httpx.MockTransport(answer))
            llm = mm.MultiModalLLM(chosen, transport=transport)

            async def work(llm: mm.MultiModalLLM = llm) -> None:
                async with llm:
                    with contextlib.suppress(mm.ServerError):
                        await llm.acomplete("What is this?", [mm.ImageDocument.from_bytes(photo)])

            elapsed, stall = await measure(work)
            times.append(elapsed)
            stalls.append(stall)
        rows.append(
            (
                backend,
                f"{name} (whole call)",
                f"{statistics.median(times) * 1000:.0f}",
                "-",
                "-",
                f"{statistics.median(stalls) * 1000:.1f} / {max(stalls) * 1000:.1f}",
            )
        )
    return rows


def tiny_png(index: int) -> bytes:
    """A 64x48 PNG of its own (one pixel differs), a few hundred bytes."""
    from PIL import Image

    picture = Image.new("RGB", (64, 48), (30, 120, 200))
    picture.putpixel((index % 64, index // 64 % 48), (index % 256, 0, 0))
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    return buffer.getvalue()


async def tiny(backend: str, repeat: int, count: int = 100) -> list[tuple[str, ...]]:
    """``count`` concurrent preparations of distinct tiny PNGs: on the loop vs a thread hop each."""
    import anyio.to_thread

    load_pillow()
    policy = images.OPENAI_POLICY
    rows: list[tuple[str, ...]] = []
    for label in ("on the event loop (mmstream)", "a thread hop each (floor of the old way)"):
        times: list[float] = []
        threads = 0
        for run_index in range(repeat):
            pngs = [tiny_png(run_index * count + i) for i in range(count)]
            images.clear_cache()
            before = threading.active_count()
            start = time.perf_counter()
            async with anyio.create_task_group() as group:
                for png in pngs:
                    if label.startswith("on"):
                        group.start_soon(images.prepare_request, make_request(png, policy))
                    else:
                        group.start_soon(anyio.to_thread.run_sync, len, png)
            times.append(time.perf_counter() - start)
            threads = max(threads, threading.active_count() - before)
        rows.append((backend, label, f"{statistics.median(times) * 1000:.2f}", f"+{threads}"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per policy (median time)")
    args = parser.parse_args()
    photo = make_photo()
    print(f"photo: 4000x3000 JPEG, {len(photo) / 1e6:.1f} MB, EXIF orientation 6")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores")
    header = ("backend", "policy", "prepare ms", "cached ms", "sent", "stall ms (median / worst)")
    rows: list[tuple[str, ...]] = [header]
    for backend in ("asyncio", "trio"):
        rows += anyio.run(run, backend, photo, args.repeat, backend=backend)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for index, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * width for width in widths))
    print()
    header = ("backend", "100 tiny PNGs at once", "ms", "threads left")
    rows = [header]
    for backend in ("asyncio", "trio"):
        rows += anyio.run(tiny, backend, args.repeat, backend=backend)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for index, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * width for width in widths))


if __name__ == "__main__":
    main()
