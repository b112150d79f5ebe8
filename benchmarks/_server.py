"""A minimal, fast HTTP/1.1 server streaming OpenAI-format SSE, run in its own process.

It must not be the bottleneck: every answer is rendered to bytes once (and
cached), and sent with one ``transport.write``. It speaks just enough HTTP/1.1
for the clients measured here (``Content-Length`` or chunked request bodies,
keep-alive) and counts TCP connections, requests and request bytes, and
notes when the first and the last byte of each request arrived
(``time.perf_counter()``, which is CLOCK_MONOTONIC on Linux, so the client
process can compare it with its own clock).

A second port answers control commands, one line each: ``stats`` (a JSON
line) and ``reset``. Its connections are not counted.

Run alone: ``python benchmarks/_server.py`` prints the two ports and serves
until killed.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import re
import socket
import sys
import time
from typing import Any

from _workload import parse_model, render_response

__all__ = ["ServerProcess", "control"]

_MODEL = re.compile(rb'"model"\s*:\s*"([^"]+)"')


class _Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.connections = 0
        self.open = 0
        self.requests = 0
        self.bytes_received = 0
        self.first_byte: list[float] = []  # per request, last 1,000
        self.last_byte: list[float] = []

    def as_dict(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "open": self.open,
            "requests": self.requests,
            "bytes_received": self.bytes_received,
            "first_byte": self.first_byte[-1] if self.first_byte else None,
            "last_byte": self.last_byte[-1] if self.last_byte else None,
        }


STATS = _Stats()
_RESPONSES: dict[str, bytes] = {}


def _response(model: str) -> bytes:
    cached = _RESPONSES.get(model)
    if cached is None:
        n, framing = parse_model(model)
        cached = _RESPONSES[model] = render_response(n, framing)
    return cached


def _error(status: str, message: str) -> bytes:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode()
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body


class _HTTP(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.head_end = -1
        self.need = -1  # bytes of head + body, once known; -2: chunked body
        self.started = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        STATS.connections += 1
        STATS.open += 1

    def connection_lost(self, exc: Exception | None) -> None:
        STATS.open -= 1

    def data_received(self, data: bytes) -> None:
        if not self.buffer:
            self.started = time.perf_counter()
        STATS.bytes_received += len(data)
        self.buffer += data
        while self._step():
            pass

    def _step(self) -> bool:
        buffer = self.buffer
        if self.head_end < 0:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return False
            self.head_end = end + 4
            head = bytes(buffer[:end]).lower()
            match = re.search(rb"\r\ncontent-length:\s*(\d+)", head)
            if match:
                self.need = self.head_end + int(match.group(1))
            elif b"transfer-encoding: chunked" in head:
                self.need = -2
            else:
                self.need = self.head_end
        if self.need == -2:
            end = buffer.find(b"\r\n0\r\n\r\n", self.head_end)
            if end < 0:
                return False
            total = end + 7
        else:
            if len(buffer) < self.need:
                return False
            total = self.need
        body = bytes(buffer[self.head_end : total])
        del buffer[:total]
        self.head_end = -1
        STATS.requests += 1
        STATS.first_byte.append(self.started)
        STATS.last_byte.append(time.perf_counter())
        del STATS.first_byte[:-1000], STATS.last_byte[:-1000]
        self.started = time.perf_counter()
        assert self.transport is not None
        match = _MODEL.search(body)
        try:
            response = _response(match.group(1).decode()) if match else None
        except ValueError as exc:
            response = _error("400 Bad Request", str(exc))
        if response is None:
            response = _error("400 Bad Request", "no bench:N:framing model in the body")
        self.transport.write(response)
        return bool(buffer)


class _Control(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        assert self.transport is not None
        while b"\n" in self.buffer:
            line, _, self.buffer = self.buffer.partition(b"\n")
            command = line.strip()
            if command == b"stats":
                self.transport.write(json.dumps(STATS.as_dict()).encode() + b"\n")
            elif command == b"reset":
                STATS.reset()
                self.transport.write(b"ok\n")
            else:
                self.transport.write(b"error\n")


async def _serve(ready: Any) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_HTTP, "127.0.0.1", 0, backlog=4096)
    control_server = await loop.create_server(_Control, "127.0.0.1", 0)
    ports = (
        server.sockets[0].getsockname()[1],
        control_server.sockets[0].getsockname()[1],
    )
    ready(ports)
    await asyncio.Event().wait()


def _main(pipe: Any) -> None:
    def ready(ports: tuple[int, int]) -> None:
        pipe.send(ports)
        pipe.close()

    asyncio.run(_serve(ready))


class ServerProcess:
    """The server in a child process (``multiprocessing``, spawned): ``port``, ``control_port``."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        self.process = context.Process(target=_main, args=(child,), daemon=True)
        self.process.start()
        if not parent.poll(30):
            self.process.kill()
            raise RuntimeError("the benchmark server did not start")
        self.port, self.control_port = parent.recv()

    @property
    def base_url(self) -> str:
        """The OpenAI-style API root."""
        return f"http://127.0.0.1:{self.port}/v1"

    def stats(self) -> dict[str, Any]:
        """The server's counters."""
        return control(self.control_port, "stats")  # type: ignore[no-any-return]

    def reset(self) -> None:
        """Zero the counters."""
        control(self.control_port, "reset")

    def stop(self) -> None:
        """End the server process."""
        self.process.kill()
        self.process.join(5)


def control(port: int, command: str) -> Any:
    """Send one control command; ``stats`` returns a dict."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(command.encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            more = sock.recv(65536)
            if not more:
                break
            data += more
    text = data.decode().strip()
    return json.loads(text) if command == "stats" else text


if __name__ == "__main__":
    server = ServerProcess()
    print(f"port {server.port} control {server.control_port}", flush=True)
    try:
        server.process.join()
    except KeyboardInterrupt:
        server.stop()
        sys.exit(0)
