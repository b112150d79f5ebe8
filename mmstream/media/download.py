"""Downloads on a user's behalf: one guarded way, whatever asks (images today, documents next).

A URL in a user's message is fetched only when the provider cannot fetch it
itself, and only under the rules of [`mmstream.media.netguard`][mmstream.media.netguard]:

- before any I/O, on every hop (redirects are followed here, one by one): the
  scheme, credentials in the URL, and a host that is an address literally;
- when connecting: the host is resolved **once** (with the
  [`URLAccess`][mmstream.media.netguard.URLAccess]'s resolver, or the
  system's), every address is checked, and the connection goes to a checked
  address. The request keeps the original ``Host`` header, and httpcore passes
  the original host name to TLS as ``server_hostname`` (SNI and certificate
  checks), so a DNS answer that changes between check and connect (DNS
  rebinding) cannot slip through.

The connecting half is an httpcore network backend
(``httpcore.AsyncConnectionPool(network_backend=...)``), one pool per event loop
and per ``URLAccess``; the pools keep no idle connection, so nothing outlives a
download and no pool needs closing. When the [`Transport`][mmstream.Transport]
was given its own ``http_transport`` (a mock, a proxy), downloads go through
that instead: the host's addresses are then resolved and checked before the
request, but that transport connects by itself.

Only ``Accept``, ``User-Agent`` and the host's own headers go out: none of the
provider's headers or keys.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any, final
from urllib.parse import urljoin, urlsplit

import anyio
import httpcore
import httpx
from anyio.lowlevel import RunVar

from mmstream._version import __version__
from mmstream.errors import ForbiddenURLError, InvalidRequestError, MMStreamError
from mmstream.media.netguard import (
    Address,
    Denied,
    URLAccess,
    check_address,
    check_url,
    is_localhost,
    literal_address,
    redact_url,
)

__all__ = ["MAX_REDIRECTS", "download", "guarded_transport", "resolve"]

MAX_REDIRECTS = 5

_USER_AGENT = f"mmstream/{__version__}"


# --- resolving --------------------------------------------------------------------------


async def _system_resolver(host: str, port: int) -> Sequence[str]:
    """The system's answer for ``host`` (getaddrinfo, in a worker thread as anyio does it)."""
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def resolve(host: str, port: int, access: URLAccess) -> list[Address]:
    """The addresses ``host`` stands for: itself when literal, loopback for ``localhost``.

    Raises:
        OSError: the name does not resolve (``socket.gaierror``).
    """
    literal = literal_address(host)
    if literal is not None:
        return [literal]
    if is_localhost(host):
        return [ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1")]
    resolver = access.resolver or _system_resolver
    answers = await resolver(host, port)
    found: list[Address] = []
    for answer in answers:
        address = ipaddress.ip_address(str(answer).partition("%")[0])
        if address not in found:
            found.append(address)
    if not found:
        raise socket.gaierror(socket.EAI_NONAME, f"{host} has no address")
    return found


class _Refused(Exception):
    """Raised inside the connection pool: the host's addresses are all refused."""

    def __init__(self, denied: Denied) -> None:
        super().__init__(denied.reason)
        self.denied = denied


# --- the guarded connection pool ----------------------------------------------------------


@final
class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolve once, check every address, connect to a checked one (never to the name)."""

    def __init__(self, access: URLAccess) -> None:
        self._access = access
        self._inner = httpcore.AnyIOBackend()  # asyncio and trio alike

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):
                addresses = await resolve(host, port, self._access)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host} took over {timeout} s") from exc
        except OSError as exc:
            raise httpcore.ConnectError(f"{host} does not resolve ({exc})") from exc
        admitted: list[Address] = []
        refused: Denied | None = None
        for address in addresses:
            denied = check_address(host, address, self._access)
            if denied is None:
                admitted.append(address)
            elif refused is None:
                refused = denied
        if not admitted:
            assert refused is not None
            raise _Refused(refused)
        failure: Exception | None = None
        for address in admitted:  # only checked addresses; the name is never connected to
            try:
                stream: httpcore.AsyncNetworkStream = await self._inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
                return stream
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:  # pragma: no cover - no pool here is given a socket path
        raise httpcore.ConnectError("downloads never use Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


_HTTPCORE_ERRORS: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.NetworkError, httpx.NetworkError),
)


def _mapped(exc: Exception) -> Exception:
    for source, target in _HTTPCORE_ERRORS:
        if isinstance(exc, source):
            return target(str(exc) or type(exc).__name__)
    return exc


@final
class _Body(httpx.AsyncByteStream):
    """httpcore's response body as httpx reads it, its errors as httpx's."""

    def __init__(self, stream: AsyncIterator[bytes] | Any) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._stream:
                yield part
        except httpcore.TimeoutException as exc:
            raise _mapped(exc) from exc
        except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
            raise _mapped(exc) from exc

    async def aclose(self) -> None:
        if hasattr(self._stream, "aclose"):
            await self._stream.aclose()


@final
class _GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport over an httpcore pool that connects only to checked addresses."""

    def __init__(self, access: URLAccess) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=_ssl_context(),
            max_connections=100,
            max_keepalive_connections=0,  # nothing idles: no pool to close, safe after fork
            network_backend=_GuardedBackend(access),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        try:
            response = await self._pool.handle_async_request(core)
        except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError) as exc:
            raise _mapped(exc) from exc
        except httpcore.UnsupportedProtocol as exc:
            raise _mapped(exc) from exc
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Body(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


_context: ssl.SSLContext | None = None


def _ssl_context() -> ssl.SSLContext:
    """One verifying TLS context for every download (loading the CA bundle costs milliseconds)."""
    global _context
    if _context is None:
        _context = httpx.create_ssl_context()
    return _context


#: this event loop's guarded pools, one per URLAccess (a few at most in practice); the
#: resolver is keyed by identity (the pool holds it, so its id is not reused meanwhile).
_POOLS: RunVar[dict[tuple[object, ...], _GuardedTransport]] = RunVar("mmstream_download_pools")
_MAX_POOLS = 16


def guarded_transport(access: URLAccess) -> httpx.AsyncBaseTransport:
    """The running event loop's guarded transport for ``access`` (created on first use)."""
    try:
        pools = _POOLS.get()
    except LookupError:
        pools = {}
        _POOLS.set(pools)
    key = (access.allow_private, access.allow, id(access.resolver))
    pool = pools.get(key)
    if pool is None:
        if len(pools) >= _MAX_POOLS:  # they hold no idle connection: dropping one is free
            pools.pop(next(iter(pools)))
        pool = pools[key] = _GuardedTransport(access)
    return pool


# --- one download ---------------------------------------------------------------------


def _same_host(url: str, host: str) -> Denied | None:
    """Refuse a URL whose host httpx reads differently from the check (a parser trick)."""
    try:
        seen = httpx.URL(url).host
    except httpx.InvalidURL:
        return Denied("invalid", "the URL cannot be parsed")
    if seen.rstrip(".").lower() != host.rstrip(".").lower():
        return Denied("ambiguous", f"its host reads as {host!r} or {seen!r} by turns")
    return None


async def _check_resolved(url: str, host: str, access: URLAccess) -> Denied | None:
    """For a transport that connects by itself: every address of ``host`` must be allowed."""
    if access.admits_host(host) or literal_address(host) is not None or is_localhost(host):
        return None  # the name is listed, or the literal was checked already
    port = urlsplit(url).port or (443 if url.lower().startswith("https") else 80)
    for address in await resolve(host, port, access):
        denied = check_address(host, address, access)
        if denied is not None:
            return denied
    return None


async def download(
    url: str,
    *,
    access: URLAccess,
    max_bytes: int,
    timeout: float,  # noqa: ASYNC109 - the policy's fetch_timeout, applied with fail_after
    fail: Callable[[str], InvalidRequestError],
    forbidden: Callable[[Denied, str], ForbiddenURLError],
    accept: str = "image/*",
    accepted: tuple[str, ...] = ("image/",),
    transport: httpx.AsyncBaseTransport | None = None,
) -> bytes:
    """Download ``url`` under the address rules: bounded in size and time, redirects checked.

    Args:
        url: an http(s) URL.
        access: where downloads may go.
        max_bytes: the most bytes read.
        timeout: seconds for the whole download, redirects included.
        fail: makes the error for a failed download from its reason (says which URL).
        forbidden: makes the error for a refused URL (the refusal, the URL refused).
        accept: the ``Accept`` header.
        accepted: content-type prefixes taken (besides ``application/octet-stream``).
        transport: send through this instead of the guarded pool (the Transport's
            own ``http_transport``): addresses are then checked before the request.

    Returns:
        The body.

    Raises:
        ForbiddenURLError: a hop's URL or address is refused (nothing is sent there).
        InvalidRequestError: the download failed (``fail``'s error).
    """
    guarded = transport is None
    try:
        with anyio.fail_after(timeout):
            for hop in range(MAX_REDIRECTS + 1):
                try:
                    host, denied = check_url(url, access)
                except ValueError:
                    if hop == 0:
                        raise fail("is not an http(s) URL with a host") from None
                    raise fail(f"redirects to a non-http URL ({redact_url(url)})") from None
                if denied is None:
                    denied = _same_host(url, host)
                if denied is None and not guarded:
                    denied = await _check_resolved(url, host, access)
                if denied is not None:
                    raise forbidden(denied, url)
                request = httpx.Request(
                    "GET", url, headers={"accept": accept, "user-agent": _USER_AGENT}
                )
                request.extensions["timeout"] = httpx.Timeout(timeout).as_dict()
                sender = guarded_transport(access) if transport is None else transport
                try:
                    response = await sender.handle_async_request(request)
                except _Refused as exc:
                    raise forbidden(exc.denied, url) from None
                body = response.aiter_bytes()
                try:
                    location = response.headers.get("location")
                    if response.is_redirect and location:
                        url = urljoin(url, location)
                        continue
                    return await _read(response, body, fail, max_bytes, accepted)
                finally:
                    await _end(response, body)
            raise fail(f"redirects more than {MAX_REDIRECTS} times")
    except TimeoutError as exc:
        raise fail(
            f"could not be downloaded within {timeout:g} s; download it yourself or raise "
            "fetch_timeout in the image policy"
        ) from exc
    except OSError as exc:  # a name that does not resolve, before the request
        raise fail(f"could not be downloaded (its host does not resolve: {exc})") from exc
    except httpx.HTTPError as exc:
        raise fail(f"could not be downloaded ({type(exc).__name__}: {exc})") from exc


async def _read(
    response: httpx.Response,
    body: AsyncIterator[bytes],
    fail: Callable[[str], MMStreamError],
    limit: int,
    accepted: tuple[str, ...],
) -> bytes:
    if response.status_code != 200:
        raise fail(f"could not be downloaded: the server answered HTTP {response.status_code}")
    content_type = response.headers.get("content-type", "").partition(";")[0].strip().lower()
    if content_type and not (
        content_type.startswith(accepted)
        or content_type in ("application/octet-stream", "binary/octet-stream")
    ):
        raise fail(f"is not an image: the server sent {content_type}")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise fail(f"is {int(declared)} bytes, over the download limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in body:
        size += len(chunk)
        if size > limit:
            raise fail(f"is over the download limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _end(response: httpx.Response, body: AsyncIterator[bytes]) -> None:
    """Close the response, then end httpx's nested body generators (trio warns otherwise).

    httpx never closes the async generators it reads a body through; once the
    response is closed, one more step ends them all (as the transport does).
    """
    with anyio.CancelScope(shield=True):
        await response.aclose()
        try:
            await body.__anext__()
            await body.aclose()  # type: ignore[attr-defined]
        except Exception:
            pass
