"""Fault injection over real HTTP: every provider, every fault, a documented outcome.

Each provider talks to :class:`mmstream.testing.TestServer` on 127.0.0.1 through
``Retry`` (and ``Timeout`` where a stall is involved). Every case ends in one of
two outcomes:

- the fault happened before any text reached the caller: the call is retried
  and succeeds, and the caller sees the answer exactly once (the server's
  request log proves the second attempt, and what it sent);
- the fault happened after text reached the caller: no retry (one request),
  and a typed error carrying ``.partial``, exactly the text the caller saw.

Every case also ends with no connection left open on the server once the
client is closed.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import pytest

import mmstream as mm
from mmstream.middleware import Fallback, Retry, Timeout, TraceRecord, Tracing
from mmstream.providers import (
    Anthropic,
    AzureOpenAI,
    Gemini,
    Ollama,
    OpenAI,
    OpenAICompatible,
    Provider,
)
from mmstream.testing import Fault, TestServer, answer_text
from tests._mock_http import JumpClock

NAMES = ["openai", "azure", "openai-compatible", "anthropic", "gemini", "ollama"]
PROMPT = "one two three four five"
EXPECTED = answer_text(PROMPT)  # "You said: one two three four five."
STALL = 0.3  # seconds the Timeout middleware allows where the server stalls


def provider_for(name: str, base_url: str) -> Provider:
    """Each provider pointed at the test server, as a user would configure it."""
    providers: dict[str, Provider] = {
        "openai": OpenAI(model="gpt-4o-mini", api_key="sk-test", base_url=f"{base_url}/v1"),
        "azure": AzureOpenAI(
            deployment="gpt-4o", endpoint=base_url, api_key="azure-key", api_version="2024-10-21"
        ),
        "openai-compatible": OpenAICompatible(
            model="local-model", api_key="vllm-key", base_url=f"{base_url}/v1"
        ),
        "anthropic": Anthropic(model="claude-sonnet-4-5", api_key="sk-ant-test", base_url=base_url),
        "gemini": Gemini(model="gemini-2.5-flash", api_key="AIza-test", base_url=base_url),
        "ollama": Ollama(model="llama3.2-vision", base_url=base_url, api_key=None),
    }
    return providers[name]


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    async with TestServer() as running:
        yield running


@pytest.fixture(params=NAMES)
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Run:
    """One call's outcome: the deltas the caller saw, and the error, if any."""

    def __init__(self) -> None:
        self.deltas: list[str] = []
        self.error: mm.MMStreamError | None = None

    @property
    def seen(self) -> str:
        return "".join(self.deltas)


async def call(llm: mm.MultiModalLLM) -> Run:
    run = Run()
    with anyio.fail_after(30):
        try:
            async with llm.astream_chat([PROMPT]) as stream:
                async for chunk in stream:
                    run.deltas.append(chunk.delta or "")
        except mm.MMStreamError as exc:
            run.error = exc
    return run


@contextlib.asynccontextmanager
async def client(
    provider: Provider, middleware: Sequence[Any] = (), server: TestServer | None = None
) -> AsyncIterator[mm.MultiModalLLM]:
    """A client closed on exit; the server must then see every connection closed."""
    async with mm.MultiModalLLM(provider, middleware=middleware) as llm:
        yield llm
    if server is not None:
        await server.wait_until(lambda s: s.connections_open == 0, timeout=10)


class Retrying:
    """A Retry whose waits are recorded, not waited (jitter fixed at half the ceiling)."""

    def __init__(self) -> None:
        self.clock = JumpClock()
        self.errors: list[mm.MMStreamError] = []

    @property
    def sleeps(self) -> list[float]:
        return self.clock.sleeps

    def around(self, *inner: Any) -> list[Any]:
        """The middleware list: this Retry, then ``inner``."""
        retry = Retry(
            sleep=self.clock.sleep,
            clock=self.clock,
            random=lambda: 0.5,
            base=1.0,
            on_retry=lambda request, error, delay: self.errors.append(error),
        )
        return [retry, *inner]


# --- faults before the first chunk: one retry, then the answer, once -------------------------

