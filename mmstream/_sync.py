"""Blocking facades, generated from the async core and run on a shared anyio portal.

``x = blocking(ax)`` and ``stream_x = blocking_stream(astream_x)`` are the only
sync code paths: nothing is written twice. The portal is anyio's
[`BlockingPortal`][anyio.from_thread.BlockingPortal] in a daemon thread (one
per backend), started by the first blocking call, leased by each owner (a
[`MultiModalLLM`][mmstream.MultiModalLLM]) and stopped when the last lease is
released or the interpreter exits.

What a blocking call guarantees, however the caller leaves it:

- **Ctrl-C** (or any exception raised in the caller's thread while it waits)
  cancels the coroutine on the portal, and the call is over (its connection
  closed) before the exception reaches the caller.
- **Closing the owner** ends its calls still running, in every thread, with
  [`ClosedError`][mmstream.errors.ClosedError], and refuses later ones. So does
  the interpreter exiting after Ctrl-C, so that no thread waits on the portal forever.
- **After ``os.fork()``** the child starts its own portal on first use; it never
  touches the parent's loop or its pooled connections.

A blocking stream does not cross threads once per chunk: one pump task per
stream runs the async stream start to finish (so context variables, spans and
cancel scopes stay in one task) and hands whole network reads to the caller's
thread through a locked buffer. The pump reads ahead, but holds back the end of
the answer (and a failure) until the caller has taken every chunk before it, so
a middleware records "completed" only when the caller saw everything; and a
stream left any way (``with``, ``close()``, a bare ``break``, dropping it, an
exception) is closed within moments, its middleware ending as *closed*.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import TracebackType
from typing import (
    TYPE_CHECKING,
    Any,
    Concatenate,
    Generic,
    ParamSpec,
    Protocol,
    TypeVar,
    final,
    overload,
)

import anyio

from mmstream.errors import ClosedError, ConfigurationError

if TYPE_CHECKING:  # imported when a portal starts, so `import mmstream` stays light
    from contextlib import AbstractContextManager

    from anyio.from_thread import BlockingPortal
    from anyio.lowlevel import EventLoopToken

    from mmstream.responses import ChatResponse

__all__ = ["Lease", "SyncStream", "blocking", "blocking_stream"]

P = ParamSpec("P")
T = TypeVar("T")
U = TypeVar("U")

#: chunks the pump reads ahead of the caller (it waits when this many are buffered).
BUFFER_SIZE = 512
#: how long a left stream waits for its pending network read before it is cancelled.
_LEAVE_GRACE = 0.2
#: how long closing an owner waits for its calls in other threads to end.
_CLOSE_WAIT = 10.0

#: the reason every call still running at interpreter exit (after Ctrl-C) ends with.
_EXITING = "the interpreter is exiting (Ctrl-C in the main thread)"
#: the reason of calls still running when the portal itself stops.
_STOPPED = "mmstream's background event loop stopped (the interpreter is exiting)"


# --- the shared portals ------------------------------------------------------------------


@final
class _Portal:
    """One backend's event loop thread with a blocking portal, and the work running on it."""

    __slots__ = ("_cm", "backend", "leases", "pid", "portal", "thread_id", "token", "work")

    def __init__(self, backend: str) -> None:
        from anyio.from_thread import start_blocking_portal
        from anyio.lowlevel import current_token

        cm = start_blocking_portal(backend, name=f"mmstream-portal-{backend}")
        try:
            portal = cm.__enter__()
        except BaseException as exc:
            raise ConfigurationError(
                f"cannot start the {backend!r} event loop for the blocking methods: {exc!r}; "
                "install that backend or pass sync_backend='asyncio'"
            ) from exc
        self._cm: AbstractContextManager[BlockingPortal] = cm
        self.backend = backend
        self.portal = portal
        self.token: EventLoopToken = portal.call(current_token)
        self.thread_id: int = portal.call(threading.get_ident)
        self.pid = os.getpid()
        self.leases = 0
        #: calls and streams running on this portal (each has ``stop(reason)``).
        self.work: set[_Work] = set()

    def soon(self, func: Callable[..., object], *args: Any) -> None:
        """Run ``func(*args)`` on the loop thread without waiting (from any thread)."""
        self.token.backend_class.run_sync_soon(func, args, self.token.native_token)

    def stop(self) -> None:
        """Cancel what still runs, stop the loop and join its thread."""
        for work in list(self.work):
            work.stop(_STOPPED)
        portal = self.portal
        with contextlib.suppress(RuntimeError):  # stopped already
            portal.call(portal.stop, True)
        self._cm.__exit__(None, None, None)


