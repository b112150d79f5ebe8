"""Retry: repeat a failed call, but only while nothing has reached the caller.

A call is retried when it fails before its first chunk with an error whose
class says ``retryable`` ([`RateLimitError`][mmstream.errors.RateLimitError],
[`ServerError`][mmstream.errors.ServerError] and
[`OverloadedError`][mmstream.errors.OverloadedError],
[`APIConnectionError`][mmstream.errors.APIConnectionError] and
[`APITimeoutError`][mmstream.errors.APITimeoutError],
[`ProviderProtocolError`][mmstream.errors.ProviderProtocolError] and
[`IncompleteStreamError`][mmstream.errors.IncompleteStreamError]). Never retried: a quota that is
used up, a bad key, a bad request, anything local, and anything that fails
after a chunk was passed on — that error propagates with ``.partial``, so the
caller never sees the same text twice.
"""

from __future__ import annotations

import random as _random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, final

import anyio
import attrs
from attrs import field, frozen

from mmstream.errors import APIError, MMStreamError
from mmstream.middleware._support import aclose_quietly, call_handler

if TYPE_CHECKING:
    from mmstream.middleware.chain import CallNext
    from mmstream.request import ChatRequest
    from mmstream.responses import ChatResponse

__all__ = ["Retry"]

OnRetry = Callable[["ChatRequest", MMStreamError, float], Any]


def _at_least(minimum: float) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None and value < minimum:
            raise ValueError(f"Retry({attribute.name}=...) must be >= {minimum}, not {value}")

    return check


@final
@frozen(kw_only=True)
class Retry:
    """Retries a call that failed before its first chunk, with backoff and full jitter.

    The wait before retry ``n`` (1, 2, ...) is ``random() * min(cap, base * 2 ** (n - 1))``
    seconds ("full jitter"), unless the error carries ``retry_after`` (a
    ``Retry-After`` header, a rate limit's reset): that wait is honoured as given.
    A retry whose wait would end more than ``max_elapsed`` seconds after the
    call began is not made: the last error is raised instead (with its
    ``retry_after``, so the caller can decide). Each retry passes
    ``attrs.evolve(request, attempt=n)`` down the chain, so traces and logs
    inside this middleware record the attempt.

    Put it outside [`Timeout`][mmstream.middleware.Timeout] to retry calls whose
    first chunk is late, and inside [`Fallback`][mmstream.middleware.Fallback] to
    retry each provider before falling back.

    Args:
        max_attempts: attempts in total (3: the first and two retries); 1 turns retries off.
        base: the backoff's first ceiling, in seconds; it doubles per retry.
        cap: the largest backoff ceiling, in seconds.
        max_elapsed: give up rather than wait past this many seconds since the
            call began (``None``: no limit; a long ``Retry-After`` is then waited out).
        respect_retry_after: wait what the provider asked for, when it did.
        on_retry: called as ``on_retry(request, error, delay)`` before each wait
            (a plain function or a coroutine function); ``request`` is the failed attempt's.
        sleep: how to wait (``anyio.sleep``); tests inject a recorder.
        random: a number in [0, 1) for the jitter (``random.random``).
        clock: monotonic seconds, for ``max_elapsed`` (``time.monotonic``).

    Example:
        ```python
        retry = mm.middleware.Retry(max_attempts=5)
        llm = mm.MultiModalLLM("openai:gpt-4o-mini", middleware=[retry])
        ```
    """

    max_attempts: int = field(default=3, validator=_at_least(1))
    base: float = field(default=0.5, validator=_at_least(0))
    cap: float = field(default=20.0, validator=_at_least(0))
    max_elapsed: float | None = field(default=60.0, validator=_at_least(0))
    respect_retry_after: bool = True
    on_retry: OnRetry | None = field(default=None, repr=False)
    sleep: Callable[[float], Awaitable[None]] = field(default=anyio.sleep, repr=False)
    random: Callable[[], float] = field(default=_random.random, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    async def __call__(
        self, request: ChatRequest, call_next: CallNext
    ) -> AsyncIterator[ChatResponse]:
        """Run the call, retrying failures that happen before the first chunk."""
        started = self.clock()
        attempt = request.attempt
        current = request
        while True:
            iterator = call_next(current)
            try:
                first = await iterator.__anext__()
            except StopAsyncIteration:
                return
            except MMStreamError as exc:
                await aclose_quietly(iterator)
                delay = self._delay(exc, current.attempt - attempt + 1, started)
                if delay is None:
                    raise
                await call_handler(self.on_retry, current, exc, delay)
                await self.sleep(delay)
                current = attrs.evolve(request, attempt=current.attempt + 1)
                continue
            break
        # Output has begun: from here on a failure propagates, never a replay.
        last = first
        yield first
        try:
            async for last in iterator:
                yield last
        except MMStreamError as exc:
            if exc.partial is None:
                exc.partial = last
            raise

    def _delay(self, error: MMStreamError, attempts: int, started: float) -> float | None:
        """Seconds to wait after ``attempts`` failed attempts, or ``None`` to give up."""
        if not error.retryable or attempts >= self.max_attempts:
            return None
        retry_after = error.retry_after if isinstance(error, APIError) else None
        if self.respect_retry_after and retry_after is not None:
            delay = max(0.0, float(retry_after))
        else:
            delay = self.random() * min(self.cap, self.base * 2.0 ** (attempts - 1))
        if self.max_elapsed is not None and self.clock() - started + delay > self.max_elapsed:
            return None
        return delay
