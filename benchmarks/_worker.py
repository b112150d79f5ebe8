"""One client library in its own process, taking measurement commands as JSON lines.

``python benchmarks/_worker.py CLIENT BACKEND PORT CONTROL_PORT OPTIONS_JSON``
starts the client on ``BACKEND`` (``asyncio``, ``trio`` or ``sync``) and
answers each JSON command read from stdin with one JSON line on stdout. The
runner keeps one worker per client alive for the whole run, so it can
interleave the repetitions of different clients (fair under a noisy machine),
and each client's imports and memory stay out of the others' numbers.

Every command checks the text its streams received.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
import tracemalloc
from typing import Any

import anyio
import anyio.to_thread
from _clients import BenchClient, make_client
from _server import control
from _workload import expected_text, make_image, parse_model

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def _check(model: str, text: str) -> None:
    n, _ = parse_model(model)
    assert n is not None
    expected = expected_text(n)
    if text != expected:
        raise AssertionError(
            f"{model}: received {len(text)} characters, expected {len(expected)}; "
            f"first difference at {next((i for i, (a, b) in enumerate(zip(text, expected, strict=False)) if a != b), min(len(text), len(expected)))}"  # noqa: E501
        )


class Worker:
    def __init__(self, client: BenchClient, control_port: int) -> None:
        self.client = client
        self.control_port = control_port
        self.images: dict[int, bytes] = {}
        self.base_image: bytes | None = None

    def image(self, size: int, salt: int) -> bytes:
        if self.base_image is None or len(self.base_image) < size * 0.9:
            self.base_image = make_image(size)
        return self.base_image + salt.to_bytes(8, "big")

    # --- async commands -------------------------------------------------------------

    async def stream(self, model: str, warmup: str | None = None) -> dict[str, Any]:
        if warmup:
            text, _ = await self.client.stream(warmup)
            _check(warmup, text)
        gc.collect()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        text, first = await self.client.stream(model)
        wall1, cpu1 = time.perf_counter(), time.process_time()
        _check(model, text)
        return {"wall": wall1 - wall0, "cpu": cpu1 - cpu0, "ttft": first - wall0}

    async def concurrent(self, model: str, count: int, memory: bool = False) -> dict[str, Any]:
        texts: list[str] = []

        async def one() -> None:
            text, _ = await self.client.stream(model)
            texts.append(text)

        async def run_all() -> None:
            async with anyio.create_task_group() as group:
                for _ in range(count):
                    group.start_soon(one)

        await run_all()  # warm-up: open the connections
        texts.clear()
        gc.collect()
        peak = 0
        if memory:
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
        wall0, cpu0 = time.perf_counter(), time.process_time()
        await run_all()
        wall1, cpu1 = time.perf_counter(), time.process_time()
        if memory:
            peak = tracemalloc.get_traced_memory()[1] - base
            tracemalloc.stop()
        assert len(texts) == count
        for text in texts:
            _check(model, text)
        return {"wall": wall1 - wall0, "cpu": cpu1 - cpu0, "peak": peak}

    async def image_call(self, model: str, size: int, salt: int) -> dict[str, Any]:
        image = self.image(size, salt)
        gc.collect()
        start = time.perf_counter()
        text, _ = await self.client.stream(model, image)
        end = time.perf_counter()
        _check(model, text)
        stats = control(self.control_port, "stats")
        return {
            "first_byte": stats["first_byte"] - start,
            "last_byte": stats["last_byte"] - start,
            "total": end - start,
            "bytes": len(image),
        }

    async def sequential(self, model: str, count: int) -> dict[str, Any]:
        text, _ = await self.client.stream(model)  # warm-up: one pooled connection
        _check(model, text)
        before = control(self.control_port, "stats")
        ttfts: list[float] = []
        wall0 = time.perf_counter()
        for _ in range(count):
            start = time.perf_counter()
            text, first = await self.client.stream(model)
            ttfts.append(first - start)
            _check(model, text)
        wall = time.perf_counter() - wall0
        after = control(self.control_port, "stats")
        return {
            "ttft": sorted(ttfts)[len(ttfts) // 2],
            "wall": wall,
            "connections": after["connections"] - before["connections"],
            "requests": after["requests"] - before["requests"],
        }

    async def hold(self, model: str, count: int) -> dict[str, Any]:
        """Open ``count`` streams, read their first text, measure memory, then close them."""

        async def round_(n: int, traced: bool) -> tuple[int, int, int]:
            release = anyio.Event()
            opened = 0
            all_open = anyio.Event()
            got: list[int] = []

            def mark() -> None:
                nonlocal opened
                opened += 1
                if opened == n:
                    all_open.set()

            async def one() -> None:
                got.append(await self.client.hold(model, mark, release))

            gc.collect()
            if traced:
                tracemalloc.start()
            rss0 = _rss()
            mem0 = tracemalloc.get_traced_memory()[0] if traced else 0
            async with anyio.create_task_group() as group:
                for _ in range(n):
                    group.start_soon(one)
                await all_open.wait()
                gc.collect()
                rss1 = _rss()
                mem1 = tracemalloc.get_traced_memory()[0] if traced else 0
                stats = control(self.control_port, "stats")
                release.set()
            if traced:
                tracemalloc.stop()
            assert len(got) == n
            assert all(g > 0 for g in got), "a stream read no text"
            return rss1 - rss0, mem1 - mem0, stats["open"]

        await round_(10, False)  # warm-up
        rss, _, open_ = await round_(count, False)
        _, traced, _ = await round_(count, True)
        return {"rss": rss / count, "traced": traced / count, "open": open_}

    async def dispatch(self, command: dict[str, Any]) -> dict[str, Any]:
        op = command.pop("op")
        if op == "stream":
            return await self.stream(**command)
        if op == "concurrent":
            return await self.concurrent(**command)
        if op == "image":
            return await self.image_call(**command)
        if op == "sequential":
            return await self.sequential(**command)
        if op == "hold":
            return await self.hold(**command)
        raise ValueError(f"unknown op {op!r}")

    # --- blocking commands -----------------------------------------------------------

    def dispatch_sync(self, command: dict[str, Any]) -> dict[str, Any]:
        op = command.pop("op")
        if op != "stream":
            raise ValueError(f"the sync worker only streams, not {op!r}")
        warmup = command.get("warmup")
        if warmup:
            _check(warmup, self.client.stream_sync(warmup)[0])
        model = command["model"]
        gc.collect()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        text, first = self.client.stream_sync(model)
        wall1, cpu1 = time.perf_counter(), time.process_time()
        _check(model, text)
        return {"wall": wall1 - wall0, "cpu": cpu1 - cpu0, "ttft": first - wall0}


def _reply(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


def _handle_error(exc: BaseException) -> dict[str, Any]:
    while getattr(exc, "exceptions", None):  # an exception group: its first error
        exc = exc.exceptions[0]  # type: ignore[attr-defined]
    return {"error": f"{type(exc).__name__}: {exc}"}


async def _serve_async(worker: Worker) -> None:
    await worker.client.start()
    _reply({"ready": True})
    try:
        while True:
            line = await anyio.to_thread.run_sync(sys.stdin.readline)
            if not line:
                return
            try:
                _reply(await worker.dispatch(json.loads(line)))
            except Exception as exc:
                _reply(_handle_error(exc))
    finally:
        await worker.client.aclose()


def _serve_sync(worker: Worker) -> None:
    worker.client.start_sync()
    _reply({"ready": True})
    try:
        for line in sys.stdin:
            try:
                _reply(worker.dispatch_sync(json.loads(line)))
            except Exception as exc:
                _reply(_handle_error(exc))
    finally:
        worker.client.close_sync()


def main() -> None:
    name, backend, port, control_port, options = sys.argv[1:6]
    client = make_client(name, f"http://127.0.0.1:{port}/v1", json.loads(options))
    worker = Worker(client, int(control_port))
    if backend == "sync":
        _serve_sync(worker)
    else:
        anyio.run(_serve_async, worker, backend=backend)


if __name__ == "__main__":
    main()
