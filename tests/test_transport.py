"""The transport: pools per event loop, timeouts, error mapping, and closing the response.

Most tests inject ``httpx.MockTransport`` (``Transport(http_transport=...)``); the
pooling tests count real TCP connections on the loopback test server.
"""

from __future__ import annotations

import functools
import gc
import inspect
import json
import socket
import time
import warnings
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest

import mmstream as mm
from mmstream import Transport
from mmstream import transport as transport_module
from mmstream.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    IncompleteStreamError,
    InvalidRequestError,
    NotFoundError,
    ProviderProtocolError,
    RateLimitError,
    ServerError,
)
from mmstream.providers.openai import OpenAI
from mmstream.testing import Fault, TestServer, answer_text
from mmstream.transport import DEFAULT_TIMEOUT, MAX_ERROR_BODY, Timeouts

BASE = "http://mock.test/v1"


def frame(data: dict[str, Any] | str) -> bytes:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()


def text_chunk(text: str) -> bytes:
    return frame({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})


def end_frames() -> list[bytes]:
    return [
        frame({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        frame({"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 3}}),
        frame("[DONE]"),
    ]


class Body(httpx.AsyncByteStream):
    """A response body that records how far it was read and whether it was closed.

    Once closed it yields nothing more, as a network stream does (httpx relies on
    that to end its own body iterators).
    """

    def __init__(self, parts: list[bytes], pause: float = 0.0, stall: float = 0.0) -> None:
        self.parts = parts
        self.pause = pause
        self.stall = stall
        self.sent = 0
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            if self.sent and self.pause:
                await anyio.sleep(self.pause)
            if self.closed:  # like a socket: nothing more once closed
                return
            self.sent += 1
            yield part
        if self.stall:
            await anyio.sleep(self.stall)

    async def aclose(self) -> None:
        self.closed = True


Handler = Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]


def llm_for(handler: Handler, **transport_kwargs: Any) -> mm.MultiModalLLM:
    provider = OpenAI(model="gpt-4o-mini", api_key="sk-test", base_url=BASE)
    transport = Transport(http_transport=httpx.MockTransport(handler), **transport_kwargs)
    return mm.MultiModalLLM(provider, transport=transport)


def streaming(body: Body, status: int = 200, **headers: str) -> Handler:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            status, headers={"content-type": "text/event-stream", **headers}, stream=body
        )

    return handler


# --- Timeouts ----------------------------------------------------------------------------


def test_timeouts_from_values() -> None:
    assert Timeouts.from_value(None) == DEFAULT_TIMEOUT == Timeouts()
    assert DEFAULT_TIMEOUT.total is None and DEFAULT_TIMEOUT.connect == 10.0
    assert Timeouts.from_value(30) == Timeouts(connect=10.0, read=30.0, write=30.0, pool=30.0)
    assert Timeouts.from_value(2.5) == Timeouts(connect=2.5, read=2.5, write=2.5, pool=2.5)
    custom = Timeouts(connect=1, read=2, total=9)
    assert Timeouts.from_value(custom) is custom
    assert Timeouts.from_value(httpx.Timeout(5.0, connect=1.0)) == Timeouts(
        connect=1.0, read=5.0, write=5.0, pool=5.0
    )
    assert transport_module._to_httpx(custom) == httpx.Timeout(
        connect=1, read=2, write=600.0, pool=600.0
    )
    for bad in (0, -1, "10", True):
        with pytest.raises(InvalidRequestError):
            Timeouts.from_value(bad)
    assert Transport(timeout=12).timeouts.read == 12.0
    assert "Timeouts(" in repr(Transport())


async def test_read_timeout_between_bytes_per_llm_and_per_call() -> None:
    async with TestServer() as server:
        provider = OpenAI(model="gpt-4o-mini", api_key="k", base_url=server.url("/v1"))
        slow = mm.MultiModalLLM(provider, transport=Transport(timeout=Timeouts(read=0.2)))
        async with slow:
            server.inject(Fault.stall(5, after_chunks=1))
            with pytest.raises(APITimeoutError) as info:
                await slow.acomplete("one two three four")
            assert info.value.kind == "read"
            assert info.value.partial is not None
            assert info.value.partial.text == "You "  # what arrived before the silence
        patient = mm.MultiModalLLM(provider)
        async with patient:
            server.inject(Fault.stall(5, after_chunks=1))
            with pytest.raises(APITimeoutError) as info:
                await patient.acomplete("one two", timeout=0.2)  # the call's own timeout
            assert info.value.kind == "read"
            assert (await patient.acomplete("fine")).text == answer_text("fine")


async def test_total_timeout_while_streaming_keeps_the_partial_answer() -> None:
    body = Body([text_chunk("a"), text_chunk("b"), *end_frames()], pause=0.5)
    llm = llm_for(streaming(body), timeout=Timeouts(total=0.2))
    async with llm:
        with pytest.raises(APITimeoutError) as info:
            await llm.acomplete("x")
    assert info.value.kind == "total"
    assert "total timeout" in str(info.value)
    assert info.value.partial is not None and info.value.partial.text == "a"
    assert body.closed


async def test_total_timeout_per_call_before_the_response() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(30)
        raise AssertionError("not reached")

    llm = llm_for(handler)
    async with llm:
        with pytest.raises(APITimeoutError) as info:
            await llm.acomplete("x", timeout=Timeouts(total=0.1))
    assert info.value.kind == "total"
    assert info.value.partial is None


async def test_total_timeout_that_is_not_reached_changes_nothing() -> None:
    body = Body([text_chunk("ok"), *end_frames()])
    llm = llm_for(streaming(body), timeout=Timeouts(total=30))
    async with llm:
        assert (await llm.acomplete("x")).text == "ok"


# --- pools ---------------------------------------------------------------------------------


async def test_one_pool_per_loop_reused_across_calls_and_closed_by_aclose(
    mmstream_server: TestServer,
) -> None:
    provider = OpenAI(model="gpt-4o-mini", api_key="k", base_url=mmstream_server.url("/v1"))
    llm = mm.MultiModalLLM(provider)
    client = llm.transport.client()
    assert llm.transport.client() is client
    for prompt in ("one", "two", "three"):
        assert (await llm.acomplete(prompt)).text == answer_text(prompt)
    async with llm.astream_chat(["four"]) as stream:
        async for _ in stream:
            pass
    assert mmstream_server.connections_opened == 1  # one kept-alive connection, reused
    await llm.transport.aclose()
    assert client.is_closed
    await mmstream_server.wait_until(lambda s: s.connections_open == 0)
    assert (await llm.acomplete("five")).text == answer_text("five")  # a new pool
    assert llm.transport.client() is not client
    assert mmstream_server.connections_opened == 2
    await llm.aclose()


async def test_async_with_closes_the_pool(mmstream_server: TestServer) -> None:
    provider = OpenAI(model="gpt-4o-mini", api_key="k", base_url=mmstream_server.url("/v1"))
    async with mm.MultiModalLLM(provider) as llm:
        await llm.acomplete("hi")
        client = llm.transport.client()
    assert client.is_closed


def test_each_event_loop_gets_its_own_pool() -> None:
    transport = Transport()
    seen: list[httpx.AsyncClient] = []

    async def use() -> None:
        seen.append(transport.client())
        assert transport.client() is seen[-1]

    anyio.run(use)
    anyio.run(use, backend="trio")
    anyio.run(use)
    assert len({id(c) for c in seen}) == 3
    assert "pools=1" in repr(transport)  # the pools of ended loops are forgotten


def test_sync_calls_share_the_portal_pool_and_close_releases_it(
    mmstream_thread_server: TestServer,
) -> None:
    server = mmstream_thread_server
    provider = OpenAI(model="gpt-4o-mini", api_key="k", base_url=server.url("/v1"))
    llm = mm.MultiModalLLM(provider)
    assert llm.complete("one").text == answer_text("one")
    assert "".join(c.delta or "" for c in llm.stream_complete("two")) == answer_text("two")
    assert llm.chat([mm.ChatMessage(role="user", content="three")]).message.content == (
        answer_text("three")
    )
    assert server.connections_opened == 1
    llm.close()
    deadline = time.monotonic() + 5
    while server.connections_open and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.connections_open == 0  # close() closed the portal's pool


# --- error responses --------------------------------------------------------------------


async def test_error_status_becomes_the_providers_typed_error() -> None:
    payload = {"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}}

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            429, json=payload, headers={"x-request-id": "req_1", "retry-after": "3"}
        )

    llm = llm_for(handler)
    async with llm:
        with pytest.raises(RateLimitError) as info:
            await llm.acomplete("x")
    error = info.value
    assert (error.status, error.message, error.request_id, error.retry_after) == (
        429,
        "slow down",
        "req_1",
        3.0,
    )
    assert error.provider == "openai"


async def test_redirect_is_an_error_not_a_body_to_decode() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(307, headers={"location": "http://elsewhere.test/"})

    async with llm_for(handler) as llm:
        with pytest.raises(APIError) as info:
            await llm.acomplete("x")
    assert info.value.status == 307


async def test_an_html_page_with_status_200_is_a_protocol_error() -> None:
    page = (
        b"<html><head><title>Sign in</title></head><body>Please sign in to the Wi-Fi</body></html>"
    )

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/html"}, content=page)

    async with llm_for(handler) as llm:
        with pytest.raises(ProviderProtocolError, match="HTML page instead of a stream") as info:
            await llm.acomplete("x")
    assert "Please sign in to the Wi-Fi" in str(info.value)
    assert info.value.partial is None


async def test_error_bodies_are_read_only_up_to_the_limit() -> None:
    body = Body([b"<html>" + b"x" * 1022 + b"\n"] * 1024)  # 1 MiB of HTML

    async with llm_for(streaming(body, status=502)) as llm:
        with pytest.raises(ServerError) as info:
            await llm.acomplete("x")
    assert body.sent * 1024 <= MAX_ERROR_BODY + 1024
    assert body.closed
    assert info.value.body is not None and len(info.value.body) <= 4096


async def test_a_failing_parse_error_falls_back_to_the_common_shapes() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"error": {"message": "no model"}})

    class BadParse:
        """A provider whose parse_error has a bug."""

        name = "bad"
        model = "m"
        options = mm.CallOptions()
        inner = OpenAI(model="m", api_key="k", base_url=BASE)
        image_policy = inner.image_policy
        metadata = inner.metadata

        def check(self) -> None:
            self.inner.check()

        def build_request(self, request: mm.ChatRequest) -> mm.HTTPRequest:
            return self.inner.build_request(request)

        def new_decoder(self, request: mm.ChatRequest) -> Any:
            return self.inner.new_decoder(request)

        def parse_error(self, status: int, headers: Any, body: bytes) -> APIError:
            raise KeyError("bug")

    transport = Transport(http_transport=httpx.MockTransport(handler))
    async with mm.MultiModalLLM(BadParse(), transport=transport) as llm:  # type: ignore[arg-type]
        with pytest.raises(NotFoundError, match="no model"):
            await llm.acomplete("x")


