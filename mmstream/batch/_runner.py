"""``Batch``: run many jobs through one model, resumably, under limits the whole run shares."""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, final

import anyio
import anyio.to_thread

from mmstream._sync import Lease, blocking
from mmstream.batch._errors import BatchAbortedError, OutputFileError
from mmstream.batch._executor import Executor, StreamingExecutor, run_all
from mmstream.batch._files import JobsInput, JobSource, ResultsFile, job_source
from mmstream.batch._limits import RunGate
from mmstream.batch._result import BatchStats, JobResult
from mmstream.errors import ConfigurationError
from mmstream.llm import MultiModalLLM
from mmstream.middleware._support import call_handler
from mmstream.middleware.ratelimit import RateLimit
from mmstream.middleware.retry import Retry

if TYPE_CHECKING:
    from mmstream.batch._job import Job
    from mmstream.middleware.chain import Middleware
    from mmstream.providers.base import Provider

__all__ = ["Batch", "ProgressCallback", "ResultCallback"]

#: called with a [`BatchStats`][mmstream.batch.BatchStats] at the start, after each job, at the end.
ProgressCallback = Callable[[BatchStats], object]
#: called with each [`JobResult`][mmstream.batch.JobResult] (a plain or a coroutine function).
ResultCallback = Callable[[JobResult], object]

_DEFAULT_RETRY = Retry()