_lock = threading.Lock()  # guards _portals and every _Portal.leases / .work
_portals: dict[str, _Portal] = {}
#: the parent's portals, kept (never used) in a forked child: their loops are not running.
_orphans: list[object] = []


def _acquire_locked(backend: str) -> _Portal:
    """A lease on the portal of ``backend``, started on first use (``_lock`` is held)."""
    portal = _portals.get(backend)
    if portal is None:
        portal = _portals[backend] = _Portal(backend)
    portal.leases += 1
    return portal


def _release(portal: _Portal) -> None:
    with _lock:
        portal.leases -= 1
        if portal.leases > 0 or _portals.get(portal.backend) is not portal:
            return
        del _portals[portal.backend]
    portal.stop()


def _stop_running_work() -> None:
    """At interpreter exit after Ctrl-C: end every blocking call with a typed error.

    Runs before Python joins the non-daemon threads, which may be waiting on
    the portal; without this the process would hang until a second Ctrl-C.
    """
    last = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)
    if not isinstance(last, KeyboardInterrupt):
        return  # a normal exit: threads still calling finish as they would
    with _lock:
        running = [work for portal in _portals.values() for work in portal.work]
    for work in running:
        work.stop(_EXITING)


def _stop_portals() -> None:
    with _lock:
        portals = list(_portals.values())
        _portals.clear()
    for portal in portals:
        portal.stop()


def _after_fork_in_child() -> None:
    """Forget the parent's portals: their threads do not exist in the child."""
    global _lock
    _lock = threading.Lock()
    _orphans.append(dict(_portals))
    _portals.clear()


atexit.register(_stop_portals)
_register_early_exit = getattr(threading, "_register_atexit", None)
if _register_early_exit is not None:  # CPython: runs before non-daemon threads are joined
    _register_early_exit(_stop_running_work)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _Work(Protocol):
    def stop(self, reason: str) -> None: ...