BEFORE_OUTPUT: dict[str, tuple[Fault, float | None]] = {
    # case: (fault, the wait Retry must take: a Retry-After, or None for the jittered backoff)
    "reset-before-response": (Fault.reset(), None),
    "drop-before-first-chunk": (Fault.drop(after_chunks=0), None),
    "malformed-first-event": (Fault.malformed(after_chunks=0), None),
    "wrong-content-type": (Fault.wrong_content_type(), None),
    "error-event-before-text": (Fault.error_event(after_chunks=0), None),
    "429": (Fault.http_status(429), None),
    "429-retry-after": (Fault.http_status(429, retry_after=2), 2.0),
    "500": (Fault.http_status(500), None),
    "500-retry-after": (Fault.http_status(500, retry_after=3), 3.0),
    "503": (Fault.http_status(503), None),
    "503-retry-after": (Fault.http_status(503, retry_after=4), 4.0),
    "503-html-page": (Fault.http_status(503, html=True), None),
    "529": (Fault.http_status(529), None),
    "529-retry-after": (Fault.http_status(529, retry_after=5), 5.0),
}


@pytest.mark.parametrize("case", list(BEFORE_OUTPUT))
async def test_fault_before_output_is_retried(name: str, case: str, server: TestServer) -> None:
    fault, retry_after = BEFORE_OUTPUT[case]
    server.inject(fault)
    retrying = Retrying()
    async with client(provider_for(name, server.base_url), retrying.around(), server) as llm:
        run = await call(llm)
    assert run.error is None, run.error
    assert run.seen == EXPECTED  # the answer once: nothing of the failed attempt shows
    assert not server.errors
    assert len(server.requests) == 2
    assert server.requests[0].faults == (fault,)
    assert server.requests[1].faults == ()
    assert server.requests[1].answer == EXPECTED
    [error] = retrying.errors
    assert error.partial is None or error.partial.text == ""
    if retry_after is not None:
        assert getattr(error, "retry_after", None) == retry_after
    # the provider's retry_after is honoured exactly; otherwise the first backoff is 0.5 * base
    wait = getattr(error, "retry_after", None)
    assert retrying.sleeps == [wait if wait is not None else 0.5]


async def test_stall_before_the_first_byte_times_out_then_retries(
    name: str, server: TestServer
) -> None:
    server.inject(Fault.stall(30.0))
    retrying = Retrying()
    middleware = retrying.around(Timeout(first_chunk=STALL))
    async with client(provider_for(name, server.base_url), middleware, server) as llm:
        run = await call(llm)
    assert run.error is None, run.error
    assert run.seen == EXPECTED
    assert server.requests[0].fault == Fault.stall(30.0)
    assert server.requests[-1].answer == EXPECTED
    assert len(server.requests) >= 2
    assert isinstance(retrying.errors[0], mm.APITimeoutError)
    assert retrying.errors[0].kind == "first_chunk"


@pytest.mark.parametrize("status", [429, 500, 503, 529])
@pytest.mark.parametrize("retry_after", [None, 7])
async def test_a_persistent_status_ends_in_its_typed_error(
    name: str, server: TestServer, status: int, retry_after: int | None
) -> None:
    server.inject(Fault.http_status(status, retry_after=retry_after), times=3)
    retrying = Retrying()
    async with client(provider_for(name, server.base_url), retrying.around(), server) as llm:
        run = await call(llm)
    expected = {
        429: mm.RateLimitError,
        500: mm.ServerError,
        503: mm.OverloadedError,
        529: mm.OverloadedError,
    }[status]
    assert isinstance(run.error, expected)
    assert run.error.status == status
    assert run.error.partial is None
    assert run.error.provider == name
    if retry_after is not None:
        assert run.error.retry_after == float(retry_after)
        assert retrying.sleeps == [7.0, 7.0]
    assert run.seen == ""
    assert len(server.requests) == 3  # max_attempts, then the error


# --- faults after the first chunk: no retry, a typed error with the partial text -------------

AFTER_OUTPUT: dict[str, tuple[Fault, type[mm.MMStreamError]]] = {
    "drop-mid-stream": (Fault.drop(after_chunks=2), mm.IncompleteStreamError),
    "malformed-event": (Fault.malformed(after_chunks=1), mm.ProviderProtocolError),
    "error-event": (Fault.error_event(after_chunks=2), mm.ServerError),
    "missing-completion-signal": (Fault.missing_end(), mm.IncompleteStreamError),
}


