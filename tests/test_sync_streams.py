"""Blocking streams and calls: every way of leaving them, read-ahead, the pool, close().

Each test runs on both blocking backends. The server runs in a thread
(``mmstream_thread_server``), so that what it saw — a client that left, the
connections it opened — is observed, not inferred. The garbage collector is off
wherever a dropped stream must be closed: closing must not wait for it.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

import mmstream as mm
from mmstream.providers import Offline
from mmstream.providers.openai import OpenAI
from mmstream.testing import Fault, Script, TestServer, answer_text
from mmstream.transport import Timeouts, Transport
from tests._helpers import Recorder

BACKENDS = pytest.mark.parametrize("sync_backend", ["asyncio", "trio"])


def openai_at(server: TestServer) -> OpenAI:
    return OpenAI(model="gpt-4o-mini", api_key="sk-test", base_url=server.url("/v1"))


def small_pool(connections: int = 1) -> Transport:
    """A pool so small that a response left open starves the next call (pool timeout: 3 s)."""
    return Transport(
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        timeout=Timeouts(connect=5, read=10, write=10, pool=3),
    )


def wait_for(condition: Callable[[], bool], timeout: float = 1.0) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(0.002)


@pytest.fixture
def no_gc() -> Iterator[None]:
    """Reference counting alone must close a dropped stream: no collector runs meanwhile."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


# --- every way of leaving a blocking stream ------------------------------------------------


def leave_with_break(llm: mm.MultiModalLLM) -> None:
    with llm.stream_complete("one two three") as stream:
        for _ in stream:
            break


def leave_with_bare_break(llm: mm.MultiModalLLM) -> None:
    for _ in llm.stream_complete("one two three"):
        break


def leave_after_next(llm: mm.MultiModalLLM) -> None:
    stream = llm.stream_complete("one two three")
    next(stream)
    del stream


def leave_next_of_iter(llm: mm.MultiModalLLM) -> None:
    next(iter(llm.stream_complete("one two three")))


def leave_by_exception(llm: mm.MultiModalLLM) -> None:
    with pytest.raises(KeyError):
        for _ in llm.stream_complete("one two three"):
            raise KeyError("a bug in the loop")


def leave_by_close(llm: mm.MultiModalLLM) -> None:
    stream = llm.stream_complete("one two three")
    next(stream)
    stream.close()


WAYS = pytest.mark.parametrize(
    "leave",
    [
        leave_with_break,
        leave_with_bare_break,
        leave_after_next,
        leave_next_of_iter,
        leave_by_exception,
        leave_by_close,
    ],
    ids=["with-break", "bare-break", "next-then-drop", "next-of-iter", "exception", "close"],
)


@BACKENDS
@WAYS
def test_leaving_a_long_stream_closes_it_and_its_middleware_end_as_closed(
    mmstream_thread_server: TestServer,
    sync_backend: str,
    leave: Callable[[mm.MultiModalLLM], None],
    no_gc: None,
) -> None:
    server = mmstream_thread_server
    server.script = Script(chunks=400, pause=0.01)
    outer, inner = Recorder(), Recorder()
    llm = mm.MultiModalLLM(
        openai_at(server),
        middleware=[outer, inner],
        transport=small_pool(),
        sync_backend=sync_backend,  # type: ignore[arg-type]
    )
    with llm:
        leave(llm)
        disconnect = server.wait_disconnect_blocking(timeout=1.0)
        assert disconnect.chunks_sent < 400
        wait_for(lambda: "exit" in outer.events and "exit" in inner.events)
        assert outer.events == ["start", "closed", "exit"]
        assert inner.events == ["start", "closed", "exit"]
        # The pool's only connection is free again.
        server.script = Script()
        assert llm.complete("again").text == answer_text("again")


@BACKENDS
@WAYS
def test_leaving_without_middleware_closes_the_response(
    mmstream_thread_server: TestServer,
    sync_backend: str,
    leave: Callable[[mm.MultiModalLLM], None],
    no_gc: None,
) -> None:
    """The fast path (no middleware, no read-ahead gate) closes as promptly."""
    server = mmstream_thread_server
    server.script = Script(chunks=400, pause=0.01)
    llm = mm.MultiModalLLM(
        openai_at(server),
        transport=small_pool(),
        sync_backend=sync_backend,  # type: ignore[arg-type]
    )
    with llm:
        leave(llm)
        disconnect = server.wait_disconnect_blocking(timeout=1.0)
        assert disconnect.chunks_sent < 400
        server.script = Script()
        assert llm.complete("again").text == answer_text("again")


