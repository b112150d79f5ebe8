"""Core benchmarks on the offline provider: chunk scaling and the sync facade's cost.

Run: ``python benchmarks/bench_core.py`` (add ``--quick`` for a short run).

* scaling: time(100,000 chunks) / time(10,000 chunks) through the whole path
  (middleware chain, transport, decoder, stream); target ≤ 11 (linear).
* sync: chunks per second through ``stream_complete`` (the generated blocking
  twin) against ``astream_complete`` on asyncio; target ≥ 0.8×.

Each run checks the text it received, so a path that skips work fails loudly.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import anyio

import mmstream as mm
from mmstream.providers import Offline


def _expected_words(n: int) -> int:
    return n


async def _astream(n: int, llm: mm.MultiModalLLM) -> float:
    start = time.perf_counter()
    count = 0
    last = None
    async with llm.astream_complete("benchmark") as stream:
        async for chunk in stream:
            count += 1
            last = chunk
    elapsed = time.perf_counter() - start
    assert last is not None
    assert count == n + 1, count
    assert len(last.text.split(" ")) == _expected_words(n)
    return elapsed


async def _amedian(n: int, repeat: int) -> float:
    """Median time of ``repeat`` streams of ``n`` chunks, in one running loop, one pool."""
    async with mm.MultiModalLLM(Offline(chunks=n)) as llm:
        await _astream(n, llm)  # warm-up
        return statistics.median([await _astream(n, llm) for _ in range(repeat)])


def _sync_stream(n: int, llm: mm.MultiModalLLM) -> float:
    start = time.perf_counter()
    count = 0
    last = None
    with llm.stream_complete("benchmark") as stream:
        for chunk in stream:
            count += 1
            last = chunk
    elapsed = time.perf_counter() - start
    assert last is not None
    assert count == n + 1, count
    assert len(last.text.split(" ")) == _expected_words(n)
    return elapsed


def _median(fn: Callable[[], float], repeat: int) -> float:
    fn()  # warm-up
    return statistics.median(fn() for _ in range(repeat))


def main() -> None:
    """Run both benchmarks and print their ratios."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    repeat = 3 if args.quick else 7

    print("scaling (asyncio, offline provider, full path)")
    small = anyio.run(_amedian, 10_000, repeat)
    large = anyio.run(_amedian, 100_000, max(2, repeat // 2))
    ratio = large / small
    print(f"  10,000 chunks: {small * 1000:8.1f} ms  ({small / 10_000 * 1e6:.2f} µs/chunk)")
    print(f"  100,000 chunks: {large * 1000:8.1f} ms  ({large / 100_000 * 1e6:.2f} µs/chunk)")
    print(f"  ratio 100k/10k: {ratio:.2f}  (target ≤ 11) {'OK' if ratio <= 11 else 'MISSED'}")

    n = 50_000
    print(f"\nsync facade vs async ({n:,} chunks)")
    async_time = anyio.run(_amedian, n, repeat)
    with mm.MultiModalLLM(Offline(chunks=n)) as llm:
        sync_time = _median(lambda: _sync_stream(n, llm), repeat)
    async_rate, sync_rate = n / async_time, n / sync_time
    print(f"  async: {async_rate:10,.0f} chunks/s")
    print(f"  sync:  {sync_rate:10,.0f} chunks/s")
    ratio = sync_rate / async_rate
    print(f"  sync/async: {ratio:.2f}  (target ≥ 0.8) {'OK' if ratio >= 0.8 else 'MISSED'}")


if __name__ == "__main__":
    main()
