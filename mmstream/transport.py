"""The I/O edge: an httpx connection pool per event loop, bytes in and out, error mapping.

Providers describe requests ([`HTTPRequest`][mmstream.request.HTTPRequest]);
the transport sends them and reports what came back: the status, the headers,
and the body's bytes as they arrive ([`Response`][mmstream.transport.Response]).
It never interprets them; the endpoint asks the provider what an error status
means. Every httpx exception is mapped to an
[`MMStreamError`][mmstream.errors.MMStreamError] here, at the edge
([`map_exceptions`][mmstream.transport.map_exceptions]), naming the origin
(scheme, host and port) that was tried. The response is closed the moment the
consumer stops, fails or is cancelled, so its connection goes back to the pool
(or, when the body was not read to the end, is closed).

A request sent on a kept-alive connection that the server had just closed (no
byte of a response arrived) is sent once more, on a new connection: the race
is invisible, as in a browser. Other URL schemes are served by mounts
(``Transport(mounts=...)``); the facade mounts the offline server on
``offline://``.

Each event loop gets its own ``httpx.AsyncClient`` (a connection pool cannot be
shared between loops); the blocking methods run on mmstream's portal loop,
which therefore has its own pool too. ``aclose()`` closes the pool of the
loop it runs on.
"""

from __future__ import annotations

import contextlib
import json
import math
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
    ConfigurationError,
    IncompleteStreamError,
    InvalidRequestError,
    MMStreamError,
    ProviderProtocolError,
)
from mmstream.request import DEFAULT_TIMEOUT, Timeouts

if TYPE_CHECKING:
    from mmstream.request import HTTPRequest

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_ERROR_BODY",
    "Response",
    "Timeouts",
    "Transport",
    "map_exceptions",
]

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


def _origin(url: httpx.URL | str) -> str:
    """``scheme://host:port`` of a URL (never its user, path or query, which may hold a key)."""
    url = httpx.URL(url) if isinstance(url, str) else url
    host = url.host
    if ":" in host:
        host = f"[{host}]"
    port = url.port or {"http": 80, "https": 443}.get(url.scheme)
    return f"{url.scheme}://{host}" + ("" if port is None else f":{port}")


@contextlib.contextmanager
def map_exceptions(
    provider: str, *, streaming: bool = False, origin: str | httpx.URL | None = None
) -> Iterator[None]:
    """Turn httpx's exceptions into mmstream's, keeping the original as ``__cause__``.

    Args:
        provider: the provider's name, for the message and the error.
        streaming: whether the body was being read (a drop is then mid-stream).
        origin: where the request went: ``scheme://host:port``, or the URL it is
            taken from (only when an error is raised), named in the message.
    """
    try:
        yield
    except httpx.HTTPError as exc:
        raise _mapped(exc, provider, streaming, origin) from exc


def _mapped(
    exc: httpx.HTTPError, provider: str, streaming: bool, origin: str | httpx.URL | None
) -> MMStreamError:
    """The mmstream error for an httpx exception."""
    if isinstance(origin, httpx.URL):
        origin = _origin(origin)
    where = f" {origin}" if origin else ""
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        kind = _TIMEOUT_KINDS.get(type(exc), "read")
        talking = " talking to" + where if where else ""
        return APITimeoutError(
            f"{provider}: {kind} timeout{talking} ({detail})", kind=kind, provider=provider
        )
    if isinstance(exc, httpx.RemoteProtocolError):
        if streaming:
            to = " to" + where if where else ""
            return IncompleteStreamError(
                f"the {provider} connection{to} closed mid-stream ({exc})", provider=provider
            )
        return APIConnectionError(
            f"{provider}: the server{where} broke the HTTP protocol ({exc})", provider=provider
        )
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL, httpx.LocalProtocolError)):
        to = " to" + where if where else ""
        return InvalidRequestError(
            f"{provider}: cannot send that request{to} ({exc}); check the base URL and headers",
            provider=provider,
        )
    if isinstance(exc, httpx.TransportError):
        what = "the connection dropped mid-stream" if streaming else "could not connect"
        to = (" from" if streaming else " to") + where if where else ""
        return APIConnectionError(f"{provider}: {what}{to} ({detail})", provider=provider)
    if isinstance(exc, httpx.DecodingError):
        return ProviderProtocolError(
            f"{provider}: the response body could not be decoded ({exc})", provider=provider
        )
    with_ = " with" + where if where else ""
    return APIConnectionError(
        f"{provider}: the HTTP exchange{with_} failed ({detail})", provider=provider
    )


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


#: errors from sending on a kept-alive connection the server had closed (nothing arrived).
_STALE = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


