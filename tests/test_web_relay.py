"""The SSE relay over a real ASGI server (uvicorn on asyncio, hypercorn on trio).

The upstream is the loopback ``TestServer`` speaking OpenAI's wire format; the
browser is an httpx client reading the relay's bytes.
"""

from __future__ import annotations

import gc
import json
import ssl
import sys
from typing import Any

import anyio
import attrs
import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import mmstream as mm
from mmstream.llm import ChatStream
from mmstream.middleware import Tracing
from mmstream.middleware.tracing import TraceRecord
from mmstream.testing import Fault, Script, TestServer, ToolCall, answer_text
from mmstream.web import HEARTBEAT, EventStreamResponse, chunk_events
from tests._web import KEY, openai_for, parse_events, read_events, serving, text_of


def relay_app(llm: mm.MultiModalLLM, *, heartbeat: float | None = 15.0) -> Starlette:
    """``POST /chat {"q": ...}`` relays ``llm.astream_complete(q)``."""

    async def chat(request: Request) -> Response:
        question = (await request.json())["q"]
        return EventStreamResponse(llm.astream_complete(question), heartbeat=heartbeat)

    return Starlette(routes=[Route("/chat", chat, methods=["POST"])])


async def ask(llm: mm.MultiModalLLM, question: str, *, heartbeat: float | None = 15.0) -> Any:
    """Serve the relay, ask it once as a browser would, return the whole response."""
    app = relay_app(llm, heartbeat=heartbeat)
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
        return await client.post("/chat", json={"q": question})


async def expected_events(llm: mm.MultiModalLLM, question: str) -> list[Any]:
    """The events the stream's own chunks map to, read straight from the stream."""
    events: list[Any] = []
    last = None
    async with llm.astream_complete(question) as stream:
        async for chunk in stream:
            events += [(name, dict(payload)) for name, payload in chunk_events(chunk)]
            last = chunk
    assert last is not None and last.usage is not None
    usage = attrs.asdict(last.usage)  # every count, None where the provider sent none
    return [*events, ("done", {"finish_reason": last.finish_reason, "usage": usage})]


async def wait_for(records: list[TraceRecord], timeout: float = 1.0) -> TraceRecord:
    with anyio.fail_after(timeout):
        while not records:
            await anyio.sleep(0.005)
    return records[0]


async def test_the_relayed_events_equal_the_streams_chunks(mmstream_server: TestServer) -> None:
    mmstream_server.script = Script(chunks=40)
    question = "describe the relay of server sent events in a few words"
    async with mm.MultiModalLLM(openai_for(mmstream_server)) as llm:
        expected = await expected_events(llm, question)
        async with serving(relay_app(llm)) as url, httpx.AsyncClient(base_url=url) as client:
            response = await client.post("/chat", json={"q": question})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    events = parse_events(response.content)
    assert events == expected
    assert sum(name == "text" for name, _ in events) == 40
    assert text_of(events) == mmstream_server.requests[-1].answer
    assert events[-1][1]["finish_reason"] == "stop"


