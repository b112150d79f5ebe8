"""Image downloads end to end, on loopback only: refused URLs never reach a server.

Two loopback image servers stand in for the two sides: ``inside`` on 127.0.0.1
(a loopback address, refused by default: the stand-in for anything inside the
server's network) and ``outside`` on 127.0.0.2, which the tests' ``URLAccess``
lists, the stand-in for a public host. A resolver the test controls maps
made-up names to those two addresses (``outside.test``, ``inside.test``, a name
whose answer changes between lookups, one with both answers); no name reaches
the system resolver and no packet leaves loopback, even if the code under test
is wrong. Each case counts, on the server side, the connections the refused
server received: none. Every case runs on asyncio and trio, and through the
blocking API on both of its backends. The image's provider is Ollama (it takes
inline images only, so mmstream downloads) on the loopback test server.
"""

from __future__ import annotations

import base64
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import unquote

import attrs
import httpx
import pytest

import mmstream as mm
from mmstream.providers.ollama import OLLAMA_POLICY, Ollama
from mmstream.providers.openai import OpenAI
from mmstream.testing import ALLOW_LOOPBACK, TestServer
from tests.test_images import Net, Recorder, png_routes, small_png


class ImageHost:
    """A loopback HTTP server for images that counts the connections it accepts."""

    def __init__(self, host: str) -> None:
        self.connections = 0
        self.requests: list[tuple[str, str]] = []  # (path, Host header)
        self.release = threading.Event()
        host_ = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                host_.requests.append((self.path, self.headers.get("host", "")))
                path, _, query = self.path.partition("?")
                if path == "/silent":  # accepts, then says nothing
                    host_.release.wait(30)
                    self.close_connection = True
                    return
                if path == "/redirect":
                    self.send_response(302)
                    self.send_header("location", unquote(query.partition("to=")[2]))
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                body = small_png()
                self.send_response(200)
                self.send_header("content-type", "image/png")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self) -> tuple[socket.socket, Any]:
                accepted = super().get_request()
                host_.connections += 1
                return accepted

        self._server = Server((host, 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> ImageHost:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@attrs.define
class FakeDNS:
    """The resolver these tests control: made-up names to loopback addresses, nothing else."""

    answers: dict[str, list[list[str]]]
    asked: list[str] = attrs.field(factory=list)

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.asked.append(host)
        queue = self.answers.get(host)
        if not queue:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} is not a test name")
        return queue.pop(0) if len(queue) > 1 else queue[0]


@pytest.fixture
def inside() -> Iterator[ImageHost]:
    with ImageHost("127.0.0.1") as host:
        yield host


@pytest.fixture
def outside() -> Iterator[ImageHost]:
    with ImageHost("127.0.0.2") as host:
        yield host


@pytest.fixture
def provider_server() -> Iterator[TestServer]:
    with TestServer.start_in_thread() as server:
        yield server


def dns() -> FakeDNS:
    return FakeDNS(
        {
            "outside.test": [["127.0.0.2"]],
            "inside.test": [["127.0.0.1"]],
            "rebind.test": [["127.0.0.2"], ["127.0.0.1"]],  # checked once, then changes
            "rebind-first.test": [["127.0.0.1"], ["127.0.0.2"]],
            "both.test": [["127.0.0.1", "127.0.0.2"]],
        }
    )


def access(resolver: FakeDNS, **kwargs: Any) -> mm.URLAccess:
    """127.0.0.2 stands in for the public internet; 127.0.0.1 stays refused."""
    return mm.URLAccess(allow=["127.0.0.2", *kwargs.pop("allow", [])], resolver=resolver, **kwargs)


def call(mode: str, provider: Any, url: str, **options: Any) -> mm.CompletionResponse:
    """One ``complete`` with the image at ``url``, async (``mode`` a backend) or blocking."""
    doc = mm.ImageDocument(image_url=url)
    if mode in ("sync-asyncio", "sync-trio"):
        backend: Literal["asyncio", "trio"] = "trio" if mode == "sync-trio" else "asyncio"
        with mm.MultiModalLLM(provider, sync_backend=backend) as llm:
            return llm.complete("Describe", [doc], **options)
    import anyio

    async def run() -> mm.CompletionResponse:
        async with mm.MultiModalLLM(provider) as llm:
            return await llm.acomplete("Describe", [doc], **options)

    return anyio.run(run, backend=mode)


MODES = ["asyncio", "trio", "sync-asyncio", "sync-trio"]


def ollama(server: TestServer) -> Ollama:
    return Ollama(model="llava", base_url=server.url(), api_key=None)


def images_received(server: TestServer) -> list[bytes]:
    [request] = [r for r in server.requests if r.api == "ollama"]
    return [base64.b64decode(text) for text in request.json["messages"][0]["images"]]


# --- refused: every spelling, a name, a redirect, a changed answer -----------------------

#: (label, URL from the ports of ``inside`` and ``outside``); each carries a secret query.
REFUSED: list[tuple[str, Callable[[int, int], str]]] = [
    ("127.0.0.1", lambda i, o: f"http://127.0.0.1:{i}/img.png?sig=s3cret"),
    ("localhost", lambda i, o: f"http://localhost:{i}/img.png?sig=s3cret"),
    ("127.1", lambda i, o: f"http://127.1:{i}/img.png?sig=s3cret"),
    ("2130706433", lambda i, o: f"http://2130706433:{i}/img.png?sig=s3cret"),
    ("0x7f.1", lambda i, o: f"http://0x7f.1:{i}/img.png?sig=s3cret"),
    ("mapped", lambda i, o: f"http://[::ffff:127.0.0.1]:{i}/img.png?sig=s3cret"),
    ("name", lambda i, o: f"http://inside.test:{i}/img.png?sig=s3cret"),
    ("first answer", lambda i, o: f"http://rebind-first.test:{i}/img.png?sig=s3cret"),
    (
        "redirect",
        lambda i, o: f"http://outside.test:{o}/redirect?to=http://127.0.0.1:{i}/img.png?sig=s3cret",
    ),
    (
        "redirect to a name",
        lambda i, o: f"http://127.0.0.2:{o}/redirect?to=http://inside.test:{i}/i.png?sig=s3cret",
    ),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("label", "make_url"), REFUSED, ids=[label for label, _ in REFUSED])
def test_a_refused_url_never_reaches_its_server(
    mode: str,
    label: str,
    make_url: Callable[[int, int], str],
    inside: ImageHost,
    outside: ImageHost,
    provider_server: TestServer,
) -> None:
    url = make_url(inside.port, outside.port)
    with pytest.raises(mm.ForbiddenURLError) as info:
        call(mode, ollama(provider_server), url, url_access=access(dns()))
    error = info.value
    assert error.rule == "loopback"
    assert error.image_index == 0
    assert error.provider == "ollama"
    assert "s3cret" not in str(error) and "s3cret" not in error.url
    assert "url_access=URLAccess(allow=" in str(error)
    assert inside.connections == 0  # nothing reached the refused server
    assert [r for r in provider_server.requests if r.api] == []  # nor the provider
    assert outside.connections == (1 if label.startswith("redirect") else 0)


@pytest.mark.parametrize("mode", MODES)
def test_a_name_is_resolved_once_and_the_checked_address_is_the_one_connected(
    mode: str, inside: ImageHost, outside: ImageHost, provider_server: TestServer
) -> None:
    resolver = dns()
    url = f"http://rebind.test:{outside.port}/img.png"  # 127.0.0.2, then 127.0.0.1
    call(mode, ollama(provider_server), url, url_access=access(resolver))
    assert resolver.asked == ["rebind.test"]
    assert images_received(provider_server) == [small_png()]
    assert (outside.connections, inside.connections) == (1, 0)
    assert outside.requests == [("/img.png", f"rebind.test:{outside.port}")]  # its own Host


@pytest.mark.parametrize("mode", MODES)
def test_a_name_with_a_refused_and_an_allowed_answer_connects_only_to_the_allowed(
    mode: str, inside: ImageHost, outside: ImageHost, provider_server: TestServer
) -> None:
    url = f"http://both.test:{outside.port}/img.png"
    call(mode, ollama(provider_server), url, url_access=access(dns()))
    assert images_received(provider_server) == [small_png()]
    assert (outside.connections, inside.connections) == (1, 0)


@pytest.mark.parametrize("mode", MODES)
def test_each_hop_is_resolved_and_checked_again(
    mode: str, inside: ImageHost, outside: ImageHost, provider_server: TestServer
) -> None:
    resolver = dns()
    again = f"http://rebind.test:{outside.port}/img.png"
    url = f"http://rebind.test:{outside.port}/redirect?to={again}"
    with pytest.raises(mm.ForbiddenURLError, match=r"redirect to http://rebind\.test"):
        call(mode, ollama(provider_server), url, url_access=access(resolver))
    assert resolver.asked == ["rebind.test", "rebind.test"]
    assert (outside.connections, inside.connections) == (1, 0)


# --- the opt-ins --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_private_addresses_can_be_allowed_per_call(
    mode: str, inside: ImageHost, provider_server: TestServer
) -> None:
    url = f"http://localhost:{inside.port}/img.png"
    call(mode, ollama(provider_server), url, url_access=mm.URLAccess(allow_private=True))
    assert images_received(provider_server) == [small_png()]
    assert inside.connections == 1