@final
class Batch:
    """Runs many jobs through one model, resumably, under limits the whole run shares.

    One ``Batch`` holds one client and one set of limits: the concurrency, a
    [`RateLimit`][mmstream.middleware.RateLimit] (requests and tokens per
    minute), [`Retry`][mmstream.middleware.Retry], and the coordinated
    back-off (a 429 with ``Retry-After`` pauses every new request of the run,
    not only the job that got it). Every run of this object draws from them.
    The run's layers wrap the client's own middleware, outermost first:
    ``Retry``, the back-off gate, ``RateLimit``, then the client's.

    Args:
        llm: a [`MultiModalLLM`][mmstream.MultiModalLLM] (its provider, middleware
            and transport are used), a provider, or ``"name:model"``.
        concurrency: jobs in flight at once.
        requests_per_minute: the run's request budget (``None``: no limit).
        tokens_per_minute: the run's token budget (``None``: no limit).
        rate_limit: a `RateLimit` to share with other code, instead of the two above.
        retry: the retry policy of each job (default ``Retry()``: 3 attempts;
            ``None``: no retries).
        max_failures: stop the run once more jobs than this failed in it
            (``None``: never; ``0``: at the first failure).
        pause_on_rate_limit: pause the whole run on a provider's 429.
        default_pause: seconds to pause after a 429 that names no ``Retry-After``.
        fsync_interval: seconds between ``fsync`` calls on the results file
            (``0``: after every result; ``None``: only at the end). A killed
            process loses nothing either way; this bounds what a power loss loses.
        clock: monotonic seconds, for limits and timings (tests inject one).
        sleep: how to wait (``anyio.sleep``).
        sync_backend: the event loop of the blocking `run`.
        **provider_fields: with a string ``llm``, fields for its provider.

    Example:
        ```python
        from mmstream.batch import Batch

        jobs = [{"id": f"cat-{n}", "prompt": "Caption it", "images": ["cat.png"]} for n in range(3)]
        with Batch("offline:default", concurrency=4) as batch:
            stats = batch.run(jobs, "captions.jsonl")
        print(stats.summary())
        ```
    """

    def __init__(
        self,
        llm: MultiModalLLM | Provider | str = "offline:default",
        *,
        concurrency: int = 8,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        rate_limit: RateLimit | None = None,
        retry: Retry | None = _DEFAULT_RETRY,
        max_failures: int | None = None,
        pause_on_rate_limit: bool = True,
        default_pause: float = 1.0,
        fsync_interval: float | None = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        sync_backend: Literal["asyncio", "trio"] = "asyncio",
        **provider_fields: Any,
    ) -> None:
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(f"concurrency must be an integer >= 1, not {concurrency!r}")
        if max_failures is not None and (not isinstance(max_failures, int) or max_failures < 0):
            raise ConfigurationError(f"max_failures must be >= 0 or None, not {max_failures!r}")
        if fsync_interval is not None and fsync_interval < 0:
            raise ConfigurationError(f"fsync_interval must be >= 0 or None, not {fsync_interval}")
        if rate_limit is not None and (requests_per_minute or tokens_per_minute):
            raise ConfigurationError(
                "give rate_limit or requests_per_minute/tokens_per_minute, not both"
            )
        if rate_limit is None and (requests_per_minute or tokens_per_minute):
            try:
                rate_limit = RateLimit(
                    requests_per_minute=requests_per_minute,
                    tokens_per_minute=tokens_per_minute,
                    clock=clock,
                    sleep=sleep,
                )
            except ValueError as exc:
                raise ConfigurationError(str(exc)) from None
        if isinstance(llm, MultiModalLLM):
            if provider_fields:
                raise ConfigurationError("provider fields go to the provider, not to Batch")
            base = llm
        else:
            base = MultiModalLLM(llm, sync_backend=sync_backend, **provider_fields)
        self.concurrency = concurrency
        self.rate_limit = rate_limit
        self.retry = retry
        self.max_failures = max_failures
        self.fsync_interval = fsync_interval
        self.clock = clock
        self.gate = RunGate(default_pause=default_pause, clock=clock, sleep=sleep)
        layers: list[Middleware] = []
        if retry is not None:
            layers.append(retry)
        if pause_on_rate_limit:
            layers.append(self.gate)
        if rate_limit is not None:
            layers.append(rate_limit)
        self.llm = MultiModalLLM(
            base.provider,
            middleware=[*layers, *base.middleware],
            transport=base.transport,
            sync_backend=sync_backend if not isinstance(llm, MultiModalLLM) else llm.sync_backend,
        )
        self.executor: Executor = StreamingExecutor(self.llm, concurrency=concurrency, clock=clock)

    def __repr__(self) -> str:
        return (
            f"Batch({self.llm.provider!r}, concurrency={self.concurrency}, "
            f"rate_limit={self.rate_limit!r}, retry={self.retry!r})"
        )

    async def arun(
        self,
        jobs: JobsInput,
        output: str | os.PathLike[str] | None = None,
        *,
        on_result: ResultCallback | None = None,
        progress: ProgressCallback | None = None,
        redo_failed: bool = False,
        base_dir: str | os.PathLike[str] | None = None,
    ) -> BatchStats:
        """Run the jobs, appending each result to ``output`` as it ends; resume if it exists.

        A file or a list of jobs is checked whole before anything is sent (an
        invalid job or a repeated id stops the run there); an iterator is
        checked as it is read. Results are written in completion order, one
        whole line each. Run it again with the same ``output`` after a crash,
        a ``kill -9`` or Ctrl-C: the jobs already there are skipped, the ones
        that were in flight run again, and no job is written twice.

        Args:
            jobs: a JSONL file (``"-"``: standard input), or a sequence or an
                (async) iterable of [`Job`][mmstream.batch.Job]s or job dicts.
            output: the results file (JSONL), created if missing; ``None`` writes
                none (use ``on_result``), and nothing is resumed.
            on_result: called with each result, after it is written.
            progress: called with a [`BatchStats`][mmstream.batch.BatchStats]
                snapshot at the start, after each job, and at the end.
            redo_failed: run the jobs recorded as failed again (their records
                are removed from ``output`` first).
            base_dir: relative image paths in job dicts start here (default:
                the jobs file's directory, or the current directory).

        Returns:
            The final [`BatchStats`][mmstream.batch.BatchStats].

        Raises:
            InvalidJobError: a job is invalid or an id repeats.
            InvalidRequestError: the jobs file cannot be read.
            OutputFileError: ``output`` cannot be used (another run holds it,
                it is not a results file, the disk is full).
            BatchAbortedError: more than ``max_failures`` jobs failed.
        """
        source = job_source(jobs, base_dir)
        await source.check()
        results: ResultsFile | None = None
        done: set[str] = set()
        if output is not None:
            _refuse_same_file(jobs, output)
            results, done = await anyio.to_thread.run_sync(
                lambda: ResultsFile.open(output, redo_failed=redo_failed)
            )
        try:
            total, _ = await source.prepare(done)
            run = _Run(self, results, total, source, on_result, progress)
            run.report()
            await run_all([lambda: run.execute(source.jobs(done)), run.sync_periodically])
            return run.report(finished=True)
        finally:
            if results is not None:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(results.close)

    run = blocking(arun)

    # --- lifecycle ------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the connection pool of the running event loop."""
        await self.llm.aclose()

    def close(self) -> None:
        """Close the blocking side (its connection pool and its portal lease)."""
        self.llm.close()

    async def __aenter__(self) -> Batch:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __enter__(self) -> Batch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _blocking_lease(self) -> Lease:
        return self.llm._blocking_lease()


