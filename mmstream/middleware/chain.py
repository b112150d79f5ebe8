"""Composition of middleware: outermost first, a network read at a time, every iterator closed.

[`compose`][mmstream.middleware.chain.compose] builds a
[`Chain`][mmstream.middleware.chain.Chain] once per client. Each call through
it ([`Chain.open`][mmstream.middleware.chain.Chain.open]) is an async iterator
of *batches*: the chunks of one network read, as the endpoint yields them.

Two kinds of layer meet in a chain:

- a [`Middleware`][mmstream.middleware.chain.Middleware] sees one chunk at a
  time: ``(request, call_next) -> AsyncIterator[ChatResponse]``;
- a [`BatchMiddleware`][mmstream.middleware.chain.BatchMiddleware] has a
  ``batches(request, call_next)`` method that sees a whole network read at a
  time, so a pass-through layer costs one step per read instead of one per chunk.

The chain adapts between them only where a per-chunk layer meets a batch-level
one, and adds no generator layer of its own otherwise. Every iterator a call
opens (each layer's, each adapter's, the endpoint's) is recorded, and closing
the call closes them all, outermost first: a middleware that ``break``s out of
``call_next(...)`` never leaks an unclosed async generator.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol, final, runtime_checkable

import anyio

if TYPE_CHECKING:
    from mmstream.request import ChatRequest
    from mmstream.responses import ChatResponse

__all__ = [
    "BatchCallNext",
    "BatchMiddleware",
    "CallNext",
    "Chain",
    "Endpoint",
    "Middleware",
    "compose",
]

#: what a per-chunk middleware calls to run the layers inside it: one chunk at a time.
CallNext = Callable[["ChatRequest"], AsyncIterator["ChatResponse"]]
#: what a batch middleware calls to run the layers inside it: one network read at a time.
BatchCallNext = Callable[["ChatRequest"], AsyncIterator[list["ChatResponse"]]]
#: the innermost layer: the chunks of each network read (a non-empty list per read).
Endpoint = BatchCallNext


class Middleware(Protocol):
    """A layer around each call; ``call_next(request)`` runs the layers inside it."""

    def __call__(
        self, request: ChatRequest, call_next: CallNext, /
    ) -> AsyncIterator[ChatResponse]: ...


@runtime_checkable
class BatchMiddleware(Protocol):
    """A layer that sees the chunks of a network read together (the fast protocol).

    ``batches(request, call_next)`` yields lists of chunks; ``call_next``
    yields the lists of the layers inside. A list, once yielded, belongs to
    the layer (or the stream) that received it, which may empty it: never read
    or change it afterwards (yield a new list to change chunks). The chain
    uses ``batches`` when a layer has it, and the per-chunk ``__call__`` otherwise.
    """

    def batches(
        self, request: ChatRequest, call_next: BatchCallNext, /
    ) -> AsyncIterator[list[ChatResponse]]: ...


def _batch_level(layer: object) -> Callable[..., AsyncIterator[Any]] | None:
    batches = getattr(layer, "batches", None)
    return batches if callable(batches) else None


@final
class Chain:
    """Middleware composed once around an endpoint; ``open(request)`` runs one call.

    Attributes:
        middleware: the layers, outermost first.
        endpoint: the innermost layer (lists of chunks, one per network read).
    """

    __slots__ = ("_kinds", "_layers", "endpoint", "middleware")

    def __init__(self, middleware: Sequence[Middleware | BatchMiddleware], endpoint: Endpoint):
        self.middleware: tuple[Middleware | BatchMiddleware, ...] = tuple(middleware)
        self.endpoint = endpoint
        # Innermost first: (callable, takes and yields batches?) for each layer.
        layers: list[tuple[Callable[..., AsyncIterator[Any]], bool]] = []
        for layer in reversed(self.middleware):
            batches = _batch_level(layer)
            if batches is not None:
                layers.append((batches, True))
            else:
                layers.append((layer, False))  # type: ignore[arg-type]
        self._layers = tuple(layers)

    def __repr__(self) -> str:
        return f"Chain({list(self.middleware)!r})"

    def open(self, request: ChatRequest, endpoint: Endpoint | None = None) -> Call:
        """Start one call: nothing runs until its first batch is requested.

        Args:
            request: the call.
            endpoint: the innermost layer for this call only (the chain's by default).

        Returns:
            The call's batches; close it (``aclose``) to close every layer.
        """
        opened: list[AsyncIterator[Any]] = []
        record = opened.append
        inner = self.endpoint if endpoint is None else endpoint
        batched = True  # what `inner` yields: lists of chunks, or single chunks

        def recorded(
            call: Callable[[ChatRequest], AsyncIterator[Any]],
        ) -> Callable[[ChatRequest], AsyncIterator[Any]]:
            def call_recorded(req: ChatRequest) -> AsyncIterator[Any]:
                iterator = call(req)
                record(iterator)
                return iterator

            return call_recorded

        call_inner = recorded(inner)
        for layer, takes_batches in self._layers:
            if takes_batches and not batched:
                call_inner = _adapted(call_inner, _Batched, record)
            elif batched and not takes_batches:
                call_inner = _adapted(call_inner, _chunks, record)
            call_inner = _bound(layer, call_inner, record)
            batched = takes_batches
        outer = call_inner(request) if batched else _Batched(call_inner(request))
        departure = Departure()
        # The layers start on the first batch, in this task: they find the marker there.
        _DEPARTURE.set(departure)
        return Call(outer, opened, departure)


def _bound(
    layer: Callable[..., AsyncIterator[Any]],
    call_next: Callable[[ChatRequest], AsyncIterator[Any]],
    record: Callable[[AsyncIterator[Any]], None],
) -> Callable[[ChatRequest], AsyncIterator[Any]]:
    """``layer`` with its ``call_next`` filled in, each iterator it returns recorded."""

    def call_layer(req: ChatRequest) -> AsyncIterator[Any]:
        iterator = layer(req, call_next)
        record(iterator)
        return iterator

    return call_layer


def _adapted(
    call: Callable[[ChatRequest], AsyncIterator[Any]],
    adapter: Callable[[AsyncIterator[Any]], AsyncIterator[Any]],
    record: Callable[[AsyncIterator[Any]], None],
) -> Callable[[ChatRequest], AsyncIterator[Any]]:
    def call_adapted(req: ChatRequest) -> AsyncIterator[Any]:
        iterator = adapter(call(req))
        record(iterator)
        return iterator

    return call_adapted


async def _chunks(source: AsyncIterator[list[ChatResponse]]) -> AsyncIterator[ChatResponse]:
    """Batches in, chunks out: what a per-chunk layer inside a batch-level one sees."""
    async for batch in source:
        for chunk in batch:
            yield chunk


@final
class _Batched:
    """Chunks in, batches of one out: a per-chunk layer as a batch-level one sees it."""

    __slots__ = ("_next", "_source")

    def __init__(self, source: AsyncIterator[ChatResponse]) -> None:
        self._source = source
        self._next = source.__anext__

    def __aiter__(self) -> _Batched:
        return self

    async def __anext__(self) -> list[ChatResponse]:
        return [await self._next()]

    async def aclose(self) -> None:
        aclose = getattr(self._source, "aclose", None)
        if aclose is not None:
            await aclose()


@final
@final
class Departure:
    """Whether the consumer of one call has left it (set by the stream, read by observers).

    A consumer that stops waiting for a chunk has to cancel its own wait; the
    layers then see a cancellation, not a ``GeneratorExit``. The stream marks
    the call as left first ([`Call.leave`][mmstream.middleware.chain.Call.leave]),
    so that observers record such an ending as *closed*, as they would at a
    ``yield``, and keep *cancelled* for cancellations that come from outside.
    """

    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = False


#: the departure marker of the call whose layers are being started in this task.
_DEPARTURE: ContextVar[Departure | None] = ContextVar("mmstream_departure", default=None)


def current_departure() -> Departure | None:
    """For a layer, at the start of its call: the call's departure marker (``None`` outside)."""
    return _DEPARTURE.get()


class Call:
    """One call through a chain: its batches, and every iterator it opened.

    An async iterator of lists of chunks. ``aclose()`` closes every iterator
    the call opened, outermost first, shielded from cancellation, and raises
    the first error a layer raised while closing.
    """

    __slots__ = ("_opened", "departure", "step")

    def __init__(
        self,
        outer: AsyncIterator[list[ChatResponse]],
        opened: list[AsyncIterator[Any]],
        departure: Departure | None = None,
    ):
        self._opened = opened
        #: marks the call as left by its consumer (see `leave`).
        self.departure = departure if departure is not None else Departure()
        #: the next batch: the outermost iterator's own ``__anext__`` (no layer in between).
        self.step: Callable[[], Awaitable[list[ChatResponse]]] = outer.__anext__

    def __aiter__(self) -> Call:
        return self

    def __anext__(self) -> Awaitable[list[ChatResponse]]:
        return self.step()

    def leave(self) -> None:
        """Mark the call as left by its consumer, before cancelling a wait for its next batch."""
        self.departure.left = True

    async def aclose(self) -> None:
        """Close every layer of the call, outermost first (also when the call is cancelled)."""
        error: BaseException | None = None
        with anyio.CancelScope(shield=True):
            for iterator in self._opened:
                aclose = getattr(iterator, "aclose", None)
                if aclose is None:
                    continue
                try:
                    await aclose()
                except BaseException as exc:
                    error = error or exc
        if error is not None:
            raise error


def compose(middleware: Sequence[Middleware | BatchMiddleware], endpoint: Endpoint) -> Chain:
    """Build the chain once: ``middleware`` outermost first, around ``endpoint``.

    Args:
        middleware: the layers; each is a per-chunk
            [`Middleware`][mmstream.middleware.chain.Middleware] or a
            [`BatchMiddleware`][mmstream.middleware.chain.BatchMiddleware].
        endpoint: the innermost layer, yielding the chunks of each network read as a list.

    Returns:
        The [`Chain`][mmstream.middleware.chain.Chain]; ``chain.open(request)``
        runs one call.

    Example:
        ```python
        chain = compose([Tracing()], endpoint)
        call = chain.open(request)
        try:
            async for batch in call:
                ...
        finally:
            await call.aclose()
        ```
    """
    return Chain(middleware, endpoint)