# --- httpx failures, mapped at the edge --------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "cls", "kind"),
    [
        (httpx.ConnectError("refused"), APIConnectionError, None),
        (httpx.ConnectTimeout("slow"), APITimeoutError, "connect"),
        (httpx.PoolTimeout("full"), APITimeoutError, "pool"),
        (httpx.LocalProtocolError("bad header"), InvalidRequestError, None),
        (httpx.UnsupportedProtocol("ftp"), InvalidRequestError, None),
    ],
)
async def test_failures_before_the_response(
    exc: Exception, cls: type[Exception], kind: str | None
) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    async with llm_for(handler) as llm:
        with pytest.raises(cls) as info:
            await llm.acomplete("x")
    assert type(info.value) is cls
    assert info.value.__cause__ is exc
    if kind is not None:
        assert info.value.kind == kind  # type: ignore[attr-defined]


class FailingBody(httpx.AsyncByteStream):
    def __init__(self, exc: Exception) -> None:
        self.exc = exc
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield text_chunk("before ")
        raise self.exc

    async def aclose(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    ("exc", "cls"),
    [
        (httpx.ReadTimeout("silence"), APITimeoutError),
        (httpx.RemoteProtocolError("peer closed"), IncompleteStreamError),
        (httpx.ReadError("reset"), APIConnectionError),
        (httpx.DecodingError("bad gzip"), ProviderProtocolError),
    ],
)
async def test_failures_mid_stream_keep_the_partial_answer(
    exc: Exception, cls: type[Exception]
) -> None:
    body = FailingBody(exc)

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=body)

    async with llm_for(handler) as llm:
        with pytest.raises(cls) as info:
            await llm.acomplete("x")
    assert type(info.value) is cls
    assert info.value.partial is not None  # type: ignore[attr-defined]
    assert info.value.partial.text == "before "  # type: ignore[attr-defined]
    assert body.closed


