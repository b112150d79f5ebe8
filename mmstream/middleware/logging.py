"""Logging: one line when a call starts and one when it ends, on the stdlib logger.

Only the provider, model, operation, counts and error types are logged — never
a key, a header, a prompt or an image.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, final

import anyio
from attrs import field, frozen

if TYPE_CHECKING:
    from mmstream.middleware.chain import CallNext
    from mmstream.request import ChatRequest
    from mmstream.responses import ChatResponse

__all__ = ["Logging"]


@final
@frozen(kw_only=True)
class Logging:
    """Logs ``chat.started`` / ``chat.complete`` / ``chat.failed`` / ``chat.closed``.

    Args:
        logger: defaults to the ``"mmstream"`` logger.
        level: the level of the start and end lines; failures log at WARNING.
    """

    logger: logging.Logger = field(factory=lambda: logging.getLogger("mmstream"), repr=False)
    level: int = logging.INFO

    async def __call__(
        self, request: ChatRequest, call_next: CallNext
    ) -> AsyncIterator[ChatResponse]:
        """Log around the call."""
        log = self.logger
        where = f"provider={request.provider_name} model={request.model} op={request.operation}"
        log.log(self.level, "chat.started %s attempt=%d", where, request.attempt)
        start = time.perf_counter()
        count = 0
        last: ChatResponse | None = None
        try:
            async for chunk in call_next(request):
                count += 1
                last = chunk
                yield chunk
        except (GeneratorExit, anyio.get_cancelled_exc_class()):
            log.log(self.level, "chat.closed %s chunks=%d", where, count)
            raise
        except BaseException as exc:
            log.warning(
                "chat.failed %s chunks=%d error=%s: %s",
                where,
                count,
                type(exc).__name__,
                exc,
            )
            raise
        usage = last.usage if last is not None else None
        log.log(
            self.level,
            "chat.complete %s chunks=%d seconds=%.3f input_tokens=%s output_tokens=%s",
            where,
            count,
            time.perf_counter() - start,
            usage.input_tokens if usage else None,
            usage.output_tokens if usage else None,
        )
