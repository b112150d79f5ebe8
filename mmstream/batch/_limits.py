"""Limits a whole run shares: the coordinated back-off gate, and the attempt counter.

A provider that answers 429 with ``Retry-After`` is saying "this account is
going too fast", not "this request is unlucky". `RunGate` turns one
job's 429 into a pause for **every** new request of the run: each attempt
waits at the gate until the pause is over, so the other workers stop sending
instead of collecting 429s of their own (and burning their retries). Requests
already on the wire are left to finish. A used-up quota
([`QuotaExceededError`][mmstream.errors.QuotaExceededError]) does not pause:
waiting does not bring it back.

The gate sits inside ``Retry`` (each retry passes it again) and outside
``RateLimit`` (a paused request does not take budget).
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, final

import anyio
from attrs import define, field, frozen

from mmstream.errors import QuotaExceededError, RateLimitError

if TYPE_CHECKING:
    from mmstream.middleware.chain import CallNext
    from mmstream.request import ChatRequest
    from mmstream.responses import ChatResponse

__all__ = ["ATTEMPTS", "AttemptCounter", "PauseState", "RunGate", "note_attempt", "pause_for"]


@define
class AttemptCounter:
    """The requests made for the job the current task runs (retries included)."""

    count: int = 0


#: the current job's counter; each worker task sets its own for the job it runs.
ATTEMPTS: contextvars.ContextVar[AttemptCounter | None] = contextvars.ContextVar(
    "mmstream_batch_attempts", default=None
)


def note_attempt() -> None:
    """Count one request for the current job (called where each attempt goes out)."""
    counter = ATTEMPTS.get()
    if counter is not None:
        counter.count += 1


def pause_for(error: BaseException, default: float) -> float | None:
    """How long a run should hold new requests after ``error`` (``None``: not at all)."""
    if not isinstance(error, RateLimitError) or isinstance(error, QuotaExceededError):
        return None
    retry_after = error.retry_after
    return default if retry_after is None else max(0.0, float(retry_after))


@define
class PauseState:
    """Until when (on the run's clock) new requests wait."""

    until: float = float("-inf")


@final
@frozen(kw_only=True, eq=False)
class RunGate:
    """Holds every new request of a run while a provider's 429 pause lasts.

    Args:
        default_pause: seconds to pause after a 429 without ``Retry-After``.
        clock: monotonic seconds (``time.monotonic``).
        sleep: how to wait (``anyio.sleep``).
    """

    default_pause: float = 1.0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    sleep: Callable[[float], Awaitable[None]] = field(default=anyio.sleep, repr=False)
    state: PauseState = field(factory=PauseState, repr=False)

    async def __call__(
        self, request: ChatRequest, call_next: CallNext
    ) -> AsyncIterator[ChatResponse]:
        """Wait out the run's pause, then send; a 429 pauses the run."""
        await self.wait_open()
        note_attempt()
        try:
            async for chunk in call_next(request):
                yield chunk
        except RateLimitError as exc:
            seconds = pause_for(exc, self.default_pause)
            if seconds is not None:
                self.pause(seconds)
            raise

    async def wait_open(self) -> None:
        """Return once no pause is in force."""
        while True:
            wait = self.state.until - self.clock()
            if wait <= 0:
                return
            await self.sleep(wait)

    def pause(self, seconds: float) -> None:
        """Hold new requests for ``seconds`` from now (a longer pause in force is kept)."""
        self.state.until = max(self.state.until, self.clock() + seconds)