@BACKENDS
@WAYS
def test_leaving_a_short_stream_after_one_chunk_is_not_completed(
    mmstream_thread_server: TestServer,
    sync_backend: str,
    leave: Callable[[mm.MultiModalLLM], None],
    no_gc: None,
) -> None:
    """The pump reads the whole short answer ahead, but the middleware record "closed"."""
    server = mmstream_thread_server
    server.script = Script(chunks=20)  # one network read: far shorter than the buffer
    recorder = Recorder()
    llm = mm.MultiModalLLM(
        openai_at(server),
        middleware=[recorder],
        sync_backend=sync_backend,  # type: ignore[arg-type]
    )
    with llm:
        leave(llm)
        wait_for(lambda: "exit" in recorder.events)
        assert recorder.events == ["start", "closed", "exit"]
        assert 1 <= recorder.chunks <= 22  # it did read ahead


@BACKENDS
def test_a_failure_after_chunks_the_caller_never_took_is_not_recorded(
    mmstream_thread_server: TestServer, sync_backend: str, no_gc: None
) -> None:
    server = mmstream_thread_server
    server.inject(Fault.drop(after_chunks=10))
    recorder = Recorder()
    llm = mm.MultiModalLLM(
        openai_at(server),
        middleware=[recorder],
        sync_backend=sync_backend,  # type: ignore[arg-type]
    )
    with llm:
        for _ in llm.stream_complete("one two three four five six seven eight nine ten eleven"):
            break
        wait_for(lambda: "exit" in recorder.events)
        assert recorder.events == ["start", "closed", "exit"]


@BACKENDS
def test_read_to_the_end_the_stream_is_completed_and_a_failure_is_raised_after_its_chunks(
    mmstream_thread_server: TestServer, sync_backend: str
) -> None:
    server = mmstream_thread_server
    recorder = Recorder()
    prompt = "one two three four five six seven eight nine ten eleven twelve"
    llm = mm.MultiModalLLM(
        openai_at(server),
        middleware=[recorder],
        sync_backend=sync_backend,  # type: ignore[arg-type]
    )
    with llm:
        chunks = list(llm.stream_complete(prompt))
        assert chunks[-1].text == answer_text(prompt)
        assert recorder.events == ["start", "complete", "exit"]

        recorder.events.clear()
        server.inject(Fault.drop(after_chunks=4))
        seen = ""
        with pytest.raises(mm.MMStreamError) as caught:
            for chunk in llm.stream_complete(prompt):
                seen += chunk.delta or ""
        assert caught.value.partial is not None
        assert caught.value.partial.text == seen != ""
        assert recorder.events[0] == "start"
        assert recorder.events[1].startswith("failed:")


@BACKENDS
@pytest.mark.parametrize("middleware", [0, 1], ids=["no-middleware", "middleware"])
def test_a_mid_stream_failure_carries_partial_on_every_path(
    sync_backend: str, middleware: int
) -> None:
    layers = [Recorder()] * middleware
    llm = mm.MultiModalLLM(
        Offline(chunks=30, fail_after=5),
        middleware=layers,
        sync_backend=sync_backend,  # type: ignore[arg-type]
    )
    with llm:
        seen = ""
        with pytest.raises(mm.OverloadedError) as caught:
            for chunk in llm.stream_complete("hi"):
                seen += chunk.delta or ""
        assert caught.value.partial is not None
        assert caught.value.partial.text == seen == "Offline answer: no model was "
        with pytest.raises(mm.OverloadedError) as caught:
            llm.complete("hi")
        assert caught.value.partial is not None
        assert caught.value.partial.text == seen


@BACKENDS
def test_the_held_back_end_is_the_callers_time_not_a_layers_deadline(sync_backend: str) -> None:
    """A slow loop over a short answer is not an idle (or total) timeout of a layer."""
    recorder = Recorder()
    llm = mm.MultiModalLLM(
        Offline(chunks=3),
        middleware=[recorder, mm.middleware.Timeout(idle=0.2, total=0.4)],
        sync_backend=sync_backend,  # type: ignore[arg-type]
    )
    with llm:
        chunks = []
        for chunk in llm.stream_complete("hi"):
            chunks.append(chunk)
            time.sleep(0.25)  # the whole answer is buffered: the pump holds back its end
        assert chunks[-1].finish_reason == "stop"
        assert recorder.events == ["start", "complete", "exit"]


