"""mmstream beside a bare httpx loop and the official openai SDK, on the same workloads.

Run: ``python benchmarks/run.py [--quick] [--only W1,W5] [--clients httpx,mmstream,openai]``
(``--update-docs`` rewrites the results table in ``docs/performance.md``).

A fast local server (``_server.py``) runs in its own process and streams
OpenAI-format SSE rendered once; each client runs in its own worker process
(``_worker.py``), so the CPU time measured is the client's alone. The
repetitions of different clients are interleaved, and medians are reported
with ratios to the baseline (the bare httpx loop). Every stream's text is
checked, so a client that skips work fails instead of looking fast.

Workloads (see ``benchmarks/README.md``):
  W0 the server's own ceiling (a raw socket reader that parses nothing);
  W1 one stream of 20,000 chunks: chunks/s and client CPU per chunk;
  W2 100 concurrent streams of 500 chunks: wall time and peak traced memory;
  W3 a request carrying a 4 MB image: call to the first request byte at the server;
  W4 import time, and a fresh process's time to its first streamed text;
  W5 200 sequential short streams: time to first text, new connections per request;
  W6 W1 through the blocking API and on trio;
  W7 10,000 vs 100,000 chunks, and memory per idle open stream (1,000 streams);
  W8 W1 with five pass-through middleware against none (mmstream).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _server import ServerProcess  # noqa: E402
from _workload import API_KEY, model_name  # noqa: E402

BASELINE = "httpx"
DOCS = HERE.parent / "docs" / "performance.md"


# --- worker processes ------------------------------------------------------------------


class WorkerProcess:
    """A ``_worker.py`` child: one client on one backend; ``call(op=..., ...)`` -> result."""

    def __init__(
        self, server: ServerProcess, client: str, backend: str, options: dict[str, Any]
    ) -> None:
        self.label = client
        args = [
            sys.executable,
            str(HERE / "_worker.py"),
            client,
            backend,
            str(server.port),
            str(server.control_port),
            json.dumps(options),
        ]
        self.process = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=HERE
        )
        ready = self._read()
        if not ready.get("ready"):
            raise RuntimeError(f"worker {client}/{backend} did not start: {ready}")

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.label} exited ({self.process.wait()})")
        return json.loads(line)  # type: ignore[no-any-return]

    def call(self, **command: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        result = self._read()
        if "error" in result:
            raise RuntimeError(f"{self.label} {command.get('op')}: {result['error']}")
        return result

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Bench:
    """The server, the workers, the settings and the results of one run."""

    def __init__(self, quick: bool, clients: Sequence[str]) -> None:
        self.quick = quick
        self.clients = list(clients)
        self.server = ServerProcess()
        self.workers: dict[tuple[str, str, str], WorkerProcess] = {}
        self.results: dict[str, list[dict[str, Any]]] = {}
        self.summary: list[tuple[str, str, str, str]] = []  # (workload, target, measured, ok)

    def worker(self, client: str, backend: str = "asyncio", **options: Any) -> WorkerProcess:
        key = (client, backend, json.dumps(options, sort_keys=True))
        worker = self.workers.get(key)
        if worker is None:
            worker = self.workers[key] = WorkerProcess(self.server, client, backend, options)
        return worker

    def close(self) -> None:
        for worker in self.workers.values():
            worker.close()
        self.server.stop()

    def repeat(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def target(self, workload: str, target: str, measured: str, ok: bool | None) -> None:
        status = "n/a" if ok is None else ("OK" if ok else "MISSED")
        self.summary.append((workload, target, measured, status))


def interleaved(
    rounds: int, jobs: Sequence[tuple[str, WorkerProcess, dict[str, Any]]]
) -> dict[str, list[dict[str, Any]]]:
    """Run each job ``rounds`` times, one round of every job after another."""
    out: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in jobs}
    for _ in range(rounds):
        for label, worker, command in jobs:
            out[label].append(worker.call(**command))
    return out


def median(results: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in results)


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A markdown table, printed as it is built."""
    lines = [f"**{title}**", "", "| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines.append("")
    print("\n".join(lines), flush=True)
    return lines


def ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}×" if base else "-"


