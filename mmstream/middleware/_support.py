"""Small helpers shared by the middleware: calling a user hook, closing an abandoned attempt."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio

__all__ = ["aclose_quietly", "call_handler"]


async def call_handler(
    handler: Callable[..., Any] | None, *args: Any, shield: bool = False
) -> None:
    """Call a user hook that may be a plain function or a coroutine function.

    The one place that decides whether a hook's result must be awaited: a plain
    function returning ``None`` costs a call and a comparison, nothing more.

    Args:
        handler: the hook, or ``None`` for nothing to do.
        *args: what the hook is called with.
        shield: await an async hook shielded from cancellation, so that a report
            made while the call is being cancelled still runs to its end.
    """
    if handler is None:
        return
    result = handler(*args)
    if result is None or not inspect.isawaitable(result):
        return
    if shield:
        with anyio.CancelScope(shield=True):
            await result
    else:
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