# --- many abandoned streams ------------------------------------------------------------------


@BACKENDS
@pytest.mark.parametrize(("count", "middleware"), [(1000, 0), (200, 1)], ids=["bare", "layered"])
def test_abandoned_streams_never_exhaust_the_pool(
    mmstream_thread_server: TestServer, sync_backend: str, count: int, middleware: int, no_gc: None
) -> None:
    """Each stream is dropped after its first chunk; a pool of 2 connections serves them all."""
    server = mmstream_thread_server
    server.script = Script(chunks=60, pause=0.002)
    llm = mm.MultiModalLLM(
        openai_at(server),
        middleware=[Recorder()] * middleware,
        transport=small_pool(2),
        sync_backend=sync_backend,  # type: ignore[arg-type]
    )
    with llm:
        for _ in range(count):
            next(iter(llm.stream_complete("one two three")))
        wait_for(lambda: server.connections_open <= 2, timeout=2.0)
        assert server.connections_opened <= count  # no request waited out the pool timeout
        assert len(server.requests) == count
        assert all(request.status == 200 for request in server.requests)


# --- reading ahead ---------------------------------------------------------------------------


@BACKENDS
def test_next_and_for_share_one_position_across_batches(sync_backend: str) -> None:
    with mm.MultiModalLLM(Offline(chunks=2000), sync_backend=sync_backend) as llm:  # type: ignore[arg-type]
        stream = llm.stream_chat(["hi"])
        first = [next(stream) for _ in range(3)]
        rest = list(stream)
        chunks = first + rest
        assert len(chunks) == 2001
        assert chunks[-1].text == "".join(c.delta or "" for c in chunks)
        with pytest.raises(StopIteration):
            next(stream)
        stream.close()  # closing an ended stream does nothing
        with pytest.raises(StopIteration):
            next(stream)


@BACKENDS
def test_a_closed_stream_is_at_its_end(sync_backend: str) -> None:
    with mm.MultiModalLLM(Offline(chunks=100), sync_backend=sync_backend) as llm:  # type: ignore[arg-type]
        stream = llm.stream_chat(["hi"])
        next(stream)
        stream.close()
        with pytest.raises(StopIteration):
            next(stream)
        never_started = llm.stream_chat(["hi"])
        never_started.close()
        with pytest.raises(StopIteration):
            next(never_started)


# --- closing the LLM while other threads stream ---------------------------------------------


@BACKENDS
def test_close_ends_the_calls_of_other_threads_with_closed_error(sync_backend: str) -> None:
    llm = mm.MultiModalLLM(Offline(chunks=10_000, delay=0.002), sync_backend=sync_backend)  # type: ignore[arg-type]
    started = threading.Barrier(5)
    errors: list[BaseException] = []

    def stream() -> None:
        try:
            iterator = llm.stream_complete("long")
            next(iterator)
            started.wait()
            for _ in iterator:
                pass
        except BaseException as exc:  # reported below
            errors.append(exc)

    def call() -> None:
        try:
            started.wait()
            llm.complete("long")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=stream) for _ in range(3)] + [threading.Thread(target=call)]
    for thread in threads:
        thread.start()
    started.wait()
    time.sleep(0.05)  # the blocking call is under way too
    began = time.monotonic()
    llm.close()
    for thread in threads:
        thread.join(5)
    assert time.monotonic() - began < 2
    assert len(errors) == 4
    assert all(type(error) is mm.ClosedError for error in errors), errors
    assert all("the LLM was closed" in str(error) for error in errors)
    with pytest.raises(mm.ClosedError):
        llm.complete("after")


def test_a_stream_survives_another_llm_closing() -> None:
    """The portal is shared: one LLM's close() ends only its own calls."""
    first = mm.MultiModalLLM(Offline(chunks=300))
    second = mm.MultiModalLLM(Offline(chunks=300))
    stream = first.stream_complete("hi")
    next(stream)
    second.complete("hi")
    second.close()
    rest = list(stream)
    assert rest[-1].finish_reason == "stop"
    first.close()
