"""Callbacks: user functions called at the start, on each chunk, at the end and on error."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, final

import anyio
from attrs import frozen

if TYPE_CHECKING:
    from mmstream.middleware.chain import CallNext
    from mmstream.request import ChatRequest
    from mmstream.responses import ChatResponse

__all__ = ["Callbacks"]


async def _call(handler: Callable[..., Any] | None, *args: Any) -> None:
    if handler is None:
        return
    result = handler(*args)
    if inspect.isawaitable(result):
        await result


@final
@frozen(kw_only=True)
class Callbacks:
    """Calls the given handlers (plain functions or coroutine functions).

    Args:
        on_start: ``(request)`` before the call.
        on_chunk: ``(request, chunk)`` for every chunk.
        on_end: ``(request, last_chunk_or_None)`` when the stream completed.
        on_error: ``(request, exception)`` when it failed (the error is re-raised).
        on_close: ``(request)`` when the consumer left the stream early (closed or cancelled).
    """

    on_start: Callable[..., Any] | None = None
    on_chunk: Callable[..., Any] | None = None
    on_end: Callable[..., Any] | None = None
    on_error: Callable[..., Any] | None = None
    on_close: Callable[..., Any] | None = None

    async def __call__(
        self, request: ChatRequest, call_next: CallNext
    ) -> AsyncIterator[ChatResponse]:
        """Run the handlers around the call."""
        await _call(self.on_start, request)
        last: ChatResponse | None = None
        try:
            async for chunk in call_next(request):
                last = chunk
                await _call(self.on_chunk, request, chunk)
                yield chunk
        except GeneratorExit:
            await _call(self.on_close, request)
            raise
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await _call(self.on_close, request)
            raise
        except Exception as exc:
            await _call(self.on_error, request, exc)
            raise
        await _call(self.on_end, request, last)
