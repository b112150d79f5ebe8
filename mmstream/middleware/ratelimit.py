"""RateLimit: keep calls under a provider's requests, tokens and concurrency limits.

One [`RateLimit`][mmstream.middleware.RateLimit] instance is one shared budget: every call that goes
through it — from any task, any client holding the instance, the sync facade's
portal — draws from the same requests-per-minute and tokens-per-minute
buckets. Waiting callers are served first come, first served.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, final

import anyio
import anyio.lowlevel
import attrs
from attrs import field, frozen

from mmstream.content import ImageBlock, TextBlock

if TYPE_CHECKING:
    from mmstream.middleware.chain import CallNext
    from mmstream.request import ChatRequest
    from mmstream.responses import ChatResponse

__all__ = ["RateLimit", "estimate_tokens"]

#: tokens counted per image before the call (OpenAI's low-detail cost; a rough guess).
IMAGE_TOKENS = 85


def estimate_tokens(request: ChatRequest) -> int:
    """A call's tokens before it runs: text characters / 4, images, and ``max_tokens``.

    The estimate is corrected by the usage the provider reports at the end.
    """
    chars = 0
    images = 0
    for message in request.messages:
        for block in message.blocks:
            if isinstance(block, TextBlock):
                chars += len(block.text)
            elif isinstance(block, ImageBlock):
                images += 1
    return math.ceil(chars / 4) + IMAGE_TOKENS * images + (request.options.max_tokens or 0)


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"RateLimit({attribute.name}=...) must be > 0 or None, not {value}")


class _Bucket:
    """A token bucket holding up to a minute's budget, refilled continuously."""

    __slots__ = ("capacity", "level", "rate", "stamp")

    def __init__(self, per_minute: float) -> None:
        self.capacity = float(per_minute)
        self.rate = self.capacity / 60.0
        self.level = self.capacity
        self.stamp: float | None = None

    def refill(self, now: float) -> None:
        if self.stamp is not None and now > self.stamp:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now if self.stamp is None else max(now, self.stamp)

    def wait_for(self, cost: float) -> float:
        """Seconds until ``cost`` is available (a cost above the capacity needs a full bucket)."""
        need = min(cost, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate


class _Budget:
    """The buckets of one RateLimit, shared by every event loop (plain arithmetic, locked)."""

    def __init__(self, requests_per_minute: float | None, tokens_per_minute: float | None) -> None:
        self.lock = threading.Lock()
        self.requests = None if requests_per_minute is None else _Bucket(requests_per_minute)
        self.tokens = None if tokens_per_minute is None else _Bucket(tokens_per_minute)
        self.loops: weakref.WeakKeyDictionary[object, _LoopState] = weakref.WeakKeyDictionary()

    def try_take(self, tokens: int, now: float) -> float:
        """Take one request and ``tokens`` if both are there; else the seconds to wait."""
        with self.lock:
            wait = 0.0
            for bucket, cost in ((self.requests, 1), (self.tokens, tokens)):
                if bucket is not None:
                    bucket.refill(now)
                    wait = max(wait, bucket.wait_for(cost))
            if wait > 0:
                return wait
            if self.requests is not None:
                self.requests.level -= 1
            if self.tokens is not None:
                self.tokens.level -= tokens
            return 0.0

    def correct(self, difference: int, now: float) -> None:
        """Charge (positive) or refund (negative) tokens once the real usage is known."""
        if self.tokens is None or difference == 0:
            return
        with self.lock:
            self.tokens.refill(now)
            self.tokens.level = min(self.tokens.capacity, self.tokens.level - difference)


class _LoopState:
    """The waiting primitives of one event loop (anyio's are bound to their loop)."""

    def __init__(self, max_concurrency: int | None) -> None:
        self.queue = anyio.Lock()
        self.slots = None if max_concurrency is None else anyio.Semaphore(max_concurrency)


def _usage_tokens(chunk: ChatResponse | None) -> int | None:
    usage = None if chunk is None else chunk.usage
    if usage is None:
        return None
    if usage.total_tokens is not None:
        return usage.total_tokens
    if usage.input_tokens is None and usage.output_tokens is None:
        return None
    return (usage.input_tokens or 0) + (usage.output_tokens or 0)


@final
@frozen(kw_only=True, eq=False)
class RateLimit:
    """Holds calls back so they stay under requests, tokens and concurrency limits.

    The requests and tokens budgets are token buckets holding a minute's worth
    (so up to a minute's budget may go at once, then calls are spaced out) and
    are shared by every call through this instance, on every event loop and
    thread. A call's tokens are estimated before it starts (``estimate``:
    prompt characters / 4, plus a fixed cost per image, plus ``max_tokens``) and
    corrected by the usage the provider reports at the end. A call that needs
    more than the whole per-minute budget waits for a full bucket and then goes.
    Waiting calls go first come, first served. ``max_concurrency`` bounds the
    streams open at once through this instance on each event loop; a stream
    holds its slot until it ends, fails or is closed.

    Put it inside [`Retry`][mmstream.middleware.Retry], so that each retry is counted.

    Args:
        requests_per_minute: calls per minute, or ``None``.
        tokens_per_minute: tokens per minute, or ``None``.
        max_concurrency: streams open at once, or ``None``.
        estimate: ``(request) -> tokens`` before the call (`estimate_tokens`).
        clock: monotonic seconds (``time.monotonic``); tests inject a fake one.
        sleep: how to wait (``anyio.sleep``).
    """

    requests_per_minute: float | None = field(default=None, validator=_positive)
    tokens_per_minute: float | None = field(default=None, validator=_positive)
    max_concurrency: int | None = field(default=None, validator=_positive)
    estimate: Callable[[ChatRequest], int] = field(default=estimate_tokens, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    sleep: Callable[[float], Awaitable[None]] = field(default=anyio.sleep, repr=False)
    _budget: _Budget = field(init=False, repr=False)

    @_budget.default
    def _new_budget(self) -> _Budget:
        return _Budget(self.requests_per_minute, self.tokens_per_minute)

    async def __call__(
        self, request: ChatRequest, call_next: CallNext
    ) -> AsyncIterator[ChatResponse]:
        """Wait for a slot and for budget, then pass the call through."""
        state = self._loop_state()
        tokens = self.estimate(request) if self.tokens_per_minute is not None else 0
        if state.slots is not None:
            await state.slots.acquire()
        try:
            if self.requests_per_minute is not None or self.tokens_per_minute is not None:
                await self._admit(state, tokens)
            last: ChatResponse | None = None
            async for last in call_next(request):
                yield last
            used = _usage_tokens(last)
            if used is not None and self.tokens_per_minute is not None:
                self._budget.correct(used - tokens, self.clock())
        finally:
            if state.slots is not None:
                state.slots.release()

    async def _admit(self, state: _LoopState, tokens: int) -> None:
        """Take the budget for one call, waiting in line (FIFO) for it."""
        async with state.queue:
            while True:
                wait = self._budget.try_take(tokens, self.clock())
                if wait <= 0:
                    return
                await self.sleep(wait)

    def _loop_state(self) -> _LoopState:
        """This event loop's waiting primitives, created on first use."""
        key = anyio.lowlevel.current_token().native_token
        budget = self._budget
        with budget.lock:
            state = budget.loops.get(key)
            if state is None:
                state = budget.loops[key] = _LoopState(self.max_concurrency)
            return state
