"""The loopback HTTP/1.1 server: connections, request parsing, recording, pacing, faults.

A small hand-written HTTP/1.1 server on an anyio TCP listener, so it runs on
asyncio and trio alike. It keeps connections alive (clients reuse them), frames
streams with chunked transfer encoding, and watches the receive side while it
answers, so a client that leaves mid-stream is noticed at once.

It must not be the bottleneck of a benchmark: each answer is rendered to bytes
before the first write, and without a pause the whole body goes out in a few
large writes.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from typing import Any, final
from urllib.parse import parse_qsl, urlsplit

import anyio
import anyio.abc
from anyio.abc import SocketAttribute
from anyio.from_thread import BlockingPortal, start_blocking_portal
from attrs import field, frozen

from mmstream.testing import _http
from mmstream.testing._errors import auth_problem
from mmstream.testing._formats import (
    API,
    Answer,
    Route,
    error_body,
    html_error_body,
    other_answer,
    prompt_of,
    render_json,
    route,
)
from mmstream.testing._script import IMAGE_TOKENS, Fault, Script, answer_text, split_text

__all__ = ["Disconnect", "RecordedRequest", "TestServer"]

#: streamed answers of at least this many events are rendered once and reused ...
_CACHE_FROM = 256
#: ... for this many distinct requests.
_CACHE_SIZE = 16


@final
@frozen(kw_only=True)
class RecordedRequest:
    """One request the server received, as it arrived, with what it answered.

    Attributes:
        method, path, query: the request line (``query`` last value wins;
            ``raw_query`` keeps the string).
        headers: lower-cased names; repeated headers joined with ``", "``.
        body: the raw body bytes; ``json`` the parsed body (``None`` if not JSON).
        time: ``time.time()`` on arrival; ``monotonic``: ``time.monotonic()``.
        connection_id: which TCP connection carried it (1, 2, ...).
        api: ``"openai"``, ``"azure"``, ``"anthropic"``, ``"gemini"``,
            ``"ollama"``, or ``None`` for a path no provider serves.
        status: the status answered (``None`` for a reset before the response).
        stream: whether the answer was streamed.
        answer: the answer's text as sent (only the events before the cut for
            ``drop`` and ``error_event`` faults), ``""`` for errors.
        faults: the faults applied (``fault``: the first one, or ``None``).
        request_id: the request id header sent back.
    """

    method: str
    path: str
    query: Mapping[str, str]
    raw_query: str
    headers: Mapping[str, str] = field(repr=False)
    body: bytes = field(repr=False)
    json: Any = field(repr=False)
    time: float
    monotonic: float
    connection_id: int
    api: API | None
    status: int | None
    stream: bool
    answer: str = field(repr=False)
    faults: tuple[Fault, ...]
    request_id: str | None

    @property
    def fault(self) -> Fault | None:
        """The (first) fault applied to this request, if any."""
        return self.faults[0] if self.faults else None


@final
@frozen(kw_only=True)
class Disconnect:
    """A client that closed (or reset) its connection while the server was answering.

    Attributes:
        connection_id: the connection that closed.
        request: the request being answered.
        chunks_sent: content events written before the client left.
        monotonic: ``time.monotonic()`` when the server noticed.
    """

    connection_id: int
    request: RecordedRequest
    chunks_sent: int
    monotonic: float


@frozen
class _Queued:
    what: Script | tuple[Fault, ...]
    path: str | None
    api: str | None

    def matches(self, path: str, api: str | None) -> bool:
        if self.api is not None and self.api != api:
            return False
        return self.path is None or self.path in path


@final
class TestServer:
    """A loopback server speaking OpenAI, Azure OpenAI, Anthropic, Gemini and Ollama.

    Use it as an async context manager (asyncio or trio), from a thread
    ([`start_in_thread`][mmstream.testing.TestServer.start_in_thread]), from
    pytest (the ``mmstream_server`` fixture of ``mmstream.testing.pytest_plugin``)
    or from the shell (``python -m mmstream.testing``). It records every request,
    counts connections, notices clients that leave mid-stream, and misbehaves on
    demand.

    Args:
        script: the default answer shape for every request (see
            [`Script`][mmstream.testing.Script]).
        api_key: the only key accepted; ``None`` accepts any non-empty key.
        require_auth: ``False`` skips the providers' key and header checks.
        host: the address to listen on (loopback by default).
        port: the port; 0 picks a free one.

    Example::

        async with TestServer() as server:
            url = server.base_url + "/v1/chat/completions"
            server.inject(Fault.http_status(429, retry_after=1))
    """

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(
        self,
        *,
        script: Script | None = None,
        api_key: str | None = None,
        require_auth: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.script = script or Script()
        self.api_key = api_key
        self.require_auth = require_auth
        self.host = host
        self.port = port
        self.requests: list[RecordedRequest] = []
        self.disconnects: list[Disconnect] = []
        #: unexpected exceptions raised while handling a connection (a server bug).
        self.errors: list[Exception] = []
        self.connections_opened = 0
        self.connections_open = 0
        self._queue: list[_Queued] = []
        self._conn_ids = itertools.count(1)
        self._serial = itertools.count(1)
        self._changed: anyio.Event | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._portal: BlockingPortal | None = None
        self._lock = threading.Lock()
        self._cache: dict[Hashable, tuple[str, str, list[_http.Step], _http.End]] = {}
        self._rules: list[tuple[Callable[[int, str], bool], tuple[Fault, ...]]] = []

    def __repr__(self) -> str:
        return (
            f"TestServer(base_url={self.base_url!r}, requests={len(self.requests)}, "
            f"connections_open={self.connections_open})"
        )

    # ------------------------------------------------------------------ public API

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``, without a trailing slash or version path."""
        return f"http://{self.host}:{self.port}"

    def url(self, path: str = "") -> str:
        """``base_url`` joined with ``path`` (``server.url("/v1")`` for OpenAI's base URL)."""
        return self.base_url + path

    def enqueue(self, script: Script, *, path: str | None = None, api: str | None = None) -> None:
        """Answer the next request matching ``path``/``api`` with ``script`` laid over the default.

        ``path`` matches when it is a substring of the request path; ``api`` is
        ``"openai"``, ``"azure"``, ``"anthropic"``, ``"gemini"`` or ``"ollama"``.
        Queued scripts and faults are consumed in order.
        """
        with self._lock:
            self._queue.append(_Queued(script, path, api))

    def inject(
        self, *faults: Fault, path: str | None = None, api: str | None = None, times: int = 1
    ) -> None:
        """Apply ``faults`` (together) to the next ``times`` requests matching ``path``/``api``."""
        if not faults:
            raise ValueError("inject() needs at least one Fault")
        with self._lock:
            for _ in range(times):
                self._queue.append(_Queued(tuple(faults), path, api))

    def inject_when(self, predicate: Callable[[int, str], bool], *faults: Fault) -> None:
        """Apply ``faults`` to every request for which ``predicate(serial, prompt)`` holds.

        ``serial`` counts the requests the server received (1, 2, ...) and
        ``prompt`` is the text of the request's last user message, so a rule can
        fault the tenth request, or every request about one prompt, whatever the
        order the requests arrive in. Faults queued with
        [`inject`][mmstream.testing.TestServer.inject] come
        first; the ``x-mmstream-fault`` header wins over both.
        [`clear`][mmstream.testing.TestServer.clear]
        drops the rules.
        """
        if not faults:
            raise ValueError("inject_when() needs at least one Fault")
        with self._lock:
            self._rules.append((predicate, tuple(faults)))

    def clear(self) -> None:
        """Forget recorded requests and disconnects, and drop queued scripts and faults."""
        with self._lock:
            self.requests.clear()
            self.disconnects.clear()
            self._queue.clear()
            self._rules.clear()

    @property
    def pending(self) -> int:
        """How many queued scripts and faults are still waiting for a request."""
        return len(self._queue)

    async def wait_until(
        self,
        predicate: Callable[[TestServer], bool],
        timeout: float = 5.0,  # noqa: ASYNC109 - a test helper's deadline, like trio.testing's
    ) -> None:
        """Wait until ``predicate(server)`` holds (checked at every request and connection change).

        Raises:
            TimeoutError: it did not hold within ``timeout`` seconds.
        """
        with anyio.fail_after(timeout):
            while not predicate(self):
                assert self._changed is not None, "the server is not running"
                await self._changed.wait()

    async def wait_disconnect(
        self,
        timeout: float = 5.0,  # noqa: ASYNC109 - a test helper's deadline
        *,
        count: int = 1,
    ) -> Disconnect:
        """Wait until ``count`` clients left mid-answer; return the ``count``-th disconnect.

        Raises:
            TimeoutError: fewer disconnects happened within ``timeout`` seconds.
        """
        await self.wait_until(lambda s: len(s.disconnects) >= count, timeout)
        return self.disconnects[count - 1]

    def wait_disconnect_blocking(self, timeout: float = 5.0, *, count: int = 1) -> Disconnect:
        """`wait_disconnect`, for a server started with `start_in_thread` (from its thread).

        See [`wait_disconnect`][mmstream.testing.TestServer.wait_disconnect] and
        [`start_in_thread`][mmstream.testing.TestServer.start_in_thread].
        """
        if self._portal is None:
            raise RuntimeError("wait_disconnect_blocking() needs a server from start_in_thread()")
        return self._portal.call(lambda: self.wait_disconnect(timeout, count=count))

    async def __aenter__(self) -> TestServer:
        """Start listening (on a free port unless one was given) and serving."""
        stack = contextlib.AsyncExitStack()
        try:
            listener = await anyio.create_tcp_listener(local_host=self.host, local_port=self.port)
            await stack.enter_async_context(listener)
            self.port = listener.extra(SocketAttribute.local_port)
            task_group = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(task_group.cancel_scope.cancel)
            self._changed = anyio.Event()
            task_group.start_soon(listener.serve, self._handle, task_group)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Stop serving and close every connection.

        The body's own exception is not passed into the server's task group,
        so it propagates as it is (not wrapped in an exception group on trio).
        """
        stack, self._stack = self._stack, None
        assert stack is not None
        await stack.aclose()

    async def serve_forever(self, on_ready: Callable[[TestServer], object] | None = None) -> None:
        """Serve until cancelled (the CLI); ``on_ready`` is called once listening."""
        async with self:
            if on_ready is not None:
                on_ready(self)
            await anyio.sleep_forever()

    @classmethod
    @contextlib.contextmanager
    def start_in_thread(cls, *, backend: str = "asyncio", **kwargs: Any) -> Iterator[TestServer]:
        """Run a server on its own event loop in a background thread, for synchronous tests.

        Args:
            backend: ``"asyncio"`` or ``"trio"``.
            kwargs: [`TestServer`][mmstream.testing.TestServer] arguments.
        """
        server = cls(**kwargs)
        with start_blocking_portal(backend) as portal, portal.wrap_async_context_manager(server):
            server._portal = portal
            try:
                yield server
            finally:
                server._portal = None

    # ------------------------------------------------------------------ internals

    def _notify(self) -> None:
        event = self._changed
        if event is not None:
            self._changed = anyio.Event()
            event.set()

    def _take(self, path: str, api: str | None) -> tuple[Script | None, tuple[Fault, ...]]:
        """Consume the first queued script and the first queued faults matching this request."""
        script: Script | None = None
        faults: tuple[Fault, ...] = ()
        with self._lock:
            used: list[int] = []
            for index, item in enumerate(self._queue):
                if not item.matches(path, api):
                    continue
                if isinstance(item.what, Script):
                    if script is None:
                        script = item.what
                        used.append(index)
                elif not faults:
                    faults = item.what
                    used.append(index)
                if script is not None and faults:
                    break
            for index in reversed(used):
                del self._queue[index]
        return script, faults

    def _ruled(self, serial: int, api: API, body: Any) -> tuple[Fault, ...]:
        """The faults of the first rule (``inject_when``) that holds for this request."""
        prompt = prompt_of(api, body)[0]
        with self._lock:
            rules = list(self._rules)
        for predicate, faults in rules:
            if predicate(serial, prompt):
                return faults
        return ()

    async def _handle(self, stream: anyio.abc.SocketStream) -> None:
        conn = _http.Connection(stream, next(self._conn_ids))
        self.connections_opened += 1
        self.connections_open += 1
        self._notify()
        try:
            while True:
                try:
                    request = await conn.read_request()
                except _http.BadRequest as exc:
                    body = json.dumps({"error": str(exc)}).encode()
                    await stream.send(
                        _http.response_head(400, "application/json", len(body), close=True) + body
                    )
                    break
                if request is None:
                    break
                end = await self._answer(conn, *request)
                if end != "finish":
                    if end == "reset":
                        _http.abort(stream)
                    break
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError):
            pass
        except Exception as exc:  # a bug here must not take the whole server (and test) down
            self.errors.append(exc)
        finally:
            self.connections_open -= 1
            with anyio.CancelScope(shield=True):
                await stream.aclose()
            self._notify()

    async def _answer(
        self,
        conn: _http.Connection,
        method: str,
        target: str,
        version: str,
        headers: dict[str, str],
        body: bytes,
    ) -> _http.End:
        split = urlsplit(target)
        path = split.path
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
        parsed: Any = None
        if body:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
        found = route(method, path, query)
        api: API | None = found.api if found else None
        serial = next(self._serial)
        record: dict[str, Any] = {
            "method": method,
            "path": path,
            "query": query,
            "raw_query": split.query,
            "headers": headers,
            "body": body,
            "json": parsed,
            "time": time.time(),
            "monotonic": time.monotonic(),
            "connection_id": conn.id,
            "api": api,
            "status": None,
            "stream": False,
            "answer": "",
            "faults": (),
            "request_id": None,
        }
        if found is None:
            status, payload = other_answer(method, path)
            return await self._simple(conn, record, status, payload, close)
        request_id = _request_id(found.api, serial)
        record["request_id"] = request_id
        extra = _id_headers(found.api, request_id)

        # Who is calling, with what, and how to answer.
        problem = None
        if body and parsed is None:
            problem = (400, "The request body is not valid JSON.")
        elif self.require_auth:
            problem = auth_problem(found.api, found.deployment, headers, query, self.api_key)
        try:
            header_script = _header_value(headers, "x-mmstream-script", Script.from_dict)
            header_faults = _header_value(headers, "x-mmstream-fault", _faults_from_json)
        except (TypeError, ValueError) as exc:
            header_script, header_faults = None, None
            problem = problem or (400, f"bad x-mmstream header: {exc}")
        if problem is not None:
            status, message = problem
            payload = _error_json(found, error_body(found.api, status, message))
            return await self._simple(conn, record, status, payload, close, extra)
        queued_script, faults = self._take(path, found.api)
        if not faults and self._rules:
            faults = self._ruled(serial, found.api, parsed)
        if header_faults:
            faults = header_faults
        script = self.script.merged(queued_script).merged(header_script)
        record["faults"] = faults
        by_kind = {f.kind: f for f in faults}
        streaming = _is_streaming(found, parsed) and "not_streamed" not in by_kind
        record["stream"] = streaming

        if "reset" in by_kind or "hang_up" in by_kind:
            self._record(record)
            return "reset" if "reset" in by_kind else "close"
        if "status" in by_kind:
            fault = by_kind["status"]
            status = fault.status or 500
            fault_headers = list(extra)
            if fault.retry_after is not None:
                fault_headers.append(("retry-after", fault.retry_after))
            if fault.retry_after_ms is not None:
                fault_headers.append(("retry-after-ms", str(fault.retry_after_ms)))
            if fault.body is not None:
                payload, content_type = fault.body, "application/octet-stream"
            elif fault.html:
                payload, content_type = html_error_body(status), "text/html"
            else:
                retry = (
                    fault.retry_after if fault.retry_after and fault.retry_after.isdigit() else None
                )
                payload = _error_json(
                    found,
                    error_body(
                        found.api,
                        status,
                        fault.message,
                        error_type=fault.error_type,
                        retry_delay=retry,
                    ),
                )
                content_type = "application/json"
            stall = by_kind.get("stall")
            steps: list[_http.Step] = []
            if stall is not None and stall.after_chunks < 0:
                steps.append(("sleep", stall.seconds))
            head = _http.response_head(
                status, content_type, len(payload), close=close, extra=fault_headers
            )
            steps.append(("write", head + payload, 0))
            record["status"] = status
            rec = self._record(record)
            return await self._run(conn, rec, steps, "close" if close else "finish")
        if "wrong_content_type" in by_kind:
            fault = by_kind["wrong_content_type"]
            payload = fault.body if fault.body is not None else _PORTAL_PAGE
            record["status"] = 200
            rec = self._record(record)
            head = _http.response_head(
                200, fault.content_type, len(payload), close=close, extra=extra
            )
            return await self._run(
                conn, rec, [("write", head + payload, 0)], "close" if close else "finish"
            )

        record["status"] = 200
        stall = by_kind.get("stall")
        before: list[_http.Step] = []
        if stall is not None and (stall.after_chunks < 0 or not streaming):
            before.append(("sleep", stall.seconds))
        if not streaming:
            answer = self._compose(found, parsed, script, serial, faults)
            record["answer"] = answer.text
            payload = render_json(answer)
            head = _http.response_head(
                200, "application/json", len(payload), close=close, extra=extra
            )
            rec = self._record(record)
            return await self._run(
                conn, rec, [*before, ("write", head + payload, 0)], "close" if close else "finish"
            )

        text, content_type, body_steps, end = self._streamed(found, parsed, script, serial, faults)
        record["answer"] = text
        head = _http.response_head(200, content_type, None, close=close, extra=extra)
        first = body_steps[0] if body_steps else ("sleep", 0.0)
        if first[0] == "write":
            steps = [*before, ("write", head + first[1], first[2]), *body_steps[1:]]
        else:
            steps = [*before, ("write", head, 0), *body_steps]
        rec = self._record(record)
        return await self._run(conn, rec, steps, "close" if close and end == "finish" else end)

    def _streamed(
        self, found: Route, body: Any, script: Script, serial: int, faults: tuple[Fault, ...]
    ) -> tuple[str, str, list[_http.Step], _http.End]:
        """The streamed body as writes and sleeps; large answers are rendered once and reused.

        A cached body is reused byte for byte, ids included, by identical requests.
        """
        key: Hashable | None = None
        if not script.tool_calls:
            prompt = prompt_of(found.api, body)
            model = body.get("model") if isinstance(body, dict) else None
            options = body.get("stream_options") if isinstance(body, dict) else None
            key = (
                found.api,
                found.sse,
                found.model,
                found.deployment,
                prompt,
                repr(model),
                repr(options),
                script,
                faults,
            )
            cached = self._cache.get(key)
            if cached is not None:
                return cached
        answer = self._compose(found, body, script, serial, faults)
        plan = _http.stream_plan(answer, found.sse, script.pause, faults)
        text = answer.text
        for fault in faults:
            if fault.kind in ("drop", "error_event"):
                text = "".join(answer.pieces[: fault.after_chunks])
        result = (text, plan[0], plan[1], plan[2])
        if key is not None and len(answer.pieces) >= _CACHE_FROM:
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = result
        return result

    def _record(self, record: dict[str, Any]) -> RecordedRequest:
        rec = RecordedRequest(**record)
        self.requests.append(rec)
        self._notify()
        return rec

    def _compose(
        self,
        found: Route,
        body: Any,
        script: Script,
        serial: int,
        faults: Sequence[Fault],
    ) -> Answer:
        prompt, images = prompt_of(found.api, body)
        if script.text is not None:
            text = script.text
        elif script.tool_calls:
            text = ""
        else:
            text = answer_text(prompt, images)
        pieces = split_text(text, script.chunks, script.chunk_size) if text or script.chunks else []
        for fault in faults:
            if fault.kind == "huge_event":
                pieces.insert(min(fault.after_chunks, len(pieces)), "x" * fault.size)
        model = script.model or (body.get("model") if isinstance(body, dict) else None)
        model = model or found.model or found.deployment or "mmstream-test"
        finish = script.finish_reason or ("tool_calls" if script.tool_calls else "stop")
        input_tokens = script.input_tokens
        if input_tokens is None:
            input_tokens = len(prompt.split()) + IMAGE_TOKENS * images
        output_tokens = script.output_tokens
        if output_tokens is None:
            output_tokens = len(pieces) + len(script.tool_calls)
        include_usage = False
        if isinstance(body, dict):
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        return Answer(
            api=found.api,
            model=str(model),
            pieces=pieces,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            finish_reason=finish,
            tool_calls=tuple(script.tool_calls),
            include_usage=include_usage,
            sse=found.sse,
            request_id=_request_id(found.api, serial),
            serial=serial,
            created=int(time.time()),
        )

    async def _simple(
        self,
        conn: _http.Connection,
        record: dict[str, Any],
        status: int,
        payload: bytes,
        close: bool,
        extra: Sequence[tuple[str, str]] = (),
    ) -> _http.End:
        record["status"] = status
        rec = self._record(record)
        head = _http.response_head(
            status, "application/json", len(payload), close=close, extra=extra
        )
        return await self._run(
            conn, rec, [("write", head + payload, 0)], "close" if close else "finish"
        )

    async def _run(
        self,
        conn: _http.Connection,
        record: RecordedRequest,
        steps: list[_http.Step],
        end: _http.End,
    ) -> _http.End:
        """Carry out a response plan while watching for the client leaving."""
        stream = conn.stream
        sent = 0
        left = False

        async def watch(scope: anyio.CancelScope) -> None:
            nonlocal left
            try:
                data = await stream.receive(65536)
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                left = True
                scope.cancel()
                return
            conn.buffer += data  # a pipelined request: keep it for the next read

        if len(steps) == 1 and steps[0][0] == "write":
            # One write: nothing to watch for (and no task to start per request).
            try:
                await stream.send(steps[0][1])
                sent = steps[0][2]
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                left = True
        else:
            async with anyio.create_task_group() as group:
                group.start_soon(watch, group.cancel_scope)
                try:
                    for step in steps:
                        if step[0] == "sleep":
                            await anyio.sleep(step[1])
                        else:
                            await stream.send(step[1])
                            sent += step[2]
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                    left = True
                group.cancel_scope.cancel()
        if left:
            self.disconnects.append(
                Disconnect(
                    connection_id=conn.id,
                    request=record,
                    chunks_sent=sent,
                    monotonic=time.monotonic(),
                )
            )
            self._notify()
            return "close"
        return end


_PORTAL_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Sign in to the network</title></head>"
    b"<body><h1>Please sign in to continue</h1></body></html>\n"
)


def _error_json(found: Route, body: dict[str, Any]) -> bytes:
    """An error body as sent: Gemini's JSON-array stream (no ``alt=sse``) wraps it in a list.

    As seen in https://github.com/google-gemini/gemini-cli/issues/6454
    (``[{"error": {"code": 429, ...}}]`` from ``streamGenerateContent``).
    """
    if found.api == "gemini" and found.stream and not found.sse:
        return json.dumps([body]).encode()
    return json.dumps(body).encode()


def _request_id(api: API, serial: int) -> str:
    if api == "azure":
        return f"00000000-0000-4000-8000-{serial:012d}"
    return f"req_mmstream{serial:08d}"


def _id_headers(api: API, request_id: str) -> list[tuple[str, str]]:
    """Each provider's request-id header (what users quote to support)."""
    if api == "openai":
        return [("x-request-id", request_id), ("openai-version", "2020-10-01")]
    if api == "azure":
        return [("apim-request-id", request_id), ("x-request-id", request_id)]
    if api == "anthropic":
        return [("request-id", request_id)]
    if api == "gemini":
        return [("x-goog-request-id", request_id)]
    return []


def _is_streaming(found: Route, body: Any) -> bool:
    if found.stream is not None:
        return found.stream
    value = body.get("stream") if isinstance(body, dict) else None
    if found.api == "ollama":
        return value is not False
    return bool(value)


def _header_value(headers: Mapping[str, str], name: str, parse: Callable[[Any], Any]) -> Any:
    raw = headers.get(name)
    if raw is None:
        return None
    return parse(json.loads(raw))


def _faults_from_json(data: Any) -> tuple[Fault, ...]:
    items = data if isinstance(data, list) else [data]
    return tuple(Fault.from_dict(item) for item in items)