async def test_connection_refused_on_a_closed_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = OpenAI(model="m", api_key="k", base_url=f"http://127.0.0.1:{port}/v1")
    async with mm.MultiModalLLM(provider) as llm:
        with pytest.raises(APIConnectionError, match="could not connect"):
            await llm.acomplete("x")


async def test_non_ascii_header_is_reported_without_the_key() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("not sent")

    transport = Transport(http_transport=httpx.MockTransport(handler))
    provider = OpenAI(model="m", api_key="sk-secret\u2019s", base_url=BASE)
    async with mm.MultiModalLLM(provider, transport=transport) as llm:
        with pytest.raises(InvalidRequestError) as info:
            await llm.acomplete("x")
    assert "not ASCII" in str(info.value)
    assert "sk-secret" not in str(info.value) and info.value.__cause__ is None


async def test_a_body_that_is_not_json_is_refused_before_sending() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("not sent")

    async with llm_for(handler) as llm:
        with pytest.raises(InvalidRequestError, match="JSON"):
            await llm.acomplete("x", temperature=float("nan"))
        with pytest.raises(InvalidRequestError, match="JSON"):
            await llm.acomplete("x", seed=object())


# --- what goes over the wire ----------------------------------------------------------------


async def test_request_headers_and_body_bytes() -> None:
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=text_chunk("ü") + b"".join(end_frames()))

    async with llm_for(handler, headers={"X-Team": "vision"}) as llm:
        assert (await llm.acomplete("héllo")).text == "ü"
    request = seen[0]
    assert request.method == "POST"
    assert str(request.url) == f"{BASE}/chat/completions"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["accept"] == "text/event-stream"
    assert request.headers["user-agent"].startswith("mmstream/")
    assert request.headers["x-team"] == "vision"
    assert request.headers["authorization"] == "Bearer sk-test"
    body = json.loads(request.content)
    assert body["messages"][0]["content"] == "héllo"
    assert "héllo".encode() in request.content  # compact UTF-8, not \\u escapes


