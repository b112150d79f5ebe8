"""Composition of middleware: outermost first, every opened iterator closed.

The chain costs nothing per chunk: it adds no generator layer of its own.
Each call gets a list of the iterators its layers opened (through
``call_next``); the stream closes them all, outermost first, when it ends,
fails, is left early or is cancelled, so a middleware that ``break``s out of
``call_next(...)`` never leaks an unclosed async generator.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from mmstream.request import ChatRequest
    from mmstream.responses import ChatResponse

__all__ = ["CallNext", "Endpoint", "Middleware", "compose"]

CallNext = Callable[["ChatRequest"], AsyncIterator["ChatResponse"]]
Endpoint = CallNext


class Middleware(Protocol):
    """A layer around each call; ``call_next(request)`` runs the layers inside it."""

    def __call__(
        self, request: ChatRequest, call_next: CallNext, /
    ) -> AsyncIterator[ChatResponse]: ...


class Opened(list[AsyncIterator["ChatResponse"]]):
    """The iterators one call has opened, outermost first (closed by the stream)."""

    __slots__ = ()


def compose(
    middleware: Sequence[Middleware], endpoint: Endpoint
) -> Callable[[ChatRequest, Opened], AsyncIterator[ChatResponse]]:
    """Build the chain once; each call passes its own :class:`Opened` list.

    Returns:
        ``start(request, opened)``: runs the outermost layer and records every
        iterator opened on the way in ``opened``.
    """
    layers = tuple(middleware)

    def start(request: ChatRequest, opened: Opened) -> AsyncIterator[ChatResponse]:
        def link(index: int) -> CallNext:
            if index == len(layers):

                def call_endpoint(req: ChatRequest) -> AsyncIterator[ChatResponse]:
                    iterator = endpoint(req)
                    opened.append(iterator)
                    return iterator

                return call_endpoint
            layer = layers[index]
            inner = link(index + 1)

            def call_layer(req: ChatRequest) -> AsyncIterator[ChatResponse]:
                iterator = layer(req, inner)
                opened.append(iterator)
                return iterator

            return call_layer

        return link(0)(request)

    return start
