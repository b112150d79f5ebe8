"""A tiny scripted provider and an ``httpx.MockTransport`` server for middleware tests.

``Scripted`` speaks a minimal NDJSON format (``{"delta"}`` lines, then
``{"done"}``, or ``{"error"}``); ``MockServer`` answers each request with the
next :class:`Reply` queued for the requested model, counts requests and tracks
the response bodies still open, so tests can prove that a stream was closed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar, Literal

import anyio
import httpx
from attrs import define, field, frozen

from mmstream import ContentFilterError, OverloadedError
from mmstream._secret import Secret, to_secret
from mmstream.content import TextBlock
from mmstream.errors import APIError
from mmstream.images import ImagePolicy
from mmstream.metadata import MultiModalLLMMetadata
from mmstream.providers.base import (
    OptionFields,
    ResponseBuilder,
    default_parse_error,
    load_json,
    require_key,
)
from mmstream.request import ChatRequest, HTTPRequest
from mmstream.responses import ChatResponse, Usage
from mmstream.sse import NDJSONDecoder


@frozen(kw_only=True)
class Scripted(OptionFields):
    """A provider for the mock server; ``needs_key`` makes a missing key a ConfigurationError."""

    name: ClassVar[str] = "scripted"

    model: str = "scripted-1"
    base_url: str = "http://scripted.test"
    api_key: Secret | None = field(default=None, converter=to_secret, repr=False)
    needs_key: bool = False

    @property
    def metadata(self) -> MultiModalLLMMetadata:
        return MultiModalLLMMetadata(model_name=self.model)

    @property
    def image_policy(self) -> ImagePolicy:
        return ImagePolicy(accepts_urls=True, fit=False)

    def build_request(self, request: ChatRequest) -> HTTPRequest:
        if self.needs_key:
            require_key(self.name, self.api_key, "SCRIPTED_API_KEY")
        headers = {"content-type": "application/json"}
        if self.api_key is not None:
            headers["authorization"] = f"Bearer {self.api_key.get_secret_value()}"
        prompt = " ".join(
            block.text
            for message in request.messages
            for block in message.blocks
            if isinstance(block, TextBlock)
        )
        return HTTPRequest(
            url=f"{self.base_url}/v1/answer",
            headers=headers,
            json={"model": self.model, "prompt": prompt, "attempt": request.attempt},
            stream_format="ndjson",
        )

    def new_decoder(self, request: ChatRequest) -> ScriptedDecoder:
        return ScriptedDecoder(self.model)

    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> APIError:
        error = default_parse_error(self.name, status, headers, body)
        if error.code == "content_filter":
            return ContentFilterError(
                error.message, status=status, provider=self.name, code=error.code
            )
        return error


class ScriptedDecoder:
    """NDJSON lines into chunks, through the shared ResponseBuilder."""

    def __init__(self, model: str) -> None:
        self._lines = NDJSONDecoder()
        self._builder = ResponseBuilder("scripted", model)

    def feed(self, data: bytes) -> list[ChatResponse]:
        return self._decode(self._lines.feed(data))

    def flush(self) -> list[ChatResponse]:
        chunks = self._decode(self._lines.flush())
        if not self._builder.done:
            raise self._builder.incomplete('its "done" line')
        return chunks

    def _decode(self, lines: list[bytes]) -> list[ChatResponse]:
        builder = self._builder
        out: list[ChatResponse] = []
        for line in lines:
            event = load_json(line, builder)
            if not isinstance(event, dict):
                raise builder.protocol_error(f"expected an object, got {line[:80]!r}")
            if isinstance(event.get("delta"), str):
                out.append(builder.text(event["delta"], event))
            elif event.get("done"):
                usage = event.get("usage") or {}
                builder.usage = Usage(
                    input_tokens=usage.get("input_tokens"),
                    output_tokens=usage.get("output_tokens"),
                )
                builder.finish_reason = "stop"
                out.append(builder.finish(event))
            elif "error" in event:
                raise OverloadedError(
                    str(event["error"]),
                    status=200,
                    provider="scripted",
                    partial=builder.snapshot(event),
                )
        return out


End = Literal["done", "truncate", "drop", "error_event", "stall"]


@frozen(kw_only=True)
class Reply:
    """One scripted answer.

    Args:
        pieces: the text deltas sent (with ``status`` 200).
        status: an error status instead of an answer (with ``headers`` and ``error``).
        end: after the pieces: ``"done"`` (complete), ``"truncate"`` (body ends,
            no done line), ``"drop"`` (the connection fails), ``"error_event"``
            (an in-stream error line) or ``"stall"`` (nothing more, ever).
        stall_first: never answer at all (the request hangs before any byte).
        connect_error: fail as if the host refused the connection.
        usage: (input_tokens, output_tokens) reported at the end.
    """

    pieces: tuple[str, ...] = ("Hello", " world")
    status: int = 200
    headers: Mapping[str, str] = field(factory=dict)
    error: Mapping[str, Any] = field(factory=lambda: {"message": "scripted failure"})
    end: End = "done"
    stall_first: bool = False
    connect_error: bool = False
    usage: tuple[int, int] | None = (3, 2)

    @property
    def text(self) -> str:
        return "".join(self.pieces)


OK = Reply()


def status(http_status: int, retry_after: str | None = None, **error: Any) -> Reply:
    """An error response, optionally with a ``Retry-After`` header."""
    headers = {} if retry_after is None else {"retry-after": retry_after}
    return Reply(
        status=http_status,
        headers=headers,
        error={"message": f"scripted {http_status}", **error},
        pieces=(),
    )


class _Body(httpx.AsyncByteStream):
    def __init__(self, server: MockServer, reply: Reply) -> None:
        self._server = server
        self._reply = reply
        self._closed = False
        server.open_bodies += 1

    async def __aiter__(self) -> AsyncIterator[bytes]:
        reply = self._reply
        for piece in reply.pieces:
            yield json.dumps({"delta": piece}).encode() + b"\n"
            await anyio.lowlevel.checkpoint()
        if reply.end == "done":
            usage = None
            if reply.usage is not None:
                usage = {"input_tokens": reply.usage[0], "output_tokens": reply.usage[1]}
            yield json.dumps({"done": True, "usage": usage}).encode() + b"\n"
        elif reply.end == "drop":
            raise httpx.ReadError("connection reset by peer")
        elif reply.end == "error_event":
            yield b'{"error": "overloaded, try later"}\n'
        elif reply.end == "stall":
            await anyio.sleep_forever()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._server.open_bodies -= 1


@define
class MockServer:
    """Answers each request with the next reply queued for its model (then ``default``)."""

    replies: dict[str, list[Reply]] = field(factory=dict)
    default: Reply = OK
    requests: list[dict[str, Any]] = field(factory=list)
    headers_seen: list[dict[str, str]] = field(factory=list)
    open_bodies: int = 0

    def queue(self, *replies: Reply, model: str = "scripted-1") -> MockServer:
        self.replies.setdefault(model, []).extend(replies)
        return self

    def count(self, model: str | None = None) -> int:
        """Requests received (for one model, or all)."""
        return sum(1 for r in self.requests if model is None or r["model"] == model)

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._handle)

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(await request.aread())
        self.requests.append(body)
        self.headers_seen.append(dict(request.headers))
        queue = self.replies.get(body["model"]) or []
        reply = queue.pop(0) if queue else self.default
        if reply.connect_error:
            raise httpx.ConnectError("connection refused", request=request)
        if reply.stall_first:
            await anyio.sleep_forever()
        if reply.status >= 400:
            return httpx.Response(
                reply.status,
                headers={"content-type": "application/json", **reply.headers},
                content=json.dumps({"error": dict(reply.error)}).encode(),
            )
        return httpx.Response(
            200, headers={"content-type": "application/x-ndjson"}, stream=_Body(self, reply)
        )


class ManualClock:
    """A clock that only moves when told; ``sleep`` waits until it has moved far enough."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self._sleepers: list[tuple[float, anyio.Event]] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        event = anyio.Event()
        self._sleepers.append((self.now + seconds, event))
        await event.wait()

    def advance(self, seconds: float) -> None:
        self.now += seconds
        due = [(t, e) for t, e in self._sleepers if t <= self.now + 1e-9]
        self._sleepers = [(t, e) for t, e in self._sleepers if t > self.now + 1e-9]
        for _, event in due:
            event.set()


class JumpClock:
    """A clock whose ``sleep`` records the wait and jumps ahead at once (no real waiting)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await anyio.lowlevel.checkpoint()
