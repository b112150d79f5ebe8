"""API keys never show: not in a repr, str, log record, trace, exception or serialized config.

Every provider gets a distinctive key; the calls go to the loopback test server
(which refuses the keys with a 401, or accepts them and then misbehaves) with
``Logging`` and ``Tracing`` on and every logger captured at DEBUG (mmstream's,
httpx's and httpcore's). Then everything a user or an operator could see is
searched for the key, and for its distinctive middle part (as providers that
echo a key masked would show its ends).
"""

from __future__ import annotations

import logging
import pickle
import traceback
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import mmstream as mm
from mmstream.middleware import Logging, Middleware, TraceRecord, Tracing
from mmstream.providers import Anthropic, AzureOpenAI, Gemini, Ollama, OpenAI, OpenAICompatible
from mmstream.serde import converter, to_json
from mmstream.testing import Fault, TestServer

#: distinctive keys: a provider name, a long unique middle part, and a tail.
KEYS = {
    "openai": "sk-proj-openaiQ7xSECRETk3yZZ9f1w2",
    "azure": "0123azureQ7xSECRETk3yZZ9f1w2cdef",
    "azure-ad": "eyJ0eXAiazureadQ7xSECRETk3yZZ9f1w2",
    "openai-compatible": "sk-compatQ7xSECRETk3yZZ9f1w2",
    "anthropic": "sk-ant-api03-anthropicQ7xSECRETk3yZZ9f1w2",
    "gemini": "AIzaSyGeminiQ7xSECRETk3yZZ9f1w2",
    "ollama": "ollamaQ7xSECRETk3yZZ9f1w2",
}
MIDDLE = "Q7xSECRETk3yZZ9f1w2"[:12]  # what a masked echo ("sk-...f1w2") would never show
NAMES = list(KEYS)


def make_provider(name: str, base_url: str) -> Any:
    key = KEYS[name]
    if name == "openai":
        return OpenAI(model="gpt-4o-mini", api_key=key, base_url=f"{base_url}/v1")
    if name == "azure":
        return AzureOpenAI(deployment="gpt-4o", endpoint=base_url, api_key=key)
    if name == "azure-ad":
        return AzureOpenAI(deployment="gpt-4o", endpoint=base_url, azure_ad_token=key)
    if name == "openai-compatible":
        return OpenAICompatible(model="local", base_url=f"{base_url}/v1", api_key=key)
    if name == "anthropic":
        return Anthropic(model="claude-sonnet-4-5", api_key=key, base_url=base_url)
    if name == "gemini":
        return Gemini(model="gemini-2.5-flash", api_key=key, base_url=base_url)
    return Ollama(model="llava", api_key=key, base_url=base_url)


def renderings(obj: Any) -> Iterator[str]:
    """Every way ``obj`` (and, for exceptions, its chain and attributes) shows as text."""
    yield repr(obj)
    yield str(obj)
    if isinstance(obj, BaseException):
        yield "".join(traceback.format_exception(type(obj), obj, obj.__traceback__))
        seen: set[int] = set()
        error: BaseException | None = obj
        while error is not None and id(error) not in seen:
            seen.add(id(error))
            yield repr(error)
            yield str(error)
            yield repr(vars(error)) if hasattr(error, "__dict__") else ""
            yield repr(error.args)
            error = error.__cause__ or error.__context__
    if isinstance(obj, logging.LogRecord):
        yield obj.getMessage()
        yield repr(obj.args)
        yield repr(vars(obj))
        if obj.exc_info:
            yield "".join(traceback.format_exception(*obj.exc_info))


def assert_no_secret(name: str, *objects: Any) -> None:
    for obj in objects:
        for text in renderings(obj):
            assert KEYS[name] not in text, f"{name}'s key shows in {type(obj).__name__}: {text}"
            assert MIDDLE not in text, f"part of {name}'s key shows in {type(obj).__name__}"


