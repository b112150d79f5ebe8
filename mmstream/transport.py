"""The I/O edge: an httpx connection pool per event loop, streaming, timeouts, error mapping.

Providers describe requests (:class:`~mmstream.request.HTTPRequest`); the
transport sends them and yields the raw body bytes. Every httpx exception is
mapped to an :class:`~mmstream.errors.MMStreamError` here, at the edge
(:func:`map_exceptions`); an error status becomes the provider's typed error
(its ``parse_error``). The response is closed the moment the consumer stops,
fails or is cancelled, so its connection goes back to the pool (or, when the
body was not read to the end, is closed).

Each event loop gets its own ``httpx.AsyncClient`` (a connection pool cannot be
shared between loops); the blocking methods run on mmstream's portal loop,
which therefore has its own pool too. ``aclose()`` closes the pool of the
loop it runs on.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import secrets
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, final

import anyio
import httpx

from mmstream._version import __version__
from mmstream.errors import (
    APIConnectionError,
    APITimeoutError,
    IncompleteStreamError,
    InvalidRequestError,
    MMStreamError,
    ProviderProtocolError,
)
from mmstream.providers.base import default_parse_error
from mmstream.request import DEFAULT_TIMEOUT, Timeouts

if TYPE_CHECKING:
    from mmstream.providers.base import Provider
    from mmstream.request import HTTPRequest

__all__ = ["DEFAULT_TIMEOUT", "MAX_ERROR_BODY", "Timeouts", "Transport", "map_exceptions"]

#: error bodies are read up to this size (a proxy may send a large HTML page).
MAX_ERROR_BODY = 64 * 1024


def _to_httpx(timeouts: Timeouts) -> httpx.Timeout:
    """The per-phase part of ``timeouts``, as httpx takes it."""
    return httpx.Timeout(
        connect=timeouts.connect, read=timeouts.read, write=timeouts.write, pool=timeouts.pool
    )


_TIMEOUT_KINDS: Mapping[type[Exception], str] = {
    httpx.ConnectTimeout: "connect",
    httpx.ReadTimeout: "read",
    httpx.WriteTimeout: "write",
    httpx.PoolTimeout: "pool",
}


@contextlib.contextmanager
def map_exceptions(provider: str, *, streaming: bool = False) -> Iterator[None]:
    """Turn httpx's exceptions into mmstream's, keeping the original as ``__cause__``."""
    try:
        yield
    except httpx.TimeoutException as exc:
        kind = _TIMEOUT_KINDS.get(type(exc), "read")
        raise APITimeoutError(
            f"{provider}: {kind} timeout ({str(exc) or type(exc).__name__})",
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
    except (httpx.UnsupportedProtocol, httpx.InvalidURL, httpx.LocalProtocolError) as exc:
        raise InvalidRequestError(
            f"{provider}: cannot send that request ({exc}); check the base URL and headers",
            provider=provider,
        ) from exc
    except httpx.TransportError as exc:
        what = "the connection dropped mid-stream" if streaming else "could not connect"
        raise APIConnectionError(
            f"{provider}: {what} ({str(exc) or type(exc).__name__})", provider=provider
        ) from exc
    except httpx.DecodingError as exc:
        raise ProviderProtocolError(
            f"{provider}: the response body could not be decoded ({exc})", provider=provider
        ) from exc
    except httpx.HTTPError as exc:
        raise APIConnectionError(
            f"{provider}: the HTTP exchange failed ({str(exc) or type(exc).__name__})",
            provider=provider,
        ) from exc


def _total_timeout(provider: str, seconds: float | None) -> APITimeoutError:
    return APITimeoutError(
        f"{provider}: total timeout ({seconds:g} s for the whole exchange)",
        kind="total",
        provider=provider,
    )


def _nothing() -> None:
    pass


def _ended(token: object) -> bool:
    """Whether the event loop behind ``token`` has ended (its pool can then be forgotten)."""
    is_closed = getattr(token, "is_closed", None)  # an asyncio loop
    if callable(is_closed):
        return bool(is_closed())
    run_sync_soon = getattr(token, "run_sync_soon", None)  # a trio token
    if callable(run_sync_soon):
        try:
            run_sync_soon(_nothing)
        except Exception:  # trio.RunFinishedError
            return True
    return False


@final
class Transport:
    """Sends provider requests over one pooled ``httpx.AsyncClient`` per event loop.

    Args:
        timeout: seconds, :class:`Timeouts` or an ``httpx.Timeout`` for every call;
            a call's ``timeout`` option replaces it for that call.
        limits: the connection pool's limits.
        http_transport: an ``httpx.AsyncBaseTransport`` to send through instead of
            the network (``httpx.MockTransport`` in tests, a proxy transport, ...).
        headers: headers added to every request (the provider's own win).

    It is also an async context manager: leaving it closes the running loop's pool.
    """

    def __init__(
        self,
        *,
        timeout: float | Timeouts | httpx.Timeout | None = None,
        limits: httpx.Limits | None = None,
        http_transport: httpx.AsyncBaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.timeouts = Timeouts.from_value(timeout)
        self.limits = limits or httpx.Limits(max_connections=1000, max_keepalive_connections=100)
        self._http_transport = http_transport
        self._headers = {"User-Agent": f"mmstream/{__version__}", **(headers or {})}
        # id(loop or trio token) -> (weak reference to it, its pool)
        self._clients: dict[int, tuple[weakref.ref[Any], httpx.AsyncClient]] = {}

    @property
    def timeout(self) -> Timeouts:
        """The timeouts of every call (alias of ``timeouts``)."""
        return self.timeouts

    def __repr__(self) -> str:
        return f"Transport(timeouts={self.timeouts!r}, pools={len(self._clients)})"

    def client(self) -> httpx.AsyncClient:
        """The connection pool of the running event loop (created on first use)."""
        token = _loop_token()
        entry = self._clients.get(id(token))
        if entry is not None and entry[0]() is token and not entry[1].is_closed:
            return entry[1]
        self._prune()
        from mmstream._offline_transport import OfflineTransport

        client = httpx.AsyncClient(
            timeout=_to_httpx(self.timeouts),
            limits=self.limits,
            transport=self._http_transport,
            mounts={"offline://": OfflineTransport()},
            headers=self._headers,
            follow_redirects=False,
        )
        self._clients[id(token)] = (weakref.ref(token), client)
        return client

    def _prune(self) -> None:
        """Forget the pools of event loops that have ended (they cannot be closed any more)."""
        for key, (ref, client) in list(self._clients.items()):
            token = ref()
            if token is None or client.is_closed or _ended(token):
                self._clients.pop(key, None)

    async def aclose(self) -> None:
        """Close the pool of the running event loop; a later call opens a new one."""
        token = _loop_token()
        entry = self._clients.pop(id(token), None)
        if entry is not None and entry[0]() is token:
            with anyio.CancelScope(shield=True):
                await entry[1].aclose()

    async def __aenter__(self) -> Transport:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _build(self, client: httpx.AsyncClient, request: HTTPRequest, name: str) -> httpx.Request:
        headers = dict(request.headers)
        lowered = {key.lower() for key in headers}
        if "accept" not in lowered:
            headers["Accept"] = (
                "application/x-ndjson" if request.stream_format == "ndjson" else "text/event-stream"
            )
        content = None
        if request.json is not None:
            content = _dumps(request.json)
            if "content-type" not in lowered:
                headers["Content-Type"] = "application/json"
        try:
            with map_exceptions(name):
                return client.build_request(
                    request.method, request.url, headers=headers, content=content
                )
        except UnicodeEncodeError:
            # The message would quote the header (maybe an API key): say where, not what.
            raise InvalidRequestError(
                f"{name}: a header value is not ASCII; check the API key and extra headers "
                "for stray characters",
                provider=name,
            ) from None

    async def stream(
        self, request: HTTPRequest, provider: Provider, *, deadline: float | None = None
    ) -> AsyncIterator[bytes]:
        """Send ``request`` and yield the response body as it arrives.

        ``deadline`` (``anyio.current_time()`` clock) is when the call's total
        timeout ends, when the call started before this exchange (its images
        were prepared first); by default the total counts from now.

        A status outside 2xx raises the provider's typed error (from its
        ``parse_error``) carrying the server's message and request id. The
        response is closed when the generator is closed, however that happens.

        Raises:
            APIError: an error status (subclass by status).
            APITimeoutError: a connect, read, write, pool or total deadline passed.
            APIConnectionError: the server could not be reached or the connection dropped.
            IncompleteStreamError: the connection closed in the middle of the body.
        """
        name = provider.name
        client = self.client()
        timeouts = self.timeouts if request.timeout is None else _call_timeouts(request.timeout)
        http_request = self._build(client, request, name)
        http_request.extensions["timeout"] = _to_httpx(timeouts).as_dict()
        total = timeouts.total
        if deadline is None:
            deadline = math.inf if total is None else anyio.current_time() + total

        with anyio.CancelScope(deadline=deadline) as scope, map_exceptions(name):
            response = await client.send(http_request, stream=True)
        if scope.cancelled_caught:
            raise _total_timeout(name, total)
        # Without a content-encoding there is nothing to decode: the raw body skips a
        # generator layer and a decoder call per network read. (A body already read,
        # as a mock transport's is, can only be iterated with aiter_bytes.)
        identity = response.headers.get("content-encoding", "identity").lower() == "identity"
        raw = identity and not response.is_stream_consumed
        chunks = response.aiter_raw() if raw else response.aiter_bytes()
        try:
            if not 200 <= response.status_code < 300:
                with anyio.CancelScope(deadline=deadline) as scope, map_exceptions(name):
                    body = await _read_bounded(chunks, MAX_ERROR_BODY)
                if scope.cancelled_caught:
                    raise _total_timeout(name, total)
                raise _parse_error(provider, response, _redact(body, http_request.headers))
            if response.headers.get("content-type", "").startswith("text/html"):
                # A captive portal or a proxy's page with status 200: not the provider.
                with anyio.CancelScope(deadline=deadline), map_exceptions(name):
                    page = await _read_bounded(chunks, 2048)
                raise ProviderProtocolError(
                    f"{name} answered with an HTML page instead of a stream "
                    f"({_page_text(page)!r}); check the base URL and any proxy in between",
                    provider=name,
                )
            next_chunk = chunks.__anext__
            while True:
                if total is None:
                    try:
                        data = await next_chunk()
                    except StopAsyncIteration:
                        return
                    except Exception:
                        with map_exceptions(name, streaming=True):
                            raise  # mapped here: no context manager per read on the way
                else:
                    with (
                        anyio.CancelScope(deadline=deadline) as scope,
                        map_exceptions(name, streaming=True),
                    ):
                        try:
                            data = await next_chunk()
                        except StopAsyncIteration:
                            return
                    if scope.cancelled_caught:
                        raise _total_timeout(name, total)
                yield data  # never inside a cancel scope
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()
                await _finish(chunks)

    @property
    def http_transport(self) -> httpx.AsyncBaseTransport | None:
        """The ``http_transport`` given at construction: downloads for the call go through it too.

        ``None`` (the default) sends downloads through mmstream's guarded pool,
        which connects only to addresses the call's ``url_access`` allows.
        """
        return self._http_transport


def _page_text(page: bytes) -> str:
    text = re.sub(r"<[^>]+>", " ", page.decode("utf-8", "replace"))
    return " ".join(text.split())[:120]


def _loop_token() -> Any:
    """The running asyncio loop or trio token: the key of its connection pool."""
    from anyio.lowlevel import current_token  # here, so that `import mmstream` stays light

    return current_token().native_token


def _call_timeouts(value: object) -> Timeouts:
    return Timeouts.from_value(value)


#: request headers that carry credentials; their values never reach an error.
_CREDENTIAL_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "api-key", "x-api-key", "x-goog-api-key"}
)


def _redact(body: bytes, headers: httpx.Headers) -> bytes:
    """The error body without the request's credentials (a proxy may echo the request back)."""
    for name, value in headers.items():
        if name.lower() not in _CREDENTIAL_HEADERS:
            continue
        for secret in (value, value.partition(" ")[2].strip()):  # also the token of "Bearer x"
            if len(secret) >= 8:
                body = body.replace(secret.encode("utf-8", "replace"), b"***")
    return body


