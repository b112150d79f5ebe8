"""The middleware chain and the built-in Tracing, Callbacks and Logging layers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import anyio
import attrs
import pytest

import mmstream as mm
from mmstream.middleware import Callbacks, Logging, TraceRecord, Tracing
from mmstream.providers import Offline
from tests._helpers import Recorder


@attrs.frozen
class Tag:
    """Appends its name to every delta, so the order of layers shows in the text."""

    name: str
    log: list[str]

    async def __call__(
        self, request: mm.ChatRequest, call_next: mm.middleware.CallNext
    ) -> AsyncIterator[mm.ChatResponse]:
        self.log.append(f"enter {self.name}")
        async for chunk in call_next(request):
            yield attrs.evolve(chunk, delta=f"{chunk.delta}[{self.name}]")
        self.log.append(f"leave {self.name}")


async def test_layers_run_outermost_first() -> None:
    log: list[str] = []
    llm = mm.MultiModalLLM(Offline(chunks=2), middleware=[Tag("outer", log), Tag("inner", log)])
    deltas = [c.delta async for c in llm.astream_complete("hi")]
    assert log == ["enter outer", "enter inner", "leave inner", "leave outer"]
    assert deltas[0] is not None
    assert deltas[0].endswith("[inner][outer]")
    await llm.aclose()


async def test_a_layer_can_change_the_request() -> None:
    async def cap(request: mm.ChatRequest, call_next: mm.middleware.CallNext):  # type: ignore[no-untyped-def]
        capped = attrs.evolve(request, options=request.options.merge(max_tokens=3))
        async for chunk in call_next(capped):
            yield chunk

    llm = mm.MultiModalLLM(Offline(chunks=50), middleware=[cap])
    response = await llm.acomplete("hi")
    assert response.usage is not None
    assert response.usage.output_tokens == 3
    assert response.finish_reason == "length"
    await llm.aclose()


async def test_tracing_records_a_complete_call() -> None:
    records: list[TraceRecord] = []
    llm = mm.MultiModalLLM(
        Offline(chunks=25, delay=0.001), middleware=[Tracing(sink=records.append)]
    )
    response = await llm.acomplete("hi")
    assert len(records) == 1
    record = records[0]
    assert record.event == "chat.complete"
    assert record.outcome == "complete"
    assert record.chunks == 26  # 25 pieces + the final chunk
    assert record.provider == "offline"
    assert record.model == "default"
    assert record.operation == "complete"
    assert record.time_to_first_chunk is not None
    assert 0 < record.time_to_first_chunk <= record.duration
    assert record.usage == response.usage
    assert record.finish_reason == "stop"
    assert record.answered_by == "offline:default"
    assert record.error is None
    assert record.attempt == 1
    await llm.aclose()


async def test_tracing_records_the_error_of_a_mid_stream_failure() -> None:
    records: list[TraceRecord] = []

    async def sink(record: TraceRecord) -> None:  # async sinks are awaited
        await anyio.sleep(0)
        records.append(record)

    llm = mm.MultiModalLLM(Offline(chunks=30, fail_after=5), middleware=[Tracing(sink=sink)])
    with pytest.raises(mm.OverloadedError) as caught:
        await llm.achat(["hi"])
    assert caught.value.partial is not None
    assert caught.value.partial.text == "Offline answer: no model was "
    (record,) = records
    assert record.event == "chat.failed"
    assert record.error_type == "OverloadedError"
    assert record.error is not None
    assert "fails after 5 chunks" in record.error
    await llm.aclose()


async def test_tracing_records_an_early_close_when_the_stream_really_ends() -> None:
    records: list[TraceRecord] = []
    llm = mm.MultiModalLLM(Offline(chunks=100), middleware=[Tracing(sink=records.append)])
    stream = llm.astream_complete("hi")
    assert records == []  # creating the stream starts nothing
    async with stream:
        async for _ in stream:
            assert records == []  # nothing is recorded while the stream is open
            break
    (record,) = records
    assert record.event == "chat.closed"
    assert record.chunks == 1
    assert record.error is None
    await llm.aclose()


async def test_tracing_without_a_sink_logs_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="mmstream")
    llm = mm.MultiModalLLM(middleware=[Tracing()])
    await llm.acomplete("hi")
    assert any(r.message.startswith("chat.complete TraceRecord(") for r in caplog.records)
    await llm.aclose()


async def test_callbacks_sync_and_async() -> None:
    seen: list[str] = []

    async def on_chunk(request: mm.ChatRequest, chunk: mm.ChatResponse) -> None:
        seen.append("chunk")

    callbacks = Callbacks(
        on_start=lambda request: seen.append(f"start {request.operation}"),
        on_chunk=on_chunk,
        on_end=lambda request, last: seen.append(f"end {last.finish_reason}"),
        on_error=lambda request, exc: seen.append(f"error {type(exc).__name__}"),
    )
    llm = mm.MultiModalLLM(Offline(chunks=3), middleware=[callbacks])
    await llm.acomplete("hi")
    assert seen == ["start complete", "chunk", "chunk", "chunk", "chunk", "end stop"]
    seen.clear()
    failing = mm.MultiModalLLM(Offline(chunks=3, fail_after=1), middleware=[callbacks])
    with pytest.raises(mm.OverloadedError):
        await failing.achat(["hi"])
    assert seen == ["start chat", "chunk", "error OverloadedError"]
    await llm.aclose()
    await failing.aclose()


async def test_callbacks_on_close() -> None:
    closed: list[str] = []
    llm = mm.MultiModalLLM(
        Offline(chunks=10), middleware=[Callbacks(on_close=lambda r: closed.append("closed"))]
    )
    async with llm.astream_chat(["hi"]) as stream:
        async for _ in stream:
            break
    assert closed == ["closed"]
    await llm.aclose()


async def test_logging_never_logs_secrets_or_prompts(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mmstream")
    llm = mm.MultiModalLLM(Offline(chunks=4), middleware=[Logging()])
    await llm.acomplete("my secret prompt")
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "chat.started provider=offline model=default op=complete attempt=1"
    assert messages[1].startswith(
        "chat.complete provider=offline model=default op=complete chunks=5"
    )
    assert "output_tokens=4" in messages[1]
    assert not any("secret" in m for m in messages)
    await llm.aclose()


async def test_recorder_sees_the_same_chunks_as_the_caller() -> None:
    recorder = Recorder()
    llm = mm.MultiModalLLM(Offline(chunks=7), middleware=[recorder])
    chunks = [c async for c in llm.astream_chat(["hi"])]
    assert recorder.chunks == len(chunks) == 8
    assert recorder.events == ["start", "complete", "exit"]
    await llm.aclose()
