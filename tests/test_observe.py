"""One outcome, decided once: Tracing, Logging, Callbacks and OpenTelemetry agree on every ending.

Each call runs through all four adapters at once, against the loopback test
server, and ends in one of the ways a call can end. Every adapter must report
the same outcome, the same chunk count (the chunks the caller received), and
an error only for a failure. The hooks and sinks are async and pass a
checkpoint before recording, so a report made during cancellation survives
only if the core shields it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Literal

import anyio
import attrs
import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import mmstream as mm
from mmstream.middleware import (
    Callbacks,
    Logging,
    Middleware,
    OpenTelemetry,
    Timeout,
    TraceRecord,
    Tracing,
)
from mmstream.middleware._observe import (
    OUTCOMES,
    Observation,
    Observer,
    observe,
    observe_batches,
    outcome_of,
)
from mmstream.providers import OpenAI
from mmstream.testing import Fault, Script, TestServer

LOGGER = "mmstream.test.observe"


@attrs.define
class Seen:
    """What the four adapters reported about one call."""

    traces: list[TraceRecord] = attrs.field(factory=list)
    hooks: list[str] = attrs.field(factory=list)
    chunk_hooks: int = 0
    exporter: InMemorySpanExporter = attrs.field(factory=InMemorySpanExporter)

    async def trace(self, record: TraceRecord) -> None:
        await anyio.sleep(0)  # a checkpoint: raises here if the report is not shielded
        self.traces.append(record)

    def hook(self, name: str) -> Callable[..., Awaitable[None]]:
        async def record(*args: Any) -> None:
            await anyio.sleep(0)
            self.hooks.append(name)

        return record

    async def chunk(self, request: mm.ChatRequest, chunk: mm.ChatResponse) -> None:
        self.chunk_hooks += 1


@pytest.fixture
def seen() -> Seen:
    return Seen()


@pytest.fixture
def observers(seen: Seen) -> Iterator[list[Any]]:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(seen.exporter))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    yield [
        Tracing(sink=seen.trace),
        Logging(logger=logging.getLogger(LOGGER)),
        Callbacks(
            on_chunk=seen.chunk,
            on_end=seen.hook("end"),
            on_error=seen.hook("error"),
            on_close=seen.hook("close"),
            on_cancel=seen.hook("cancel"),
        ),
        OpenTelemetry(tracer_provider=tracer_provider, meter_provider=meter_provider),
    ]
    tracer_provider.shutdown()
    meter_provider.shutdown()


# --- the ways a call can end: (faults, layers inside, layers outside, the consumer) -----------

Consume = Callable[[mm.MultiModalLLM], Awaitable[int]]


async def drain(llm: mm.MultiModalLLM) -> int:
    received = 0
    async with llm.astream_chat(["hi"]) as stream:
        async for _ in stream:
            received += 1
    return received


def raising(error: type[BaseException]) -> Consume:
    async def consume(llm: mm.MultiModalLLM) -> int:
        received = 0
        with pytest.raises(error):
            async with llm.astream_chat(["hi"]) as stream:
                async for _ in stream:
                    received += 1
        return received

    return consume


async def leave_after_one(llm: mm.MultiModalLLM) -> int:
    async with llm.astream_chat(["hi"]) as stream:
        async for _ in stream:
            break
    return 1


async def fail_in_the_loop(llm: mm.MultiModalLLM) -> int:
    with pytest.raises(ZeroDivisionError):  # the consumer's own error: not the call's
        async with llm.astream_chat(["hi"]) as stream:
            async for _ in stream:
                1 / 0  # noqa: B018
    return 1


async def cancel_while_waiting(llm: mm.MultiModalLLM) -> int:
    received = 0
    with anyio.CancelScope() as scope:
        async with llm.astream_chat(["hi"]) as stream:
            async for _ in stream:
                received += 1
                scope.cancel()  # delivered at the next wait: inside the call, stalled
    assert scope.cancelled_caught
    return received


async def deadline_outside(llm: mm.MultiModalLLM) -> int:
    received = 0
    with pytest.raises(TimeoutError):
        with anyio.fail_after(0.3):
            async with llm.astream_chat(["hi"]) as stream:
                async for _ in stream:
                    received += 1
    return received


STALL = Fault.stall(30, after_chunks=2)
WAYS: dict[str, tuple[tuple[Fault, ...], list[Any], list[Any], Consume, str]] = {
    "complete": ((), [], [], drain, "complete"),
    "provider error before output": (
        (Fault.http_status(500),),
        [],
        [],
        raising(mm.ServerError),
        "failed",
    ),
    "mid-stream error": (
        (Fault.drop(after_chunks=2),),
        [],
        [],
        raising(mm.MMStreamError),
        "failed",
    ),
    "consumer break": ((), [], [], leave_after_one, "closed"),
    "error in the consumer's loop": ((), [], [], fail_in_the_loop, "closed"),
    "cancellation from outside": ((STALL,), [], [], cancel_while_waiting, "cancelled"),
    "deadline outside (fail_after)": ((STALL,), [], [], deadline_outside, "cancelled"),
    "Timeout inside the observers": (
        (STALL,),
        [Timeout(idle=0.3)],
        [],
        raising(mm.APITimeoutError),
        "failed",
    ),
    "Timeout outside the observers": (
        (STALL,),
        [],
        [Timeout(idle=0.3)],
        raising(mm.APITimeoutError),
        "cancelled",
    ),
}

HOOK_OF = {"complete": "end", "failed": "error", "closed": "close", "cancelled": "cancel"}


def logged_end(caplog: pytest.LogCaptureFixture) -> tuple[str, int]:
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(lines) == 2, lines
    assert lines[0].startswith("chat.started ")
    match = re.match(r"chat\.(\w+) .* chunks=(\d+)", lines[1])
    assert match is not None, lines[1]
    return match[1], int(match[2])


@pytest.mark.parametrize("way", list(WAYS))
async def test_every_adapter_reports_the_same_outcome(
    way: str, seen: Seen, observers: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    faults, inside, outside, consume, expected = WAYS[way]
    caplog.set_level(logging.INFO, logger=LOGGER)
    async with TestServer(script=Script(chunks=6)) as server:
        if faults:
            server.inject(*faults)
        provider = OpenAI(model="gpt-4o-mini", api_key="sk-test", base_url=server.url("/v1"))
        middleware = [*outside, *observers, *inside]
        async with mm.MultiModalLLM(provider, middleware=middleware) as llm:
            received = await consume(llm)

    # Tracing
    (record,) = seen.traces
    assert (record.outcome, record.event) == (expected, f"chat.{expected}")
    assert record.chunks == received
    assert (record.time_to_first_chunk is None) == (received == 0)
    assert (record.error_type is not None) == (expected == "failed")
    # Logging
    assert logged_end(caplog) == (expected, received)
    # Callbacks: exactly one end hook, the outcome's
    assert seen.hooks == [HOOK_OF[expected]]
    assert seen.chunk_hooks == received
    # OpenTelemetry
    (span,) = seen.exporter.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert attributes["mmstream.outcome"] == expected
    assert attributes.get("error.type") == record.error_type
    failed = span.status.status_code is StatusCode.ERROR
    assert failed == (expected == "failed")
    assert [e.name for e in span.events] == (["first_chunk"] if received else [])
    # the facts measured once, reported alike
    if expected == "complete":
        assert record.usage is not None and record.usage.output_tokens == 6
        assert attributes["gen_ai.usage.output_tokens"] == 6
        assert record.answered_by == "openai:gpt-4o-mini"
        assert record.finish_reason == "stop"
    if received:
        assert record.text_length > 0


def test_the_rules() -> None:
    """What comes out of a call decides its outcome: the four are all reachable."""
    assert outcome_of(GeneratorExit()) == "closed"
    assert outcome_of(mm.OverloadedError("busy", status=529)) == "failed"
    assert outcome_of(ZeroDivisionError()) == "failed"
    assert outcome_of(KeyboardInterrupt()) == "cancelled"
    assert outcome_of(asyncio.CancelledError()) == "cancelled"
    assert OUTCOMES == ("complete", "failed", "closed", "cancelled")


async def test_callbacks_without_on_cancel_call_on_close_on_cancellation() -> None:
    seen: list[str] = []

    async def on_close(request: mm.ChatRequest) -> None:
        await anyio.sleep(0)
        seen.append("close")

    llm = mm.MultiModalLLM(
        mm.providers.Offline(chunks=20, delay=5), middleware=[Callbacks(on_close=on_close)]
    )
    with anyio.move_on_after(0.05) as scope:
        await llm.achat(["hi"])
    assert scope.cancelled_caught
    assert seen == ["close"]
    await llm.aclose()


async def test_logging_a_cancelled_call(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mmstream")
    llm = mm.MultiModalLLM(mm.providers.Offline(chunks=20, delay=5), middleware=[Logging()])
    with anyio.move_on_after(0.05):
        await llm.achat(["hi"])
    messages = [r.getMessage() for r in caplog.records]
    assert (
        messages[-1] == "chat.cancelled provider=offline model=default op=chat chunks=1"
    )  # the first came at once
    assert all(r.levelno == logging.INFO for r in caplog.records)  # not a failure
    await llm.aclose()


@pytest.mark.parametrize("sync_backend", ["asyncio", "trio"])
@pytest.mark.parametrize(
    ("fault", "expected"),
    [(None, "complete"), (STALL, "closed"), (Fault.http_status(500), "failed")],
    ids=["complete", "closed while the call waits", "failed"],
)
def test_blocking_streams_follow_the_same_rules(
    sync_backend: Literal["asyncio", "trio"],
    fault: Fault | None,
    expected: str,
    mmstream_thread_server: TestServer,
) -> None:
    """The blocking twin runs the same core in its pump task.

    Closing a blocking stream while its call waits for the provider cancels
    that wait, but the stream marks the call as left first: it reports
    ``"closed"``, as leaving at a chunk does.
    """
    server = mmstream_thread_server
    server.script = Script(chunks=6)
    if fault is not None:
        server.inject(fault)
    records: list[TraceRecord] = []
    hooks: list[str] = []
    callbacks = Callbacks(
        on_end=lambda r, last: hooks.append("end"),
        on_error=lambda r, exc: hooks.append("error"),
        on_close=lambda r: hooks.append("close"),
        on_cancel=lambda r: hooks.append("cancel"),
    )
    provider = OpenAI(model="gpt-4o-mini", api_key="sk-test", base_url=server.url("/v1"))
    middleware: list[Middleware] = [Tracing(sink=records.append), callbacks]
    received = 0
    with mm.MultiModalLLM(provider, middleware=middleware, sync_backend=sync_backend) as llm:
        try:
            with llm.stream_chat(["hi"]) as stream:
                for _ in stream:
                    received += 1
                    if fault is STALL:
                        break
        except mm.ServerError:
            assert expected == "failed"
    (record,) = records
    assert record.outcome == expected
    assert hooks == [HOOK_OF[expected]]
    assert record.chunks >= received  # the pump may have run ahead of the caller
    assert (record.chunks > 0) == (expected != "failed")


# --- the core itself: batches and chunks are the same machine ----------------------------


@attrs.define
class Log:
    """An observer recording every hook it gets, with what the observation said then."""

    events: list[tuple[Any, ...]] = attrs.field(factory=list)

    def observer(self, *, per_chunk: bool) -> Observer:
        return Observer(
            start=lambda c: self.events.append(("start", c.chunks)),
            first_chunk=lambda c: self.events.append(("first", c.chunks)),
            chunk=(lambda c, chunk: self.events.append(("chunk", c.chunks))) if per_chunk else None,
            end=lambda c: self.events.append(("end", c.outcome, c.chunks, c.text_length)),
        )


async def _chunks(fail_after: int | None = None) -> list[mm.ChatResponse]:
    """A real answer's chunks (the offline provider's, over its transport)."""
    async with mm.MultiModalLLM(mm.providers.Offline(chunks=9)) as llm:
        chunks = [c async for c in llm.astream_chat(["hi"])]
    return chunks if fail_after is None else chunks[:fail_after]


def _by_chunk(chunks: list[mm.ChatResponse], error: Exception | None) -> Any:
    async def call_next(request: mm.ChatRequest) -> AsyncIterator[mm.ChatResponse]:
        for chunk in chunks:
            yield chunk
        if error is not None:
            raise error

    return call_next


def _by_batch(chunks: list[mm.ChatResponse], error: Exception | None) -> Any:
    async def call_next(request: mm.ChatRequest) -> AsyncIterator[list[mm.ChatResponse]]:
        for start in range(0, len(chunks), 4):  # reads of four chunks, then an empty read
            yield chunks[start : start + 4]
        yield []
        if error is not None:
            raise error

    return call_next


@pytest.mark.parametrize("per_chunk", [False, True], ids=["counted", "per-chunk hook"])
@pytest.mark.parametrize("fails", [False, True], ids=["complete", "failed"])
async def test_a_batch_stream_is_observed_like_a_chunk_stream(per_chunk: bool, fails: bool) -> None:
    chunks = await _chunks(fail_after=5 if fails else None)
    request = mm.ChatRequest(
        provider=mm.providers.Offline(), messages=(mm.ChatMessage("user", "hi"),)
    )
    error = mm.OverloadedError("busy", status=529) if fails else None
    one, other = Log(), Log()

    got: list[mm.ChatResponse] = []
    with pytest.raises(mm.OverloadedError) if fails else _nothing():
        async for chunk in observe(
            request, _by_chunk(chunks, error), one.observer(per_chunk=per_chunk)
        ):
            got.append(chunk)
    batched: list[mm.ChatResponse] = []
    with pytest.raises(mm.OverloadedError) if fails else _nothing():
        batches = observe_batches(
            request, _by_batch(chunks, error), other.observer(per_chunk=per_chunk)
        )
        async for batch in batches:
            batched.extend(batch)
    assert got == batched == chunks
    outcome = "failed" if fails else "complete"
    assert one.events[0] == ("start", 0) and one.events[1] == ("first", 1)
    assert one.events[-1] == ("end", outcome, len(chunks), len(chunks[-1].text))
    if per_chunk:
        assert one.events == other.events
        assert [e for e in one.events if e[0] == "chunk"] == [
            ("chunk", n) for n in range(1, len(chunks) + 1)
        ]
    else:
        assert len(one.events) == 3
        assert other.events[0] == ("start", 0) and other.events[-1] == one.events[-1]
        assert other.events[1] == ("first", 4)  # a whole read counted in one step


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None


async def test_the_end_hook_runs_once_and_after_the_outcome_is_known() -> None:
    calls: list[Observation] = []
    observer = Observer(end=calls.append)
    request = mm.ChatRequest(
        provider=mm.providers.Offline(), messages=(mm.ChatMessage("user", "hi"),)
    )
    chunks = await _chunks()
    opened: list[Any] = []

    def call_next(request: mm.ChatRequest) -> AsyncIterator[mm.ChatResponse]:
        opened.append(_by_chunk(chunks, None)(request))  # what the chain would close
        return opened[-1]  # type: ignore[no-any-return]

    stream = observe(request, call_next, observer)
    assert calls == []  # creating the generator starts nothing
    first = await stream.__anext__()
    assert first is chunks[0] and calls == []
    await stream.aclose()  # type: ignore[attr-defined]
    await opened[0].aclose()
    (call,) = calls
    assert (call.outcome, call.chunks, call.error) == ("closed", 1, None)
    assert call.duration is not None and call.duration >= (call.time_to_first_chunk or 0) > 0


@pytest.mark.parametrize(("leave", "expected"), [(True, "closed"), (False, "cancelled")])
async def test_a_consumer_that_leaves_before_cancelling_its_wait_closes_the_call(
    mmstream_server: TestServer, leave: bool, expected: str
) -> None:
    """``ChatStream.leave()`` then a cancel: *closed*; the same cancel without it: *cancelled*."""
    mmstream_server.script = Script(chunks=6)
    mmstream_server.inject(STALL)
    records: list[TraceRecord] = []
    provider = OpenAI(model="gpt-4o-mini", api_key="sk-test", base_url=mmstream_server.url("/v1"))
    llm = mm.MultiModalLLM(provider, middleware=[Tracing(sink=records.append)])
    received = 0
    async with llm.astream_chat(["hi"]) as stream, anyio.create_task_group() as group:

        async def consume() -> None:
            nonlocal received
            async for _ in stream:
                received += 1
                if received == 2:  # the next chunk never comes: the wait stalls
                    group.start_soon(stop)

        async def stop() -> None:
            await anyio.sleep(0.05)
            if leave:
                stream.leave()
            group.cancel_scope.cancel()

        group.start_soon(consume)
    await llm.aclose()
    (record,) = records
    assert received == 2
    assert record.outcome == expected
    assert (await mmstream_server.wait_disconnect(timeout=1.0)).chunks_sent >= 2
