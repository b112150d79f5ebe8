"""The conftest really runs both backends (a missing trio would fail here)."""

from __future__ import annotations

import anyio.lowlevel

SEEN: set[str] = set()


async def test_backend_is_pinned(anyio_backend: str) -> None:
    token = anyio.lowlevel.current_token().native_token
    kind = "trio" if type(token).__name__ == "TrioToken" else "asyncio"
    assert kind == anyio_backend
