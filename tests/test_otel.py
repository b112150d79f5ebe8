"""OpenTelemetry middleware: one span per call, ended when the stream really ends; GenAI metrics."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import attrs
import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from PIL import Image

import mmstream as mm
from mmstream.middleware.otel import OpenTelemetry


@attrs.define
class Telemetry:
    """An SDK tracer and meter provider with in-memory exporters, and the middleware on them."""

    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def middleware(self, **kwargs: Any) -> OpenTelemetry:
        return OpenTelemetry(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider, **kwargs
        )

    def llm(self, provider: mm.providers.Offline | None = None, **kwargs: Any) -> mm.MultiModalLLM:
        return mm.MultiModalLLM(
            provider or mm.providers.Offline(), middleware=[self.middleware(**kwargs)]
        )

    def spans(self) -> tuple[ReadableSpan, ...]:
        return tuple(self.exporter.get_finished_spans())

    def points(self, name: str) -> list[HistogramDataPoint]:
        data = self.reader.get_metrics_data()
        found: list[HistogramDataPoint] = []
        if data is None:
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)  # type: ignore[arg-type]
        return found


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield Telemetry(exporter, reader, tracer_provider, meter_provider)
    tracer_provider.shutdown()
    meter_provider.shutdown()


def image() -> mm.ImageDocument:
    return mm.ImageDocument.from_pil(Image.new("RGB", (16, 16), (40, 70, 210)))


async def test_streamed_call(telemetry: Telemetry) -> None:
    llm = telemetry.llm(mm.providers.Offline(model="vision-1", chunks=5))
    stream = llm.astream_complete(
        "What is this?", [image()], max_tokens=50, temperature=0.2, top_p=0.9
    )
    assert telemetry.spans() == ()  # creating the stream starts nothing
    last_chunk_at = 0
    count = 0
    async with stream:
        async for chunk in stream:
            count += bool(chunk.delta)
            # The span is open for as long as chunks flow.
            assert telemetry.spans() == ()
            last_chunk_at = time.time_ns()
    assert count == 5
    (span,) = telemetry.spans()
    assert span.name == "chat vision-1"
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    assert span.end_time is not None and span.start_time is not None
    assert span.end_time >= last_chunk_at
    attributes = dict(span.attributes or {})
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "offline"
    assert attributes["gen_ai.request.model"] == "vision-1"
    assert attributes["gen_ai.request.max_tokens"] == 50
    assert attributes["gen_ai.request.temperature"] == pytest.approx(0.2)
    assert attributes["gen_ai.request.top_p"] == pytest.approx(0.9)
    assert attributes["gen_ai.response.model"] == "vision-1"
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert attributes["gen_ai.usage.input_tokens"] == chunk.usage.input_tokens  # type: ignore[union-attr]
    assert attributes["gen_ai.usage.output_tokens"] == 5
    assert attributes["mmstream.operation"] == "complete"
    assert attributes["mmstream.outcome"] == "complete"
    assert "error.type" not in attributes
    # Nothing of the prompt or the image is recorded by default.
    assert not any("messages" in key for key in attributes)
    assert "What is this?" not in repr(span.to_json())
    (event,) = span.events
    assert event.name == "first_chunk"
    assert span.start_time <= event.timestamp <= span.end_time


async def test_metrics(telemetry: Telemetry) -> None:
    llm = telemetry.llm(mm.providers.Offline(model="m", chunks=4))
    response = await llm.acomplete("hi", [image()])
    (duration,) = telemetry.points("gen_ai.client.operation.duration")
    assert duration.count == 1
    assert duration.sum > 0
    assert dict(duration.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "offline",
        "gen_ai.request.model": "m",
        "gen_ai.response.model": "m",
    }
    (first,) = telemetry.points("gen_ai.client.operation.time_to_first_chunk")
    assert first.count == 1
    assert 0 < first.sum <= duration.sum
    tokens = {
        dict(p.attributes or {})["gen_ai.token.type"]: p
        for p in telemetry.points("gen_ai.client.token.usage")
    }
    assert set(tokens) == {"input", "output"}
    assert response.usage is not None
    assert tokens["input"].sum == response.usage.input_tokens
    assert tokens["output"].sum == response.usage.output_tokens == 4
    assert list(duration.explicit_bounds)[:3] == [0.01, 0.02, 0.04]
    assert list(tokens["input"].explicit_bounds)[:3] == [1, 4, 16]


async def test_early_close(telemetry: Telemetry) -> None:
    llm = telemetry.llm(mm.providers.Offline(chunks=20))
    async with llm.astream_chat([mm.ChatMessage("user", "hi")]) as stream:
        async for _ in stream:
            closed_after = time.time_ns()
            break
        # Left the loop, still inside ``async with``: the span is not over yet.
        assert telemetry.spans() == ()
    (span,) = telemetry.spans()
    assert span.end_time is not None and span.end_time >= closed_after
    attributes = dict(span.attributes or {})
    assert attributes["mmstream.outcome"] == "closed"
    assert attributes["mmstream.operation"] == "chat"
    assert "error.type" not in attributes
    assert "gen_ai.response.finish_reasons" not in attributes
    assert span.status.status_code is StatusCode.UNSET
    (duration,) = telemetry.points("gen_ai.client.operation.duration")
    assert "error.type" not in dict(duration.attributes or {})
    assert telemetry.points("gen_ai.client.token.usage") == []


async def test_failed_call(telemetry: Telemetry) -> None:
    llm = telemetry.llm(mm.providers.Offline(chunks=10, fail_after=3, delay=0.001))
    received = 0
    with pytest.raises(mm.OverloadedError) as info:
        async with llm.astream_complete("hi") as stream:
            async for _ in stream:
                received += 1
                last_chunk_at = time.time_ns()
    assert received == 3
    assert info.value.partial is not None
    (span,) = telemetry.spans()
    assert span.end_time is not None and span.end_time >= last_chunk_at
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description and "fails after 3 chunks" in span.status.description
    attributes = dict(span.attributes or {})
    assert attributes["error.type"] == "OverloadedError"
    assert attributes["mmstream.outcome"] == "failed"
    (duration,) = telemetry.points("gen_ai.client.operation.duration")
    assert dict(duration.attributes or {})["error.type"] == "OverloadedError"


async def test_failure_before_the_first_chunk(telemetry: Telemetry) -> None:
    llm = telemetry.llm(mm.providers.Offline(fail_after=0))
    with pytest.raises(mm.OverloadedError):
        await llm.achat(["hi"])
    (span,) = telemetry.spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.events == ()
    assert telemetry.points("gen_ai.client.operation.time_to_first_chunk") == []


async def test_one_span_per_call(telemetry: Telemetry) -> None:
    llm = telemetry.llm()
    await llm.acomplete("one")
    await llm.achat(["two"])
    async with llm.astream_complete("three") as stream:
        async for _ in stream:
            pass
    spans = telemetry.spans()
    assert len(spans) == 3
    assert len({span.context.span_id for span in spans}) == 3
    assert [dict(s.attributes or {})["mmstream.operation"] for s in spans] == [
        "complete",
        "chat",
        "complete",
    ]


async def test_span_is_current_inside_the_call_only(telemetry: Telemetry) -> None:
    """Inner layers see the span as current; the consumer between chunks does not."""
    from opentelemetry import trace

    seen: list[int] = []

    async def inner(request: mm.ChatRequest, call_next: Any) -> Any:
        async for chunk in call_next(request):
            seen.append(trace.get_current_span().get_span_context().span_id)
            yield chunk

    llm = mm.MultiModalLLM(
        mm.providers.Offline(chunks=3), middleware=[telemetry.middleware(), inner]
    )
    outside: list[int] = []
    async with llm.astream_chat(["hi"]) as stream:
        async for _ in stream:
            outside.append(trace.get_current_span().get_span_context().span_id)
    (span,) = telemetry.spans()
    assert seen == [span.context.span_id] * 4  # three text chunks and the final one
    assert outside == [0] * 4  # no span leaked into the consumer


async def test_capture_content(telemetry: Telemetry) -> None:
    llm = telemetry.llm(capture_content=True)
    response = await llm.acomplete("What is this?", [image()])
    (span,) = telemetry.spans()
    attributes = dict(span.attributes or {})
    (message,) = json.loads(str(attributes["gen_ai.input.messages"]))
    assert message["role"] == "user"
    image_part, text_part = message["parts"]
    assert text_part == {"type": "text", "content": "What is this?"}
    assert image_part["type"] == "image" and image_part["size"] > 0
    assert "content" not in image_part  # image bytes only with capture_images
    (output,) = json.loads(str(attributes["gen_ai.output.messages"]))
    assert output == {
        "role": "assistant",
        "parts": [{"type": "text", "content": response.text}],
        "finish_reason": "stop",
    }


async def test_capture_images(telemetry: Telemetry) -> None:
    llm = telemetry.llm(capture_content=True, capture_images=True)
    await llm.acomplete("What is this?", [image(), mm.ImageDocument(image_url="https://e/x.png")])
    (span,) = telemetry.spans()
    (message,) = json.loads(str(dict(span.attributes or {})["gen_ai.input.messages"]))
    blob, uri, _ = message["parts"]
    assert blob["type"] == "blob" and blob["modality"] == "image"
    assert mm.ImageDocument(image=blob["content"]).image == blob["content"]
    assert uri == {
        "type": "file_data",
        "modality": "image",
        "uri": "https://e/x.png",
        "mime_type": None,
    }


def test_sync_stream(telemetry: Telemetry) -> None:
    """The blocking twin runs the same middleware in one pump task: one span, ended at the end."""
    with telemetry.llm(mm.providers.Offline(chunks=4)) as llm:
        with llm.stream_complete("hi") as stream:
            chunks = list(stream)
            last_chunk_at = time.time_ns()
        assert len(chunks) == 5  # four text chunks and the final one
    (span,) = telemetry.spans()
    assert span.end_time is not None and span.end_time <= last_chunk_at
    assert dict(span.attributes or {})["mmstream.outcome"] == "complete"


def test_middleware_is_exported() -> None:
    assert mm.middleware.OpenTelemetry is OpenTelemetry
    assert "tracer_provider" in repr(OpenTelemetry())


async def test_capture_content_records_the_tool_calls(telemetry: Telemetry) -> None:
    from mmstream.testing import Script, TestServer, ToolCall

    call = ToolCall(name="get_weather", arguments={"city": "Paris"}, id="call_1")
    async with TestServer(script=Script(text="Let me look.", tool_calls=[call])) as server:
        provider = mm.providers.OpenAI(
            model="gpt-4o-mini", api_key="sk-test", base_url=server.url("/v1")
        )
        llm = mm.MultiModalLLM(provider, middleware=[telemetry.middleware(capture_content=True)])
        response = await llm.achat(["What is the weather in Paris?"])
        await llm.aclose()
    assert response.additional_kwargs["tool_calls"][0]["name"] == "get_weather"
    (span,) = telemetry.spans()
    attributes = dict(span.attributes or {})
    (output,) = json.loads(str(attributes["gen_ai.output.messages"]))
    assert output == {
        "role": "assistant",
        "parts": [
            {"type": "text", "content": "Let me look."},
            {
                "type": "tool_call",
                "id": "call_1",
                "name": "get_weather",
                "arguments": {"city": "Paris"},
            },
        ],
        "finish_reason": "tool_calls",
    }
    assert attributes["gen_ai.response.finish_reasons"] == ("tool_calls",)