class _Reuse:
    """An httpcore trace hook noting whether a request went out on a reused connection.

    Opening a connection traces ``connection.*`` events before the request's
    headers are sent; once they are, the hook has its answer and takes itself
    off the request, so the rest of the exchange is not traced.
    """

    __slots__ = ("connected", "request", "reused")

    def __init__(self, request: httpx.Request) -> None:
        self.request = request
        self.connected = False
        self.reused = False
        request.extensions["trace"] = self

    async def __call__(self, name: str, info: Mapping[str, Any]) -> None:
        if name.startswith("connection."):
            self.connected = True  # connect_tcp, start_tls, ...: a new connection
        elif name.endswith("send_request_headers.started"):
            self.reused = not self.connected
            self.request.extensions.pop("trace", None)


class _RequestBody(httpx.AsyncByteStream):
    """The request body, iterated without an async generator (nothing left to finalize).

    httpx's own byte stream iterates through a generator that a cancelled send
    leaves suspended, which trio reports as garbage collected unexhausted.
    """

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data = data

    def __aiter__(self) -> AsyncIterator[bytes]:
        return _Once(self._data)

    async def aclose(self) -> None:
        pass


class _Once:
    """An async iterator of one piece of bytes."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data

    def __aiter__(self) -> _Once:
        return self

    async def __anext__(self) -> bytes:
        data, self._data = self._data, None
        if data is None:
            raise StopAsyncIteration
        return data


@final
class Response:
    """What came back for a request: status, headers, and the body's bytes as they arrive.

    Nothing here interprets them; the endpoint does, with the provider's help.
    ``next_read()`` gives each network read's bytes, then ``None``; ``read(limit)``
    the first bytes of a body (an error page). Always ``aclose()`` it.
    """

    __slots__ = (
        "_chunks",
        "_deadline",
        "_label",
        "_next",
        "_origin",
        "_request",
        "_response",
        "_total",
        "headers",
        "status",
    )

    def __init__(
        self,
        response: httpx.Response,
        request: httpx.Request,
        *,
        label: str,
        origin: httpx.URL,
        total: float | None,
        deadline: float,
    ) -> None:
        self._response = response
        self._request = request
        self.status: int = response.status_code
        self.headers: httpx.Headers = response.headers
        self._label = label
        self._origin = origin
        self._total = total
        self._deadline = deadline
        # Without a content-encoding there is nothing to decode: the raw body skips a
        # generator layer and a decoder call per network read. (A body already read,
        # as a mock transport's is, can only be iterated with aiter_bytes.)
        identity = response.headers.get("content-encoding", "identity").lower() == "identity"
        raw = identity and not response.is_stream_consumed
        self._chunks = response.aiter_raw() if raw else response.aiter_bytes()
        self._next = self._chunks.__anext__

    async def next_read(self) -> bytes | None:
        """The bytes of the next network read, or ``None`` at the end of the body.

        Raises:
            APITimeoutError: a read or the total deadline passed.
            IncompleteStreamError: the connection closed in the middle of the body.
            APIConnectionError: the connection dropped.
        """
        if self._total is None:
            try:
                return await self._next()
            except StopAsyncIteration:
                return None
            except Exception:
                with map_exceptions(self._label, streaming=True, origin=self._origin):
                    raise  # mapped here: no context manager per read on the way
        data: bytes | None = None
        with (
            anyio.CancelScope(deadline=self._deadline) as scope,
            map_exceptions(self._label, streaming=True, origin=self._origin),
        ):
            try:
                data = await self._next()
            except StopAsyncIteration:
                data = None
        if scope.cancelled_caught:
            raise _total_timeout(self._label, self._total)
        return data

    async def read(self, limit: int) -> bytes:
        """Up to ``limit`` bytes of the body, with the request's credentials masked.

        A proxy may echo the request back; its key never reaches an error.
        """
        parts: list[bytes] = []
        size = 0
        while size < limit:
            data = await self.next_read()
            if data is None:
                break
            parts.append(data)
            size += len(data)
        return _redact(b"".join(parts)[:limit], self._request.headers)

    async def aclose(self) -> None:
        """Close the response (shielded: it runs even in a cancelled task)."""
        with anyio.CancelScope(shield=True):
            await self._response.aclose()
            await _finish(self._chunks)


@final
class Transport:
    """Sends provider requests over one pooled ``httpx.AsyncClient`` per event loop.

    Args:
        timeout: seconds, `Timeouts` or an
            ``httpx.Timeout`` for every call; a call's ``timeout`` option replaces
            it for that call.
        limits: the connection pool's limits.
        http_transport: an ``httpx.AsyncBaseTransport`` to send through instead of
            the network (``httpx.MockTransport`` in tests, a proxy transport, ...).
        headers: headers added to every request (the provider's own win).
        mounts: URL patterns served by other httpx transports, as httpx's
            ``mounts`` (``{"offline://": server}``); they win over ``http_transport``.

    It is also an async context manager: leaving it closes the running loop's pool.
    """

    def __init__(
        self,
        *,
        timeout: float | Timeouts | httpx.Timeout | None = None,
        limits: httpx.Limits | None = None,
        http_transport: httpx.AsyncBaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
        mounts: Mapping[str, httpx.AsyncBaseTransport] | None = None,
    ) -> None:
        self.timeouts = Timeouts.from_value(timeout)
        self.limits = limits or httpx.Limits(max_connections=1000, max_keepalive_connections=100)
        self._http_transport = http_transport
        self._headers = {"User-Agent": f"mmstream/{__version__}", **(headers or {})}
        self._mounts: dict[str, httpx.AsyncBaseTransport] = dict(mounts or {})
        # id(loop or trio token) -> (weak reference to it, its pool)
        self._clients: dict[int, tuple[weakref.ref[Any], httpx.AsyncClient]] = {}

    @property
    def timeout(self) -> Timeouts:
        """The timeouts of every call (alias of ``timeouts``)."""
        return self.timeouts

    @property
    def mounts(self) -> Mapping[str, httpx.AsyncBaseTransport]:
        """The URL patterns served by other transports."""
        return dict(self._mounts)

    def __repr__(self) -> str:
        return f"Transport(timeouts={self.timeouts!r}, pools={len(self._clients)})"

    def mount(self, pattern: str, http_transport: httpx.AsyncBaseTransport) -> None:
        """Serve URLs matching ``pattern`` (``"offline://"``) with ``http_transport``.

        Mounting what is already mounted changes nothing.

        Raises:
            ConfigurationError: the pattern is new and a pool is already open (mount
                before the first request).
        """
        if self._mounts.get(pattern) is http_transport:
            return
        self._prune()
        if self._clients:
            raise ConfigurationError(
                f"mount {pattern!r} before the transport sends its first request"
            )
        self._mounts[pattern] = http_transport

    def client(self) -> httpx.AsyncClient:
        """The connection pool of the running event loop (created on first use)."""
        token = _loop_token()
        entry = self._clients.get(id(token))
        if entry is not None and entry[0]() is token and not entry[1].is_closed:
            return entry[1]
        self._prune()
        client = httpx.AsyncClient(
            timeout=_to_httpx(self.timeouts),
            limits=self.limits,
            transport=self._http_transport,
            mounts=self._mounts or None,
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
                built = client.build_request(
                    request.method, request.url, headers=headers, content=content
                )
        except UnicodeEncodeError:
            # The message would quote the header (maybe an API key): say where, not what.
            raise InvalidRequestError(
                f"{name}: a header value is not ASCII; check the API key and extra headers "
                "for stray characters",
                provider=name,
            ) from None
        if content is not None:
            built.stream = _RequestBody(content)
        return built

    async def send(
        self, request: HTTPRequest, *, label: str, deadline: float | None = None
    ) -> Response:
        """Send ``request``; return the response once its head has arrived.

        The status is reported, not judged: an error status is the caller's to
        read (``read``) and interpret. A request written on a reused keep-alive
        connection that the server had closed, with no byte of a response back,
        is sent once more on a new connection.

        Args:
            request: what the provider built.
            label: the provider's name, for errors.
            deadline: when the call's total timeout ends (``anyio.current_time()``
                clock), when the call started before this exchange (its images were
                prepared first); by default the total counts from now.

        Raises:
            APITimeoutError: a connect, write, pool or total deadline passed.
            APIConnectionError: the server could not be reached.
            InvalidRequestError: the request cannot be sent (bad URL, header or body).
        """
        client = self.client()
        timeouts = (
            self.timeouts if request.timeout is None else Timeouts.from_value(request.timeout)
        )
        http_request = self._build(client, request, label)
        http_request.extensions["timeout"] = _to_httpx(timeouts).as_dict()
        total = timeouts.total
        if deadline is None:
            deadline = math.inf if total is None else anyio.current_time() + total
        where = http_request.url  # named in an error as scheme://host:port, never more
        with anyio.CancelScope(deadline=deadline) as scope, map_exceptions(label, origin=where):
            response = await _send(client, http_request)
        if scope.cancelled_caught:
            raise _total_timeout(label, total)
        return Response(
            response, http_request, label=label, origin=where, total=total, deadline=deadline
        )

    @property
    def http_transport(self) -> httpx.AsyncBaseTransport | None:
        """The ``http_transport`` given at construction: downloads for the call go through it too.

        ``None`` (the default) sends downloads through mmstream's guarded pool,
        which connects only to addresses the call's ``url_access`` allows.
        """
        return self._http_transport


async def _send(client: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
    """``client.send``, once more when a reused connection turned out closed (nothing arrived)."""
    reuse = _Reuse(request)
    try:
        return await client.send(request, stream=True)
    except _STALE:
        if not reuse.reused:
            raise
    request.extensions.pop("trace", None)
    return await client.send(request, stream=True)


def _loop_token() -> Any:
    """The running asyncio loop or trio token: the key of its connection pool."""
    from anyio.lowlevel import current_token  # here, so that `import mmstream` stays light

    return current_token().native_token


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