def _parse_error(provider: Provider, response: httpx.Response, body: bytes) -> MMStreamError:
    """The provider's typed error; a parse_error that fails falls back to the common shapes."""
    try:
        return provider.parse_error(response.status_code, response.headers, body)
    except Exception:
        return default_parse_error(provider.name, response.status_code, response.headers, body)


def _dumps(body: Any) -> bytes:
    """Compact JSON bytes (``ensure_ascii=False`` keeps non-ASCII text short).

    Long strings that need no escaping (base64 images, as ``data:`` URLs or
    bare) are not run through the JSON encoder, which would scan and copy
    megabytes character by character: they are spliced into the encoded body
    as they are. The bytes are the same ``json.dumps`` would give.
    """
    try:
        spliced: list[bytes] = []
        body = _set_aside(body, spliced)
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidRequestError(f"the request body cannot be sent as JSON ({exc})") from exc
    encoded = text.encode("utf-8")
    if not spliced:
        return encoded
    parts: list[bytes] = []
    start = 0
    for index, raw in enumerate(spliced):
        token = f'"{_SPLICE_TOKEN}{index}"'.encode("ascii")
        at = encoded.index(token, start)
        parts += (encoded[start:at], b'"', raw, b'"')
        start = at + len(token)
    parts.append(encoded[start:])
    return b"".join(parts)


