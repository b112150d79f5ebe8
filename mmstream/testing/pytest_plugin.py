"""Pytest fixtures for the loopback test server; opt in with ``pytest_plugins``.

Add ``pytest_plugins = ["mmstream.testing.pytest_plugin"]`` to a
``conftest.py``. Nothing is registered globally by installing mmstream.

- ``mmstream_server``: a running [`TestServer`][mmstream.testing.TestServer] on the
  test's own event loop (needs anyio's pytest plugin and an ``anyio_backend``).
- ``mmstream_thread_server``: one running in a background thread (asyncio),
  for synchronous tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from mmstream.testing._server import TestServer

__all__ = ["mmstream_server", "mmstream_thread_server"]


@pytest.fixture
async def mmstream_server() -> AsyncIterator[TestServer]:
    """A test server on the test's event loop, stopped after the test."""
    async with TestServer() as server:
        yield server


@pytest.fixture
def mmstream_thread_server() -> Iterator[TestServer]:
    """A test server on its own event loop in a background thread, for sync tests."""
    with TestServer.start_in_thread() as server:
        yield server