def _refuse_same_file(jobs: Any, output: str | os.PathLike[str]) -> None:
    if not isinstance(jobs, (str, os.PathLike)) or jobs == "-":
        return
    try:
        same = os.path.samefile(jobs, output)
    except OSError:  # one of them does not exist yet
        same = Path(jobs).resolve() == Path(output).resolve()
    if same:
        raise OutputFileError(
            "is also the jobs file; write the results elsewhere", path=str(output)
        )


class _Run:
    """One run's state: the results file, the counts, the callbacks (the executor's sink)."""

    def __init__(
        self,
        batch: Batch,
        results: ResultsFile | None,
        total: int | None,
        source: JobSource,
        on_result: ResultCallback | None,
        progress: ProgressCallback | None,
    ) -> None:
        self.batch = batch
        self.results = results
        self.total = total
        self.source = source
        self.on_result = on_result
        self.progress = progress
        self.clock = batch.clock
        self.begun = batch.clock()
        self.succeeded = 0
        self.failed = 0
        self.in_flight = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.over = anyio.Event()

    def stats(self, *, finished: bool = False) -> BatchStats:
        return BatchStats(
            total=self.total,
            skipped=self.source.skipped,
            succeeded=self.succeeded,
            failed=self.failed,
            in_flight=self.in_flight,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            elapsed=self.clock() - self.begun,
            finished=finished,
        )

    def report(self, *, finished: bool = False) -> BatchStats:
        stats = self.stats(finished=finished)
        if self.progress is not None:
            self.progress(stats)
        return stats

    async def execute(self, jobs: Any) -> None:
        try:
            await self.batch.executor.run(jobs, self)
        finally:
            self.over.set()

    async def sync_periodically(self) -> None:
        """fsync the results file every ``fsync_interval`` seconds while the run lasts."""
        interval = self.batch.fsync_interval
        results = self.results
        if results is None or not interval:
            return
        while not self.over.is_set():
            with anyio.move_on_after(interval):
                await self.over.wait()
            await anyio.to_thread.run_sync(results.sync)

    # --- the sink -------------------------------------------------------------------

    def started(self, job: Job) -> None:
        self.in_flight += 1

    async def finished(self, result: JobResult) -> None:
        self.in_flight -= 1
        if self.results is not None:
            self.results.append(result.to_json())
            if self.batch.fsync_interval == 0:
                await anyio.to_thread.run_sync(self.results.sync)
        if result.ok:
            self.succeeded += 1
        else:
            self.failed += 1
        usage = result.usage
        if usage is not None:
            self.input_tokens += usage.input_tokens or 0
            self.output_tokens += usage.output_tokens or 0
        stats = self.report()
        await call_handler(self.on_result, result)
        limit = self.batch.max_failures
        if limit is not None and self.failed > limit:
            raise BatchAbortedError(
                f"{self.failed} jobs failed, more than max_failures={limit}; "
                f"the last: {result.id!r} ({result.error.kind if result.error else '?'})",
                stats=stats,
                last_error=result.error,
            )
