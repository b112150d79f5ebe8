"""RateLimit: shared budgets, first come first served, estimates corrected by usage."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import mmstream as mm
from mmstream.middleware import RateLimit
from mmstream.middleware.ratelimit import IMAGE_TOKENS, estimate_tokens
from tests._mock_http import JumpClock, ManualClock, MockServer, Reply, Scripted

PNG_1x1 = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"
    b"\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\xcf\xc0\x00\x00\x03\x01\x01\x00\xc9\xfe\x92\xef"
    b"\x00\x00\x00\x00IEND\xaeB`\x82"
)


def make_llm(server: MockServer, *middleware: Any) -> mm.MultiModalLLM:
    return mm.MultiModalLLM(
        Scripted(),
        middleware=list(middleware),
        transport=mm.Transport(http_transport=server.transport),
    )


def test_estimate_counts_text_images_and_max_tokens() -> None:
    request = mm.ChatRequest(
        messages=[
            mm.ChatMessage("system", "x" * 10),
            mm.ChatMessage("user", blocks=[mm.TextBlock("y" * 30), mm.ImageBlock(image=PNG_1x1)]),
        ],
        options=mm.CallOptions(max_tokens=100),
        provider=mm.providers.Offline(),
    )
    assert estimate_tokens(request) == 10 + IMAGE_TOKENS + 100  # ceil(40 / 4) = 10


async def test_requests_per_minute_spaces_calls_out() -> None:
    clock = JumpClock()
    limit = RateLimit(requests_per_minute=2, clock=clock, sleep=clock.sleep)
    llm = make_llm(MockServer(), limit)
    for _ in range(4):
        await llm.achat(["hi"])
    # a minute's budget (2) goes at once, then one call every 30 s
    assert clock.sleeps == [30.0, 30.0]


async def test_tokens_are_estimated_then_corrected_by_usage() -> None:
    clock = JumpClock()
    limit = RateLimit(tokens_per_minute=100, clock=clock, sleep=clock.sleep)
    # estimate: 40 chars / 4 + max_tokens 50 = 60; usage reported: 3 + 2 = 5
    server = MockServer(default=Reply(usage=(3, 2)))
    llm = make_llm(server, limit)
    prompt = "x" * 40
    for _ in range(5):
        await llm.achat([prompt], max_tokens=50)
    # Without the correction the second call would already wait (100 - 60 < 60).
    assert clock.sleeps == []
    assert server.count() == 5


async def test_usage_above_the_estimate_is_charged() -> None:
    clock = JumpClock()
    limit = RateLimit(tokens_per_minute=600, clock=clock, sleep=clock.sleep)
    server = MockServer(default=Reply(usage=(700, 200)))  # 900 tokens, estimated 1
    llm = make_llm(server, limit)
    await llm.achat(["hi"])
    await llm.achat(["hi"])
    # the bucket stood at 600 - 900 = -300; one token needs 301 more at 10 per second
    assert clock.sleeps == pytest.approx([30.1])


async def test_a_call_larger_than_the_budget_waits_for_a_full_bucket() -> None:
    clock = JumpClock()
    limit = RateLimit(tokens_per_minute=60, clock=clock, sleep=clock.sleep)
    server = MockServer(default=Reply(usage=None))  # no usage: the estimate stands
    llm = make_llm(server, limit)
    await llm.achat(["hi"], max_tokens=1000)  # a full bucket: it goes, leaving -941
    await llm.achat(["hi"], max_tokens=1000)
    # back to the full 60 from -941 at 1 token per second
    assert clock.sleeps == pytest.approx([1001.0])


async def test_waiting_calls_go_first_come_first_served() -> None:
    clock = ManualClock()
    limit = RateLimit(requests_per_minute=1, clock=clock, sleep=clock.sleep)
    admitted: list[str] = []

    async def record(request: mm.ChatRequest, call_next: Any) -> Any:
        admitted.append(request.messages[0].content or "")
        async for chunk in call_next(request):
            yield chunk

    llm = make_llm(MockServer(), limit, record)
    names = [f"call{i}" for i in range(6)]
    async with anyio.create_task_group() as tg:
        for name in names:  # each call arrives after the previous one is waiting
            tg.start_soon(llm.achat, [name])
            await anyio.wait_all_tasks_blocked()
        for _ in names:
            clock.advance(60.0)
            await anyio.wait_all_tasks_blocked()
    assert admitted == names
    assert clock.sleeps == [60.0] * 5


async def test_max_concurrency_bounds_open_streams() -> None:
    limit = RateLimit(max_concurrency=2)
    active = peak = 0

    async def measure(request: mm.ChatRequest, call_next: Any) -> Any:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        try:
            async for chunk in call_next(request):
                yield chunk
        finally:
            active -= 1

    llm = mm.MultiModalLLM(mm.providers.Offline(chunks=3, delay=0.01), middleware=[limit, measure])
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(llm.achat, ["hi"])
    assert peak == 2
    assert active == 0


async def test_slots_come_back_after_break_failure_and_cancellation() -> None:
    limit = RateLimit(max_concurrency=1)
    llm = mm.MultiModalLLM(mm.providers.Offline(chunks=5), middleware=[limit])
    failing = mm.MultiModalLLM(mm.providers.Offline(chunks=5, fail_after=1), middleware=[limit])
    with anyio.fail_after(10):
        async with llm.astream_chat(["hi"]) as stream:
            async for _ in stream:
                break
        with pytest.raises(mm.OverloadedError):
            await failing.achat(["hi"])
        with anyio.move_on_after(0.01):
            await mm.MultiModalLLM(
                mm.providers.Offline(chunks=5, delay=10.0), middleware=[limit]
            ).achat(["hi"])
        # every slot was given back: this call gets one
        assert (await llm.achat(["hi"])).text


async def test_cancelled_while_waiting_takes_no_budget() -> None:
    clock = ManualClock()
    limit = RateLimit(requests_per_minute=1, clock=clock, sleep=clock.sleep)
    server = MockServer()
    llm = make_llm(server, limit)
    await llm.achat(["first"])
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(llm.achat, ["waits"])
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
    assert server.count() == 1
    clock.advance(60.0)
    await llm.achat(["next"])  # the minute's request is still there: no wait
    assert clock.sleeps == [60.0]


def test_one_budget_for_the_sync_facade_and_async_callers() -> None:
    clock = JumpClock()
    limit = RateLimit(requests_per_minute=1, max_concurrency=1, clock=clock, sleep=clock.sleep)
    server = MockServer()
    with make_llm(server, limit) as llm:
        llm.complete("one")
        llm.complete("two")  # waits on the portal's loop
        assert clock.sleeps == [60.0]

        async def main() -> None:
            await llm.acomplete("three")  # the same budget, from another event loop
            await llm.aclose()

        anyio.run(main, backend="trio")
        assert clock.sleeps == [60.0, 60.0]
    assert server.count() == 3


@pytest.mark.parametrize(
    "kwargs", [{"requests_per_minute": 0}, {"tokens_per_minute": -5}, {"max_concurrency": 0}]
)
def test_rejects_nonsense_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="RateLimit"):
        RateLimit(**kwargs)


def test_instances_are_distinct_budgets() -> None:
    assert RateLimit(requests_per_minute=5) != RateLimit(requests_per_minute=5)
    assert "requests_per_minute=5" in repr(RateLimit(requests_per_minute=5))