@pytest.fixture(params=NAMES)
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every logger at DEBUG: mmstream's own, and httpx's and httpcore's below it."""
    caplog.set_level(logging.DEBUG)
    for logger in ("mmstream", "httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=logger)
    return caplog


def test_provider_repr_str_and_serialized_config(name: str) -> None:
    provider = make_provider(name, "http://127.0.0.1:9")
    llm = mm.MultiModalLLM(provider)
    request = mm.ChatRequest(messages=[mm.ChatMessage("user", "hi")], provider=provider)
    http_request = provider.build_request(request)
    assert_no_secret(
        name,
        provider,
        llm,
        request,
        http_request,
        llm.transport,
        converter.unstructure(provider),
        to_json(provider),
        provider.metadata,
    )
    # the key is really there, for the one place that sends it
    assert KEYS[name] in repr(dict(http_request.headers))
    # and it survives a round trip only when the caller passes it back in
    assert KEYS[name] not in repr(pickle.loads(pickle.dumps(provider)))


async def test_a_refused_key_shows_nowhere(name: str, logs: pytest.LogCaptureFixture) -> None:
    traces: list[TraceRecord] = []
    async with TestServer(api_key="the-only-key-the-server-takes") as server:
        if name == "ollama":  # Ollama takes any key (a proxy in front of it may not)
            server.inject(Fault.http_status(401))
        provider = make_provider(name, server.base_url)
        middleware: list[Middleware] = [Logging(), Tracing(sink=traces.append), Tracing()]
        async with mm.MultiModalLLM(provider, middleware=middleware) as llm:
            with pytest.raises(mm.APIError) as info:
                await llm.achat(["hi"])
    assert isinstance(info.value, (mm.AuthenticationError, mm.PermissionDeniedError))
    assert info.value.status in (400, 401, 403)
    assert traces and traces[0].outcome == "failed"
    assert logs.records  # the logging really happened
    assert_no_secret(
        name, info.value, info.value.body, *traces, *(converter.unstructure(t) for t in traces)
    )
    assert_no_secret(name, *logs.records, logs.text)


@pytest.mark.parametrize(
    "fault",
    [
        Fault.http_status(429, retry_after=1),
        Fault.http_status(500),
        Fault.http_status(503, html=True),
        Fault.drop(after_chunks=1),
        Fault.malformed(after_chunks=1),
        Fault.error_event(after_chunks=1),
        Fault.stall(30.0),
    ],
    ids=lambda f: f.kind + (str(f.status) if f.status else ""),
)
async def test_failures_with_an_accepted_key_show_it_nowhere(
    name: str, fault: Fault, logs: pytest.LogCaptureFixture
) -> None:
    traces: list[TraceRecord] = []
    async with TestServer() as server:
        server.inject(fault)
        provider = make_provider(name, server.base_url)
        middleware: list[Middleware] = [
            Logging(),
            Tracing(sink=traces.append),
            mm.middleware.Timeout(total=0.3),
        ]
        async with mm.MultiModalLLM(provider, middleware=middleware) as llm:
            with pytest.raises(mm.MMStreamError) as info:
                await llm.achat(["hi"])
            answer = await llm.achat(["hi"])  # and a success, logged too
    assert answer.text
    assert_no_secret(name, info.value, *traces, answer, answer.raw, answer.additional_kwargs)
    assert_no_secret(name, *logs.records, logs.text)


async def test_connection_errors_show_it_nowhere(name: str, logs: pytest.LogCaptureFixture) -> None:
    async with TestServer() as gone:
        base_url = gone.base_url
    provider = make_provider(name, base_url)  # nothing listens there any more
    async with mm.MultiModalLLM(provider, middleware=[Logging(), Tracing()]) as llm:
        with pytest.raises(mm.APIConnectionError) as info:
            await llm.achat(["hi"])
    assert_no_secret(name, info.value)
    assert_no_secret(name, *logs.records, logs.text)


async def test_a_server_that_echoes_the_request_does_not_leak_it_through_errors(
    name: str, logs: pytest.LogCaptureFixture
) -> None:
    """A misconfigured proxy reflects the request headers in its error page."""

    def reflect(request: httpx.Request) -> httpx.Response:
        echoed = "\n".join(f"{k}: {v}" for k, v in request.headers.items())
        return httpx.Response(502, text=f"<html><pre>Bad gateway for\n{echoed}</pre></html>")

    transport = mm.Transport(http_transport=httpx.MockTransport(reflect))
    provider = make_provider(name, "http://proxy.test")
    async with mm.MultiModalLLM(provider, transport=transport, middleware=[Logging()]) as llm:
        with pytest.raises(mm.ServerError) as info:
            await llm.achat(["hi"])
    assert_no_secret(name, info.value)
    assert_no_secret(name, *logs.records, logs.text)


def test_sync_facade_errors_show_it_nowhere(name: str) -> None:
    with TestServer.start_in_thread(api_key="the-only-key-the-server-takes") as server:
        if name == "ollama":
            server.inject(Fault.http_status(401))
        provider = make_provider(name, server.base_url)
        with mm.MultiModalLLM(provider) as llm, pytest.raises(mm.APIError) as info:
            llm.complete("hi")
    assert_no_secret(name, info.value)