@pytest.mark.parametrize("case", list(AFTER_OUTPUT))
async def test_fault_after_output_raises_with_the_partial_text(
    name: str, case: str, server: TestServer
) -> None:
    fault, error = AFTER_OUTPUT[case]
    server.inject(fault)
    retrying = Retrying()
    async with client(provider_for(name, server.base_url), retrying.around(), server) as llm:
        run = await call(llm)
    if name == "openai-compatible" and fault.kind == "missing_end":
        # Documented leniency: compatible servers (old llama.cpp, ...) may omit
        # [DONE]; a body ending after a finish_reason is a complete answer.
        assert run.error is None, run.error
        assert run.seen == EXPECTED
        return
    assert isinstance(run.error, error)
    assert run.error.partial is not None
    assert run.seen  # output had begun
    assert run.error.partial.text == run.seen  # .partial is exactly what the caller saw
    assert EXPECTED.startswith(run.seen)
    if fault.kind in ("drop", "error_event"):
        assert run.seen == server.requests[0].answer  # everything the server sent arrived
    assert len(server.requests) == 1  # never replayed
    assert retrying.sleeps == []


async def test_stall_between_chunks_is_an_idle_timeout_with_the_partial_text(
    name: str, server: TestServer
) -> None:
    server.inject(Fault.stall(30.0, after_chunks=2))
    retrying = Retrying()
    middleware = retrying.around(Timeout(idle=STALL, first_chunk=30.0))
    async with client(provider_for(name, server.base_url), middleware, server) as llm:
        run = await call(llm)
        await server.wait_disconnect(timeout=10)  # the client hung up on the stalled answer
    assert isinstance(run.error, mm.APITimeoutError)
    assert run.error.kind == "idle"
    assert run.error.partial is not None
    assert run.error.partial.text == run.seen == "You said: "
    assert len(server.requests) == 1


async def test_a_huge_event_arrives_whole(name: str, server: TestServer) -> None:
    server.inject(Fault.huge_event(size=1 << 20, after_chunks=1))
    async with client(provider_for(name, server.base_url), (), server) as llm:
        run = await call(llm)
    assert run.error is None, run.error
    assert run.seen == server.requests[0].answer
    assert len(run.seen) > 1 << 20
    assert "x" * (1 << 20) in run.seen


# --- connection refused ----------------------------------------------------------------------


async def _closed_port() -> str:
    """A base URL on which nothing listens (a server that has just stopped)."""
    async with TestServer() as gone:
        return gone.base_url


async def test_connection_refused_is_retried_then_typed(name: str) -> None:
    retrying = Retrying()
    async with client(provider_for(name, await _closed_port()), retrying.around()) as llm:
        run = await call(llm)
    assert type(run.error) is mm.APIConnectionError
    assert run.error.partial is None
    assert run.error.provider == name
    assert retrying.sleeps == [0.5, 1.0]  # three attempts


async def test_connection_refused_falls_back_to_a_live_server(
    name: str, server: TestServer
) -> None:
    records: list[TraceRecord] = []
    live = provider_for(name, server.base_url)
    middleware = [Tracing(sink=records.append), Fallback(providers=[live])]
    async with client(provider_for(name, await _closed_port()), middleware, server) as llm:
        run = await call(llm)
    assert run.error is None, run.error
    assert run.seen == EXPECTED
    assert len(server.requests) == 1
    [record] = records
    assert record.outcome == "complete"
    assert record.answered_by is not None
    assert record.answered_by.startswith(name)


# --- errors that must not be retried or fallen back from (OpenAI's family sends them) ------

OPENAI_FAMILY = ["openai", "azure", "openai-compatible"]


@pytest.mark.parametrize("family", OPENAI_FAMILY)
async def test_a_used_up_quota_is_not_retried(family: str, server: TestServer) -> None:
    server.inject(Fault.http_status(429, retry_after=1, error_type="insufficient_quota"))
    retrying = Retrying()
    async with client(provider_for(family, server.base_url), retrying.around(), server) as llm:
        run = await call(llm)
    assert isinstance(run.error, mm.QuotaExceededError)
    assert len(server.requests) == 1
    assert retrying.sleeps == []


