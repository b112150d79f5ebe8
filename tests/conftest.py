"""Test configuration: every async test runs on asyncio and on trio, explicitly.

The backends are pinned here (not discovered), so a missing trio fails the
run instead of silently halving it.
"""

from __future__ import annotations

import pytest

pytest_plugins = ["mmstream.testing.pytest_plugin"]


@pytest.fixture(
    params=[
        pytest.param("asyncio", id="asyncio"),
        pytest.param("trio", id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Both backends, always."""
    return str(request.param)