@pytest.mark.parametrize("mode", MODES)
def test_an_image_policy_can_allow_hosts_and_a_call_can_refuse_them_again(
    mode: str, inside: ImageHost, provider_server: TestServer
) -> None:
    policy = attrs.evolve(OLLAMA_POLICY, url_access=mm.URLAccess(allow=["127.0.0.1"]))
    provider = Ollama(
        model="llava", base_url=provider_server.url(), api_key=None, extra={"image_policy": policy}
    )
    url = f"http://127.0.0.1:{inside.port}/img.png"
    call(mode, provider, url)
    assert inside.connections == 1
    with pytest.raises(mm.ForbiddenURLError, match="loopback"):
        call(mode, provider, url, url_access=mm.URLAccess())  # the call's option wins
    assert inside.connections == 1


@pytest.mark.parametrize("mode", ["asyncio", "trio"])
def test_the_allowlist_admits_only_what_it_lists(
    mode: str, inside: ImageHost, outside: ImageHost, provider_server: TestServer
) -> None:
    only_outside = mm.URLAccess(allow=["127.0.0.2"])
    provider = ollama(provider_server)
    with pytest.raises(mm.ForbiddenURLError):
        call(mode, provider, f"http://127.0.0.1:{inside.port}/x.png", url_access=only_outside)
    call(mode, provider, f"http://127.0.0.2:{outside.port}/x.png", url_access=only_outside)
    assert (inside.connections, outside.connections) == (0, 1)


