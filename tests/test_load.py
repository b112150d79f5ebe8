"""Load: hundreds of concurrent streams over loopback HTTP, faults and cancellations included.

- 500 concurrent streams across the five providers, a tenth of them with a
  fault (a dropped connection, an error event, a 503, a malformed event, a
  reset): each completes with its own text or raises its typed error; nothing
  hangs; no connection stays checked out of the pool; traced memory comes back
  to where it was.
- 1,000 streams cancelled (or left) at random points: no connection is left in
  use, and no task is left running.

Kept short: a few seconds per backend. Throughput is measured in benchmarks/, not here.
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
import tracemalloc
from collections.abc import Sequence
from typing import Any

import anyio

import mmstream as mm
from mmstream.providers import Anthropic, AzureOpenAI, Gemini, Ollama, OpenAI, Provider
from mmstream.testing import Script, TestServer, answer_text

NAMES = ["openai", "azure", "anthropic", "gemini", "ollama"]

#: fault (as the x-mmstream-fault header sends it) -> the typed error it must end in.
FAULTS: dict[str, tuple[dict[str, Any], type[mm.MMStreamError]]] = {
    "drop": ({"kind": "drop", "after_chunks": 2}, mm.IncompleteStreamError),
    "error_event": ({"kind": "error_event", "after_chunks": 1}, mm.ServerError),
    "503": ({"kind": "status", "status": 503}, mm.OverloadedError),
    "malformed": ({"kind": "malformed", "after_chunks": 1}, mm.ProviderProtocolError),
    "reset": ({"kind": "reset"}, mm.APIConnectionError),
}


def provider_for(name: str, base_url: str) -> Provider:
    providers: dict[str, Provider] = {
        "openai": OpenAI(model="gpt-4o-mini", api_key="sk-test", base_url=f"{base_url}/v1"),
        "azure": AzureOpenAI(deployment="gpt-4o", endpoint=base_url, api_key="azure-key"),
        "anthropic": Anthropic(model="claude-sonnet-4-5", api_key="sk-ant-test", base_url=base_url),
        "gemini": Gemini(model="gemini-2.5-flash", api_key="AIza-test", base_url=base_url),
        "ollama": Ollama(model="llava", base_url=base_url, api_key=None),
    }
    return providers[name]


class Clients:
    """A client per provider and per fault (a transport whose requests carry the fault header)."""

    def __init__(self, base_url: str) -> None:
        self.transports: dict[str | None, mm.Transport] = {None: mm.Transport()}
        for kind, (fault, _) in FAULTS.items():
            header = {"x-mmstream-fault": json.dumps(fault)}
            self.transports[kind] = mm.Transport(headers=header)
        self.llms = {
            (name, kind): mm.MultiModalLLM(provider_for(name, base_url), transport=transport)
            for name in NAMES
            for kind, transport in self.transports.items()
        }

    def checked_out(self) -> int:
        """Connections of this loop's pools that are in use (not idle, not closed)."""
        busy = 0
        for transport in self.transports.values():
            pool = transport.client()._transport._pool  # type: ignore[attr-defined]
            busy += sum(1 for c in pool.connections if not (c.is_idle() or c.is_closed()))
        return busy

    async def aclose(self) -> None:
        for transport in self.transports.values():
            await transport.aclose()


def running_tasks(backend: str) -> int:
    """Tasks alive on this event loop (asyncio's task set, or trio's task tree)."""
    if backend == "asyncio":
        return len(asyncio.all_tasks())
    import trio

    root = trio.lowlevel.current_root_task()
    assert root is not None
    count = 0
    stack = [root]
    while stack:
        task = stack.pop()
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


