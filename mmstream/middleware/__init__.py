"""Middleware: the onion around every call (tracing, callbacks, logging, retries, ...).

A middleware is a callable ``(request, call_next) -> AsyncIterator[ChatResponse]``,
usually an attrs instance whose ``async def __call__`` is an async generator
that acts before the call, on every chunk, after it and on error. The list
given to [`MultiModalLLM`][mmstream.MultiModalLLM] is outermost first. Per-call state
lives in locals; iterators returned by ``call_next`` are closed by the chain.

A layer may instead (or as well) have a ``batches(request, call_next)`` method
that yields the chunks of one network read as a list
([`BatchMiddleware`][mmstream.middleware.BatchMiddleware]): the chain then
runs it once per read instead of once per chunk.

Example:
    ```python
    @attrs.frozen
    class Upper:
        async def __call__(self, request, call_next):
            async for chunk in call_next(request):
                yield attrs.evolve(chunk, delta=chunk.delta.upper())
    ```
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmstream._lazy import lazy
from mmstream.middleware.chain import (
    BatchCallNext,
    BatchMiddleware,
    CallNext,
    Chain,
    Middleware,
    compose,
)

if TYPE_CHECKING:  # imported on first use at run time (see __getattr__)
    from mmstream.middleware.callbacks import Callbacks
    from mmstream.middleware.fallback import Fallback
    from mmstream.middleware.logging import Logging
    from mmstream.middleware.otel import OpenTelemetry
    from mmstream.middleware.ratelimit import RateLimit
    from mmstream.middleware.retry import Retry
    from mmstream.middleware.timeout import Timeout
    from mmstream.middleware.tracing import TraceRecord, Tracing

__all__ = [
    "BatchCallNext",
    "BatchMiddleware",
    "CallNext",
    "Callbacks",
    "Chain",
    "Fallback",
    "Logging",
    "Middleware",
    "OpenTelemetry",
    "RateLimit",
    "Retry",
    "Timeout",
    "TraceRecord",
    "Tracing",
    "compose",
]

_LAZY = {
    "Callbacks": "mmstream.middleware.callbacks",
    "Logging": "mmstream.middleware.logging",
    "Retry": "mmstream.middleware.retry",
    "Timeout": "mmstream.middleware.timeout",
    "RateLimit": "mmstream.middleware.ratelimit",
    "Fallback": "mmstream.middleware.fallback",
    "OpenTelemetry": "mmstream.middleware.otel",
    "Tracing": "mmstream.middleware.tracing",
    "TraceRecord": "mmstream.middleware.tracing",
}


__getattr__, __dir__ = lazy(globals(), _LAZY)
