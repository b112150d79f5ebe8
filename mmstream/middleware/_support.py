"""Small helpers shared by the reliability middleware (Retry, Fallback, Timeout)."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

__all__ = ["aclose_quietly", "call_handler"]


async def call_handler(handler: Callable[..., Any] | None, *args: Any) -> None:
    """Call a user hook that may be a plain function or a coroutine function."""
    if handler is None:
        return
    result = handler(*args)
    if inspect.isawaitable(result):
        await result


async def aclose_quietly(iterator: AsyncIterator[Any]) -> None:
    """Close an abandoned attempt whose failure is already being handled.

    An error from closing it adds nothing to the failure that made us leave it.
    """
    aclose = getattr(iterator, "aclose", None)
    if aclose is None:
        return
    with contextlib.suppress(Exception):
        await aclose()
