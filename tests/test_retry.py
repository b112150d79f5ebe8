"""Retry: only before the first chunk, only retryable errors, honest waits."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import mmstream as mm
from mmstream.middleware import Retry, TraceRecord, Tracing
from tests._mock_http import OK, JumpClock, MockServer, Reply, Scripted, status


def make_llm(server: MockServer, *middleware: Any, **provider: Any) -> mm.MultiModalLLM:
    return mm.MultiModalLLM(
        Scripted(**provider),
        middleware=list(middleware),
        transport=mm.Transport(http_transport=server.transport),
    )


def retry(clock: JumpClock, **kwargs: Any) -> Retry:
    """A Retry whose waits are recorded, not waited (and a deterministic full jitter)."""
    kwargs.setdefault("random", lambda: 0.5)
    return Retry(sleep=clock.sleep, clock=clock, **kwargs)


async def drain(llm: mm.MultiModalLLM, prompt: str = "hi") -> list[str]:
    deltas: list[str] = []
    async with llm.astream_chat([prompt]) as stream:
        async for chunk in stream:
            deltas.append(chunk.delta or "")
    return deltas


async def test_retries_server_errors_then_succeeds() -> None:
    server = MockServer().queue(status(503), status(500), OK)
    records: list[TraceRecord] = []
    clock = JumpClock()
    llm = make_llm(server, retry(clock, base=1.0), Tracing(sink=records.append))
    async with llm:
        deltas = await drain(llm)
    assert "".join(deltas) == OK.text
    assert deltas.count("Hello") == 1
    assert server.count() == 3
    # full jitter: random() * min(cap, base * 2 ** (n - 1)), with random() = 0.5
    assert clock.sleeps == [0.5, 1.0]
    # each attempt is recorded by a Tracing inside the Retry, and sent with its number
    assert [(r.attempt, r.outcome, r.error_type) for r in records] == [
        (1, "failed", "OverloadedError"),
        (2, "failed", "ServerError"),
        (3, "complete", None),
    ]
    assert [r["attempt"] for r in server.requests] == [1, 2, 3]


async def test_gives_up_after_max_attempts_with_the_last_error() -> None:
    server = MockServer(default=status(529))
    clock = JumpClock()
    llm = make_llm(server, retry(clock, max_attempts=4))
    with pytest.raises(mm.OverloadedError) as info:
        await llm.achat(["hi"])
    assert info.value.status == 529
    assert server.count() == 4
    assert len(clock.sleeps) == 3


async def test_backoff_is_capped_full_jitter() -> None:
    server = MockServer(default=status(500))
    clock = JumpClock()
    llm = make_llm(server, retry(clock, max_attempts=6, base=1.0, cap=5.0, random=lambda: 0.999))
    with pytest.raises(mm.ServerError):
        await llm.achat(["hi"])
    assert clock.sleeps == pytest.approx([0.999, 1.998, 3.996, 4.995, 4.995])


async def test_honours_retry_after_header() -> None:
    server = MockServer().queue(status(429, retry_after="7"), OK)
    clock = JumpClock()
    llm = make_llm(server, retry(clock))
    response = await llm.achat(["hi"])
    assert response.text == OK.text
    assert clock.sleeps == [7.0]


async def test_retry_after_beyond_the_time_budget_gives_up() -> None:
    server = MockServer().queue(status(429, retry_after="120"), OK)
    clock = JumpClock()
    llm = make_llm(server, retry(clock, max_elapsed=60.0))
    with pytest.raises(mm.RateLimitError) as info:
        await llm.achat(["hi"])
    assert info.value.retry_after == 120.0
    assert server.count() == 1
    assert clock.sleeps == []


async def test_total_time_budget_counts_earlier_waits() -> None:
    server = MockServer(default=status(503))
    clock = JumpClock()
    # waits of 10 s each (random=1.0 hits the ceiling); the third would end at 30 s > 25 s
    llm = make_llm(
        server,
        retry(clock, max_attempts=10, base=10.0, cap=10.0, random=lambda: 1.0, max_elapsed=25.0),
    )
    with pytest.raises(mm.OverloadedError):
        await llm.achat(["hi"])
    assert clock.sleeps == [10.0, 10.0]
    assert server.count() == 3


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (status(401), mm.AuthenticationError),
        (status(400), mm.BadRequestError),
        (status(404), mm.NotFoundError),
        (status(429, retry_after="1", code="insufficient_quota"), mm.QuotaExceededError),
    ],
)
async def test_never_retries_non_retryable_errors(reply: Reply, error: type[Exception]) -> None:
    server = MockServer().queue(reply, OK)
    clock = JumpClock()
    llm = make_llm(server, retry(clock))
    with pytest.raises(error):
        await llm.achat(["hi"])
    assert server.count() == 1
    assert clock.sleeps == []


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (Reply(connect_error=True), mm.APIConnectionError),
        (Reply(pieces=(), end="truncate"), mm.IncompleteStreamError),
        (Reply(pieces=(), end="drop"), mm.APIConnectionError),
        (Reply(pieces=(), end="error_event"), mm.OverloadedError),
    ],
)
async def test_retries_failures_before_the_first_chunk(
    reply: Reply, error: type[Exception]
) -> None:
    server = MockServer().queue(reply, OK)
    clock = JumpClock()
    seen: list[BaseException] = []
    llm = make_llm(server, retry(clock, on_retry=lambda req, exc, delay: seen.append(exc)))
    response = await llm.achat(["hi"])
    assert response.text == OK.text
    assert server.count() == 2
    assert [type(e) for e in seen] == [error]


@pytest.mark.parametrize("end", ["drop", "error_event", "truncate"])
async def test_never_replays_after_the_first_chunk(end: str) -> None:
    server = MockServer().queue(Reply(pieces=("one ", "two "), end=end), OK)  # type: ignore[arg-type]
    clock = JumpClock()
    llm = make_llm(server, retry(clock))
    seen: list[str] = []
    with pytest.raises(mm.MMStreamError) as info:
        async with llm.astream_chat(["hi"]) as stream:
            async for chunk in stream:
                seen.append(chunk.delta or "")
    assert seen == ["one ", "two "]
    assert info.value.partial is not None
    assert info.value.partial.text == "one two "
    assert server.count() == 1
    assert clock.sleeps == []
    assert server.open_bodies == 0


async def test_on_retry_may_be_async_and_sees_each_attempt() -> None:
    server = MockServer().queue(status(503), status(503), OK)
    clock = JumpClock()
    calls: list[tuple[int, str, float]] = []

    async def on_retry(request: mm.ChatRequest, error: mm.MMStreamError, delay: float) -> None:
        await anyio.lowlevel.checkpoint()
        calls.append((request.attempt, type(error).__name__, delay))

    llm = make_llm(server, retry(clock, base=2.0, on_retry=on_retry))
    await llm.achat(["hi"])
    assert calls == [(1, "OverloadedError", 1.0), (2, "OverloadedError", 2.0)]


async def test_offline_provider_mid_stream_failure_is_not_retried() -> None:
    attempts: list[int] = []

    async def count(request: mm.ChatRequest, call_next: Any) -> Any:
        attempts.append(request.attempt)
        async for chunk in call_next(request):
            yield chunk

    clock = JumpClock()
    llm = mm.MultiModalLLM(
        mm.providers.Offline(chunks=5, fail_after=2), middleware=[retry(clock), count]
    )
    with pytest.raises(mm.OverloadedError) as info:
        await llm.achat(["hi"])
    assert attempts == [1]
    assert info.value.partial is not None
    assert len(info.value.partial.text) > 0


async def test_offline_provider_failure_before_output_is_retried() -> None:
    attempts: list[int] = []

    async def count(request: mm.ChatRequest, call_next: Any) -> Any:
        attempts.append(request.attempt)
        async for chunk in call_next(request):
            yield chunk

    clock = JumpClock()
    llm = mm.MultiModalLLM(
        mm.providers.Offline(chunks=5, fail_after=0), middleware=[retry(clock), count]
    )
    with pytest.raises(mm.OverloadedError):
        await llm.achat(["hi"])
    assert attempts == [1, 2, 3]


async def test_cancelled_during_backoff_closes_cleanly() -> None:
    server = MockServer(default=status(503))
    llm = make_llm(server, Retry(base=100.0, cap=100.0, random=lambda: 1.0, max_elapsed=None))
    with anyio.move_on_after(0.05) as scope:
        await llm.achat(["hi"])
    assert scope.cancelled_caught
    assert server.count() == 1
    assert server.open_bodies == 0
    await llm.aclose()


async def test_empty_stream_is_passed_through() -> None:
    async def nothing(request: mm.ChatRequest, call_next: Any) -> Any:
        chunks: tuple[mm.ChatResponse, ...] = ()
        for chunk in chunks:  # an async generator that yields nothing
            yield chunk

    llm = mm.MultiModalLLM("offline:default", middleware=[Retry(), nothing])
    assert [c async for c in llm.astream_chat(["hi"])] == []


def test_sync_facade_retries() -> None:
    server = MockServer().queue(status(503), OK)
    clock = JumpClock()
    with make_llm(server, retry(clock)) as llm:
        assert llm.complete("hi").text == OK.text
    assert server.count() == 2


@pytest.mark.parametrize(
    "kwargs", [{"max_attempts": 0}, {"base": -1.0}, {"cap": -1.0}, {"max_elapsed": -1.0}]
)
def test_rejects_nonsense_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="Retry"):
        Retry(**kwargs)
