"""Tracing: one record per call, delivered when the stream really ends.

The record is made when the last chunk has been consumed, the stream failed,
or the consumer left early — never when the generator object is merely
created. Event names follow httpcore: ``chat.complete``, ``chat.failed``,
``chat.closed`` (an early exit, which is not a failure: the consumer closed the
stream, or cancelled it while a chunk was in flight).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Literal, final

import anyio
from attrs import field, frozen

from mmstream.responses import Usage

if TYPE_CHECKING:
    from mmstream.middleware.chain import CallNext
    from mmstream.request import ChatRequest
    from mmstream.responses import ChatResponse

__all__ = ["TraceRecord", "Tracing"]

Outcome = Literal["complete", "failed", "closed"]


@final
@frozen(kw_only=True)
class TraceRecord:
    """What one call did.

    Attributes:
        event: ``"chat.complete"``, ``"chat.failed"`` or ``"chat.closed"``.
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
    """Records each call as a :class:`TraceRecord`, for a sink or the ``mmstream`` logger.

    Args:
        sink: called with each record (sync or async). Without one, records are
            logged at DEBUG level on ``logger``.
        logger: the logger used without a sink.
    """

    sink: Sink | None = None
    logger: logging.Logger = field(factory=lambda: logging.getLogger("mmstream"), repr=False)

    async def __call__(
        self, request: ChatRequest, call_next: CallNext
    ) -> AsyncIterator[ChatResponse]:
        """Pass every chunk through, timing the call."""
        started_at = time.time()
        start = time.perf_counter()
        first: float | None = None
        count = 0
        last: ChatResponse | None = None
        outcome: Outcome = "closed"
        error: BaseException | None = None
        try:
            async for chunk in call_next(request):
                if first is None:
                    first = time.perf_counter() - start
                count += 1
                last = chunk
                yield chunk
            outcome = "complete"
        except GeneratorExit:
            raise
        except BaseException as exc:
            if not isinstance(exc, anyio.get_cancelled_exc_class()):
                outcome, error = "failed", exc  # cancelled = left early = "closed"
            raise
        finally:
            await self._emit(
                TraceRecord(
                    event=f"chat.{outcome}",
                    outcome=outcome,
                    provider=request.provider_name,
                    model=request.model,
                    operation=request.operation,
                    started_at=started_at,
                    time_to_first_chunk=first,
                    duration=time.perf_counter() - start,
                    chunks=count,
                    usage=last.usage if last is not None else None,
                    finish_reason=last.finish_reason if last is not None else None,
                    answered_by=_answered_by(last),
                    error=None if error is None else f"{type(error).__name__}: {error}",
                    error_type=None if error is None else type(error).__name__,
                    attempt=request.attempt,
                    text_length=len(last.text) if last is not None else 0,
                )
            )

    async def _emit(self, record: TraceRecord) -> None:
        if self.sink is None:
            self.logger.debug("%s %r", record.event, record)
            return
        result = self.sink(record)
        if inspect.isawaitable(result):
            await result


def _answered_by(chunk: ChatResponse | None) -> str | None:
    if chunk is None:
        return None
    provider = chunk.additional_kwargs.get("provider")
    model = chunk.additional_kwargs.get("model")
    if provider and model:
        return f"{provider}:{model}"
    return provider