# --- W0: the server's ceiling ------------------------------------------------------------


def raw_read(port: int, model: str) -> tuple[float, float, int]:
    """Send one request on a raw socket, read the whole response unparsed: (wall, cpu, bytes)."""
    body = json.dumps({"model": model, "messages": [], "stream": True}).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        f"authorization: Bearer {API_KEY}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode()
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        wall0, cpu0 = time.perf_counter(), time.process_time()
        sock.sendall(head + body)
        total = 0
        tail = b""
        while True:
            n = sock.recv_into(view)
            if not n:
                break
            total += n
            tail = (tail + bytes(view[max(0, n - 5) : n]))[-5:]
            if tail == b"0\r\n\r\n":
                break
        return time.perf_counter() - wall0, time.process_time() - cpu0, total


def w0(bench: Bench) -> list[str]:
    n = 20_000
    model = model_name(n, "chunked")
    raw_read(bench.server.port, model)
    runs = [raw_read(bench.server.port, model) for _ in range(bench.repeat(7, 3))]
    wall = statistics.median(r[0] for r in runs)
    cpu = statistics.median(r[1] for r in runs)
    size = runs[0][2]
    bench.results["W0"] = [{"wall": w, "cpu": c, "bytes": b} for w, c, b in runs]
    return table(
        f"W0 server ceiling: one {n:,}-chunk answer ({size / 1e6:.1f} MB) read by a raw socket",
        ["reader", "chunks/s", "MB/s", "reader CPU µs/chunk"],
        [["raw socket", f"{n / wall:,.0f}", f"{size / wall / 1e6:,.0f}", f"{cpu / n * 1e6:.2f}"]],
    )


# --- W1: one long stream ----------------------------------------------------------------


def w1(bench: Bench) -> list[str]:
    n = 20_000
    lines: list[str] = []
    for framing in ("chunked", "length"):
        model = model_name(n, framing)
        warm = model_name(200, framing)
        jobs = [
            (c, bench.worker(c), {"op": "stream", "model": model, "warmup": warm})
            for c in bench.clients
        ]
        results = interleaved(bench.repeat(7, 3), jobs)
        bench.results[f"W1-{framing}"] = [
            {"client": c, **r} for c, rs in results.items() for r in rs
        ]
        base_cpu = median(results[BASELINE], "cpu") if BASELINE in results else 0.0
        rows = []
        for client, rs in results.items():
            wall, cpu = median(rs, "wall"), median(rs, "cpu")
            rows.append([client, f"{n / wall:,.0f}", f"{cpu / n * 1e6:.2f}", ratio(cpu, base_cpu)])
        what = (
            "each event its own HTTP chunk, as OpenAI sends"
            if framing == "chunked"
            else "Content-Length body"
        )
        lines += table(
            f"W1 one stream of {n:,} chunks ({what})",
            ["client", "chunks/s", "CPU µs/chunk", f"CPU × {BASELINE}"],
            rows,
        )
        if "mmstream" in results and base_cpu:
            mm_cpu = median(results["mmstream"], "cpu")
            bench.target(
                f"W1 ({framing})",
                "mmstream CPU/chunk ≤ 1.0× httpx",
                f"{mm_cpu / base_cpu:.2f}×",
                mm_cpu <= base_cpu,
            )
            if "openai" in results:
                oa = median(results["openai"], "cpu")
                bench.target(
                    f"W1 ({framing})",
                    "openai CPU/chunk ≥ 8× mmstream",
                    f"{oa / mm_cpu:.1f}×",
                    oa >= 8 * mm_cpu,
                )
    return lines


# --- W2: many concurrent streams ---------------------------------------------------------


