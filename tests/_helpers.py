"""Shared test helpers: a middleware that records what happened to each call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import anyio
from attrs import define, field

if TYPE_CHECKING:
    from mmstream.middleware import CallNext
    from mmstream.request import ChatRequest
    from mmstream.responses import ChatResponse


@define
class Recorder:
    """Middleware recording start, chunks, and how the call ended (its exit code ran)."""

    events: list[str] = field(factory=list)
    chunks: int = 0

    async def __call__(
        self, request: ChatRequest, call_next: CallNext
    ) -> AsyncIterator[ChatResponse]:
        self.events.append("start")
        try:
            async for chunk in call_next(request):
                self.chunks += 1
                yield chunk
        except GeneratorExit:
            self.events.append("closed")
            raise
        except anyio.get_cancelled_exc_class():
            self.events.append("cancelled")
            raise
        except BaseException as exc:
            self.events.append(f"failed:{type(exc).__name__}")
            raise
        else:
            self.events.append("complete")
        finally:
            self.events.append("exit")
