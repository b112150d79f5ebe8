"""Profile one client's hot path: stream long answers from the benchmark server for a while.

Run under py-spy (``pip install py-spy``)::

    py-spy record -r 500 -f raw -o /tmp/mm.txt -- python benchmarks/profile_stream.py mmstream
    python benchmarks/profile_stream.py --summarize /tmp/mm.txt

or with cProfile (slower, distorts small functions): ``--cprofile``.
``--framing chunked`` (default ``length``) adds the HTTP chunk parsing;
``--middleware 5`` adds pass-through layers to mmstream.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import anyio
from _clients import make_client
from _server import ServerProcess
from _workload import expected_text, model_name


async def _run(client_name: str, url: str, model: str, n: int, seconds: float, mw: int) -> int:
    client = make_client(client_name, url, {"middleware": mw})
    await client.start()
    expected = expected_text(n)
    streams = 0
    deadline = time.perf_counter() + seconds
    try:
        while time.perf_counter() < deadline:
            text, _ = await client.stream(model)
            assert text == expected
            streams += 1
    finally:
        await client.aclose()
    return streams


def summarize(path: Path, top: int = 30) -> None:
    """Self and total samples per function from a py-spy ``raw`` (collapsed) file."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = stack.split(";")
        samples += n
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    print(f"{samples} samples\n\nself %   function")
    for frame, n in own.most_common(top):
        print(f"{n / samples * 100:6.1f}   {frame}")
    print("\ntotal %  function")
    for frame, n in total.most_common(top):
        print(f"{n / samples * 100:6.1f}   {frame}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("client", nargs="?", default="mmstream")
    parser.add_argument("--framing", default="length", choices=["length", "chunked"])
    parser.add_argument("--chunks", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--middleware", type=int, default=0)
    parser.add_argument("--backend", default="asyncio")
    parser.add_argument("--cprofile", action="store_true")
    parser.add_argument("--summarize", type=Path, help="summarize a py-spy raw file and exit")
    args = parser.parse_args()
    if args.summarize:
        summarize(args.summarize)
        return
    server = ServerProcess()
    try:
        model = model_name(args.chunks, args.framing)
        call = (args.client, server.base_url, model, args.chunks, args.seconds, args.middleware)
        if args.cprofile:
            import cProfile
            import pstats

            profile = cProfile.Profile()
            streams = profile.runcall(anyio.run, _run, *call, backend=args.backend)
            pstats.Stats(profile).sort_stats("tottime").print_stats(25)
        else:
            start = time.process_time()
            streams = anyio.run(_run, *call, backend=args.backend)
            cpu = time.process_time() - start
            print(f"{streams} streams, {cpu / streams / args.chunks * 1e6:.2f} µs CPU/chunk")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