async def test_tool_calls_are_events_before_done(mmstream_server: TestServer) -> None:
    call = ToolCall(name="get_weather", arguments={"city": "Paris"}, id="call_1")
    mmstream_server.script = Script(text="Let me look.", tool_calls=(call,))
    async with mm.MultiModalLLM(openai_for(mmstream_server)) as llm:
        response = await ask(llm, "weather?")
    events = parse_events(response.content)
    assert [name for name, _ in events][-2:] == ["tool_call", "done"]
    assert events[-2][1] == {"id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}}
    assert events[-1][1]["finish_reason"] == "tool_calls"
    assert text_of(events) == "Let me look."


@pytest.mark.parametrize("silent", [False, True], ids=["streaming", "silent-upstream"])
async def test_a_client_disconnect_closes_the_upstream_call(
    mmstream_server: TestServer, silent: bool
) -> None:
    server = mmstream_server
    server.script = Script(chunks=400, pause=0.01)
    if silent:  # the model "thinks" for 30 s after three chunks: no write could fail
        server.inject(Fault.stall(30, after_chunks=3))
    records: list[TraceRecord] = []
    llm = mm.MultiModalLLM(openai_for(server), middleware=[Tracing(sink=records.append)])
    app = relay_app(llm, heartbeat=None)
    async with llm, serving(app) as url, httpx.AsyncClient(base_url=url) as client:
        async with client.stream("POST", "/chat", json={"q": "a long answer"}) as response:
            events = await read_events(response, limit=3)
        # The browser is gone (its connection closed): within a second, so is the upstream.
        disconnect = await server.wait_disconnect(timeout=1.0)
        record = await wait_for(records)
    assert [name for name, _ in events] == ["text"] * 3
    assert 3 <= disconnect.chunks_sent < 400
    assert disconnect.request.path == "/v1/chat/completions"
    assert record.event == "chat.closed"
    assert record.chunks >= 3


@pytest.mark.parametrize(
    ("fault", "error_type"),
    [
        (Fault.error_event(after_chunks=5), "ServerError"),
        (Fault.drop(after_chunks=5), "IncompleteStreamError"),
    ],
    ids=["error-event", "dropped"],
)
async def test_an_upstream_failure_ends_with_an_error_event_with_the_partial_text(
    mmstream_server: TestServer, fault: Fault, error_type: str
) -> None:
    server = mmstream_server
    server.script = Script(chunks=20)
    server.inject(fault)
    async with mm.MultiModalLLM(openai_for(server)) as llm:
        response = await ask(llm, "one two three four five six")
    events = parse_events(response.content)
    names = [name for name, _ in events]
    # The five chunks and the error may arrive in one network read: the text events
    # then spell the error's partial text in fewer pieces.
    assert set(names[:-1]) == {"text"} and names[-1] == "error"
    error = events[-1][1]
    assert error["type"] == error_type
    assert error["partial"] == text_of(events) == server.requests[-1].answer
    assert error["partial"]  # five chunks had arrived
    assert error["message"] and error["hint"]
    assert isinstance(error["retryable"], bool)


async def test_an_error_event_never_shows_the_providers_key(mmstream_server: TestServer) -> None:
    server = mmstream_server
    server.inject(Fault.error_event(after_chunks=2, message=f"upstream choked on key {KEY}"))
    async with mm.MultiModalLLM(openai_for(server)) as llm:
        response = await ask(llm, "one two three")
    assert KEY.encode() not in response.content
    error = parse_events(response.content)[-1]
    assert error[0] == "error"
    assert "upstream choked on key ***" in error[1]["message"]


async def test_an_error_before_the_first_chunk_is_an_error_event(
    mmstream_server: TestServer,
) -> None:
    mmstream_server.inject(Fault.http_status(401))
    async with mm.MultiModalLLM(openai_for(mmstream_server)) as llm:
        response = await ask(llm, "hi")
    assert response.status_code == 200  # the stream had begun; the error is its last event
    assert parse_events(response.content) == [
        (
            "error",
            {
                "type": "AuthenticationError",
                "message": parse_events(response.content)[0][1]["message"],
                "hint": mm.AuthenticationError.hint,
                "retryable": False,
                "status": 401,
                "partial": "",
            },
        )
    ]


async def test_a_bug_in_the_stream_is_a_generic_error_event(
    mmstream_server: TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        async def __call__(self, request: Any, call_next: Any) -> Any:
            async for chunk in call_next(request):
                yield chunk
                raise ZeroDivisionError("internal detail /srv/app/secret.py")

    llm = mm.MultiModalLLM(openai_for(mmstream_server), middleware=[Broken()])
    async with llm, serving(relay_app(llm)) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.post("/chat", json={"q": "one two"})
    events = parse_events(response.content)
    assert [name for name, _ in events] == ["text", "error"]
    assert events[1][1]["type"] == "InternalError"
    assert events[1][1]["partial"] == events[0][1]["delta"]
    assert b"internal detail" not in response.content
    assert any(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in caplog.records)


async def test_long_silences_carry_heartbeats(mmstream_server: TestServer) -> None:
    server = mmstream_server
    server.inject(Fault.stall(0.6, after_chunks=1))
    async with mm.MultiModalLLM(openai_for(server)) as llm:
        response = await ask(llm, "one two", heartbeat=0.1)
    raw = response.content
    first_text = raw.index(b"event: text")
    second_text = raw.index(b"event: text", first_text + 1)
    beats = raw[first_text:second_text].count(HEARTBEAT)
    assert beats >= 2  # 0.6 s of silence, a beat after every 0.1 s of it
    assert raw.count(HEARTBEAT) < 12  # and none while text flows
    assert text_of(parse_events(raw)) == answer_text("one two")


class Question(BaseModel):
    """The FastAPI endpoint's body."""

    q: str


async def test_the_relay_works_in_fastapi(mmstream_server: TestServer) -> None:
    async with mm.MultiModalLLM(openai_for(mmstream_server)) as llm:
        app = FastAPI()

        @app.post("/chat", response_class=EventStreamResponse)
        async def chat(question: Question) -> EventStreamResponse:
            return EventStreamResponse(llm.astream_complete(question.q))

        async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
            response = await client.post("/chat", json={"q": "hello from fastapi"})
            schema = (await client.get("/openapi.json")).json()
    assert text_of(parse_events(response.content)) == answer_text("hello from fastapi")
    content = schema["paths"]["/chat"]["post"]["responses"]["200"]["content"]
    assert "text/event-stream" in content


STREAMS = 200


def question(i: int) -> str:
    return f"stream number {i} and so on"


async def test_200_concurrent_streams_relay_with_bounded_memory(
    mmstream_server: TestServer,
) -> None:
    """200 browsers at once: each open stream holds a bounded number of allocations, and a
    finished one holds nothing.

    Memory is counted as live allocations (``sys.getallocatedblocks``, sampled every 5 ms
    while the streams run): tracemalloc would make the run several times slower. Every
    part of a stream lives in this process (browser, relay, upstream call, test server),
    so the bound covers all of them.
    """
    server = mmstream_server
    server.script = Script(pause=0.02)  # one chunk per word of the question, paced
    pool = httpx.Limits(max_connections=STREAMS + 10, max_keepalive_connections=STREAMS + 10)
    llm = mm.MultiModalLLM(openai_for(server), transport=mm.Transport(limits=pool))
    tls = ssl.create_default_context()  # made once: each browser is its own client
    texts: dict[int, str] = {}
    peak = 0

    async def browser(url: str, i: int) -> None:
        async with (
            httpx.AsyncClient(base_url=url, timeout=60, verify=tls) as client,
            client.stream("POST", "/chat", json={"q": question(i)}) as response,
        ):
            texts[i] = text_of(await read_events(response))

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, sys.getallocatedblocks())
            await anyio.sleep(0.005)

    async with llm, serving(relay_app(llm)) as url:
        await browser(url, -1)  # imports and first-call caches
        gc.collect()
        before = sys.getallocatedblocks()
        async with anyio.create_task_group() as sampling:
            sampling.start_soon(sample)
            async with anyio.create_task_group() as group:
                for i in range(STREAMS):
                    group.start_soon(browser, url, i)
            sampling.cancel_scope.cancel()
        assert not server.disconnects  # every stream ran to its end
        await anyio.sleep(0.2)  # the servers' connection tasks end just after the browsers'
        gc.collect()
        alive = [o for o in gc.get_objects() if isinstance(o, (EventStreamResponse, ChatStream))]
    assert all(texts[i] == answer_text(question(i)) for i in range(STREAMS))
    per_stream = (peak - before) / STREAMS
    assert per_stream < 2000, f"{per_stream:.0f} allocations per open stream"
    assert alive == []  # no response and no upstream stream outlives its request


def test_the_event_payloads_are_compact_json_on_one_line() -> None:
    chunk = mm.ChatResponse(text="a\nb", delta="a\nb")
    [(name, payload)] = chunk_events(chunk)
    from mmstream.web import format_event

    raw = format_event(name, payload)
    assert raw == b'event: text\ndata: {"delta":"a\\nb"}\n\n'
    assert json.loads(raw.split(b"data: ")[1]) == {"delta": "a\nb"}
