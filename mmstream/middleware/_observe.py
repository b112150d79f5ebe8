"""The observer core: one way to watch a call, under Tracing, Logging, Callbacks and OpenTelemetry.

Each observability middleware is an adapter: an [`Observer`][mmstream.middleware._observe.Observer]
(what to do when a call starts, on its first chunk, on each chunk, when it
ends) handed to [`observe`][mmstream.middleware._observe.observe], which runs
the call, measures it into an [`Observation`][mmstream.middleware._observe.Observation]
and decides how it ended, once, with one set of rules:

- ``"complete"``: the stream ran to the provider's end.
- ``"failed"``: an exception (an ``Exception``) came out of the call: an API
  or mid-stream error, a [`Timeout`][mmstream.middleware.Timeout] inside this
  layer, an error from an inner middleware or from a hook. Only this outcome
  carries an ``error``.
- ``"closed"``: the consumer stopped taking chunks: ``break``, ``aclose()``,
  leaving ``async with``, an exception in the consumer's own loop body, a
  stream dropped unfinished. Not a failure.
- ``"cancelled"``: cancellation reached the call while it waited for the
  provider (a cancel scope or deadline outside, a task group, Ctrl-C). Not a
  failure either.

The end hook runs exactly once per call that started, whatever the outcome,
and an async one runs shielded from cancellation so its report is never lost.
Hooks that may be async are all called through
[`call_handler`][mmstream.middleware._support.call_handler].

Per chunk the core costs a counter and a reference (no allocation) unless an
adapter asks for a per-chunk hook. [`observe_batches`][mmstream.middleware._observe.observe_batches]
is the same machine over lists of chunks (one per network read), for
batch-level middleware, in one step per list.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, final

from attrs import define, frozen

from mmstream.middleware._support import call_handler
from mmstream.middleware.chain import Departure, current_departure

if TYPE_CHECKING:
    from mmstream.request import ChatRequest
    from mmstream.responses import ChatResponse, Usage

__all__ = [
    "OUTCOMES",
    "Observation",
    "Observer",
    "Outcome",
    "observe",
    "observe_batches",
    "outcome_of",
]

Outcome = Literal["complete", "failed", "closed", "cancelled"]
#: every way a call can end, in the order the docs list them.
OUTCOMES: tuple[Outcome, ...] = ("complete", "failed", "closed", "cancelled")


def outcome_of(exc: BaseException, departure: Departure | None = None) -> Outcome:
    """How a call ended, given what came out of it (the rules, written once).

    ``GeneratorExit`` is the consumer leaving (``"closed"``); any ``Exception``
    is a failure; what remains (the backend's cancellation, ``KeyboardInterrupt``,
    ``SystemExit``) interrupted the call from outside (``"cancelled"``) — unless
    it is the cancellation of a wait by a consumer that had left the call first
    (its ``departure`` marked): that is ``"closed"`` too.
    """
    if isinstance(exc, GeneratorExit):
        return "closed"
    if isinstance(exc, Exception):
        return "failed"
    if (
        departure is not None
        and departure.left
        and not isinstance(exc, (KeyboardInterrupt, SystemExit))
    ):
        return "closed"
    return "cancelled"


@final
@define(slots=True, eq=False, kw_only=True)
class Observation:
    """What one call did: counters while it runs, the outcome once it has ended.

    Attributes:
        request: the call.
        started_at: wall-clock start, seconds since the epoch.
        clock_start: ``time.perf_counter()`` at the start (durations are measured on it).
        chunks: chunks that reached this layer so far.
        time_to_first_chunk: seconds from the start to the first chunk, or ``None``.
        last: the latest chunk (the final one once the call completed).
        outcome: how the call ended; ``None`` while it runs.
        error: the exception of a failed call (``None`` for every other outcome).
        duration: seconds from the start to the end; ``None`` while it runs.
        state: the adapter's own per-call value (an OpenTelemetry span, ...).
        departure: the call's marker of its consumer having left (see `outcome_of`).
    """

    request: ChatRequest
    started_at: float
    clock_start: float
    chunks: int = 0
    time_to_first_chunk: float | None = None
    last: ChatResponse | None = None
    outcome: Outcome | None = None
    error: BaseException | None = None
    duration: float | None = None
    state: Any = None
    departure: Departure | None = None

    @classmethod
    def begin(cls, request: ChatRequest) -> Observation:
        """Start observing a call now (in the task that started it, where its marker is)."""
        return cls(
            request=request,
            started_at=time.time(),
            clock_start=time.perf_counter(),
            departure=current_departure(),
        )

    def observe(self, chunk: ChatResponse) -> bool:
        """Count one chunk; ``True`` when it is the first (its time is noted then).

        [`observe`][mmstream.middleware._observe.observe] keeps its count in
        locals and calls this for the first chunk only; per-chunk facts that
        later content brings (thinking deltas, tool-call deltas) belong here and
        in that loop, with the same budget: no allocation per chunk.
        """
        self.last = chunk
        self.chunks += 1
        if self.time_to_first_chunk is None:
            self.time_to_first_chunk = time.perf_counter() - self.clock_start
            return True
        return False

    def observe_batch(self, chunks: Sequence[ChatResponse]) -> bool:
        """Count the chunks of one network read in one step; ``True`` when they hold the first."""
        if not chunks:
            return False
        self.last = chunks[-1]
        self.chunks += len(chunks)
        if self.time_to_first_chunk is None:
            self.time_to_first_chunk = time.perf_counter() - self.clock_start
            return True
        return False

    def finish(self, exc: BaseException | None) -> None:
        """Note the end: the duration, and the outcome decided from what came out."""
        self.duration = time.perf_counter() - self.clock_start
        if exc is None:
            self.outcome = "complete"
            return
        self.outcome = outcome_of(exc, self.departure)
        if self.outcome == "failed":
            self.error = exc

    # --- what every adapter reports, derived once -----------------------------------

    @property
    def usage(self) -> Usage | None:
        """Token counts from the last chunk (reasoning tokens and, later, cost ride on it)."""
        return None if self.last is None else self.last.usage

    @property
    def finish_reason(self) -> str | None:
        """The normalized finish reason of the last chunk."""
        return None if self.last is None else self.last.finish_reason

    @property
    def response_model(self) -> str | None:
        """The model that answered, as the provider named it in the stream."""
        model = self._answer().get("model")
        return model if isinstance(model, str) and model else None

    @property
    def answered_by(self) -> str | None:
        """``"provider:model"`` of who answered (after a fallback it differs from the request)."""
        answer = self._answer()
        provider, model = answer.get("provider"), answer.get("model")
        if provider and model:
            return f"{provider}:{model}"
        return provider or None

    @property
    def tool_calls(self) -> tuple[Mapping[str, Any], ...]:
        """The tool calls assembled on the last chunk (``additional_kwargs["tool_calls"]``)."""
        return tuple(self._answer().get("tool_calls") or ())

    @property
    def text_length(self) -> int:
        """Characters of answer text that passed (the partial answer's, after a failure)."""
        return 0 if self.last is None else len(self.last.text)

    @property
    def error_type(self) -> str | None:
        """The class name of a failed call's exception."""
        return None if self.error is None else type(self.error).__name__

    @property
    def error_message(self) -> str | None:
        """``"ErrorClass: message"`` of a failed call."""
        return None if self.error is None else f"{type(self.error).__name__}: {self.error}"

    def _answer(self) -> Mapping[str, Any]:
        return {} if self.last is None else self.last.additional_kwargs


Hook = Callable[[Observation], object]


@final
@frozen(kw_only=True)
class Observer:
    """What an adapter does at each point of a call; every hook is optional and may be async.

    Attributes:
        start: ``(observation)`` before the call is made.
        first_chunk: ``(observation)`` when the first chunk arrived (its time is set).
        chunk: ``(observation, chunk)`` for every chunk, before it is passed on.
            Leave it unset unless the adapter needs each chunk: without it the
            core does no per-chunk call at all.
        end: ``(observation)`` once, when the call has ended (the outcome is set);
            an async one is awaited shielded from cancellation.
        attach: ``(value) -> token``, synchronous, just before each wait for the
            next chunk (make a context current there, never across a ``yield``).
        detach: ``(token)``, synchronous, right after each wait.
        context: ``(observation) -> value``, once after ``start``: what ``attach``
            is given on every wait (the observation itself without it).
    """

    start: Hook | None = None
    first_chunk: Hook | None = None
    chunk: Callable[[Observation, ChatResponse], object] | None = None
    end: Hook | None = None
    attach: Callable[[Any], object] | None = None
    detach: Callable[[Any], object] | None = None
    context: Hook | None = None


async def observe(
    request: ChatRequest,
    call_next: Callable[[ChatRequest], AsyncIterator[ChatResponse]],
    observer: Observer,
) -> AsyncIterator[ChatResponse]:
    """Pass the call's chunks on, one at a time, reporting to ``observer``.

    The count and the latest chunk live in locals while chunks flow and are
    written to the observation whenever a hook runs, so the common path (no
    per-chunk hook) costs an addition and a reference per chunk; with an
    ``attach`` hook each wait for the next chunk runs between attach and detach.

    Args:
        request: the call.
        call_next: the layers inside (the chain closes what it returns).
        observer: the adapter's hooks.

    Yields:
        Every chunk, unchanged.
    """
    call = Observation.begin(request)
    await call_handler(observer.start, call)
    each, attach, detach = observer.chunk, observer.attach, observer.detach
    count = 0
    last: ChatResponse | None = None
    try:
        iterator = call_next(request)
        if attach is None:
            async for chunk in iterator:
                count += 1
                last = chunk
                if count == 1 or each is not None:
                    await _seen(call, observer, count, chunk)
                yield chunk
        else:  # the same loop, each wait between attach and detach (no wrapper: it costs a step)
            value = call if observer.context is None else observer.context(call)
            while True:
                token = attach(value)
                try:
                    chunk = await iterator.__anext__()
                except StopAsyncIteration:
                    break
                finally:
                    if detach is not None:
                        detach(token)
                count += 1
                last = chunk
                if count == 1 or each is not None:
                    await _seen(call, observer, count, chunk)
                yield chunk
    except BaseException as exc:
        call.chunks, call.last = count, last
        await _end(observer, call, exc)
        raise
    call.chunks, call.last = count, last
    await _end(observer, call, None)


async def _seen(call: Observation, observer: Observer, count: int, chunk: ChatResponse) -> None:
    """The first chunk, or any chunk when the adapter has a per-chunk hook."""
    if count == 1:
        call.observe(chunk)
        await call_handler(observer.first_chunk, call)
    if observer.chunk is not None:
        call.chunks, call.last = count, chunk
        await call_handler(observer.chunk, call, chunk)


async def observe_batches(
    request: ChatRequest,
    call_next: Callable[[ChatRequest], AsyncIterator[list[ChatResponse]]],
    observer: Observer,
) -> AsyncIterator[list[ChatResponse]]:
    """The same as [`observe`][mmstream.middleware._observe.observe], a network read at a time.

    Without a per-chunk hook each list is counted in one step. Chunks count as
    they pass this layer: a consumer that leaves in the middle of a list has
    been passed the whole list.

    Args:
        request: the call.
        call_next: the layers inside, yielding lists of chunks.
        observer: the adapter's hooks.

    Yields:
        Every list, unchanged.
    """
    call = Observation.begin(request)
    await call_handler(observer.start, call)
    each, attach, detach = observer.chunk, observer.attach, observer.detach
    try:
        iterator = call_next(request)
        value = call if observer.context is None else observer.context(call)
        while True:
            token = None if attach is None else attach(value)
            try:
                batch = await iterator.__anext__()
            except StopAsyncIteration:
                break
            finally:
                if detach is not None:
                    detach(token)
            if each is None:
                if call.observe_batch(batch):
                    await call_handler(observer.first_chunk, call)
            else:
                for chunk in batch:
                    if call.observe(chunk):
                        await call_handler(observer.first_chunk, call)
                    await call_handler(each, call, chunk)
            yield batch
    except BaseException as exc:
        await _end(observer, call, exc)
        raise
    await _end(observer, call, None)


async def _end(observer: Observer, call: Observation, exc: BaseException | None) -> None:
    """Decide the outcome and report it, shielded from cancellation."""
    call.finish(exc)
    await call_handler(observer.end, call, shield=True)