def w2(bench: Bench) -> list[str]:
    count, n = 100, 500
    model = model_name(n, "chunked")
    jobs = [
        (c, bench.worker(c), {"op": "concurrent", "model": model, "count": count})
        for c in bench.clients
    ]
    results = interleaved(bench.repeat(5, 3), jobs)
    memory = interleaved(
        1,
        [
            (
                c,
                bench.worker(c),
                {"op": "concurrent", "model": model, "count": count, "memory": True},
            )
            for c in bench.clients
        ],
    )
    bench.results["W2"] = [{"client": c, **r} for c, rs in results.items() for r in rs]
    bench.results["W2-memory"] = [{"client": c, **r} for c, rs in memory.items() for r in rs]
    base_wall = median(results[BASELINE], "wall") if BASELINE in results else 0.0
    base_peak = memory[BASELINE][0]["peak"] if BASELINE in memory else 0
    rows = []
    for client, rs in results.items():
        wall, cpu, peak = median(rs, "wall"), median(rs, "cpu"), memory[client][0]["peak"]
        rows.append(
            [
                client,
                f"{wall * 1000:,.0f}",
                ratio(wall, base_wall),
                f"{cpu * 1000:,.0f}",
                f"{peak / 1e6:.2f}",
                ratio(peak, base_peak),
            ]
        )
    lines = table(
        f"W2 {count} concurrent streams of {n} chunks",
        ["client", "wall ms", f"wall × {BASELINE}", "CPU ms", "peak MB (traced)", "peak ×"],
        rows,
    )
    if "mmstream" in results and base_wall:
        wall = median(results["mmstream"], "wall")
        bench.target("W2", "wall ≤ 1.2× httpx", f"{wall / base_wall:.2f}×", wall <= 1.2 * base_wall)
        peak = memory["mmstream"][0]["peak"]
        bench.target(
            "W2", "peak memory ≤ 1.3× httpx", f"{peak / base_peak:.2f}×", peak <= 1.3 * base_peak
        )
    return lines


# --- W3: a 4 MB image --------------------------------------------------------------------


def w3(bench: Bench) -> list[str]:
    size = 4 * 1024 * 1024
    model = model_name(20, "chunked")
    variants: list[tuple[str, str, dict[str, Any]]] = []
    for client in bench.clients:
        variants.append((client, client, {}))
        if client == "mmstream":
            variants.append(("mmstream (fit=False)", client, {"fit": False}))
    salt = iter(range(1, 10_000))

    def jobs() -> list[tuple[str, WorkerProcess, dict[str, Any]]]:
        return [
            (
                label,
                bench.worker(client, **options),
                {"op": "image", "model": model, "size": size, "salt": next(salt)},
            )
            for label, client, options in variants
        ]

    interleaved(1, jobs())  # warm-up (imports, Pillow, connections)
    results: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in variants}
    for _ in range(bench.repeat(7, 3)):
        for label, rs in interleaved(1, jobs()).items():
            results[label] += rs  # a new image (new bytes) every time
    bench.results["W3"] = [{"client": c, **r} for c, rs in results.items() for r in rs]
    base = median(results[BASELINE], "first_byte") if BASELINE in results else 0.0
    rows = []
    for label, rs in results.items():
        first, last, total = median(rs, "first_byte"), median(rs, "last_byte"), median(rs, "total")
        rows.append(
            [
                label,
                f"{first * 1000:.1f}",
                ratio(first, base),
                f"{last * 1000:.1f}",
                f"{total * 1000:.1f}",
            ]
        )
    lines = table(
        f"W3 one request carrying a {size / 2**20:.0f} MiB JPEG (new bytes each run)",
        ["client", "call → first request byte ms", f"× {BASELINE}", "→ last byte ms", "total ms"],
        rows,
    )
    for label in ("mmstream", "mmstream (fit=False)"):
        if label in results and base:
            first = median(results[label], "first_byte")
            bench.target(
                f"W3 {label}",
                "request building ≤ 0.5× httpx",
                f"{first / base:.2f}×",
                first <= base / 2,
            )
    return lines


# --- W4: imports and a fresh process ---------------------------------------------------------

