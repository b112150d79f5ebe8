"""Timeout: deadlines for a whole call, for its first chunk, and between chunks.

Only the wait for the next chunk runs under a deadline (a cancel scope around
``await anext(...)``); chunks are passed on outside it, so the consumer's own
time between chunks never counts and no ``yield`` happens inside a cancel scope.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, final

import anyio
import attrs
from attrs import field, frozen

from mmstream.errors import APITimeoutError
from mmstream.middleware._support import aclose_quietly

if TYPE_CHECKING:
    from mmstream.middleware.chain import CallNext
    from mmstream.request import ChatRequest
    from mmstream.responses import ChatResponse

__all__ = ["Timeout"]


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"Timeout({attribute.name}=...) must be > 0 seconds or None, not {value}")


_MESSAGES = {
    "total": "the call took longer than {seconds:g} s in total",
    "first_chunk": "no chunk arrived within {seconds:g} s of the start of the call",
    "idle": "no chunk arrived for {seconds:g} s after the previous one",
}


@final
@frozen(kw_only=True)
class Timeout:
    """Fails a call that is too slow, with [`APITimeoutError`][mmstream.errors.APITimeoutError].

    The error's ``kind`` says which deadline passed: ``"total"``,
    ``"first_chunk"`` or ``"idle"``; when output had begun it carries
    ``partial``, the answer so far. The call is closed (its HTTP response
    too) before the error is raised. These deadlines sit on top of the
    transport's own connect/read timeouts (the ``timeout`` call option).

    Put [`Retry`][mmstream.middleware.Retry] outside a ``Timeout`` to retry a call
    whose first chunk was late (a timeout after output began is never retried).

    Args:
        total: seconds for the whole call, from the start to the last chunk
            (time the consumer spends between chunks counts too).
        first_chunk: seconds until the first chunk.
        idle: seconds between one chunk and the next (the consumer's own time
            between chunks does not count).
    """

    total: float | None = field(default=None, validator=_positive)
    first_chunk: float | None = field(default=None, validator=_positive)
    idle: float | None = field(default=None, validator=_positive)

    async def __call__(
        self, request: ChatRequest, call_next: CallNext
    ) -> AsyncIterator[ChatResponse]:
        """Pass the chunks on, each wait bounded by the nearest deadline."""
        end = math.inf if self.total is None else anyio.current_time() + self.total
        iterator = call_next(request)
        last: ChatResponse | None = None
        while True:
            kind, step = "total", self.first_chunk if last is None else self.idle
            deadline = end
            if step is not None and (step_end := anyio.current_time() + step) < end:
                kind, deadline = ("first_chunk" if last is None else "idle"), step_end
            with anyio.CancelScope(deadline=deadline) as scope:
                try:
                    chunk = await iterator.__anext__()
                except StopAsyncIteration:
                    return
            if scope.cancelled_caught:
                with anyio.CancelScope(shield=True):
                    await aclose_quietly(iterator)
                seconds = self.total if kind == "total" else step
                raise APITimeoutError(
                    _MESSAGES[kind].format(seconds=seconds),
                    kind=kind,
                    provider=request.provider_name,
                    partial=last,
                )
            last = chunk
            yield chunk