@pytest.mark.parametrize("mode", ["asyncio", "trio"])
def test_credentials_in_an_image_url_are_refused(
    mode: str, outside: ImageHost, provider_server: TestServer
) -> None:
    url = f"http://user:hunter2@127.0.0.2:{outside.port}/img.png"
    with pytest.raises(mm.ForbiddenURLError) as info:
        call(mode, ollama(provider_server), url, url_access=access(dns()))
    assert info.value.rule == "credentials"
    assert "hunter2" not in str(info.value)
    assert outside.connections == 0


@pytest.mark.parametrize("mode", ["asyncio", "trio"])
def test_a_url_access_option_of_the_wrong_type_is_a_typed_error(
    mode: str, provider_server: TestServer
) -> None:
    with pytest.raises(mm.InvalidRequestError, match="must be a URLAccess"):
        call(mode, ollama(provider_server), "http://127.0.0.2/x.png", url_access=True)


# --- providers that fetch URLs themselves: untouched --------------------------------------


@pytest.mark.parametrize("mode", ["asyncio", "sync-trio"])
def test_urls_a_provider_fetches_itself_pass_through_unchecked(
    mode: str, inside: ImageHost, provider_server: TestServer
) -> None:
    url = f"http://127.0.0.1:{inside.port}/img.png?size=large"
    provider = OpenAI(model="gpt-4o-mini", api_key="sk-test", base_url=provider_server.url("/v1"))
    call(mode, provider, url)
    [request] = [r for r in provider_server.requests if r.api == "openai"]
    parts = request.json["messages"][0]["content"]
    assert parts[0] == {"type": "image_url", "image_url": {"url": url}}
    assert inside.connections == 0  # mmstream fetched nothing