@final
class Lease:
    """One owner's use of the shared portal of its backend (one per ``MultiModalLLM``).

    The portal starts on the first blocking call. ``close(reason)`` ends the
    owner's calls still running (they raise [`ClosedError`][mmstream.errors.ClosedError])
    and refuses later ones; the last lease closed stops the portal.
    """

    __slots__ = ("_portal", "_work", "backend", "closed")

    def __init__(self, backend: str) -> None:
        self.backend = backend
        #: why the owner was closed (``None`` while it is open).
        self.closed: str | None = None
        self._portal: _Portal | None = None
        self._work: set[_Work] = set()

    @property
    def active(self) -> bool:
        """Whether a blocking call has started the portal (and it was not closed since)."""
        portal = self._portal
        return portal is not None and portal.pid == os.getpid()

    def portal(self) -> _Portal:
        """The running portal (started on first use), after the owner's checks.

        Raises:
            ClosedError: the owner was closed.
            ConfigurationError: called from the portal's own thread (it would deadlock).
        """
        if self.closed is not None:
            raise ClosedError(self.closed)
        portal = self._portal
        if portal is None or portal.pid != os.getpid():  # first use, or a forked child
            with _lock:
                if self.closed is not None:
                    raise ClosedError(self.closed)
                portal = self._portal
                if portal is None or portal.pid != os.getpid():
                    self._work = set()
                    portal = self._portal = _acquire_locked(self.backend)
        if threading.get_ident() == portal.thread_id:
            raise ConfigurationError(
                "a blocking mmstream method was called from inside mmstream's own event loop "
                "(a middleware or callback?); use the async method (achat, acomplete, ...) there"
            )
        return portal

    def run(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn()`` on the portal and wait for its result in this thread."""
        return _Call(self, self.portal()).run(fn)

    def add(self, work: _Work, portal: _Portal) -> None:
        with _lock:
            self._work.add(work)
            portal.work.add(work)

    def discard(self, work: _Work, portal: _Portal) -> None:
        with _lock:
            self._work.discard(work)
            portal.work.discard(work)

    def close(self, reason: str, last: Callable[[], Awaitable[object]] | None = None) -> None:
        """Refuse later calls, end the running ones, run ``last()`` on the portal, release it."""
        portal = self._portal
        if portal is not None and threading.get_ident() == portal.thread_id:
            raise ConfigurationError(
                "close() was called from inside mmstream's own event loop; use aclose() there"
            )
        with _lock:
            if self.closed is not None:
                return
            self.closed = reason
            portal, self._portal = self._portal, None
            running = list(self._work)
        if portal is None or portal.pid != os.getpid():
            return
        for work in running:
            work.stop(reason)
        for work in running:
            wait = getattr(work, "wait", None)
            if wait is not None:
                wait(_CLOSE_WAIT)
        try:
            if last is not None:
                _Call(self, portal).run(last)
        finally:
            _release(portal)


@final
class _Call:
    """One blocking call's coroutine on the portal, cancellable from the caller's thread."""

    __slots__ = ("_done", "_lease", "_portal", "_reason", "_scope")

    def __init__(self, lease: Lease, portal: _Portal) -> None:
        self._lease = lease
        self._portal = portal
        self._scope: anyio.CancelScope | None = None
        self._reason: str | None = None
        self._done = threading.Event()

    def run(self, fn: Callable[[], Awaitable[T]]) -> T:
        from concurrent.futures import CancelledError

        lease, portal = self._lease, self._portal
        lease.add(self, portal)
        try:
            try:
                future = portal.portal.start_task_soon(self._main, fn)
            except RuntimeError as exc:  # the portal stopped between the checks and now
                raise ClosedError(self._reason or lease.closed or _EXITING) from exc
            try:
                return future.result()
            except CancelledError:
                raise ClosedError(self._reason or lease.closed or _EXITING) from None
            except BaseException:
                if not future.done():  # interrupted here (Ctrl-C): end the call first
                    self.stop("the caller was interrupted")
                    self._done.wait(_CLOSE_WAIT)
                raise
        finally:
            lease.discard(self, portal)

    async def _main(self, fn: Callable[[], Awaitable[T]]) -> T:
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                if self._reason is not None:
                    scope.cancel()
                return await fn()
            raise ClosedError(self._reason or _EXITING)
        finally:
            self._done.set()

    def stop(self, reason: str) -> None:
        """End the call (from any thread): its coroutine is cancelled on the portal."""
        if self._reason is None:
            self._reason = reason
        try:
            self._portal.soon(self._cancel)
        except Exception:  # the loop has ended, and the call with it
            self._done.set()

    def _cancel(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    def wait(self, timeout: float) -> None:
        self._done.wait(timeout)


# --- generating the twins ------------------------------------------------------------------


class _HasLease(Protocol):
    def _blocking_lease(self) -> Lease: ...


S = TypeVar("S", bound=_HasLease)


@overload
def blocking(
    fn: Callable[Concatenate[S, P], Awaitable[T]], *, convert: None = None
) -> Callable[Concatenate[S, P], T]: ...


@overload
def blocking(
    fn: Callable[Concatenate[S, P], Awaitable[T]], *, convert: Callable[[Lease, T], U]
) -> Callable[Concatenate[S, P], U]: ...


def blocking(
    fn: Callable[Concatenate[S, P], Awaitable[T]],
    *,
    convert: Callable[[Lease, T], Any] | None = None,
) -> Callable[Concatenate[S, P], Any]:
    """The blocking twin of an async method: runs it on the owner's portal.

    The twin has the same signature, returns the awaited result, and raises
    the same exceptions in the caller's thread.

    Args:
        fn: the async method.
        convert: turns the result into its blocking form in the caller's
            thread (an async stream inside it into a
            [`SyncStream`][mmstream.SyncStream], for instance).
    """

    @functools.wraps(fn)
    def method(self: S, /, *args: P.args, **kwargs: P.kwargs) -> Any:
        lease = self._blocking_lease()
        result = lease.run(functools.partial(fn, self, *args, **kwargs))
        return result if convert is None else convert(lease, result)

    _rename(method, fn)
    return method


def blocking_stream(
    fn: Callable[Concatenate[S, P], AsyncIterator[T]],
) -> Callable[Concatenate[S, P], SyncStream[T]]:
    """The blocking twin of an async-stream method: a [`SyncStream`][mmstream.SyncStream]."""

    @functools.wraps(fn)
    def method(self: S, /, *args: P.args, **kwargs: P.kwargs) -> SyncStream[T]:
        # Made here, in the caller's thread: an async stream does nothing until iterated,
        # and bad arguments fail at once, as they do for the async method.
        return SyncStream(self._blocking_lease(), fn(self, *args, **kwargs))

    _rename(method, fn)
    return method


def _rename(method: Callable[..., Any], fn: Callable[..., Any]) -> None:
    name = fn.__name__[1:] if fn.__name__.startswith("a") else f"{fn.__name__}_sync"
    method.__name__ = name
    method.__qualname__ = fn.__qualname__.rpartition(".")[0] + "." + name
    summary = (fn.__doc__ or "").strip()
    method.__doc__ = (
        f"Blocking twin of `{fn.__name__}` (generated; runs on mmstream's portal).\n\n{summary}"
    )


# --- blocking streams ----------------------------------------------------------------------


_END = object()  # the pump's outcome when the stream ended normally


@final
class SyncStream(Generic[T]):
    """A blocking iterator over an async stream; also a context manager.

    Nothing is sent until the first ``next()``. One pump task on the portal then
    runs the async stream and hands over whole network reads; each ``next()``
    that finds its local batch empty takes everything buffered at once.
    Leaving it any way closes it: ``close()`` and the end of ``with`` wait
    until every middleware has ended and the HTTP response is closed; a
    stream dropped without closing (a bare ``break``, an exception in the
    loop) is closed on the portal at once, without waiting.
    """

    __slots__ = ("_batch", "_index", "_pump")

    def __init__(self, lease: Lease, stream: AsyncIterator[T]) -> None:
        self._pump: _Pump[T] = _Pump(lease, stream)
        self._batch: list[T] = []
        self._index = 0

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        index = self._index
        batch = self._batch
        if index < len(batch):
            self._index = index + 1
            return batch[index]
        self._batch = batch = self._pump.take()
        self._index = 1
        return batch[0]

    def close(self) -> None:
        """Stop the stream and wait until every middleware has ended and its response is closed."""
        self._batch = []
        self._index = 0
        self._pump.close()

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
        self._pump.close_soon()


@final
class _Pump(Generic[T]):
    """A blocking stream's state, shared by the caller's thread and its task on the portal.

    Everything the two threads share is guarded by ``_lock``; the anyio events
    are created and set on the portal's thread only.
    """

    __slots__ = (
        "_consumer",
        "_demand",
        "_done",
        "_gated_once",
        "_holding",
        "_items",
        "_lease",
        "_leaving",
        "_lock",
        "_outcome",
        "_pid",
        "_portal",
        "_reading",
        "_ready",
        "_scope",
        "_space",
        "_state",
        "_stream",
    )

    def __init__(self, lease: Lease, stream: AsyncIterator[T]) -> None:
        self._lease = lease
        self._stream = stream
        self._portal: _Portal | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._items: list[T] = []
        #: how the stream ended (``_END`` or an exception), once the pump ended it.
        self._outcome: object = None
        self._state = "new"  # new, running, done
        self._consumer = False  # the caller waits in take() with nothing buffered
        self._ready = threading.Event()  # set for a waiting caller
        self._done = threading.Event()  # the pump task has ended
        self._leaving: str | None = None  # why the caller left (or the owner closed it)
        # Portal-thread only:
        self._scope: anyio.CancelScope | None = None
        self._reading = False  # the gate waits for the network
        self._holding = False  # the gate holds back the end until the caller asks
        self._gated_once = False  # the stream runs through the gate (it has layers)
        self._space: anyio.Event | None = None
        self._demand: anyio.Event | None = None

    # --- the caller's side ----------------------------------------------------------------

    def take(self) -> list[T]:
        """Wait for chunks and take every one buffered; raise the stream's end or error."""
        if self._state == "new":
            self._start()
        if self._pid != os.getpid():
            raise ClosedError("this stream was opened before os.fork(); open it again here")
        while True:
            wake: anyio.Event | None = None
            with self._lock:
                items = self._items
                if items:
                    self._items = []
                    wake, self._space = self._space, None
                elif self._outcome is not None:
                    self._state = "done"
                    outcome = self._outcome
                    self._outcome = _END  # next time: the end, not the error again
                    if outcome is _END:
                        raise StopIteration
                    raise outcome  # type: ignore[misc]
                else:
                    self._consumer = True
                    self._ready.clear()
                    wake, self._demand = self._demand, None
            if wake is not None:
                self._wake(wake)
            if items:
                return items
            try:
                self._ready.wait()
            except BaseException:  # Ctrl-C while waiting: end the stream before it propagates
                self.close()
                raise

    def _start(self) -> None:
        portal = self._lease.portal()
        self._portal = portal
        self._state = "running"
        self._lease.add(self, portal)
        try:
            portal.portal.start_task_soon(self._run)
        except RuntimeError as exc:  # the portal stopped meanwhile
            self._lease.discard(self, portal)
            self._state = "done"
            raise ClosedError(self._lease.closed or _EXITING) from exc

    def _wake(self, event: anyio.Event) -> None:
        portal = self._portal
        if portal is not None:
            with contextlib.suppress(Exception):  # the loop has ended; so has the pump
                portal.soon(event.set)

    def close(self) -> None:
        """Leave the stream and wait until the pump has ended (its call closed)."""
        if self._state == "running" and self._pid == os.getpid():
            portal = self._portal
            assert portal is not None
            if threading.get_ident() == portal.thread_id:
                raise ConfigurationError(
                    "a blocking stream was closed from inside mmstream's own event loop; "
                    "use the async stream there"
                )
            self.stop("the stream was closed")
            self._done.wait()
        with self._lock:  # closed by its caller: a later next() ends the iteration
            self._state = "done"
            self._items = []
            self._outcome = _END

    def close_soon(self) -> None:
        """Leave the stream without waiting (it was dropped): the pump ends on its own."""
        if self._state == "running" and self._pid == os.getpid():
            self.stop("the stream was dropped")

    def stop(self, reason: str) -> None:
        """End the stream from any thread; the caller's next ``next()`` gets ``ClosedError``."""
        portal = self._portal
        if portal is None:
            return
        try:
            portal.soon(self._leave, reason)
        except Exception:  # the loop has ended; so has the pump
            self._done.set()

    def wait(self, timeout: float) -> None:
        if self._state == "running":
            self._done.wait(timeout)

    # --- the portal's side ----------------------------------------------------------------

    def _leave(self, reason: str) -> None:
        """The caller left (or the owner closed): stop at once, ending every layer as closed."""
        if self._leaving is not None or self._done.is_set():
            return
        self._leaving = reason
        from mmstream._stream import ChatStream

        if isinstance(self._stream, ChatStream):  # its layers record the call as closed
            self._stream.leave()
        if self._holding:  # holding back the end, below every layer
            if self._demand is not None:  # (else the caller's demand is on its way)
                self._demand.set()
        elif self._space is not None:  # between two chunks: every layer is at its yield
            self._space.set()
        elif self._scope is None:
            return
        elif self._reading:
            # Waiting for the network (below every layer): the next read ends the stream,
            # closing every layer at its yield; a stalled one is cancelled after a moment.
            # (A cancel scope per read would make it instant, at a price on every read.)
            self._scope.deadline = min(self._scope.deadline, anyio.current_time() + _LEAVE_GRACE)
        else:  # inside a layer's own wait (a retry's sleep, ...)
            self._scope.cancel()

    async def _run(self) -> None:
        outcome: object = None
        stream = self._stream
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                next_batch = self._batches(stream)
                while self._leaving is None:
                    # Without layers (no gate), the pump's own wait is the network read.
                    self._reading = not self._gated_once
                    try:
                        batch = await next_batch()
                    except StopAsyncIteration:
                        outcome = _END
                        break
                    except GeneratorExit:  # from the gate: the caller left
                        break
                    except Exception as exc:
                        outcome = exc
                        break
                    self._reading = False
                    if batch:
                        await self._deliver(batch)
        finally:
            try:
                with anyio.CancelScope(shield=True):
                    aclose = getattr(stream, "aclose", None)
                    if aclose is not None:
                        await aclose()
            except Exception as exc:
                outcome = outcome if outcome is not None else exc
            finally:
                self._end(outcome)

    def _batches(self, stream: AsyncIterator[T]) -> Callable[[], Awaitable[list[T]]]:
        """How the pump reads ``stream``: a network read at a time when it can."""
        from mmstream._stream import ChatStream

        if isinstance(stream, ChatStream):
            stream._read_ahead(self._gated)
            return stream._next_batch
        step = stream.__anext__

        async def one() -> list[T]:
            return [await step()]

        return one

    async def _deliver(self, batch: list[T]) -> None:
        with self._lock:
            items = self._items
            items.extend(batch)
            consumer, self._consumer = self._consumer, False
            full = len(items) >= BUFFER_SIZE
            if full:
                self._space = space = anyio.Event()
        if consumer:
            self._ready.set()
        if full:
            await space.wait()

    def _end(self, outcome: object) -> None:
        if outcome is None:  # cancelled, or the caller left: a later next() is told why
            outcome = ClosedError(self._leaving or "the blocking stream was cancelled")
        with self._lock:
            self._outcome = outcome
            self._consumer = False
        self._ready.set()
        self._done.set()
        portal = self._portal
        if portal is not None:
            self._lease.discard(self, portal)

    async def _gated(
        self, source: AsyncIterator[list[ChatResponse]]
    ) -> AsyncIterator[list[ChatResponse]]:
        """The endpoint as the pump runs it: its end held back, its waits interruptible.

        The end of the answer (or a failure) is passed up only once the caller
        has taken every chunk before it and asks for more, so the layers above
        record how the caller's stream really ended. When the caller leaves
        while this waits, for the network or for that demand, the wait ends
        here, below every layer, and the layers see ``GeneratorExit``: they end
        as *closed*, as they would at a ``yield``.
        """
        self._gated_once = True
        try:
            while not self._left():
                self._reading = True
                try:
                    batch = await source.__anext__()
                except StopAsyncIteration:
                    self._reading = False
                    if await self._wait_for_demand():
                        return
                    break
                except Exception:
                    self._reading = False
                    if await self._wait_for_demand():
                        raise
                    break
                self._reading = False
                if self._left():
                    break
                yield batch
            raise GeneratorExit  # the caller left: every layer above ends as closed
        finally:
            self._reading = False
            with anyio.CancelScope(shield=True):
                await source.aclose()  # type: ignore[attr-defined]

    def _left(self) -> bool:
        return self._leaving is not None

    async def _wait_for_demand(self) -> bool:
        """Wait until the caller has taken everything buffered and asks for more.

        The wait is the caller's own time, so it is shielded: no deadline of a
        layer (a ``Timeout``'s idle or total) runs out while the end waits for
        the caller. Leaving (and closing the owner) ends it.

        Returns:
            ``False`` when the caller left instead.
        """
        self._holding = True
        try:
            with anyio.CancelScope(shield=True):
                while not self._left():
                    with self._lock:
                        if self._consumer and not self._items:
                            return True
                        self._demand = demand = anyio.Event()
                    await demand.wait()
            return False
        finally:
            self._holding = False
            self._demand = None
