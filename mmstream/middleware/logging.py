"""Logging: one line when a call starts and one when it ends, on the stdlib logger.

Only the provider, model, operation, counts and error types are logged — never
a key, a header, a prompt or an image. How a call ended is decided by the
observer core, with the same rules as Tracing, Callbacks and OpenTelemetry.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, final

from attrs import field, frozen

from mmstream.middleware._observe import Observation, Observer, observe

if TYPE_CHECKING:
    from mmstream.middleware.chain import CallNext
    from mmstream.request import ChatRequest
    from mmstream.responses import ChatResponse

__all__ = ["Logging"]


@final
@frozen(kw_only=True)
class Logging:
    """Logs ``chat.started``, then one of ``chat.complete|failed|closed|cancelled``.

    ``chat.closed`` (the consumer left early) and ``chat.cancelled``
    (cancellation reached the call while it waited) are not failures.

    Args:
        logger: defaults to the ``"mmstream"`` logger.
        level: the level of the start and end lines; failures log at WARNING.
    """

    logger: logging.Logger = field(factory=lambda: logging.getLogger("mmstream"), repr=False)
    level: int = logging.INFO
    _observer: Observer = field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_observer", Observer(start=self._started, end=self._ended))

    def __call__(self, request: ChatRequest, call_next: CallNext) -> AsyncIterator[ChatResponse]:
        """Log around the call."""
        return observe(request, call_next, self._observer)

    def _started(self, call: Observation) -> None:
        request = call.request
        where = f"provider={request.provider_name} model={request.model} op={request.operation}"
        call.state = where
        self.logger.log(self.level, "chat.started %s attempt=%d", where, request.attempt)

    def _ended(self, call: Observation) -> None:
        log, where = self.logger, call.state
        if call.outcome == "complete":
            usage = call.usage
            log.log(
                self.level,
                "chat.complete %s chunks=%d seconds=%.3f input_tokens=%s output_tokens=%s",
                where,
                call.chunks,
                call.duration,
                usage.input_tokens if usage else None,
                usage.output_tokens if usage else None,
            )
        elif call.outcome == "failed":
            log.warning(
                "chat.failed %s chunks=%d error=%s: %s",
                where,
                call.chunks,
                call.error_type,
                call.error,
            )
        else:
            log.log(self.level, "chat.%s %s chunks=%d", call.outcome, where, call.chunks)