_IMPORTS = {
    "(python -c pass)": "pass",
    "httpx": "import httpx",
    "mmstream": "import mmstream",
    "openai": "import openai",
}

_FIRST_TEXT = """
import sys, time, anyio
sys.path.insert(0, {here!r})
from _clients import make_client
async def main():
    client = make_client({client!r}, {url!r})
    await client.start()
    text, first = await client.stream({model!r})
    await client.aclose()
    print(first)
anyio.run(main)
"""


def _spawn_time(code: str) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=HERE
    )
    return time.perf_counter() - start, out.stdout


def w4(bench: Bench) -> list[str]:
    rounds = bench.repeat(15, 7)
    names = ["(python -c pass)", BASELINE, *[c for c in bench.clients if c != BASELINE]]
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            times[name].append(_spawn_time(_IMPORTS[name])[0])
    bare = statistics.median(times["(python -c pass)"])
    imports = {name: statistics.median(ts) - bare for name, ts in times.items()}
    first: dict[str, list[float]] = {c: [] for c in bench.clients}
    model = model_name(20, "chunked")
    for _ in range(bench.repeat(7, 3)):
        for client in bench.clients:
            code = _FIRST_TEXT.format(
                here=str(HERE), client=client, url=bench.server.base_url, model=model
            )
            start = time.perf_counter()
            _, out = _spawn_time(code)
            first[client].append(float(out.strip().splitlines()[-1]) - start)
    bench.results["W4"] = [{"imports": times, "first_text": first}]
    base = imports.get(BASELINE, 0.0)
    rows = [["python -c pass", f"{bare * 1000:.0f} (the interpreter)", "-", "-"]]
    for client in bench.clients:
        rows.append(
            [
                client,
                f"{imports[client] * 1000:.0f}",
                ratio(imports[client], base),
                f"{statistics.median(first[client]) * 1000:.0f}",
            ]
        )
    lines = table(
        "W4 import time (fresh process, minus `python -c pass`) and a fresh process's first text",
        ["module", "import ms", f"× {BASELINE}", "spawn → first streamed text ms"],
        rows,
    )
    if "mmstream" in imports and base:
        bench.target(
            "W4",
            "import mmstream ≤ 1.5× import httpx",
            f"{imports['mmstream'] / base:.2f}×",
            imports["mmstream"] <= 1.5 * base,
        )
    return lines


# --- W5: sequential short streams --------------------------------------------------------------


def w5(bench: Bench) -> list[str]:
    count = bench.repeat(200, 100)
    model = model_name(20, "chunked")
    jobs = [
        (c, bench.worker(c), {"op": "sequential", "model": model, "count": count})
        for c in bench.clients
    ]
    results = interleaved(bench.repeat(5, 3), jobs)
    bench.results["W5"] = [{"client": c, **r} for c, rs in results.items() for r in rs]
    base = median(results[BASELINE], "ttft") if BASELINE in results else 0.0
    rows = []
    for client, rs in results.items():
        ttft = median(rs, "ttft")
        per = sum(r["connections"] for r in rs) / sum(r["requests"] for r in rs)
        rows.append(
            [
                client,
                f"{ttft * 1e6:,.0f}",
                ratio(ttft, base),
                f"{median(rs, 'wall') / count * 1e6:,.0f}",
                f"{per:.3f}",
            ]
        )
    lines = table(
        f"W5 {count} sequential streams of 20 chunks (after one warm-up stream)",
        [
            "client",
            "time to first text µs",
            f"× {BASELINE}",
            "µs per stream",
            "new TCP conns/request",
        ],
        rows,
    )
    if "mmstream" in results and base:
        rs = results["mmstream"]
        ttft = median(rs, "ttft")
        bench.target(
            "W5", "time to first text ≤ 1.3× httpx", f"{ttft / base:.2f}×", ttft <= 1.3 * base
        )
        per = sum(r["connections"] for r in rs) / sum(r["requests"] for r in rs)
        bench.target("W5", "≤ 0.01 new connections per request", f"{per:.3f}", per <= 0.01)
    return lines


