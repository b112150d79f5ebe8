"""Blocking facades, generated from the async core and run on a shared anyio portal.

``blocking(achat)`` and ``blocking_stream(astream_chat)`` are the only sync
code paths: nothing is written twice. The portal is a long-lived event loop
in a daemon thread (one per backend), started on first use, leased by each
:class:`~mmstream.MultiModalLLM` and stopped when the last lease is released
(``close()``, ``with``, or interpreter exit).

A sync stream does not cross threads once per chunk. One pump task per stream
runs the async iterator start to finish (so context variables, spans and
cancel scopes stay in one task) and appends to a bounded buffer; the caller
takes every chunk already buffered in one portal call.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar, final

import anyio

from mmstream.errors import ConfigurationError

if TYPE_CHECKING:  # imported when a portal starts, so `import mmstream` stays light
    from concurrent.futures import Future

    from anyio.from_thread import BlockingPortal

__all__ = ["PortalRunner", "SyncStream", "blocking", "blocking_stream"]

P = ParamSpec("P")
T = TypeVar("T")

#: chunks buffered between the pump and the caller (the batch size, at most).
BUFFER_SIZE = 512


@final
class PortalRunner:
    """An event loop in a daemon thread with a :class:`BlockingPortal`, shared per backend."""

    _lock = threading.Lock()
    _runners: dict[str, PortalRunner] = {}  # noqa: RUF012 - shared registry

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.portal: BlockingPortal | None = None
        self.thread_id: int | None = None
        self._thread: threading.Thread | None = None
        self._leases = 0

    @classmethod
    def acquire(cls, backend: str) -> PortalRunner:
        """Lease the runner of ``backend``, starting its thread on first use."""
        with cls._lock:
            runner = cls._runners.get(backend)
            if runner is None:
                runner = cls._runners[backend] = PortalRunner(backend)
            if runner.portal is None:
                runner._start()
            runner._leases += 1
            return runner

    def release(self) -> None:
        """Give a lease back; the last one stops the loop and its thread."""
        with self._lock:
            self._leases -= 1
            if self._leases > 0:
                return
            self._leases = 0
            self._stop()

    def check_thread(self) -> None:
        """Refuse a blocking call made from the portal's own thread (it would deadlock)."""
        if threading.get_ident() == self.thread_id:
            raise ConfigurationError(
                "a blocking mmstream method was called from inside mmstream's own event loop "
                "(a middleware or callback?); use the async method (achat, acomplete, ...) there"
            )

    def _start(self) -> None:
        ready = threading.Event()
        box: dict[str, Any] = {}

        from anyio.from_thread import BlockingPortal

        async def serve() -> None:
            async with BlockingPortal() as portal:
                box["portal"] = portal
                box["thread_id"] = threading.get_ident()
                ready.set()
                await portal.sleep_until_stopped()

        def run() -> None:
            try:
                anyio.run(serve, backend=self.backend)
            except BaseException as exc:  # reported to the caller below
                box["error"] = exc
                ready.set()

        thread = threading.Thread(target=run, name=f"mmstream-portal-{self.backend}", daemon=True)
        thread.start()
        ready.wait()
        if "error" in box:
            raise ConfigurationError(
                f"cannot start the {self.backend!r} event loop for the blocking methods: "
                f"{box['error']!r}; install that backend or pass sync_backend='asyncio'"
            ) from box["error"]
        self.portal, self.thread_id, self._thread = box["portal"], box["thread_id"], thread

    def _stop(self) -> None:
        portal, thread = self.portal, self._thread
        self.portal = self._thread = self.thread_id = None
        if portal is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # already stopped
            portal.call(portal.stop, True)
        thread.join(timeout=5)

    @classmethod
    def _shutdown_all(cls) -> None:
        with cls._lock:
            for runner in cls._runners.values():
                runner._leases = 0
                runner._stop()


atexit.register(PortalRunner._shutdown_all)


class _HasPortal(Protocol):
    def _portal_runner(self) -> PortalRunner: ...


S = TypeVar("S", bound=_HasPortal)


def _sync_name(name: str) -> str:
    return name[1:] if name.startswith("a") else f"{name}_sync"


