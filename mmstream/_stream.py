"""The one stream type: a call's chunks, read a network read at a time, closed however it ends.

A [`ChatStream`][mmstream.ChatStream] opens its call through the middleware
chain on the first ``__anext__`` and then reads *batches* (the chunks of one
network read); handing out the rest of a batch costs no generator step. Every
way of leaving it (the end, an error, ``break`` inside ``async with``,
``aclose()``, cancellation, dropping it) closes the call: every middleware and
the HTTP response. An error raised after output began carries ``partial``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar, final

from mmstream.errors import MMStreamError
from mmstream.responses import ChatResponse, CompletionResponse

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from anyio.lowlevel import EventLoopToken

    from mmstream.middleware.chain import Call
    from mmstream.request import ChatRequest

__all__ = ["ChatStream", "Opener", "Wrap"]

R = TypeVar("R", ChatResponse, CompletionResponse)

#: wraps each endpoint call's batches (the blocking pump's read-ahead gate).
Wrap = Callable[["AsyncIterator[list[ChatResponse]]"], "AsyncIterator[list[ChatResponse]]"]
#: opens one call: ``(request, wrap)`` -> the call's batches.
Opener = Callable[["ChatRequest", "Wrap | None"], "Call"]


async def _ended() -> list[ChatResponse]:
    raise StopAsyncIteration


@final
class ChatStream(Generic[R]):
    """A streamed answer: an async iterator, an async context manager, and awaitable.

    ``async for chunk in stream``, ``async with stream``, and the LlamaIndex
    habit ``async for chunk in await llm.astream_complete(...)`` all work.
    Nothing is sent before the first chunk is asked for. Leaving early
    (``break`` inside ``async with``, an exception, cancellation) closes every
    middleware and the HTTP response before control returns; a stream dropped
    after a bare ``break`` is closed on its event loop at the next checkpoint.
    An error after output began carries ``partial``, the answer so far.
    """

    __slots__ = (
        "_batch",
        "_call",
        "_closed",
        "_last",
        "_leaving",
        "_map",
        "_open",
        "_request",
        "_step",
        "_token",
        "_wrap",
    )

    def __init__(
        self,
        open: Opener,
        request: ChatRequest,
        map: Callable[[ChatResponse], R] | None = None,
    ) -> None:
        self._open = open
        self._request = request
        self._map: Callable[[ChatResponse], R] | None = map  # None: the chunks as they are
        self._batch: list[ChatResponse] = []  # the current read's chunks not handed out
        self._call: Call | None = None
        self._step: Callable[[], Any] | None = None
        self._last: ChatResponse | None = None
        self._closed = False
        self._leaving = False
        self._token: EventLoopToken | None = None
        self._wrap: Wrap | None = None

    @property
    def request(self) -> ChatRequest:
        """The normalized call behind this stream."""
        return self._request

    def __aiter__(self) -> ChatStream[R]:
        return self

    async def __anext__(self) -> R:
        batch = self._batch  # the rest of the current read, last chunk first
        if not batch:
            step = self._step or self._start()
            try:
                batch = await step()
                while not batch:
                    batch = await step()
            except BaseException as exc:  # the end (StopAsyncIteration), an error, cancellation
                await self._failed(exc)
                raise
            # The list is the stream's now (a layer never changes a list it yielded).
            batch.reverse()
            self._batch = batch
        chunk = self._last = batch.pop()
        map = self._map
        return chunk if map is None else map(chunk)  # type: ignore[return-value]

    async def _next_batch(self) -> list[R]:
        """The rest of the current network read, or the next one (the blocking pump reads these)."""
        batch = self._batch
        if batch:  # what __anext__ left of a read, last chunk first
            batch.reverse()
            self._batch = []
        else:
            step = self._step or self._start()
            try:
                batch = await step()
                while not batch:
                    batch = await step()
            except BaseException as exc:
                await self._failed(exc)
                raise
        self._last = batch[-1]
        map = self._map
        return batch if map is None else [map(chunk) for chunk in batch]  # type: ignore[return-value]

    def _read_ahead(self, wrap: Wrap) -> None:
        """Pass each endpoint call's batches through ``wrap`` (before the stream starts)."""
        self._wrap = wrap

    def _start(self) -> Callable[[], Any]:
        """Open the call (on the first chunk asked for); a closed stream has nothing more."""
        if self._closed:
            return _ended
        from anyio.lowlevel import current_token  # here: `import mmstream` stays light

        self._token = current_token()
        self._call = call = self._open(self._request, self._wrap)
        if self._leaving:
            call.leave()
        self._step = step = call.step
        return step

    async def _failed(self, exc: BaseException) -> None:
        """The call ended or failed: give an error the answer so far, and close the call."""
        if isinstance(exc, MMStreamError) and exc.partial is None:
            exc.partial = self._last
        await self.aclose()

    def leave(self) -> None:
        """Say the consumer is leaving, from any task, before cancelling a wait on the stream.

        A consumer that gives up while the stream waits for the provider (a
        browser that disconnected, a Stop button) cancels its own wait; calling
        this first makes middleware record the call as *closed* — left by its
        consumer — rather than *cancelled* from outside. Close the stream after
        the cancellation as usual (``aclose``, or leaving ``async with``).
        """
        self._leaving = True
        call = self._call
        if call is not None:
            call.leave()

    async def aclose(self) -> None:
        """Close the stream: every middleware's exit code runs, then the HTTP response closes."""
        if self._closed:
            return
        self._closed = True
        self._step = None
        self._batch = []
        call = self._call
        if call is not None:
            await call.aclose()

    async def __aenter__(self) -> ChatStream[R]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __await__(self) -> Generator[Any, None, ChatStream[R]]:
        return self._itself().__await__()

    async def _itself(self) -> ChatStream[R]:
        return self

    def __del__(self) -> None:
        call = self._call
        if self._closed or call is None:
            return
        self._closed = True
        token = self._token
        assert token is not None
        _close_soon(token, call)


#: closing tasks of dropped streams on asyncio, kept alive until they end.
_closing: set[Any] = set()


def _close_soon(token: EventLoopToken, call: Call) -> None:
    """Close a dropped stream's call on its own event loop, without waiting (from any thread)."""

    async def close() -> None:
        with contextlib.suppress(Exception):  # nobody is left to receive it
            await call.aclose()

    def spawn() -> None:
        import asyncio

        loop = token.native_token
        if isinstance(loop, asyncio.AbstractEventLoop):
            task = loop.create_task(close())
            _closing.add(task)
            task.add_done_callback(_closing.discard)
        else:  # trio: the only other backend anyio runs
            import trio

            trio.lowlevel.spawn_system_task(close, name="mmstream-close")

    with contextlib.suppress(Exception):  # the loop has ended; so has everything on it
        token.backend_class.run_sync_soon(spawn, (), token.native_token)
