"""Tracing: one record per call, delivered when the stream really ends.

The record is made when the last chunk has been consumed, the stream failed,
the consumer left early or the call was cancelled — never when the generator
object is merely created. Event names follow httpcore: ``chat.complete``,
``chat.failed``, ``chat.closed`` (the consumer left early) and
``chat.cancelled`` (cancellation reached the call while it waited); the last
two are not failures. The rules are the observer core's, shared by every
observability middleware (see ``docs/observability.md``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, final

from attrs import field, frozen

from mmstream.middleware._observe import Observation, Observer, Outcome, observe
from mmstream.responses import Usage

if TYPE_CHECKING:
    from mmstream.middleware.chain import CallNext
    from mmstream.request import ChatRequest
    from mmstream.responses import ChatResponse

__all__ = ["TraceRecord", "Tracing"]


@final
@frozen(kw_only=True)
class TraceRecord:
    """What one call did.

    Attributes:
        event: ``"chat.complete"``, ``"chat.failed"``, ``"chat.closed"`` or ``"chat.cancelled"``.
        outcome: the same without the prefix: ``"complete"``, ``"failed"``,
            ``"closed"`` (the consumer left early) or ``"cancelled"``.
        provider, model: who was asked; ``answered_by`` is who answered (after a
            fallback it differs), from the final chunk.
        operation: ``"chat"`` or ``"complete"``.
        started_at: wall-clock start (seconds since the epoch).
        time_to_first_chunk: seconds until the first chunk, or ``None``.
        duration: seconds from start to the end of the stream.
        chunks: chunks that passed.
        usage, finish_reason: from the final chunk, when it came.
        error: the exception type and message of a failed call.
        attempt: the attempt this record belongs to (1 unless a Retry runs outside).
        text_length: characters of answer text that passed (the partial answer's
            after a failure).
    """

    event: str
    outcome: Outcome
    provider: str
    model: str
    operation: str
    started_at: float
    time_to_first_chunk: float | None
    duration: float
    chunks: int
    usage: Usage | None = None
    finish_reason: str | None = None
    answered_by: str | None = None
    error: str | None = None
    error_type: str | None = None
    attempt: int = 1
    text_length: int = field(default=0)


Sink = Callable[[TraceRecord], Any]


@final
@frozen
class Tracing:
    """Records each call as a [`TraceRecord`][mmstream.middleware.TraceRecord] for a sink or logger.

    Args:
        sink: called with each record (sync or async; an async one is awaited
            shielded from cancellation, so a cancelled call is still recorded).
            Without one, records are logged at DEBUG level on ``logger``.
        logger: the logger used without a sink.
    """

    sink: Sink | None = None
    logger: logging.Logger = field(factory=lambda: logging.getLogger("mmstream"), repr=False)
    _observer: Observer = field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_observer", Observer(end=self._emit))

    def __call__(self, request: ChatRequest, call_next: CallNext) -> AsyncIterator[ChatResponse]:
        """Pass every chunk through, timing the call."""
        return observe(request, call_next, self._observer)

    def _emit(self, call: Observation) -> object:
        record = _record(call)
        if self.sink is None:
            self.logger.debug("%s %r", record.event, record)
            return None
        return self.sink(record)


def _record(call: Observation) -> TraceRecord:
    """The record of a call that has ended."""
    outcome = call.outcome or "closed"
    request = call.request
    return TraceRecord(
        event=f"chat.{outcome}",
        outcome=outcome,
        provider=request.provider_name,
        model=request.model,
        operation=request.operation,
        started_at=call.started_at,
        time_to_first_chunk=call.time_to_first_chunk,
        duration=call.duration or 0.0,
        chunks=call.chunks,
        usage=call.usage,
        finish_reason=call.finish_reason,
        answered_by=call.answered_by,
        error=call.error_message,
        error_type=call.error_type,
        attempt=request.attempt,
        text_length=call.text_length,
    )
