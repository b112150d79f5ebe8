"""What the observability middleware cost per chunk, on asyncio and trio.

Run: ``python benchmarks/bench_observers.py`` (add ``--quick`` for a short run).

One stream of N chunks from the offline provider, through each observer alone
(Tracing with a sink, Logging on a quiet logger, Callbacks with a per-chunk
hook, OpenTelemetry on the SDK with in-memory exporters when it is installed),
against a pass-through layer and no middleware. The figure is CPU time per
chunk (``time.process_time``), the median of several runs, interleaved so that
drifting load hits every configuration alike. Each run checks the text it
received, so a path that skips work fails loudly.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio

import mmstream as mm
from mmstream.providers import Offline


async def _passthrough(request: Any, call_next: Any) -> AsyncIterator[Any]:
    async for chunk in call_next(request):
        yield chunk


def _configurations() -> dict[str, Callable[[], list[Any]]]:
    quiet = logging.getLogger("mmstream.bench.quiet")
    quiet.setLevel(logging.WARNING)
    quiet.propagate = False
    records: list[Any] = []
    configurations: dict[str, Callable[[], list[Any]]] = {
        "no middleware": list,
        "pass-through": lambda: [_passthrough],
        "Tracing(sink)": lambda: [mm.middleware.Tracing(sink=records.append)],
        "Logging": lambda: [mm.middleware.Logging(logger=quiet)],
        "Callbacks(on_chunk)": lambda: [mm.middleware.Callbacks(on_chunk=lambda r, c: None)],
    }
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        return configurations
    tracer_provider, meter_provider = TracerProvider(), MeterProvider([InMemoryMetricReader()])
    configurations["OpenTelemetry"] = lambda: [
        mm.middleware.OpenTelemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)
    ]
    return configurations


async def _one(llm: mm.MultiModalLLM, n: int) -> float:
    start = time.process_time()
    count = 0
    last = None
    async with llm.astream_complete("benchmark") as stream:
        async for chunk in stream:
            count += 1
            last = chunk
    elapsed = time.process_time() - start
    assert last is not None
    assert count == n + 1, count
    assert len(last.text.split(" ")) == n
    return elapsed


async def _measure(n: int, repeat: int) -> dict[str, float]:
    configurations = _configurations()
    llms = {
        name: mm.MultiModalLLM(Offline(chunks=n), middleware=make())
        for name, make in configurations.items()
    }
    times: dict[str, list[float]] = {name: [] for name in llms}
    try:
        for llm in llms.values():
            await _one(llm, n)  # warm-up
        for _ in range(repeat):
            for name, llm in llms.items():
                times[name].append(await _one(llm, n))
    finally:
        for llm in llms.values():
            await llm.aclose()
    return {name: statistics.median(values) / n * 1e6 for name, values in times.items()}


def main() -> None:
    """Print µs of CPU per chunk for each observer, on both backends."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer chunks and repetitions")
    parser.add_argument("--chunks", type=int, default=None)
    args = parser.parse_args()
    n = args.chunks or (5_000 if args.quick else 20_000)
    repeat = 5 if args.quick else 9
    for backend in ("asyncio", "trio"):
        results = anyio.run(_measure, n, repeat, backend=backend)
        base = results["no middleware"]
        print(f"\n{backend}: one stream of {n:,} chunks (CPU µs/chunk, median of {repeat})")
        print(f"  {'middleware':<22}{'µs/chunk':>10}{'added':>10}")
        for name, value in results.items():
            print(f"  {name:<22}{value:>10.2f}{value - base:>+10.2f}")


if __name__ == "__main__":
    main()