async def run_streams(clients: Clients, indices: Sequence[int]) -> list[str]:
    """Run one stream per index concurrently; return the problems found (none, hopefully)."""
    problems: list[str] = []

    async def one(i: int) -> None:
        name = NAMES[i % len(NAMES)]
        kind = list(FAULTS)[(i // 10) % len(FAULTS)] if i % 10 == 0 else None
        prompt = f"load stream number {i}"
        deltas: list[str] = []
        try:
            async for chunk in clients.llms[name, kind].astream_chat([prompt]):
                deltas.append(chunk.delta or "")
        except mm.MMStreamError as exc:
            seen = "".join(deltas)
            if kind is None:
                problems.append(f"{i} {name}: unexpected {exc!r}")
            elif not isinstance(exc, FAULTS[kind][1]):
                problems.append(f"{i} {name} {kind}: {type(exc).__name__}, not {FAULTS[kind][1]}")
            elif exc.partial is not None and exc.partial.text != seen:
                problems.append(f"{i} {name} {kind}: partial {exc.partial.text!r} != {seen!r}")
            return
        if kind is not None:
            problems.append(f"{i} {name} {kind}: no error")
        elif "".join(deltas) != answer_text(prompt):
            problems.append(f"{i} {name}: wrong text {''.join(deltas)!r}")

    async with anyio.create_task_group() as tg:
        for i in indices:
            tg.start_soon(one, i)
    return problems


async def test_500_concurrent_streams_with_faults(anyio_backend: str) -> None:
    async with TestServer() as server:
        clients = Clients(server.base_url)
        with anyio.fail_after(60):
            # Warm up (imports, lazily built tables, one pool per transport), then measure.
            assert await run_streams(clients, range(0, 100, 2)) == []
            await clients.aclose()
            server.clear()
            gc.collect()
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                problems = await run_streams(clients, range(500))
                assert problems == []
                assert clients.checked_out() == 0
                assert len(server.requests) == 500
                assert sum(1 for r in server.requests if r.faults) == 50
                await clients.aclose()
                await server.wait_until(lambda s: s.connections_open == 0, timeout=10)
                server.clear()
                gc.collect()
                grown = tracemalloc.get_traced_memory()[0] - before
            finally:
                tracemalloc.stop()
    assert grown < 1 << 20, f"{grown} bytes still allocated after 500 streams"


async def test_1000_streams_cancelled_at_random_points(anyio_backend: str) -> None:
    rng = random.Random(20240611)
    script = Script(chunks=30, pause=0.002)
    async with TestServer(script=script) as server:
        clients = Clients(server.base_url)
        await anyio.wait_all_tasks_blocked()
        tasks_before = running_tasks(anyio_backend)
        outcomes = {"cancelled": 0, "timed_out": 0, "left": 0, "completed": 0}

        async def one(i: int, how: str, after: int, seconds: float) -> None:
            llm = clients.llms[NAMES[i % len(NAMES)], None]
            if how == "cancel":  # cancelled from inside, after `after` chunks
                with anyio.CancelScope() as scope:
                    count = 0
                    async for _ in llm.astream_chat([f"cancel me {i}"]):
                        count += 1
                        if count >= after:
                            scope.cancel()
                outcomes["cancelled" if scope.cancelled_caught else "completed"] += 1
            elif how == "timeout":  # cancelled from outside, at a random moment
                with anyio.move_on_after(seconds) as scope:
                    await llm.achat([f"time me out {i}"])
                outcomes["timed_out" if scope.cancelled_caught else "completed"] += 1
            else:  # left with break
                async with llm.astream_chat([f"leave me {i}"]) as stream:
                    async for _ in stream:
                        if after == 0:
                            break
                        after -= 1
                outcomes["left"] += 1

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for i in range(1000):
                    how = rng.choice(["cancel", "timeout", "break"])
                    tg.start_soon(one, i, how, rng.randint(0, 25), rng.uniform(0, 0.08))
            assert sum(outcomes.values()) == 1000
            assert outcomes["cancelled"] > 200
            assert outcomes["timed_out"] > 100
            assert outcomes["left"] > 200
            # Every stream let go of its connection: none is in use any more.
            assert clients.checked_out() == 0
            await clients.aclose()
            await server.wait_until(lambda s: s.connections_open == 0, timeout=10)
            await anyio.wait_all_tasks_blocked()
            assert running_tasks(anyio_backend) == tasks_before
        # The server saw clients leave mid-answer (the responses really were closed).
        assert len(server.disconnects) > 100


async def test_pool_probe_sees_a_connection_in_use() -> None:
    """The checked_out() probe above is real: a stream held open shows as one connection in use."""
    async with TestServer(script=Script(chunks=50, pause=0.01)) as server:
        clients = Clients(server.base_url)
        async with clients.llms["openai", None].astream_chat(["hold"]) as stream:
            await stream.__anext__()
            assert clients.checked_out() == 1
        assert clients.checked_out() == 0
        await clients.aclose()