async def test_body_bytes_reach_the_decoder_unchanged_and_in_order() -> None:
    wire = text_chunk("Grüße ") + text_chunk("🎉") + b"".join(end_frames())
    parts = [wire[i : i + 3] for i in range(0, len(wire), 3)]  # cut inside characters
    async with llm_for(streaming(Body(parts))) as llm:
        response = await llm.acomplete("x")
    assert response.text == "Grüße 🎉"
    assert response.usage == mm.Usage(input_tokens=2, output_tokens=3)


# --- leaving a stream closes the response -------------------------------------------------


def long_body() -> Body:
    return Body([text_chunk(f"w{i} ") for i in range(1000)] + end_frames())


async def test_break_closes_the_response() -> None:
    body = long_body()
    async with llm_for(streaming(body)) as llm:
        async with llm.astream_complete("x") as stream:
            async for chunk in stream:
                if chunk.text.count("w") == 2:
                    break
        assert body.closed
        assert body.sent < 1000


async def test_an_exception_in_the_consumer_closes_the_response() -> None:
    body = long_body()
    async with llm_for(streaming(body)) as llm:
        with pytest.raises(ZeroDivisionError):
            async with llm.astream_chat(["x"]) as stream:
                async for _ in stream:
                    1 / 0  # noqa: B018
        assert body.closed


