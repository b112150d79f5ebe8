"""Long lines: decoding one huge SSE event and one huge NDJSON line, against reading the bytes.

Run: ``python benchmarks/bench_long_lines.py`` (``--quick`` for 8 and 32 MiB only).

Each size is one ``data:`` line (and one NDJSON line) of that many bytes, fed in
64 KiB reads as a socket delivers them, then ended. Reported: the seconds to
frame it, the seconds merely to collect the same reads (``b"".join``), and their
ratio. Linear decoding keeps the ratio flat as the line grows; the old decoder,
which rejoined and rescanned its whole buffer on every read, took 0.2 s for 8 MiB
and 6.7 s for 32 MiB (quadratic). A last row shows the cost of refusing a line
over the cap (``ProviderProtocolError``, 16 MiB by default).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

from mmstream.errors import ProviderProtocolError
from mmstream.sse import DEFAULT_MAX_LINE, NDJSONDecoder, SSEDecoder

READ = 64 * 1024
MiB = 1024 * 1024


def _reads(body: bytes) -> list[bytes]:
    return [body[i : i + READ] for i in range(0, len(body), READ)]


def _collect(reads: list[bytes]) -> int:
    return len(b"".join(reads))


def _sse(reads: list[bytes], size: int) -> int:
    decoder = SSEDecoder(max_line=size + 1024)
    for data in reads:
        decoder.feed(data)
    [event] = decoder.feed(b"\n\n")
    return len(event.data)


def _ndjson(reads: list[bytes], size: int) -> int:
    decoder = NDJSONDecoder(max_line=size + 1024)
    for data in reads:
        decoder.feed(data)
    [line] = decoder.feed(b"\n")
    return len(line)


def _refused(reads: list[bytes]) -> int:
    decoder = SSEDecoder()
    try:
        for data in reads:
            decoder.feed(data)
    except ProviderProtocolError:
        return 1
    raise AssertionError("a line over the cap was held")


def _best(fn: Callable[[], int], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) if repeat < 3 else statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 and 32 MiB, one repetition")
    args = parser.parse_args()
    sizes = [8, 32] if args.quick else [8, 32, 50]
    repeat = 1 if args.quick else 3
    print("| line | collect s | SSE s | SSE ÷ collect | NDJSON s | NDJSON ÷ collect |")
    print("|---|---|---|---|---|---|")
    for mib in sizes:
        size = mib * MiB
        sse_reads = _reads(b"data: " + b"x" * size)
        nd_reads = _reads(b'{"t":"' + b"y" * size + b'"}')
        assert _sse(sse_reads, size) == size
        assert _ndjson(nd_reads, size) == size + 8
        collect = _best(functools.partial(_collect, sse_reads), repeat)
        sse = _best(functools.partial(_sse, sse_reads, size), repeat)
        nd = _best(functools.partial(_ndjson, nd_reads, size), repeat)
        print(
            f"| {mib} MiB | {collect:.3f} | {sse:.3f} | {sse / collect:.1f}× "
            f"| {nd:.3f} | {nd / collect:.1f}× |"
        )
    over = _reads(b"data: " + b"z" * (DEFAULT_MAX_LINE + READ))
    refused = _best(functools.partial(_refused, over), repeat)
    print(f"\nrefusing a line over the {DEFAULT_MAX_LINE // MiB} MiB cap: {refused:.3f} s")


if __name__ == "__main__":
    main()