@pytest.mark.parametrize("family", OPENAI_FAMILY)
async def test_a_content_filter_refusal_is_neither_retried_nor_fallen_back_from(
    family: str, server: TestServer
) -> None:
    server.inject(Fault.http_status(400, error_type="content_filter"))
    retrying = Retrying()
    backup = provider_for("anthropic", server.base_url)
    middleware = [Fallback(providers=[backup]), *retrying.around()]
    async with client(provider_for(family, server.base_url), middleware, server) as llm:
        run = await call(llm)
    assert isinstance(run.error, mm.ContentFilterError)
    assert [r.api for r in server.requests] == [family.replace("openai-compatible", "openai")]
    assert retrying.sleeps == []


# --- a 200 answer that is not a stream --------------------------------------------------------


async def test_a_whole_json_answer_to_a_streaming_request_is_one_chunk(
    name: str, server: TestServer
) -> None:
    """A gateway that ignored ``stream: true`` (or ``alt=sse``): the whole answer, once."""
    server.inject(Fault.not_streamed())
    async with client(provider_for(name, server.base_url), (), server) as llm:
        chunks: list[mm.ChatResponse] = []
        async with llm.astream_chat([PROMPT]) as stream:
            async for chunk in stream:
                chunks.append(chunk)
    assert server.requests[0].stream is False  # the server answered with plain JSON
    assert [c.delta for c in chunks] == [EXPECTED]
    final = chunks[-1]
    assert final.text == EXPECTED
    assert final.finish_reason == "stop"
    assert final.usage is not None
    assert final.usage.input_tokens == len(PROMPT.split())
    assert final.usage.output_tokens is not None


async def test_a_json_error_with_status_200_is_the_typed_error(
    name: str, server: TestServer
) -> None:
    from mmstream.testing._formats import error_body

    api = "openai" if name == "openai-compatible" else name
    status = 429 if name != "ollama" else 503
    body = json.dumps(error_body(api, status, "the gateway says slow down")).encode()  # type: ignore[arg-type]
    server.inject(Fault.wrong_content_type("application/json", body=body))
    async with client(provider_for(name, server.base_url), (), server) as llm:
        run = await call(llm)
    expected = mm.RateLimitError if name != "ollama" else mm.ServerError
    assert isinstance(run.error, expected), run.error
    assert run.error.message == "the gateway says slow down"
    assert run.error.provider == name
    assert run.seen == ""


# --- a line over the cap ----------------------------------------------------------------------


async def test_a_line_over_the_cap_is_a_protocol_error_with_the_partial_text(
    name: str, server: TestServer
) -> None:
    server.inject(Fault.huge_event(size=300_000, after_chunks=2))
    async with client(provider_for(name, server.base_url), (), server) as llm:
        run = Run()
        with pytest.raises(mm.ProviderProtocolError) as info:
            async with llm.astream_chat([PROMPT], max_line_bytes=100_000) as stream:
                async for chunk in stream:
                    run.deltas.append(chunk.delta or "")
    assert "100,000 bytes" in str(info.value)
    assert run.seen == "You said: "  # the two events before the long line
    assert info.value.partial is not None and info.value.partial.text == run.seen
    assert info.value.provider == name


# --- a stale keep-alive connection ------------------------------------------------------------


@pytest.mark.parametrize("fault", [Fault.hang_up(), Fault.reset()], ids=["fin", "rst"])
async def test_a_reused_connection_the_server_closed_is_retried_once_transparently(
    name: str, server: TestServer, fault: Fault
) -> None:
    async with client(provider_for(name, server.base_url), (), server) as llm:
        first = await call(llm)
        assert first.error is None and server.connections_opened == 1
        server.inject(fault)  # the kept-alive connection is closed as the next request arrives
        second = await call(llm)
    assert second.error is None, second.error
    assert second.seen == EXPECTED
    assert [r.faults for r in server.requests] == [(), (fault,), ()]
    # the request went out on the reused connection, then once more on a new one
    assert [r.connection_id for r in server.requests] == [1, 1, 2]
    assert server.connections_opened == 2


async def test_a_fresh_connection_closed_without_an_answer_is_not_retried(
    name: str, server: TestServer
) -> None:
    server.inject(Fault.hang_up())
    async with client(provider_for(name, server.base_url), (), server) as llm:
        run = await call(llm)
    assert isinstance(run.error, mm.APIConnectionError)
    assert server.base_url in str(run.error)  # where it was sent, never a key
    assert len(server.requests) == 1