async def test_cancellation_closes_the_response() -> None:
    body = Body([text_chunk("a"), text_chunk("b")], stall=60)
    async with llm_for(streaming(body)) as llm:
        with anyio.move_on_after(0.2) as scope:
            async with llm.astream_complete("x") as stream:
                async for _ in stream:
                    pass
        assert scope.cancelled_caught
        assert body.closed


def test_sync_stream_close_closes_the_response() -> None:
    body = long_body()
    llm = llm_for(streaming(body))
    try:
        with llm.stream_complete("x") as stream:
            for chunk in stream:
                if chunk.text:
                    break
        assert body.closed
    finally:
        llm.close()


# --- errors say where the request went ------------------------------------------------------


async def test_connection_errors_name_the_origin_tried_and_never_the_key() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for provider in (
        mm.providers.Ollama(model="m", base_url=f"127.0.0.1:{port}", api_key="ollama-key-123"),
        mm.providers.Gemini(model="m", base_url=f"http://127.0.0.1:{port}", api_key="AIza-99999"),
    ):
        async with mm.MultiModalLLM(provider) as llm:
            with pytest.raises(APIConnectionError) as info:
                await llm.acomplete("x")
        message = str(info.value)
        assert f"could not connect to http://127.0.0.1:{port}" in message
        assert "key-123" not in message and "99999" not in message


def test_the_origin_of_a_url_holds_no_user_path_or_query() -> None:
    assert transport_module._origin("https://user:pw@api.test/v1?key=s") == "https://api.test:443"
    assert transport_module._origin("http://[::1]:8080/x") == "http://[::1]:8080"
    assert transport_module._origin("http://localhost:11434") == "http://localhost:11434"


# --- the configuration is checked before any work -------------------------------------------


async def test_a_missing_key_is_reported_before_any_image_is_read_or_fetched(
    mmstream_server: TestServer,
) -> None:
    provider = OpenAI(model="gpt-4o-mini", base_url=mmstream_server.url("/v1"))  # no key
    images = [
        mm.ImageBlock(path="/nonexistent/photo.jpg"),  # reading it would fail differently
        mm.ImageBlock(url=mmstream_server.url("/images/cat.png")),  # fetching it would show
    ]
    message = mm.ChatMessage("user", blocks=[*images, mm.TextBlock("what is this?")])
    async with mm.MultiModalLLM(provider) as llm:
        with pytest.raises(mm.ConfigurationError, match="OPENAI_API_KEY"):
            await llm.achat([message])
    assert mmstream_server.requests == []  # no image was fetched, no request sent


@pytest.mark.parametrize("sync_backend", ["asyncio", "trio"])
def test_a_missing_key_fails_fast_in_the_blocking_api(sync_backend: str) -> None:
    provider = mm.providers.Anthropic(model="claude-sonnet-4-5")
    llm = mm.MultiModalLLM(provider, sync_backend=sync_backend)  # type: ignore[arg-type]
    try:
        with pytest.raises(mm.ConfigurationError, match=r"Anthropic\.from_env"):
            llm.complete("x", [mm.ImageDocument(image_path="/nonexistent/big.jpg")])
    finally:
        llm.close()