#: strings at least this long are checked for splicing (shorter ones cost nothing to encode).
_SPLICE_MIN = 32 * 1024
#: the bytes a JSON string may hold as they are (ensure_ascii=False escapes only these others).
_JSON_PLAIN = bytes(c for c in range(0x20, 0x80) if c not in b'"\\')
#: stands in for a spliced string while the rest is encoded (random: no text can forge it).
_SPLICE_TOKEN = f"mmstream-splice-{secrets.token_hex(16)}-"


def _set_aside(value: Any, spliced: list[bytes]) -> Any:
    """``value`` with each long plain-ASCII string replaced by a token (copied where changed)."""
    kind = type(value)
    if kind is str:
        if len(value) >= _SPLICE_MIN and value.isascii():
            raw = value.encode("ascii")
            if not raw.translate(None, _JSON_PLAIN):  # nothing the encoder would escape
                spliced.append(raw)
                return f"{_SPLICE_TOKEN}{len(spliced) - 1}"
        return value
    if kind is dict:
        out = None
        for key, item in value.items():
            new = _set_aside(item, spliced)
            if new is not item:
                if out is None:
                    out = dict(value)
                out[key] = new
        return value if out is None else out
    if kind is list or kind is tuple:
        items = [_set_aside(item, spliced) for item in value]
        changed = any(new is not old for new, old in zip(items, value, strict=True))
        return items if changed else value
    return value


async def _read_bounded(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for data in chunks:
        parts.append(data)
        size += len(data)
        if size >= limit:
            break
    return b"".join(parts)[:limit]


async def _finish(body: AsyncIterator[bytes]) -> None:
    """End httpx's body iterator after the response was closed.

    httpx reads the body through nested async generators that it never
    closes; left suspended, trio's finalizer warns about each one. Once the
    response is closed, reading on ends them all: what was already received
    comes out, then the read fails at once (or the body is complete), so
    nothing is left for the garbage collector. (Closing only the outermost
    one would leave the inner ones suspended.)
    """
    with contextlib.suppress(Exception):
        for _ in range(1 << 16):  # bounded by what was received; the bound is a safety net
            await body.__anext__()