# --- W6: the blocking API and trio ----------------------------------------------------------------


def w6(bench: Bench) -> list[str]:
    n = 20_000
    model, warm = model_name(n, "chunked"), model_name(200, "chunked")
    jobs = []
    for client in bench.clients:
        for backend in ("asyncio", "trio", "sync"):
            command = {"op": "stream", "model": model, "warmup": warm}
            jobs.append((f"{client}/{backend}", bench.worker(client, backend), command))
    results = interleaved(bench.repeat(5, 3), jobs)
    bench.results["W6"] = [{"job": j, **r} for j, rs in results.items() for r in rs]
    rows = []
    for client in bench.clients:
        rate = {
            b: n / median(results[f"{client}/{b}"], "wall") for b in ("asyncio", "trio", "sync")
        }
        rows.append(
            [
                client,
                f"{rate['asyncio']:,.0f}",
                f"{rate['trio']:,.0f}",
                f"{rate['trio'] / rate['asyncio']:.2f}",
                f"{rate['sync']:,.0f}",
                f"{rate['sync'] / rate['asyncio']:.2f}",
            ]
        )
        if client == "mmstream":
            r_sync = rate["sync"] / rate["asyncio"]
            r_trio = rate["trio"] / rate["asyncio"]
            bench.target("W6", "sync facade ≥ 0.8× async", f"{r_sync:.2f}×", r_sync >= 0.8)
            bench.target("W6", "trio ≥ 0.8× asyncio", f"{r_trio:.2f}×", r_trio >= 0.8)
    return table(
        f"W6 one stream of {n:,} chunks: asyncio, trio and the blocking API (chunks/s)",
        ["client", "asyncio", "trio", "trio/asyncio", "blocking", "blocking/asyncio"],
        rows,
    )


# --- W7: scaling and idle streams ---------------------------------------------------------------


def w7(bench: Bench) -> list[str]:
    small, large = 10_000, 100_000
    jobs = []
    for client in bench.clients:
        for n in (small, large):
            command = {"op": "stream", "model": model_name(n, "chunked"), "warmup": model_name(200)}
            jobs.append((f"{client}/{n}", bench.worker(client), command))
    results = interleaved(bench.repeat(3, 2), jobs)
    idle_count = 1000
    idle = interleaved(
        1,
        [
            (c, bench.worker(c), {"op": "hold", "model": model_name("idle"), "count": idle_count})
            for c in bench.clients
        ],
    )
    bench.results["W7"] = [{"job": j, **r} for j, rs in results.items() for r in rs]
    bench.results["W7-idle"] = [{"client": c, **r} for c, rs in idle.items() for r in rs]
    rows = []
    for client in bench.clients:
        t_small = median(results[f"{client}/{small}"], "wall")
        t_large = median(results[f"{client}/{large}"], "wall")
        held = idle[client][0]
        rows.append(
            [
                client,
                f"{t_small * 1000:,.0f}",
                f"{t_large * 1000:,.0f}",
                f"{t_large / t_small:.2f}",
                f"{held['traced'] / 1024:.1f}",
                f"{held['rss'] / 1024:.1f}",
            ]
        )
        if client == "mmstream":
            bench.target(
                "W7",
                "time(100k)/time(10k) ≤ 11",
                f"{t_large / t_small:.2f}",
                t_large / t_small <= 11,
            )
            bench.target(
                "W7",
                "memory per idle open stream ≤ 50 KB",
                f"{held['traced'] / 1024:.1f} KiB traced, {held['rss'] / 1024:.1f} KiB RSS",
                held["traced"] <= 50_000 and held["rss"] <= 50_000,
            )
    return table(
        f"W7 scaling, and memory per idle open stream ({idle_count:,} streams open at once)",
        [
            "client",
            f"{small:,} chunks ms",
            f"{large:,} chunks ms",
            "ratio",
            "KiB/idle stream (traced)",
            "KiB/idle stream (RSS)",
        ],
        rows,
    )


