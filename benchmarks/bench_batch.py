"""Batch runs at scale: memory stays flat over 100,000 offline jobs, and resuming is cheap.

Run: ``python benchmarks/bench_batch.py`` (100,000 jobs, about two minutes on
2 cores), ``--jobs N`` for another count, ``--quick`` for 20,000.

* flat memory: the process's resident memory (RSS, ``/proc/self/statm``) and
  the Python heap (``tracemalloc``, in a second, shorter run, since tracing
  slows everything: 5,000 jobs) sampled every tenth of the run. A run that held its jobs or its
  results would grow by hundreds of bytes per job; the target is that RSS
  after the last job is within 25 MB of RSS after the first 10 % (the ids of
  finished jobs are the only thing kept, a few tens of bytes each).
* resume: the same run started again on the finished results file: the time
  and memory to read 100,000 records and skip every job.

Every run checks its results file: each job exactly once, each answer the
offline provider's answer to that job.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import tempfile
import time
import tracemalloc
from pathlib import Path

import anyio

from mmstream.batch import Batch, BatchStats

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_mb() -> float:
    """Resident memory of this process, in MB (Linux)."""
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * PAGE / 1e6


def write_jobs(path: Path, count: int) -> None:
    with path.open("w") as out:
        for n in range(count):
            out.write(json.dumps({"id": f"job-{n:07d}", "prompt": f"Describe item {n}"}) + "\n")


def check(path: Path, count: int) -> None:
    seen: set[str] = set()
    with path.open("rb") as stream:
        for line in stream:
            record = json.loads(line)
            assert record["error"] is None, record
            assert record["id"] not in seen, record["id"]
            n = int(record["id"].split("-")[1])
            assert f"“Describe item {n}”" in record["text"], record
            seen.add(record["id"])
    assert len(seen) == count, len(seen)


async def run(jobs: Path, output: Path, count: int, trace: bool) -> list[tuple[int, float]]:
    """One run; returns ``(jobs done, MB)`` samples (RSS, or the traced heap)."""
    samples: list[tuple[int, float]] = []
    step = max(1, count // 10)

    def sample(stats: BatchStats) -> None:
        if stats.done % step == 0 or stats.finished:
            if trace:
                samples.append((stats.done, tracemalloc.get_traced_memory()[0] / 1e6))
            else:
                samples.append((stats.done, rss_mb()))

    async with Batch("offline:default", concurrency=32) as batch:
        await batch.arun(jobs, output, progress=sample)
    return samples


def table(title: str, samples: list[tuple[int, float]]) -> str:
    lines = [f"| jobs done | {title} |", "|---:|---:|"]
    lines += [f"| {done:,} | {mb:.1f} |" for done, mb in samples]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="20,000 jobs")
    args = parser.parse_args()
    count = 20_000 if args.quick else args.jobs

    with tempfile.TemporaryDirectory() as folder:
        jobs = Path(folder) / "jobs.jsonl"
        write_jobs(jobs, count)
        output = Path(folder) / "results.jsonl"

        start = time.perf_counter()
        samples = anyio.run(run, jobs, output, count, False)
        elapsed = time.perf_counter() - start
        check(output, count)
        print(
            f"## {count:,} offline jobs, concurrency 32: {elapsed:.1f} s "
            f"({count / elapsed:,.0f} jobs/s)\n"
        )
        print(table("RSS, MB", samples))
        tenth = next(mb for done, mb in samples if done >= count // 10)
        growth = samples[-1][1] - tenth
        print(
            f"\nRSS growth from 10 % to 100 % of the jobs: {growth:+.1f} MB "
            f"({growth * 1e6 / (count * 0.9):.0f} bytes per job); target <= 25 MB: "
            f"{'OK' if growth <= 25 else 'MISSED'}"
        )

        gc.collect()
        start = time.perf_counter()
        before = rss_mb()
        resumed = anyio.run(run, jobs, output, count, False)
        print(
            f"\n## resume: {count:,} records read and every job skipped in "
            f"{time.perf_counter() - start:.2f} s; RSS {before:.1f} -> {resumed[-1][1]:.1f} MB"
        )

        traced = min(count, 5_000)
        write_jobs(jobs, traced)
        output.unlink()
        tracemalloc.start()
        heap = anyio.run(run, jobs, output, traced, True)
        tracemalloc.stop()
        check(output, traced)
        print(f"\n## the Python heap (tracemalloc) over {traced:,} jobs\n")
        print(table("traced heap, MB", heap))


if __name__ == "__main__":
    main()
