"""``EventStreamResponse``: relay a chat stream to a browser as Server-Sent Events.

The response runs three things side by side for one request: the relay (read
a chunk, send its events), a watcher that reads the ASGI ``receive`` channel
and cancels the relay the moment the client disconnects, and a heartbeat that
sends an SSE comment after a silence. Cancelling the relay closes the
[`ChatStream`][mmstream.ChatStream], which closes every middleware and the
upstream HTTP response before the ASGI call returns.

The watcher does not rely on a failed ``send``: an upstream that is silent
(a model thinking before its first token) sends nothing that could fail, and
uvicorn drops a send to a closed connection without an error.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Any, ClassVar, final

import anyio
import attrs
from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from mmstream._secret import Secret
from mmstream.errors import MMStreamError
from mmstream.responses import ChatResponse, CompletionResponse
from mmstream.web._events import HEARTBEAT, EventEncoder

__all__ = ["SSE_HEADERS", "EventStreamResponse"]

_log = logging.getLogger("mmstream.web")

#: Headers every relay sends: no caching, and no buffering by nginx-style proxies.
SSE_HEADERS: Mapping[str, str] = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}

Chunk = ChatResponse | CompletionResponse


@final
class EventStreamResponse(StreamingResponse):
    """A Starlette (and FastAPI) response that streams an answer as Server-Sent Events.

    Return it from an endpoint with the stream of ``astream_chat`` or
    ``astream_complete``; the call starts when the response is sent. Text
    arrives as ``text`` events, the end as one ``done`` event with the usage and
    finish reason, a failure as one ``error`` event with the text so far (see
    the event format in the docs). When the client disconnects, the upstream
    call is closed at once; when the upstream is silent for ``heartbeat``
    seconds, an SSE comment keeps proxies from timing the connection out.

    Args:
        stream: the chunks to relay; closed (``aclose``) when the response ends.
        heartbeat: seconds of silence before a keep-alive comment; ``None`` sends none.
        status_code: the HTTP status (200).
        headers: more response headers (``Cache-Control: no-cache`` and
            ``X-Accel-Buffering: no`` are always set unless given here).
        background: a task run after the response ended.

    Example:
        ```python
        async def ask(request):
            question = (await request.json())["question"]
            return EventStreamResponse(llm.astream_complete(question))
        ```
    """

    media_type: ClassVar[str] = "text/event-stream"  # type: ignore[misc]

    def __init__(
        self,
        stream: AsyncIterable[Chunk],
        *,
        heartbeat: float | None = 15.0,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        if heartbeat is not None and not heartbeat > 0:
            raise ValueError(
                f"heartbeat must be a positive number of seconds, or None; not {heartbeat}"
            )
        self.stream = stream
        self.heartbeat = heartbeat
        self.encoder = EventEncoder(secrets=_secrets_of(stream))
        merged = dict(SSE_HEADERS)
        merged.update(headers or {})
        super().__init__(
            _relay(stream, self.encoder),
            status_code=status_code,
            headers=merged,
            background=background,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Relay the stream; stop and close it when the client leaves."""
        body: Any = self.body_iterator
        channel = _Channel(send)
        try:
            async with anyio.create_task_group() as group:
                cancel = group.cancel_scope
                group.start_soon(_watch_disconnect, receive, cancel, self.stream)
                start = {"type": "http.response.start", "status": self.status_code}
                if await channel.write({**start, "headers": self.raw_headers}):
                    if self.heartbeat is not None:
                        group.start_soon(channel.beat, self.heartbeat, cancel)
                    async for data in body:
                        if not await channel.write(_body(data, more=True)):
                            break  # the client is gone
                    else:
                        await channel.write(_body(b"", more=False))
                cancel.cancel()
        finally:
            # Close the relay, and with it the upstream call, before returning: also when
            # the client left while a chunk was in flight or before the first one.
            with anyio.CancelScope(shield=True):
                await body.aclose()
                await _aclose(self.stream)
        if self.background is not None:
            await self.background()


def _body(data: bytes, *, more: bool) -> dict[str, Any]:
    return {"type": "http.response.body", "body": data, "more_body": more}


class _Channel:
    """The ASGI ``send`` of one response, shared by the relay and the heartbeat."""

    __slots__ = ("_lock", "_send", "complete", "last_write")

    def __init__(self, send: Send) -> None:
        self._send = send
        self._lock = anyio.Lock(fast_acquire=True)  # no extra checkpoint per chunk
        self.last_write = anyio.current_time()
        self.complete = False

    async def write(self, message: dict[str, Any]) -> bool:
        """Send one message; ``False`` when the client is gone or the response is complete."""
        async with self._lock:
            if self.complete:
                return False
            try:
                await self._send(message)
            except OSError:  # the client is gone (servers of ASGI spec 2.4 may say so)
                self.complete = True
                return False
            self.last_write = anyio.current_time()
            if message["type"] == "http.response.body" and not message["more_body"]:
                self.complete = True
            return True

    async def beat(self, interval: float, cancel: anyio.CancelScope) -> None:
        """Send a keep-alive comment whenever nothing was written for ``interval`` seconds."""
        while True:
            await anyio.sleep(max(0.0, self.last_write + interval - anyio.current_time()))
            silent = anyio.current_time() - self.last_write >= interval
            if silent and not await self.write(_body(HEARTBEAT, more=True)):
                cancel.cancel()
                return


async def _relay(stream: AsyncIterable[Chunk], encoder: EventEncoder) -> AsyncIterator[bytes]:
    """The stream's SSE bytes; the stream is closed when this generator ends or is closed."""
    try:
        try:
            async for chunk in stream:
                data = encoder.feed(chunk)
                if data:
                    yield data
        except MMStreamError as exc:
            yield encoder.fail(exc)
            return
        except Exception as exc:  # a bug (in a middleware, say): the browser still hears of it
            yield encoder.fail(exc)
            return
        yield encoder.finish()
    finally:
        await _aclose(stream)


async def _aclose(stream: object) -> None:
    """Close a stream that can be closed (``ChatStream.aclose`` may be called twice)."""
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        with anyio.CancelScope(shield=True):
            await aclose()


async def _watch_disconnect(receive: Receive, scope: anyio.CancelScope, stream: object) -> None:
    """Read ``receive`` until the client disconnects, then cancel the relay.

    The stream is told first that its consumer left (``ChatStream.leave``), so
    middleware record the call as closed, not as cancelled from outside.
    """
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            _log.debug("the client disconnected; closing the upstream call")
            leave = getattr(stream, "leave", None)
            if callable(leave):
                leave()
            scope.cancel()
            return


def _secrets_of(stream: object) -> tuple[str, ...]:
    """The provider's secret values behind a ``ChatStream`` (masked in error events)."""
    provider = getattr(getattr(stream, "request", None), "provider", None)
    if provider is None or not attrs.has(type(provider)):
        return ()
    values = (getattr(provider, f.name, None) for f in attrs.fields(type(provider)))
    return tuple(v.get_secret_value() for v in values if isinstance(v, Secret))