def blocking(fn: Callable[Concatenate[S, P], Awaitable[T]]) -> Callable[Concatenate[S, P], T]:
    """The blocking twin of an async method: runs it on the owner's portal.

    The twin has the same signature, returns the awaited result, and raises
    the same exceptions in the caller's thread.
    """

    @functools.wraps(fn)
    def method(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        runner = self._portal_runner()
        portal = runner.portal
        assert portal is not None
        return portal.call(functools.partial(fn, self, *args, **kwargs))

    _rename(method, fn, "Blocking twin of")
    return method


def blocking_stream(
    fn: Callable[Concatenate[S, P], AsyncIterator[T]],
) -> Callable[Concatenate[S, P], SyncStream[T]]:
    """The blocking twin of an async-stream method: a :class:`SyncStream` of the same items."""

    @functools.wraps(fn)
    def method(self: S, /, *args: P.args, **kwargs: P.kwargs) -> SyncStream[T]:
        runner = self._portal_runner()
        return SyncStream(runner, functools.partial(fn, self, *args, **kwargs))

    _rename(method, fn, "Blocking twin of")
    return method


def _rename(method: Callable[..., Any], fn: Callable[..., Any], prefix: str) -> None:
    name = _sync_name(fn.__name__)
    method.__name__ = name
    method.__qualname__ = fn.__qualname__.rpartition(".")[0] + "." + name
    summary = (fn.__doc__ or "").strip()
    method.__doc__ = (
        f"{prefix} :meth:`{fn.__name__}` (generated; runs on mmstream's portal).\n\n{summary}"
    )


_END = object()


class _Failure:
    """An exception sent from the pump to the caller as a value."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


@final
class SyncStream(Generic[T]):
    """A blocking iterator over an async stream; also a context manager.

    One pump task on the portal runs the async stream and appends chunks to a
    list (bounded: it waits when the list is full); each ``__next__`` that
    finds the local batch empty takes the whole list in one portal call.
    Leaving early (``break`` inside ``with``, ``close()``, an exception)
    cancels the pump and waits until the async stream is closed, so the HTTP
    response is closed when ``close()`` returns.
    """

    __slots__ = (
        "_batch",
        "_done",
        "_ended",
        "_factory",
        "_future",
        "_index",
        "_items",
        "_runner",
        "_scope",
        "_space",
        "_started",
        "_waiter",
    )

    def __init__(self, runner: PortalRunner, factory: Callable[[], AsyncIterator[T]]) -> None:
        self._runner = runner
        self._factory = factory
        self._batch: list[Any] = []
        self._index = 0
        self._done = False
        self._started = False
        self._future: Future[None] | None = None
        # Shared with the pump; touched only on the portal's event loop thread.
        self._items: list[Any] = []
        self._ended = False
        self._waiter: anyio.Event | None = None
        self._space: anyio.Event | None = None
        self._scope: anyio.CancelScope | None = None

    def __iter__(self) -> Iterator[T]:
        """Iterate batch by batch: a plain generator loop per chunk, a portal call per batch."""
        while True:
            batch, start = self._batch, self._index
            if start >= len(batch):
                if self._done:
                    return
                batch, start = self._refill(), 0
            # This generator owns the batch now; next() on the stream starts after it.
            self._batch, self._index = [], 0
            for index in range(start, len(batch)):
                item = batch[index]
                if item is _END:
                    self._finish()
                    return
                if type(item) is _Failure:
                    self._finish()
                    raise item.error
                yield item

    def __next__(self) -> T:
        batch, index = self._batch, self._index
        if index >= len(batch):
            if self._done:
                raise StopIteration
            batch = self._refill()
            index = 0
        item = batch[index]
        self._index = index + 1
        if item is _END:
            self._finish()
            raise StopIteration
        if type(item) is _Failure:
            self._finish()
            raise item.error
        return item  # type: ignore[no-any-return]

    def _refill(self) -> list[Any]:
        portal = self._portal()
        if not self._started:
            self._started = True
            self._future, _ = portal.start_task(self._pump)
        batch: list[Any] = portal.call(self._take)
        self._batch = batch
        return batch

    def _portal(self) -> BlockingPortal:
        self._runner.check_thread()
        portal = self._runner.portal
        if portal is None:
            raise ConfigurationError("the LLM was closed; its blocking methods can no longer run")
        return portal

    async def _pump(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        with anyio.CancelScope() as scope:
            self._scope = scope
            task_status.started()
            iterator = self._factory()
            try:
                async for item in iterator:
                    items = self._items  # _take swaps in a fresh list: never keep the old one
                    items.append(item)
                    waiter = self._waiter
                    if waiter is not None:
                        self._waiter = None
                        waiter.set()
                    if len(items) >= BUFFER_SIZE:
                        self._space = space = anyio.Event()
                        await space.wait()
            except Exception as exc:
                self._items.append(_Failure(exc))
            finally:
                self._ended = True
                if self._waiter is not None:
                    self._waiter.set()
                with anyio.CancelScope(shield=True):
                    aclose = getattr(iterator, "aclose", None)
                    if aclose is not None:
                        await aclose()

    async def _take(self) -> list[Any]:
        """Wait for one item, then take every item already buffered (one thread hop)."""
        while not self._items and not self._ended:
            self._waiter = waiter = anyio.Event()
            await waiter.wait()
        batch, self._items = self._items, []
        space = self._space
        if space is not None:
            self._space = None
            space.set()
        if self._ended:
            batch.append(_END)
        return batch

    def _finish(self) -> None:
        self._done = True
        self._batch, self._index = [], 0

    def close(self) -> None:
        """Stop the stream and wait until its HTTP response is closed."""
        if self._done and (self._future is None or self._future.done()):
            return
        self._finish()
        if not self._started:
            return
        portal = self._portal()
        portal.call(self._cancel)
        if self._future is not None:
            self._future.result()

    async def _cancel(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    def __enter__(self) -> SyncStream[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if not self._started or (self._future is not None and self._future.done()):
            return
        portal = self._runner.portal
        if portal is None:
            return
        # RuntimeError: the loop is gone, or this is its own thread; the pump ends with it.
        with contextlib.suppress(RuntimeError):
            portal.start_task_soon(self._cancel)
