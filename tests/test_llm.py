"""MultiModalLLM on the offline provider: all eight methods, streams, early exits."""

from __future__ import annotations

import asyncio
import base64
import io
import threading
from pathlib import Path

import anyio
import pytest
from PIL import Image

import mmstream as mm
from mmstream.providers import Offline
from tests._helpers import Recorder


def png_bytes(
    colour: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (40, 20)
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def image_path(tmp_path: Path) -> Path:
    path = tmp_path / "red.png"
    path.write_bytes(png_bytes())
    return path


# --- the async methods -----------------------------------------------------------------


async def test_acomplete_describes_the_image(image_path: Path) -> None:
    async with mm.MultiModalLLM("offline:default") as llm:
        response = await llm.acomplete(
            "What is this?", [mm.ImageDocument(image_path=str(image_path))]
        )
    assert isinstance(response, mm.CompletionResponse)
    assert "40×20 PNG (landscape), mostly red" in response.text
    assert "You asked: “What is this?”" in response.text
    assert response.finish_reason == "stop"
    assert response.delta is None
    assert response.usage is not None
    assert response.usage.output_tokens == len(response.text.split(" "))
    assert response.usage.input_tokens == 3 + 85
    assert response.additional_kwargs["provider_finish_reason"] == "stop"


async def test_astream_complete_deltas_add_up_to_cumulative_text(image_path: Path) -> None:
    llm = mm.MultiModalLLM(Offline())
    deltas: list[str] = []
    texts: list[str] = []
    async for chunk in llm.astream_complete(
        "Describe", [mm.ImageDocument(image_path=str(image_path))]
    ):
        assert isinstance(chunk, mm.CompletionResponse)
        deltas.append(chunk.delta or "")
        texts.append(chunk.text)
    await llm.aclose()
    assert texts[-1] == "".join(deltas)
    # Every chunk's text is the prefix up to and including its own delta.
    running = ""
    for delta, text in zip(deltas, texts, strict=True):
        running += delta
        assert text == running
    assert len([d for d in deltas if d]) > 10


async def test_awaiting_the_stream_gives_the_stream_itself() -> None:
    """The LlamaIndex habit `async for c in await llm.astream_complete(...)` works."""
    llm = mm.MultiModalLLM()
    stream = llm.astream_complete("hi")
    assert await stream is stream
    chunks = [c async for c in await llm.astream_complete("hi")]
    assert chunks[-1].finish_reason == "stop"
    await llm.aclose()


async def test_achat_and_astream_chat_with_system_and_image_blocks(image_path: Path) -> None:
    messages = [
        mm.ChatMessage("system", "Be brief."),
        mm.ChatMessage(
            role=mm.MessageRole.USER,
            blocks=[
                mm.TextBlock("Compare"),
                mm.ImageBlock(path=image_path),
                mm.ImageBlock(image=png_bytes((0, 0, 250))),
            ],
        ),
    ]
    async with mm.MultiModalLLM("offline:default") as llm:
        response = await llm.achat(messages)
        streamed = [c async for c in llm.astream_chat(messages)]
    assert isinstance(response, mm.ChatResponse)
    assert "I see 2 images" in response.text
    assert "mostly red" in response.text and "mostly blue" in response.text
    assert response.message.role is mm.MessageRole.ASSISTANT
    assert response.message.content == response.text
    assert streamed[-1].text == response.text
    assert all(isinstance(c, mm.ChatResponse) for c in streamed)


async def test_call_options_override_provider_defaults() -> None:
    llm = mm.MultiModalLLM(Offline(max_tokens=50, chunks=20))
    capped = await llm.acomplete("hi", max_tokens=5)
    uncapped = await llm.acomplete("hi")
    assert capped.usage is not None and capped.usage.output_tokens == 5
    assert capped.finish_reason == "length"
    assert uncapped.usage is not None and uncapped.usage.output_tokens == 20
    assert uncapped.finish_reason == "stop"
    await llm.aclose()


def test_metadata_comes_from_the_provider() -> None:
    llm = mm.MultiModalLLM(Offline(model="tiny"))
    assert isinstance(llm.metadata, mm.MultiModalLLMMetadata)
    assert llm.metadata.model_name == "tiny"
    assert llm.metadata.is_chat_model is True
    assert mm.MultiModalLLMMetadata().context_window == 3900


def test_provider_strings() -> None:
    assert mm.MultiModalLLM("offline").provider == Offline()
    assert mm.MultiModalLLM("offline:other", chunks=3).provider == Offline(model="other", chunks=3)
    with pytest.raises(mm.ConfigurationError, match="unknown provider 'nope'"):
        mm.MultiModalLLM("nope:model")


async def test_bad_input_is_a_typed_error() -> None:
    llm = mm.MultiModalLLM()
    with pytest.raises(mm.InvalidRequestError, match="image_documents\\[0\\]"):
        await llm.acomplete("hi", ["not an image"])  # type: ignore[list-item]
    with pytest.raises(mm.InvalidImageError, match="cannot be read"):
        await llm.acomplete("hi", [mm.ImageDocument(image_path="/nonexistent/cat.png")])
    with pytest.raises(mm.InvalidImageError, match="not an image of a known type"):
        await llm.acomplete("hi", [mm.ImageDocument(image=base64.b64encode(b"hello").decode())])
    with pytest.raises(mm.InvalidRequestError, match="at least one message"):
        await llm.achat([])
    await llm.aclose()


# --- leaving early ---------------------------------------------------------------------


async def test_break_inside_async_with_closes_the_call_at_once() -> None:
    outer, inner = Recorder(), Recorder()
    llm = mm.MultiModalLLM(Offline(chunks=1000, delay=0.001), middleware=[outer, inner])
    async with llm.astream_complete("hi") as stream:
        async for _ in stream:
            break
    # Closed before control returned: both layers ran their exit code.
    assert outer.events == ["start", "closed", "exit"]
    assert inner.events == ["start", "closed", "exit"]
    assert outer.chunks == 1
    await llm.aclose()


async def test_bare_break_closes_the_dropped_stream_on_the_next_checkpoint() -> None:
    recorder = Recorder()
    llm = mm.MultiModalLLM(Offline(chunks=1000, delay=0.001), middleware=[recorder])
    async for _ in llm.astream_chat(["hi"]):
        break
    with anyio.fail_after(5):
        while "exit" not in recorder.events:
            await anyio.sleep(0)
    assert recorder.events == ["start", "closed", "exit"]
    await llm.aclose()


async def test_cancel_scope_mid_stream_closes_the_call() -> None:
    recorder = Recorder()
    llm = mm.MultiModalLLM(Offline(chunks=1000, delay=0.01), middleware=[recorder])
    received = 0
    with anyio.move_on_after(0.1) as scope:
        async for _ in llm.astream_complete("hi"):
            received += 1
    assert scope.cancelled_caught
    assert 0 < received < 1000
    assert recorder.events == ["start", "cancelled", "exit"]
    await llm.aclose()


async def test_exception_in_consumer_closes_the_call() -> None:
    recorder = Recorder()
    llm = mm.MultiModalLLM(Offline(chunks=100), middleware=[recorder])
    with pytest.raises(KeyError):
        async with llm.astream_complete("hi") as stream:
            async for _ in stream:
                raise KeyError("consumer bug")
    assert recorder.events == ["start", "closed", "exit"]
    await llm.aclose()


async def test_a_middleware_that_breaks_out_of_call_next_leaks_nothing() -> None:
    """The chain closes what a layer abandons (on trio an unclosed generator would warn)."""

    async def first_chunk_only(request: mm.ChatRequest, call_next: mm.middleware.CallNext):  # type: ignore[no-untyped-def]
        async for chunk in call_next(request):
            yield chunk
            break

    inner = Recorder()
    llm = mm.MultiModalLLM(Offline(chunks=50), middleware=[first_chunk_only, inner])
    chunks = [c async for c in llm.astream_complete("hi")]
    assert len(chunks) == 1
    assert inner.events == ["start", "closed", "exit"]
    await llm.aclose()


# --- errors mid-stream -----------------------------------------------------------------


async def test_mid_stream_failure_carries_the_partial_text() -> None:
    llm = mm.MultiModalLLM(Offline(chunks=30, fail_after=4))
    seen = ""
    with pytest.raises(mm.OverloadedError) as caught:
        async for chunk in llm.astream_complete("hi"):
            seen += chunk.delta or ""
    error = caught.value
    assert isinstance(error.partial, mm.ChatResponse)
    # Everything received reached the caller before the error, and is in .partial.
    assert error.partial.text == seen == "Offline answer: no model "
    assert error.provider == "offline"
    assert "fails after 4 chunks" in str(error)
    await llm.aclose()


async def test_acomplete_failure_partial_is_a_chat_response() -> None:
    llm = mm.MultiModalLLM(Offline(chunks=30, fail_after=3))
    with pytest.raises(mm.MMStreamError) as caught:
        await llm.acomplete("hi")
    assert isinstance(caught.value.partial, mm.ChatResponse)
    assert caught.value.partial.text == "Offline answer: no "
    await llm.aclose()


# --- scale -----------------------------------------------------------------------------


async def test_a_100000_chunk_stream_has_the_right_cumulative_text() -> None:
    llm = mm.MultiModalLLM(Offline(chunks=100_000))
    count = 0
    total = 0
    last = None
    async with llm.astream_complete("count") as stream:
        async for chunk in stream:
            count += 1
            total += len(chunk.delta or "")
            last = chunk
    await llm.aclose()
    assert last is not None
    assert count == 100_001  # 100,000 pieces and the final chunk
    assert len(last.text) == total
    words = last.text.split(" ")
    assert len(words) == 100_000
    # The answer's words cycle; the first sentence comes back again and again.
    assert last.text.startswith("Offline answer: no model was called.")
    assert last.text.count("Offline answer:") > 1000
    assert last.usage is not None and last.usage.output_tokens == 100_000


# --- the generated sync facades ----------------------------------------------------------


def test_sync_methods_from_a_plain_script(image_path: Path) -> None:
    with mm.MultiModalLLM("offline:default") as llm:
        completion = llm.complete("What?", [mm.ImageDocument(image_path=str(image_path))])
        chat = llm.chat([mm.ChatMessage("user", "Hello")])
        chunks = list(llm.stream_complete("What?", [mm.ImageDocument(image_path=str(image_path))]))
        chat_chunks = list(llm.stream_chat([mm.ChatMessage("user", "Hello")]))
    assert isinstance(completion, mm.CompletionResponse)
    assert "mostly red" in completion.text
    assert isinstance(chat, mm.ChatResponse)
    assert "“Hello”" in chat.text
    assert chunks[-1].text == completion.text
    assert all(isinstance(c, mm.CompletionResponse) for c in chunks)
    assert chat_chunks[-1].text == chat.text
    assert all(isinstance(c, mm.ChatResponse) for c in chat_chunks)


def test_sync_twins_are_generated_with_the_async_signatures() -> None:
    import inspect

    for name in ("chat", "complete", "stream_chat", "stream_complete"):
        sync, async_ = getattr(mm.MultiModalLLM, name), getattr(mm.MultiModalLLM, "a" + name)
        assert sync.__name__ == name
        assert sync.__wrapped__ is async_
        assert (
            inspect.signature(sync).parameters.keys() == inspect.signature(async_).parameters.keys()
        )
        assert not inspect.iscoroutinefunction(sync)


def test_sync_stream_break_inside_with_closes_before_returning() -> None:
    recorder = Recorder()
    with mm.MultiModalLLM(Offline(chunks=10_000, delay=0.0005), middleware=[recorder]) as llm:
        with llm.stream_complete("hi") as stream:
            for _ in stream:
                break
        # The pump may be waiting for the next chunk: then it is cancelled, not closed.
        assert recorder.events in (["start", "closed", "exit"], ["start", "cancelled", "exit"])
        assert 1 <= recorder.chunks < 10_000


def test_sync_stream_error_carries_partial() -> None:
    with mm.MultiModalLLM(Offline(chunks=30, fail_after=2)) as llm:
        seen = ""
        with pytest.raises(mm.OverloadedError) as caught:
            for chunk in llm.stream_complete("hi"):
                seen += chunk.delta or ""
        assert caught.value.partial is not None
        assert caught.value.partial.text == seen == "Offline answer: "


def test_sync_from_several_threads_at_once() -> None:
    results: dict[int, str] = {}
    errors: list[BaseException] = []
    llm = mm.MultiModalLLM(Offline(chunks=200))

    def work(n: int) -> None:
        try:
            text = "".join(c.delta or "" for c in llm.stream_complete(f"thread {n}"))
            assert text == llm.complete(f"thread {n}").text
            results[n] = text
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    llm.close()
    assert not errors
    assert sorted(results) == list(range(8))
    assert len({len(t.split(" ")) for t in results.values()}) == 1  # 200 words each


def test_sync_from_a_thread_with_a_running_asyncio_loop() -> None:
    """As in a Jupyter cell: the blocking call runs while this thread's loop is running."""

    async def cell() -> str:
        with mm.MultiModalLLM() as llm:
            return llm.complete("from jupyter").text

    text = asyncio.run(cell())
    assert "“from jupyter”" in text


def test_sync_facade_on_a_trio_portal() -> None:
    with mm.MultiModalLLM(Offline(chunks=30), sync_backend="trio") as llm:
        chunks = list(llm.stream_complete("hi"))
        assert len(chunks) == 31
        assert llm.complete("hi").text == chunks[-1].text


def test_blocking_call_from_inside_the_portal_is_refused() -> None:
    """A middleware that calls a blocking method would deadlock: it gets a clear error."""
    errors: list[BaseException] = []
    holder: dict[str, mm.MultiModalLLM] = {}

    async def nested(request: mm.ChatRequest, call_next: mm.middleware.CallNext):  # type: ignore[no-untyped-def]
        try:
            holder["llm"].complete("inner")
        except mm.ConfigurationError as exc:
            errors.append(exc)
        async for chunk in call_next(request):
            yield chunk

    with mm.MultiModalLLM(middleware=[nested]) as llm:
        holder["llm"] = llm
        assert llm.complete("outer").finish_reason == "stop"
    assert len(errors) == 1
    assert "use the async method" in str(errors[0])


def test_a_closed_llm_stays_closed() -> None:
    """Closed means closed: every later call, blocking or async, raises ClosedError."""
    llm = mm.MultiModalLLM()
    assert llm.complete("one").finish_reason == "stop"
    llm.close()
    llm.close()  # idempotent
    assert llm.closed
    for call in (
        lambda: llm.complete("two"),
        lambda: llm.chat(["two"]),
        lambda: next(iter(llm.stream_complete("two"))),
        lambda: llm.astream_chat(["two"]),
        lambda: anyio.run(llm.acomplete, "two"),
        llm.__enter__,
        lambda: anyio.run(llm.__aenter__),
    ):
        with pytest.raises(mm.ClosedError, match="the LLM was closed") as caught:
            call()
        assert "Create a new MultiModalLLM" in str(caught.value)
        assert "environment variables" not in str(caught.value)


def test_sync_stream_next_and_for_share_one_position() -> None:
    with mm.MultiModalLLM(Offline(chunks=40)) as llm:
        stream = llm.stream_complete("hi")
        first = next(stream)
        rest = list(stream)
        assert [first, *rest][-1].text == first.text + "".join(c.delta or "" for c in rest)
        assert len(rest) == 40
        with pytest.raises(StopIteration):
            next(stream)
