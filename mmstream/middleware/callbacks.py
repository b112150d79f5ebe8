"""Callbacks: user functions called at the start, on each chunk, and once at the end.

Which end hook runs is decided by the observer core, with the same rules as
Tracing, Logging and OpenTelemetry: ``on_end`` (complete), ``on_error``
(failed), ``on_close`` (the consumer left early) or ``on_cancel`` (cancellation
reached the call while it waited; ``on_close`` when no ``on_cancel`` is given).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, final

from attrs import field, frozen

from mmstream.middleware._observe import Observation, Observer, observe

if TYPE_CHECKING:
    from mmstream.middleware.chain import CallNext
    from mmstream.request import ChatRequest
    from mmstream.responses import ChatResponse

__all__ = ["Callbacks"]


@final
@frozen(kw_only=True)
class Callbacks:
    """Calls the given handlers (plain functions or coroutine functions).

    Exactly one of ``on_end``, ``on_error``, ``on_close`` and ``on_cancel``
    runs for each call that started; an async one runs shielded from
    cancellation, so it runs to its end even when the call is being cancelled.

    Args:
        on_start: ``(request)`` before the call.
        on_chunk: ``(request, chunk)`` for every chunk, before it is passed on.
        on_end: ``(request, last_chunk_or_None)`` when the stream completed.
        on_error: ``(request, exception)`` when it failed (the error is re-raised).
        on_close: ``(request)`` when the consumer left the stream early; also on
            cancellation when ``on_cancel`` is not given.
        on_cancel: ``(request)`` when cancellation reached the call while it
            waited for the provider (a deadline or cancel scope outside, Ctrl-C).
    """

    on_start: Callable[..., Any] | None = None
    on_chunk: Callable[..., Any] | None = None
    on_end: Callable[..., Any] | None = None
    on_error: Callable[..., Any] | None = None
    on_close: Callable[..., Any] | None = None
    on_cancel: Callable[..., Any] | None = None
    _observer: Observer = field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        on_start, on_chunk = self.on_start, self.on_chunk
        object.__setattr__(
            self,
            "_observer",
            Observer(
                start=None if on_start is None else lambda call: on_start(call.request),
                chunk=None if on_chunk is None else lambda call, c: on_chunk(call.request, c),
                end=self._ended,
            ),
        )

    def __call__(self, request: ChatRequest, call_next: CallNext) -> AsyncIterator[ChatResponse]:
        """Run the handlers around the call."""
        return observe(request, call_next, self._observer)

    def _ended(self, call: Observation) -> object:
        outcome, request = call.outcome, call.request
        if outcome == "complete":
            return None if self.on_end is None else self.on_end(request, call.last)
        if outcome == "failed":
            return None if self.on_error is None else self.on_error(request, call.error)
        handler = self.on_cancel if outcome == "cancelled" else None
        handler = handler or self.on_close
        return None if handler is None else handler(request)
