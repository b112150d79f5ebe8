"""Timeout: total, first-chunk and idle deadlines, each a typed error with the partial answer."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import mmstream as mm
from mmstream.middleware import Retry, Timeout
from tests._helpers import Recorder
from tests._mock_http import OK, JumpClock, MockServer, Reply, Scripted


def make_llm(server: MockServer, *middleware: Any) -> mm.MultiModalLLM:
    return mm.MultiModalLLM(
        Scripted(),
        middleware=list(middleware),
        transport=mm.Transport(http_transport=server.transport),
    )


async def test_first_chunk_deadline_when_the_server_never_answers() -> None:
    server = MockServer().queue(Reply(stall_first=True))
    llm = make_llm(server, Timeout(first_chunk=0.05, total=60.0))
    with anyio.fail_after(10), pytest.raises(mm.APITimeoutError) as info:
        await llm.achat(["hi"])
    assert info.value.kind == "first_chunk"
    assert info.value.partial is None
    assert info.value.provider == "scripted"
    assert "0.05 s" in str(info.value)
    assert isinstance(info.value, mm.APIConnectionError)  # so Retry and Fallback see it


async def test_idle_deadline_carries_the_partial_answer_and_closes_the_response() -> None:
    server = MockServer().queue(Reply(pieces=("one ", "two "), end="stall"))
    recorder = Recorder()
    llm = make_llm(server, Timeout(idle=0.05, first_chunk=30.0), recorder)
    seen: list[str] = []
    with anyio.fail_after(10), pytest.raises(mm.APITimeoutError) as info:
        async for chunk in llm.astream_chat(["hi"]):
            seen.append(chunk.delta or "")
    assert info.value.kind == "idle"
    assert seen == ["one ", "two "]
    assert info.value.partial is not None
    assert info.value.partial.text == "one two "
    assert server.open_bodies == 0
    assert recorder.events[-1] == "exit"


async def test_total_deadline_wins_when_it_comes_first() -> None:
    server = MockServer().queue(Reply(pieces=("one ",), end="stall"))
    llm = make_llm(server, Timeout(total=0.05, idle=60.0))
    with anyio.fail_after(10), pytest.raises(mm.APITimeoutError) as info:
        await llm.achat(["hi"])
    assert info.value.kind == "total"
    assert info.value.partial is not None
    assert info.value.partial.text == "one "
    assert server.open_bodies == 0


async def test_offline_provider_pauses_trip_the_idle_deadline() -> None:
    llm = mm.MultiModalLLM(
        mm.providers.Offline(chunks=4, delay=30.0), middleware=[Timeout(idle=0.05)]
    )
    with anyio.fail_after(10), pytest.raises(mm.APITimeoutError) as info:
        await llm.achat(["hi"])
    assert info.value.kind == "idle"
    assert info.value.partial is not None
    assert info.value.partial.text.strip()


async def test_a_stall_inside_the_chain_is_cut_too() -> None:
    async def stuck(request: mm.ChatRequest, call_next: Any) -> Any:
        await anyio.sleep_forever()
        async for chunk in call_next(request):  # pragma: no cover - never reached
            yield chunk

    llm = mm.MultiModalLLM("offline:default", middleware=[Timeout(first_chunk=0.05), stuck])
    with anyio.fail_after(10), pytest.raises(mm.APITimeoutError) as info:
        await llm.achat(["hi"])
    assert info.value.kind == "first_chunk"


async def test_a_fast_stream_passes_untouched() -> None:
    plain = mm.MultiModalLLM(mm.providers.Offline(chunks=20))
    timed = mm.MultiModalLLM(
        mm.providers.Offline(chunks=20),
        middleware=[Timeout(total=60.0, first_chunk=60.0, idle=60.0)],
    )
    expected = [c.delta async for c in plain.astream_chat(["hi"])]
    got = [c.delta async for c in timed.astream_chat(["hi"])]
    assert got == expected
    assert len(got) == 21  # 20 pieces and the final chunk


async def test_the_consumers_own_time_does_not_count_as_idle() -> None:
    # The offline server sends the whole answer at once: every chunk is ready
    # immediately, so only the consumer is slow.
    llm = mm.MultiModalLLM(mm.providers.Offline(chunks=3), middleware=[Timeout(idle=0.05)])
    count = 0
    async for _ in llm.astream_chat(["hi"]):
        count += 1
        await anyio.sleep(0.1)
    assert count == 4


async def test_retry_outside_retries_a_late_first_chunk() -> None:
    server = MockServer().queue(Reply(stall_first=True), OK)
    clock = JumpClock()
    llm = make_llm(server, Retry(sleep=clock.sleep, clock=clock), Timeout(first_chunk=0.05))
    with anyio.fail_after(10):
        response = await llm.achat(["hi"])
    assert response.text == OK.text
    assert server.count() == 2


async def test_retry_outside_never_retries_an_idle_timeout() -> None:
    server = MockServer().queue(Reply(pieces=("one ",), end="stall"), OK)
    clock = JumpClock()
    llm = make_llm(server, Retry(sleep=clock.sleep, clock=clock), Timeout(idle=0.05))
    with anyio.fail_after(10), pytest.raises(mm.APITimeoutError) as info:
        await llm.achat(["hi"])
    assert info.value.kind == "idle"
    assert server.count() == 1


def test_sync_facade_raises_the_timeout() -> None:
    server = MockServer().queue(Reply(stall_first=True))
    with make_llm(server, Timeout(first_chunk=0.05)) as llm, pytest.raises(mm.APITimeoutError):
        llm.complete("hi")


@pytest.mark.parametrize("kwargs", [{"total": 0}, {"first_chunk": -1.0}, {"idle": 0.0}])
def test_rejects_nonsense_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="Timeout"):
        Timeout(**kwargs)