# --- a transport of the user's own: addresses are checked before the request --------------


@pytest.mark.parametrize(
    ("url", "fetched"),
    [
        ("http://inside.test/pic.png", False),
        ("http://127.0.0.1/pic.png", False),
        ("http://[::1]/pic.png", False),
        ("http://outside.test:1:2/pic.png", False),  # parsers disagree: refused
        ("http://outside.test/pic.png", True),
    ],
)
async def test_through_the_users_own_transport_names_are_checked_first(
    url: str, fetched: bool
) -> None:
    net = Net(png_routes())
    llm = mm.MultiModalLLM(
        Recorder(policy=OLLAMA_POLICY),
        transport=mm.Transport(http_transport=httpx.MockTransport(net)),
    )
    async with llm:
        options = {"url_access": access(dns())}
        if fetched:
            await llm.acomplete("x", [mm.ImageDocument(image_url=url)], **options)
        else:
            with pytest.raises(mm.ForbiddenURLError):
                await llm.acomplete("x", [mm.ImageDocument(image_url=url)], **options)
    assert net.fetched == ([url] if fetched else [])


# --- the call's total timeout covers its downloads --------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_silent_image_server_is_bounded_by_the_calls_total_timeout(
    mode: str, inside: ImageHost, provider_server: TestServer
) -> None:
    url = f"http://127.0.0.1:{inside.port}/silent"
    started = time.monotonic()
    with pytest.raises(mm.APITimeoutError) as info:
        call(
            mode,
            ollama(provider_server),
            url,
            url_access=ALLOW_LOOPBACK,
            timeout=mm.Timeouts(total=0.5),
        )
    assert info.value.kind == "total"
    assert "images" in str(info.value)
    assert time.monotonic() - started < OLLAMA_POLICY.fetch_timeout / 2  # not the fetch timeout
    assert [r for r in provider_server.requests if r.api] == []
    assert inside.connections == 1


# --- threads: small images stay on the event loop ----------------------------------------


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_hundred_streams_with_a_tiny_png_leave_at_most_a_couple_of_threads(backend: str) -> None:
    code = textwrap.dedent(
        f"""
        import base64, threading, anyio, mmstream as mm
        from mmstream.providers.openai import OpenAI
        from mmstream.testing import TestServer

        PNG = base64.b64decode({base64.b64encode(small_png()).decode()!r})

        async def main():
            async with TestServer() as server:
                provider = OpenAI(model="gpt-4o-mini", api_key="k", base_url=server.url("/v1"))
                async with mm.MultiModalLLM(provider) as llm:
                    before = threading.active_count()

                    async def one():
                        block = mm.ImageBlock(image=PNG)
                        message = mm.ChatMessage("user", blocks=[mm.TextBlock("hi"), block])
                        async with llm.astream_chat([message]) as stream:
                            async for _ in stream:
                                pass

                    async with anyio.create_task_group() as tg:
                        for _ in range(100):
                            tg.start_soon(one)
                    print(threading.active_count() - before, len(server.requests))

        anyio.run(main, backend={backend!r})
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout.split()
    threads, requests = int(out[0]), int(out[1])
    assert requests == 100
    assert threads <= 2  # the one Pillow import, not a thread per image
