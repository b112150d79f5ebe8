"""Serve an ASGI app on the running event loop: uvicorn on asyncio, hypercorn on trio.

Used by ``mmstream serve --ui`` and by the project's own tests; a backend serves
its app with its own server as usual. Neither server is a dependency of
mmstream: the one the running loop needs is imported when called.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

import anyio

from mmstream.errors import ConfigurationError

__all__ = ["serve"]

#: Seconds the server waits for open responses when it stops, before it cancels them.
_GRACE = 2.0


def _on_trio() -> bool:
    from anyio.lowlevel import current_token

    return type(current_token().native_token).__name__ == "TrioToken"


def _missing(module: str, backend: str) -> ConfigurationError:
    return ConfigurationError(
        f"serving on {backend} needs {module}, which is not installed; "
        f"install it with: pip install {module}"
    )


async def serve(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    on_ready: Callable[[str], object] | None = None,
) -> None:
    """Serve ``app`` until cancelled, then stop gracefully (open responses get 2 s).

    Args:
        app: an ASGI application (Starlette, FastAPI, ...).
        host: the address to listen on (loopback by default).
        port: the port; 0 picks a free one.
        on_ready: called with the base URL (``http://127.0.0.1:PORT``) once listening.

    Raises:
        ConfigurationError: uvicorn (asyncio) or hypercorn (trio) is not installed.
        OSError: the address cannot be bound.
    """
    if _on_trio():
        await _serve_hypercorn(app, host, port, on_ready)
    else:
        await _serve_uvicorn(app, host, port, on_ready)


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def _serve_uvicorn(
    app: Any, host: str, port: int, on_ready: Callable[[str], object] | None
) -> None:
    try:
        import uvicorn
    except ImportError:
        raise _missing("uvicorn", "asyncio") from None
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    config = uvicorn.Config(
        app,
        log_config=None,  # leave the application's logging alone
        log_level=logging.WARNING,
        access_log=False,
        timeout_graceful_shutdown=int(_GRACE),
    )
    server = uvicorn.Server(config)
    done = anyio.Event()

    async def run() -> None:
        # Shielded: a cancelled caller asks the server to stop (below), and waits for it.
        with anyio.CancelScope(shield=True):
            try:
                await server.serve(sockets=[sock])
            finally:
                sock.close()
                done.set()

    async with anyio.create_task_group() as group:
        group.start_soon(run)
        try:
            while not server.started and not done.is_set():  # noqa: ASYNC110 - uvicorn has a flag only
                await anyio.sleep(0.01)
            if server.started and on_ready is not None:
                on_ready(_url(host, sock.getsockname()[1]))
            await done.wait()
        finally:
            server.should_exit = True


async def _serve_hypercorn(
    app: Any, host: str, port: int, on_ready: Callable[[str], object] | None
) -> None:
    try:
        from hypercorn.config import Config
        from hypercorn.trio import serve as hypercorn_serve
    except ImportError:
        raise _missing("hypercorn", "trio") from None
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = _GRACE
    stop = anyio.Event()

    async def run(*, task_status: Any) -> None:
        with anyio.CancelScope(shield=True):
            await hypercorn_serve(app, config, shutdown_trigger=stop.wait, task_status=task_status)

    async with anyio.create_task_group() as group:
        binds = await group.start(run)
        try:
            if on_ready is not None:
                on_ready(str(binds[0]))
            await anyio.sleep_forever()
        finally:
            stop.set()