# --- mounts: the offline server on any transport ----------------------------------------------


async def test_the_offline_provider_answers_through_a_transport_the_caller_made() -> None:
    transport = Transport(timeout=5)
    assert transport.mounts == {}
    async with mm.MultiModalLLM("offline:default", transport=transport) as llm:
        assert set(transport.mounts) == {"offline://"}  # the facade mounted its server
        answer = await llm.acomplete("hello")
    assert answer.text.startswith("Offline answer")
    other = mm.MultiModalLLM("offline:default", transport=transport)  # mounting again is a no-op
    assert (await other.acomplete("again")).text.startswith("Offline answer")
    await other.aclose()


async def test_a_new_mount_after_the_first_request_is_refused(
    mmstream_server: TestServer,
) -> None:
    transport = Transport()
    provider = OpenAI(model="gpt-4o-mini", api_key="k", base_url=mmstream_server.url("/v1"))
    async with mm.MultiModalLLM(provider, transport=transport) as llm:
        await llm.acomplete("x")
        with pytest.raises(mm.ConfigurationError, match="before the transport sends"):
            transport.mount("custom://", httpx.MockTransport(lambda request: httpx.Response(200)))


# --- the request body leaves nothing to the garbage collector ---------------------------------


async def test_the_request_body_is_iterated_without_an_async_generator() -> None:
    sent: list[Any] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.stream)
        return httpx.Response(200, content=text_chunk("ok") + b"".join(end_frames()))

    async with llm_for(handler) as llm:
        assert (await llm.acomplete("x")).text == "ok"
    iterator = sent[0].__aiter__()
    assert not inspect.isasyncgen(iterator)  # nothing a cancelled send could leave suspended
    body = b"".join([part async for part in iterator])
    assert json.loads(body)["messages"][0]["content"] == "x"


async def test_mass_cancellation_while_sending_leaves_no_unfinished_generator() -> None:
    """Calls cancelled while their large bodies are being written: nothing left for the GC.

    The peer accepts connections and never reads, so every write blocks until the
    cancellation. httpx's own request body is an async generator that trio reports
    when it is collected unexhausted.
    """
    accepted: list[anyio.abc.SocketStream] = []

    async def hold(stream: anyio.abc.SocketStream) -> None:
        accepted.append(stream)
        await anyio.sleep_forever()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    provider = OpenAI(model="gpt-4o-mini", api_key="k", base_url=f"http://127.0.0.1:{port}/v1")
    padding = "p" * (4 << 20)  # 4 MiB: more than the socket buffers take
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with anyio.create_task_group() as group:
            group.start_soon(listener.serve, hold)
            async with mm.MultiModalLLM(provider) as llm:
                with anyio.move_on_after(0.5):
                    async with anyio.create_task_group() as calls:
                        for _ in range(20):
                            calls.start_soon(functools.partial(llm.acomplete, "x", padding=padding))
            group.cancel_scope.cancel()
        await listener.aclose()
        for stream in accepted:
            await stream.aclose()
        del llm
        gc.collect()
    assert accepted  # the requests did go out
    leftovers = [w for w in caught if "garbage collected" in str(w.message)]
    assert leftovers == []


def test_the_cli_fails_fast_on_a_missing_key_too(tmp_path: Any) -> None:
    """``mmstream complete`` with an image and no key: the key is reported, not the image."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    result = subprocess.run(
        [sys.executable, "-m", "mmstream.cli", "complete", "--model", "anthropic:claude-x",
         "--image", str(tmp_path / "missing.jpg"), "hi"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "ANTHROPIC_API_KEY" in result.stderr and "Anthropic.from_env" in result.stderr
    assert "missing.jpg" not in result.stderr
