"""The middleware chain: per-chunk and batch-level layers, order, closing, the fast path.

A batch-level layer (a ``batches`` method) sees the chunks of one network read
as a list; per-chunk layers see them one by one; the chain converts between
the two only where they meet, and closes every iterator a call opened.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import anyio
import attrs
import pytest

import mmstream as mm
from mmstream.middleware import BatchCallNext, CallNext, compose
from mmstream.providers import Offline
from mmstream.providers.openai import OpenAI
from mmstream.testing import Fault, Script, TestServer, answer_text
from tests._helpers import Recorder


@attrs.define
class BatchRecorder:
    """A batch-level layer that records the lists it saw and how the call ended."""

    name: str = "batch"
    log: list[str] = attrs.field(factory=list)
    sizes: list[int] = attrs.field(factory=list)

    async def batches(
        self, request: mm.ChatRequest, call_next: BatchCallNext
    ) -> AsyncIterator[list[mm.ChatResponse]]:
        self.log.append(f"{self.name}:start")
        try:
            async for batch in call_next(request):
                assert isinstance(batch, list) and batch
                self.sizes.append(len(batch))
                yield batch
        except GeneratorExit:
            self.log.append(f"{self.name}:closed")
            raise
        except BaseException as exc:
            self.log.append(f"{self.name}:failed:{type(exc).__name__}")
            raise
        self.log.append(f"{self.name}:complete")


@attrs.define
class Tagger:
    """A per-chunk layer that logs its entry (to check the order)."""

    name: str
    log: list[str]

    async def __call__(
        self, request: mm.ChatRequest, call_next: CallNext
    ) -> AsyncIterator[mm.ChatResponse]:
        self.log.append(f"{self.name}:start")
        async for chunk in call_next(request):
            yield chunk
        self.log.append(f"{self.name}:complete")


@attrs.frozen
class Upper:
    """A batch-level layer that rewrites the text (a new list, new chunks)."""

    async def batches(
        self, request: mm.ChatRequest, call_next: BatchCallNext
    ) -> AsyncIterator[list[mm.ChatResponse]]:
        text = ""
        async for batch in call_next(request):
            out = []
            for chunk in batch:
                delta = (chunk.delta or "").upper()
                text += delta
                out.append(attrs.evolve(chunk, delta=delta, text=text))
            yield out


async def test_a_batch_layer_sees_whole_network_reads() -> None:
    layer = BatchRecorder()
    async with mm.MultiModalLLM(Offline(chunks=500), middleware=[layer]) as llm:
        plain = [c async for c in mm.MultiModalLLM(Offline(chunks=500)).astream_chat(["hi"])]
        chunks = [c async for c in llm.astream_chat(["hi"])]
    assert [c.text for c in chunks] == [c.text for c in plain]
    assert sum(layer.sizes) == len(chunks) == 501
    assert len(layer.sizes) < 501  # fewer steps than chunks: reads hold many
    assert layer.log == ["batch:start", "batch:complete"]


@pytest.mark.parametrize(
    "kinds", ["cbcb", "bcbc", "bbcc", "ccbb"], ids=lambda k: k.replace("c", "C").replace("b", "B")
)
async def test_mixed_layers_run_outermost_first_and_change_nothing(kinds: str) -> None:
    log: list[str] = []
    layers: list[object] = []
    for index, kind in enumerate(kinds):
        name = f"{kind}{index}"
        layers.append(BatchRecorder(name=name, log=log) if kind == "b" else Tagger(name, log))
    async with mm.MultiModalLLM(Offline(chunks=200), middleware=layers) as llm:  # type: ignore[arg-type]
        response = await llm.achat(["hi"])
        expected = await mm.MultiModalLLM(Offline(chunks=200)).achat(["hi"])
    assert response.text == expected.text and response.usage == expected.usage
    starts = [entry for entry in log if entry.endswith(":start")]
    assert starts == [f"{kind}{i}:start" for i, kind in enumerate(kinds)]
    ends = [entry for entry in log if entry.endswith(":complete")]
    assert ends == [f"{kind}{i}:complete" for i, kind in reversed(list(enumerate(kinds)))]


async def test_a_batch_layer_may_rewrite_chunks() -> None:
    async with mm.MultiModalLLM(Offline(chunks=30), middleware=[Upper(), Recorder()]) as llm:
        response = await llm.achat(["hi"])
        streamed = [c async for c in llm.astream_chat(["hi"])]
    assert response.text == response.text.upper() != ""
    assert streamed[-1].text == "".join(c.delta or "" for c in streamed) == response.text


async def test_leaving_early_closes_batch_and_chunk_layers_alike() -> None:
    outer, inner = BatchRecorder(name="outer"), Recorder()
    llm = mm.MultiModalLLM(Offline(chunks=1000, delay=0.001), middleware=[outer, inner])
    async with llm.astream_chat(["hi"]) as stream:
        async for _ in stream:
            break
    assert outer.log == ["outer:start", "outer:closed"]
    assert inner.events == ["start", "closed", "exit"]
    await llm.aclose()


async def test_a_batch_layer_that_breaks_out_leaks_nothing() -> None:
    """The chain closes what a layer abandons (trio would warn about an unclosed generator)."""

    @attrs.frozen
    class FirstReadOnly:
        async def batches(
            self, request: mm.ChatRequest, call_next: BatchCallNext
        ) -> AsyncIterator[list[mm.ChatResponse]]:
            async for batch in call_next(request):
                yield batch
                break

    inner = Recorder()
    llm = mm.MultiModalLLM(Offline(chunks=100, delay=0.001), middleware=[FirstReadOnly(), inner])
    chunks = [c async for c in llm.astream_chat(["hi"])]
    assert len(chunks) == 1  # each read holds one chunk when the chunks are paced
    assert inner.events == ["start", "closed", "exit"]
    await llm.aclose()


async def test_errors_pass_through_batch_layers_with_partial() -> None:
    layer = BatchRecorder()
    llm = mm.MultiModalLLM(Offline(chunks=30, fail_after=4), middleware=[layer, Recorder()])
    seen = ""
    with pytest.raises(mm.OverloadedError) as caught:
        async for chunk in llm.astream_chat(["hi"]):
            seen += chunk.delta or ""
    assert caught.value.partial is not None
    assert caught.value.partial.text == seen != ""
    assert layer.log == ["batch:start", "batch:failed:OverloadedError"]
    await llm.aclose()


def test_batch_layers_on_the_blocking_side() -> None:
    for backend in ("asyncio", "trio"):
        layer = BatchRecorder()
        with mm.MultiModalLLM(
            Offline(chunks=300),
            middleware=[layer],
            sync_backend=backend,
        ) as llm:
            chunks = list(llm.stream_chat(["hi"]))
            assert sum(layer.sizes) == len(chunks) == 301
            assert layer.log == ["batch:start", "batch:complete"]
            for _ in llm.stream_chat(["hi"]):
                break
            end = time.monotonic() + 1
            while len(layer.log) < 4 and time.monotonic() < end:
                time.sleep(0.002)
            assert layer.log[2:] == ["batch:start", "batch:closed"]


# --- compose() on its own -------------------------------------------------------------------


async def test_compose_builds_a_chain_whose_calls_close_every_layer() -> None:
    opened: list[str] = []

    async def endpoint(request: mm.ChatRequest) -> AsyncIterator[list[mm.ChatResponse]]:
        opened.append("endpoint")
        try:
            for n in range(5):
                yield [mm.ChatResponse(text="x" * (n + 1), delta="x")]
                await anyio.sleep(0)
        finally:
            opened.append("endpoint closed")

    recorder = Recorder()
    chain = compose([recorder, BatchRecorder()], endpoint)
    assert chain.middleware == (recorder, chain.middleware[1])
    request = mm.ChatRequest(messages=[mm.ChatMessage("user", "hi")], provider=Offline())
    call = chain.open(request)
    first = await call.__anext__()
    assert [c.text for c in first] == ["x"]
    await call.aclose()
    assert opened == ["endpoint", "endpoint closed"]
    assert recorder.events == ["start", "closed", "exit"]
    # Nothing ran for a call never iterated.
    untouched = chain.open(request)
    await untouched.aclose()
    assert opened == ["endpoint", "endpoint closed"]


# --- the fast path (no middleware) keeps every guarantee ------------------------------------


def openai_at(server: TestServer) -> OpenAI:
    return OpenAI(model="gpt-4o-mini", api_key="sk-test", base_url=server.url("/v1"))


async def test_without_middleware_leaving_early_closes_the_response_at_once(
    mmstream_server: TestServer,
) -> None:
    server = mmstream_server
    server.script = Script(chunks=400, pause=0.01)
    async with mm.MultiModalLLM(openai_at(server)) as llm:
        async with llm.astream_complete("one two three") as stream:
            async for _ in stream:
                break
        disconnect = await server.wait_disconnect(timeout=1.0)
        assert disconnect.chunks_sent < 400

        with anyio.move_on_after(0.1):
            async for _ in llm.astream_complete("one two three"):
                pass
        disconnect = await server.wait_disconnect(timeout=1.0, count=2)
        assert disconnect.chunks_sent < 400

        server.script = Script()
        assert (await llm.acomplete("again")).text == answer_text("again")


async def test_without_middleware_a_dropped_stream_is_closed_on_its_loop(
    mmstream_server: TestServer,
) -> None:
    server = mmstream_server
    server.script = Script(chunks=400, pause=0.01)
    async with mm.MultiModalLLM(openai_at(server)) as llm:
        async for _ in llm.astream_complete("one two three"):
            break
        disconnect = await server.wait_disconnect(timeout=1.0)
        assert disconnect.chunks_sent < 400


async def test_without_middleware_a_failure_carries_partial(mmstream_server: TestServer) -> None:
    server = mmstream_server
    async with mm.MultiModalLLM(openai_at(server)) as llm:
        server.inject(Fault.drop(after_chunks=3))
        seen = ""
        with pytest.raises(mm.MMStreamError) as caught:
            async for chunk in llm.astream_complete("one two three four five six"):
                seen += chunk.delta or ""
        assert caught.value.partial is not None
        assert caught.value.partial.text == seen != ""

        server.inject(Fault.drop(after_chunks=3))
        with pytest.raises(mm.MMStreamError) as caught:
            await llm.acomplete("one two three four five six")
        assert caught.value.partial is not None
        assert caught.value.partial.text == seen