# --- W8: middleware cost --------------------------------------------------------------------------


def w8(bench: Bench) -> list[str]:
    if "mmstream" not in bench.clients:
        return []
    n = 20_000
    lines: list[str] = []
    for framing in ("chunked", "length"):
        model, warm = model_name(n, framing), model_name(200, framing)
        command = {"op": "stream", "model": model, "warmup": warm}
        jobs = [
            ("no middleware", bench.worker("mmstream"), command),
            ("5 pass-through", bench.worker("mmstream", middleware=5), command),
        ]
        if BASELINE in bench.clients:
            jobs.append((BASELINE, bench.worker(BASELINE), command))
        results = interleaved(bench.repeat(7, 3), jobs)
        bench.results[f"W8-{framing}"] = [{"job": j, **r} for j, rs in results.items() for r in rs]
        none = median(results["no middleware"], "cpu")
        five = median(results["5 pass-through"], "cpu")
        rows = [
            [label, f"{median(rs, 'cpu') / n * 1e6:.2f}", ratio(median(rs, "cpu"), none)]
            for label, rs in results.items()
        ]
        bench.target(
            f"W8 ({framing})",
            "5 pass-through middleware add ≤ 10% CPU/chunk",
            f"+{(five / none - 1) * 100:.0f}%",
            five <= 1.1 * none,
        )
        lines += table(
            f"W8 mmstream, one stream of {n:,} chunks ({framing}), with and without middleware",
            ["mmstream", "CPU µs/chunk", "× no middleware"],
            rows,
        )
    return lines


WORKLOADS: dict[str, Callable[[Bench], list[str]]] = {
    "W0": w0,
    "W1": w1,
    "W2": w2,
    "W3": w3,
    "W4": w4,
    "W5": w5,
    "W6": w6,
    "W7": w7,
    "W8": w8,
}


# --- report -----------------------------------------------------------------------------------


def machine() -> str:
    """Date, cores, CPU model, Python and library versions."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = []
    for name in ("mmstream", "httpx", "openai", "anyio", "trio"):
        try:
            from importlib.metadata import version

            versions.append(f"{name} {version(name)}")
        except Exception:
            pass
    load = os.getloadavg()[0]
    return (
        f"{datetime.date.today().isoformat()}, {os.cpu_count()} cores ({cpu}), "
        f"Python {platform.python_version()}, {', '.join(versions)}; "
        f"load average {load:.1f} at the start"
    )


def update_docs(text: str) -> None:
    """Replace the block between the results markers of docs/performance.md."""
    doc = DOCS.read_text()
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    DOCS.write_text(pattern.sub(lambda _: f"{start}\n{text}\n{end}", doc))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a few minutes)")
    parser.add_argument("--only", default="", help="workloads to run, e.g. W1,W5")
    parser.add_argument("--clients", default="httpx,mmstream,openai", help="clients to compare")
    parser.add_argument("--json", type=Path, help="write every measurement to this file")
    parser.add_argument("--update-docs", action="store_true", help="rewrite docs/performance.md")
    args = parser.parse_args(argv)
    only = [w.strip().upper() for w in args.only.split(",") if w.strip()] or list(WORKLOADS)
    unknown = [w for w in only if w not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workloads {unknown}; choose from {', '.join(WORKLOADS)}")
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]

    about = machine()
    print(f"{about}\n", flush=True)
    bench = Bench(args.quick, clients)
    lines = [f"Measured {about}; {'--quick' if args.quick else 'full'} run.", ""]
    started = time.perf_counter()
    try:
        for name in only:
            lines += WORKLOADS[name](bench)
    finally:
        bench.close()
    summary = table(
        "Targets",
        ["workload", "target", "measured", "status"],
        [list(row) for row in bench.summary],
    )
    lines += summary
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"machine": about, "results": bench.results}, indent=1))
    if args.update_docs:
        update_docs("\n".join(lines))


if __name__ == "__main__":
    main()
