"""The I/O edge: an httpx connection pool per event loop, streaming, error mapping.

Providers describe requests (:class:`~mmstream.request.HTTPRequest`); the
transport sends them and yields the raw body bytes. Every httpx exception is
mapped to an :class:`~mmstream.errors.MMStreamError` here, at the edge
(:func:`map_exceptions`). The response is closed the moment the consumer
stops, fails or is cancelled.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import TYPE_CHECKING, Any, final

import anyio
import anyio.lowlevel
import httpx

from mmstream.errors import (
    APIConnectionError,
    APITimeoutError,
    IncompleteStreamError,
    InvalidRequestError,
)

if TYPE_CHECKING:
    from mmstream.providers.base import Provider
    from mmstream.request import HTTPRequest

__all__ = ["DEFAULT_TIMEOUT", "Transport", "map_exceptions"]

#: connect 10 s, and 600 s for each read/write/pool wait (answers can be long).
DEFAULT_TIMEOUT = httpx.Timeout(600.0, connect=10.0)
#: error bodies are read up to this size (a proxy may send a large HTML page).
MAX_ERROR_BODY = 64 * 1024


@contextlib.contextmanager
def map_exceptions(provider: str, *, streaming: bool = False) -> Iterator[None]:
    """Turn httpx's exceptions into mmstream's, keeping the original as ``__cause__``."""
    try:
        yield
    except httpx.TimeoutException as exc:
        kind = {
            httpx.ConnectTimeout: "connect",
            httpx.ReadTimeout: "read",
            httpx.WriteTimeout: "write",
            httpx.PoolTimeout: "pool",
        }.get(type(exc), "read")
        raise APITimeoutError(
            f"{provider}: {kind} timeout ({exc or type(exc).__name__})",
            kind=kind,
            provider=provider,
        ) from exc
    except httpx.RemoteProtocolError as exc:
        if streaming:
            raise IncompleteStreamError(
                f"the {provider} connection closed mid-stream ({exc})", provider=provider
            ) from exc
        raise APIConnectionError(
            f"{provider}: the server broke the HTTP protocol ({exc})", provider=provider
        ) from exc
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise InvalidRequestError(
            f"{provider}: cannot send to that URL ({exc})", provider=provider
        ) from exc
    except httpx.TransportError as exc:
        what = "the connection dropped mid-stream" if streaming else "could not connect"
        raise APIConnectionError(
            f"{provider}: {what} ({exc or type(exc).__name__})", provider=provider
        ) from exc


def _timeout(value: float | httpx.Timeout | None) -> httpx.Timeout:
    if value is None:
        return DEFAULT_TIMEOUT
    if isinstance(value, httpx.Timeout):
        return value
    return httpx.Timeout(value, connect=min(value, DEFAULT_TIMEOUT.connect or value))


@final
class Transport:
    """Sends provider requests over one pooled ``httpx.AsyncClient`` per event loop.

    Args:
        timeout: seconds (or an ``httpx.Timeout``) for each phase of the exchange;
            a call's ``timeout`` option overrides it.
        limits: the connection pool's limits.
        http_transport: an ``httpx.AsyncBaseTransport`` to send through instead of
            the network (``httpx.MockTransport`` in tests, a proxy transport, ...).
        headers: headers added to every request (after the provider's own).
    """

    def __init__(
        self,
        *,
        timeout: float | httpx.Timeout | None = None,
        limits: httpx.Limits | None = None,
        http_transport: httpx.AsyncBaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.timeout = _timeout(timeout)
        self.limits = limits or httpx.Limits(max_connections=1000, max_keepalive_connections=100)
        self._http_transport = http_transport
        self._headers = dict(headers or {})
        self._clients: dict[object, httpx.AsyncClient] = {}

    def __repr__(self) -> str:
        return f"Transport(timeout={self.timeout!r}, clients={len(self._clients)})"

    def client(self) -> httpx.AsyncClient:
        """The connection pool of the running event loop (created on first use)."""
        key = anyio.lowlevel.current_token().native_token
        client = self._clients.get(key)
        if client is None or client.is_closed:
            from mmstream._offline_transport import OfflineTransport

            client = httpx.AsyncClient(
                timeout=self.timeout,
                limits=self.limits,
                transport=self._http_transport,
                mounts={"offline://": OfflineTransport()},
                headers=self._headers,
                follow_redirects=False,
            )
            self._clients[key] = client
        return client

    async def aclose(self) -> None:
        """Close the pool of the running event loop."""
        key = anyio.lowlevel.current_token().native_token
        client = self._clients.pop(key, None)
        if client is not None:
            with anyio.CancelScope(shield=True):
                await client.aclose()

    async def stream(self, request: HTTPRequest, provider: Provider) -> AsyncIterator[bytes]:
        """Send ``request`` and yield the response body as it arrives.

        An error status raises the provider's typed error (from its
        ``parse_error``); the response is closed when the generator is closed.
        """
        name = provider.name
        client = self.client()
        timeout = _timeout(request.timeout) if request.timeout is not None else self.timeout
        with map_exceptions(name):
            http_request = client.build_request(
                request.method,
                request.url,
                headers=request.headers,
                content=None if request.json is None else _dumps(request.json),
                timeout=timeout,
            )
            response = await client.send(http_request, stream=True)
        body_iterator = response.aiter_bytes()
        try:
            if response.status_code >= 400:
                with map_exceptions(name):
                    body = await _read_bounded(body_iterator, MAX_ERROR_BODY)
                raise provider.parse_error(response.status_code, response.headers, body)
            with map_exceptions(name, streaming=True):
                async for data in body_iterator:
                    yield data
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()
                await _finish(body_iterator)


def _dumps(body: Any) -> bytes:
    """Compact JSON bytes (``ensure_ascii=False`` keeps non-ASCII text short)."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


async def _read_bounded(body: AsyncIterator[bytes], limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for data in body:
        chunks.append(data)
        size += len(data)
        if size >= limit:
            break
    return b"".join(chunks)[:limit]


async def _finish(body: AsyncIterator[bytes]) -> None:
    """End httpx's body iterator after the response was closed.

    httpx reads the body through nested async generators that it never
    closes; left suspended, trio's finalizer warns about each one. Once the
    response is closed, one more step ends them all (the read fails at once,
    or the body is complete), so nothing is left for the garbage collector.
    """
    with contextlib.suppress(Exception):
        await body.__anext__()
        await body.aclose()  # type: ignore[attr-defined]
