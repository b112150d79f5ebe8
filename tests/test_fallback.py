"""Fallback: the next provider answers when one fails before its first chunk."""

from __future__ import annotations

from typing import Any

import pytest

import mmstream as mm
from mmstream.middleware import Fallback, Retry, TraceRecord, Tracing
from mmstream.middleware.fallback import falls_back
from tests._mock_http import OK, JumpClock, MockServer, Reply, Scripted, status

PRIMARY = Scripted(model="primary")
BACKUP = Scripted(model="backup")
LAST = Scripted(model="last")
BACKUP_REPLY = Reply(pieces=("from ", "backup"))


def make_llm(server: MockServer, *middleware: Any) -> mm.MultiModalLLM:
    return mm.MultiModalLLM(
        PRIMARY,
        middleware=list(middleware),
        transport=mm.Transport(http_transport=server.transport),
    )


async def test_next_provider_answers_and_the_trace_says_who() -> None:
    server = MockServer().queue(status(503), model="primary")
    server.queue(BACKUP_REPLY, model="backup")
    records: list[TraceRecord] = []
    llm = make_llm(server, Tracing(sink=records.append), Fallback(providers=[BACKUP]))
    response = await llm.achat(["hi"])
    assert response.text == "from backup"
    assert response.additional_kwargs["provider"] == "scripted"
    assert response.additional_kwargs["model"] == "backup"
    [record] = records
    assert record.model == "primary"  # who was asked
    assert record.answered_by == "scripted:backup"  # who answered
    assert record.outcome == "complete"
    assert [r["model"] for r in server.requests] == ["primary", "backup"]


@pytest.mark.parametrize(
    "reply",
    [
        status(401),  # a bad key for one provider; another may work
        status(400),
        status(404),
        status(429, code="insufficient_quota"),
        status(500),
        Reply(connect_error=True),
        Reply(pieces=(), end="truncate"),
    ],
)
async def test_provider_side_failures_fall_back(reply: Reply) -> None:
    server = MockServer().queue(reply, model="primary").queue(BACKUP_REPLY, model="backup")
    llm = make_llm(server, Fallback(providers=[BACKUP]))
    assert (await llm.achat(["hi"])).text == "from backup"


async def test_a_content_filter_refusal_does_not_fall_back() -> None:
    server = MockServer().queue(status(400, code="content_filter"), model="primary")
    llm = make_llm(server, Fallback(providers=[BACKUP]))
    with pytest.raises(mm.ContentFilterError):
        await llm.achat(["hi"])
    assert server.count("backup") == 0


async def test_local_errors_do_not_fall_back() -> None:
    server = MockServer()
    llm = mm.MultiModalLLM(
        Scripted(model="primary", needs_key=True),
        middleware=[Fallback(providers=[BACKUP])],
        transport=mm.Transport(http_transport=server.transport),
    )
    with pytest.raises(mm.ConfigurationError):
        await llm.achat(["hi"])
    assert server.count() == 0


async def test_no_fallback_after_the_first_chunk() -> None:
    server = MockServer().queue(Reply(pieces=("half ",), end="drop"), model="primary")
    llm = make_llm(server, Fallback(providers=[BACKUP]))
    seen: list[str] = []
    with pytest.raises(mm.APIConnectionError) as info:
        async for chunk in llm.astream_chat(["hi"]):
            seen.append(chunk.delta or "")
    assert seen == ["half "]
    assert info.value.partial is not None
    assert info.value.partial.text == "half "
    assert server.count("backup") == 0
    assert server.open_bodies == 0


async def test_every_provider_failing_raises_the_last_error() -> None:
    server = MockServer()
    server.queue(status(503), model="primary")
    server.queue(status(500), model="backup")
    server.queue(status(429), model="last")
    moves: list[tuple[str, str, str]] = []

    async def on_fallback(request: mm.ChatRequest, error: mm.MMStreamError, nxt: Any) -> None:
        moves.append((request.model, type(error).__name__, nxt.model))

    llm = make_llm(server, Fallback(providers=[BACKUP, LAST], on_fallback=on_fallback))
    with pytest.raises(mm.RateLimitError):
        await llm.achat(["hi"])
    assert moves == [("primary", "OverloadedError", "backup"), ("backup", "ServerError", "last")]
    assert [r["model"] for r in server.requests] == ["primary", "backup", "last"]


async def test_retry_inside_retries_each_provider_before_falling_back() -> None:
    server = MockServer()
    server.queue(status(503), status(503), model="primary")
    server.queue(BACKUP_REPLY, model="backup")
    clock = JumpClock()
    retry = Retry(max_attempts=2, sleep=clock.sleep, clock=clock)
    llm = make_llm(server, Fallback(providers=[BACKUP]), retry)
    assert (await llm.achat(["hi"])).text == "from backup"
    assert [r["model"] for r in server.requests] == ["primary", "primary", "backup"]


async def test_offline_providers_and_names() -> None:
    records: list[TraceRecord] = []
    llm = mm.MultiModalLLM(
        mm.providers.Offline(fail_after=0),
        middleware=[Tracing(sink=records.append), Fallback(providers=["offline:backup"])],
    )
    response = await llm.achat(["hi"])
    assert response.text.startswith("Offline answer")
    assert records[0].answered_by == "offline:backup"


async def test_the_calls_own_provider_is_not_tried_twice() -> None:
    server = MockServer().queue(status(503), status(503), model="primary")
    server.queue(BACKUP_REPLY, model="backup")
    llm = make_llm(server, Fallback(providers=[PRIMARY, BACKUP, PRIMARY]))
    assert (await llm.achat(["hi"])).text == "from backup"
    assert [r["model"] for r in server.requests] == ["primary", "backup"]


def test_sync_facade_falls_back() -> None:
    server = MockServer().queue(status(529), model="primary").queue(OK, model="backup")
    with make_llm(server, Fallback(providers=[BACKUP])) as llm:
        assert llm.complete("hi").text == OK.text


def test_which_errors_fall_back() -> None:
    def api(cls: type[mm.APIError]) -> mm.APIError:
        return cls("x", status=400)

    assert falls_back(api(mm.AuthenticationError))
    assert falls_back(api(mm.QuotaExceededError))
    assert falls_back(mm.APITimeoutError("x", kind="first_chunk"))
    assert falls_back(mm.IncompleteStreamError("x"))
    assert not falls_back(api(mm.ContentFilterError))
    assert not falls_back(mm.InvalidRequestError("x"))
    assert not falls_back(mm.InvalidImageError("x"))
    assert not falls_back(mm.ConfigurationError("x"))
    assert not falls_back(ValueError("x"))


def test_needs_a_provider() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Fallback(providers=[])
