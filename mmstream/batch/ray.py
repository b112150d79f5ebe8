"""Ray Data: spread a batch over a cluster under one shared rate limit (extra ``[ray]``).

- [`LLMPredictor`][mmstream.batch.ray.LLMPredictor] is a callable class for
  ``ray.data.Dataset.map_batches``: each actor holds one
  [`MultiModalLLM`][mmstream.MultiModalLLM], runs the rows of a batch
  concurrently (async inside, on its own event loop), and reads the images on
  the worker. Rows are jobs (the JSONL job fields as columns); the output
  rows are results (`JobResult.to_row`), in the input's order, with
  the input's other columns kept.
- [`shared_rate_limit`][mmstream.batch.ray.shared_rate_limit] starts one Ray
  actor holding the budget (requests and tokens per minute) and the
  coordinated back-off pause; every predictor given its handle draws from it,
  so a run over many actors and machines stays under the provider's limits,
  and one actor's 429 pauses all of them.

``ray`` is imported when one of these is used; without it they raise a
[`ConfigurationError`][mmstream.errors.ConfigurationError] naming the extra.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, final

import anyio
import anyio.to_thread

from mmstream._sync import Lease, blocking
from mmstream.batch._errors import InvalidJobError
from mmstream.batch._executor import StreamingExecutor
from mmstream.batch._job import JOB_FIELDS, Job
from mmstream.batch._limits import note_attempt, pause_for
from mmstream.batch._result import JobResult
from mmstream.errors import ConfigurationError, RateLimitError
from mmstream.llm import MultiModalLLM
from mmstream.middleware.ratelimit import estimate_tokens
from mmstream.middleware.retry import Retry

if TYPE_CHECKING:
    from mmstream.middleware.chain import CallNext, Middleware
    from mmstream.providers.base import Provider
    from mmstream.request import ChatRequest
    from mmstream.responses import ChatResponse

__all__ = ["RESULT_COLUMNS", "LLMPredictor", "SharedRateLimit", "shared_rate_limit"]

#: the columns a predictor adds (see [`JobResult.to_row`][mmstream.batch.JobResult.to_row]).
RESULT_COLUMNS = (
    "id",
    "text",
    "finish_reason",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "error_kind",
    "error_message",
    "error_status",
    "attempts",
    "started",
    "first_chunk",
    "seconds",
)


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigurationError(
            "the Ray integration needs ray; install it with: pip install 'mmstream[ray]'"
        ) from None
    return ray


class _Bucket:
    """A token bucket refilled continuously at ``per_minute / 60`` a second."""

    def __init__(self, per_minute: float, burst: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(burst)
        self.level = self.capacity
        self.stamp = time.monotonic()

    def wait_for(self, cost: float, now: float) -> float:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        need = min(cost, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate


class _Budget:
    """The body of the limiter actor: buckets, the pause, and who drew what.

    Ray runs one method of an actor at a time, so this is plain arithmetic.
    """

    def __init__(
        self,
        requests_per_minute: float | None,
        tokens_per_minute: float | None,
        burst_requests: float | None,
        burst_tokens: float | None,
    ) -> None:
        self.requests = (
            None
            if requests_per_minute is None
            else _Bucket(requests_per_minute, burst_requests or requests_per_minute)
        )
        self.tokens = (
            None
            if tokens_per_minute is None
            else _Bucket(tokens_per_minute, burst_tokens or tokens_per_minute)
        )
        self.pause_until = -math.inf
        self.callers: dict[str, int] = {}
        self.pauses = 0

    def take(self, tokens: int, caller: str) -> float:
        """Take one request and ``tokens``, or return the seconds to wait before asking again."""
        now = time.monotonic()
        wait = self.pause_until - now
        for bucket, cost in ((self.requests, 1), (self.tokens, tokens)):
            if bucket is not None:
                wait = max(wait, bucket.wait_for(cost, now))
        if wait > 0:
            return wait
        if self.requests is not None:
            self.requests.level -= 1
        if self.tokens is not None:
            self.tokens.level -= tokens
        self.callers[caller] = self.callers.get(caller, 0) + 1
        return 0.0

    def correct(self, difference: int) -> None:
        """Charge (positive) or refund (negative) tokens once a call's usage is known."""
        if self.tokens is not None and difference:
            self.tokens.level = min(self.tokens.capacity, self.tokens.level - difference)

    def pause(self, seconds: float) -> None:
        """Hold every caller's new requests for ``seconds`` (a 429's ``Retry-After``)."""
        self.pause_until = max(self.pause_until, time.monotonic() + seconds)
        self.pauses += 1

    def stats(self) -> dict[str, Any]:
        """Requests granted per caller (``host:pid``) and pauses taken."""
        return {"callers": dict(self.callers), "pauses": self.pauses}


def shared_rate_limit(
    *,
    requests_per_minute: float | None = None,
    tokens_per_minute: float | None = None,
    burst_requests: float | None = None,
    burst_tokens: float | None = None,
    name: str | None = None,
) -> Any:
    """Start the Ray actor that holds a run's budget, and return its handle.

    Pass the handle to every [`LLMPredictor`][mmstream.batch.ray.LLMPredictor]
    (``fn_constructor_kwargs={"limiter": handle}``). As with
    [`RateLimit`][mmstream.middleware.RateLimit], a bucket holds up to a
    minute's budget, so that much may go at once before calls are spaced out;
    ``burst_requests``/``burst_tokens`` make the bucket smaller. The actor
    takes no CPU. ``ray.get(handle.stats.remote())`` tells who drew how much.

    Args:
        requests_per_minute: requests per minute across every actor, or ``None``.
        tokens_per_minute: tokens per minute across every actor, or ``None``.
        burst_requests: the most requests at once (default: a minute's worth).
        burst_tokens: the most tokens at once (default: a minute's worth).
        name: a Ray actor name, so other drivers find the same limiter
            (``get_if_exists``).

    Raises:
        ConfigurationError: ray is missing, or a limit is not positive.
    """
    for label, value in (
        ("requests_per_minute", requests_per_minute),
        ("tokens_per_minute", tokens_per_minute),
        ("burst_requests", burst_requests),
        ("burst_tokens", burst_tokens),
    ):
        if value is not None and not value > 0:
            raise ConfigurationError(f"shared_rate_limit({label}=...) must be > 0, not {value}")
    ray = _ray()
    actor = ray.remote(num_cpus=0)(_Budget)
    if name is not None:
        actor = actor.options(name=name, get_if_exists=True)
    return actor.remote(requests_per_minute, tokens_per_minute, burst_requests, burst_tokens)


def _usage_tokens(chunk: ChatResponse | None) -> int | None:
    usage = None if chunk is None else chunk.usage
    if usage is None or (usage.input_tokens is None and usage.output_tokens is None):
        return None
    return usage.total_tokens or (usage.input_tokens or 0) + (usage.output_tokens or 0)


@final
class SharedRateLimit:
    """Middleware that draws every request from a shared limiter actor.

    Each attempt waits until the actor grants it (its budget, and any pause
    in force); a 429 pauses every caller of the actor; the token estimate is
    corrected by the usage reported at the end.

    Args:
        limiter: the actor's handle.
        estimate: ``(request) -> tokens`` before the call.
        default_pause: seconds to pause after a 429 without ``Retry-After``.
        sleep: how to wait (``anyio.sleep``).
    """

    def __init__(
        self,
        limiter: Any,
        *,
        estimate: Callable[[ChatRequest], int] = estimate_tokens,
        default_pause: float = 1.0,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self.limiter = limiter
        self.estimate = estimate
        self.default_pause = default_pause
        self.sleep = sleep
        self.caller = f"{socket.gethostname()}:{os.getpid()}"

    def __repr__(self) -> str:
        return f"SharedRateLimit(limiter={self.limiter!r})"

    async def _ask(self, method: Any, *args: Any) -> Any:
        ray = _ray()
        reference = method.remote(*args)
        return await anyio.to_thread.run_sync(ray.get, reference)

    async def __call__(
        self, request: ChatRequest, call_next: CallNext
    ) -> AsyncIterator[ChatResponse]:
        """Wait for the shared budget, pass the call through, report 429s and usage."""
        tokens = self.estimate(request)
        while True:
            wait = await self._ask(self.limiter.take, tokens, self.caller)
            if wait <= 0:
                break
            await self.sleep(wait)
        note_attempt()
        last: ChatResponse | None = None
        try:
            async for last in call_next(request):
                yield last
        except RateLimitError as exc:
            seconds = pause_for(exc, self.default_pause)
            if seconds is not None:
                await self._ask(self.limiter.pause, seconds)
            raise
        used = _usage_tokens(last)
        if used is not None and used != tokens:
            # Not waited for: Ray runs one caller's calls to an actor in order.
            self.limiter.correct.remote(used - tokens)


_DEFAULT_RETRY = Retry()


@final
class LLMPredictor:
    """A callable class for ``Dataset.map_batches``: one client per actor, rows in, results out.

    Each input row is a job: the columns named like the JSONL job fields
    (``id``, ``prompt`` or ``messages``, ``images``, ``system``, ``options``,
    ...) make it; other columns are passed through to the output unchanged.
    Each output row adds the columns of
    [`JobResult.to_row`][mmstream.batch.JobResult.to_row]. A job that fails is
    a row with ``error_kind`` set; the dataset goes on. Images named by path
    are read on the worker that runs the row.

    Args:
        llm: a provider or ``"name:model"``.
        limiter: a [`shared_rate_limit`][mmstream.batch.ray.shared_rate_limit] handle
            shared by every actor, or ``None``.
        concurrency: rows in flight at once in each actor.
        retry: the retry policy of each row (``None``: no retries).
        default_pause: seconds to pause every actor after a 429 without ``Retry-After``.
        base_dir: where relative image paths start (on the worker).
        sync_backend: the actor's event loop, ``"asyncio"`` or ``"trio"``.
        **provider_fields: with a string ``llm``, fields for its provider.

    Example:
        ```python
        limiter = shared_rate_limit(requests_per_minute=500)
        results = ds.map_batches(
            LLMPredictor,
            fn_constructor_kwargs={"llm": "openai:gpt-4o-mini", "limiter": limiter},
            concurrency=4,      # actors
            batch_size=64,
        )
        ```
    """

    def __init__(
        self,
        llm: Provider | str = "offline:default",
        *,
        limiter: Any = None,
        concurrency: int = 8,
        retry: Retry | None = _DEFAULT_RETRY,
        default_pause: float = 1.0,
        base_dir: str | None = None,
        sync_backend: Literal["asyncio", "trio"] = "asyncio",
        **provider_fields: Any,
    ) -> None:
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(f"concurrency must be an integer >= 1, not {concurrency!r}")
        layers: list[Middleware] = []
        if retry is not None:
            layers.append(retry)
        if limiter is not None:
            layers.append(SharedRateLimit(limiter, default_pause=default_pause))
        self.llm = MultiModalLLM(
            llm, middleware=layers, sync_backend=sync_backend, **provider_fields
        )
        self.base_dir = base_dir
        self.executor = StreamingExecutor(self.llm, concurrency=concurrency)

    def __call__(self, batch: Any) -> dict[str, list[Any]]:
        """Run one batch (numpy dict, pandas or pyarrow format) and return its result columns."""
        columns = _columns(batch)
        count = len(next(iter(columns.values()), []))
        rows = [{name: values[index] for name, values in columns.items()} for index in range(count)]
        results = self.run_rows([_job_fields(row) for row in rows])
        out: dict[str, list[Any]] = {}
        passthrough = [name for name in columns if name not in RESULT_COLUMNS]
        for name in passthrough:
            out[name] = list(columns[name])
        for name in RESULT_COLUMNS:
            out[name] = []
        for result in results:
            row = result.to_row()
            for name in RESULT_COLUMNS:
                out[name].append(row[name])
        return out

    async def arun_rows(self, rows: Sequence[Mapping[str, Any]]) -> list[JobResult]:
        """Run job dicts concurrently; return their results in the rows' order.

        Raises:
            InvalidJobError: a row is not a valid job, or two rows share an id.
        """
        jobs = [Job.from_dict(row, base_dir=self.base_dir) for row in rows]
        if len({job.id for job in jobs}) < len(jobs):
            raise InvalidJobError("two rows of one batch share an id; job ids must be unique")
        results: dict[str, JobResult] = {}
        collected = _Collect(results)

        async def each() -> AsyncIterator[Job]:
            for job in jobs:
                yield job

        await self.executor.run(each(), collected)
        return [results[job.id] for job in jobs]

    run_rows = blocking(arun_rows)

    def _blocking_lease(self) -> Lease:
        return self.llm._blocking_lease()


class _Collect:
    """A sink keeping each result by id."""

    def __init__(self, results: dict[str, JobResult]) -> None:
        self.results = results

    def started(self, job: Job) -> None:
        pass

    async def finished(self, result: JobResult) -> None:
        self.results[result.id] = result


def _columns(batch: Any) -> dict[str, list[Any]]:
    """A batch in any of Ray's formats as plain Python lists per column."""
    if hasattr(batch, "to_pydict"):  # pyarrow.Table
        return {name: list(values) for name, values in batch.to_pydict().items()}
    if hasattr(batch, "to_dict") and not isinstance(batch, Mapping):  # pandas.DataFrame
        return {str(name): [_plain(v) for v in values] for name, values in batch.items()}
    return {str(name): [_plain(v) for v in values] for name, values in batch.items()}


def _plain(value: Any) -> Any:
    """numpy arrays and scalars as Python lists and values, recursively."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _job_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    """The job fields of a row; missing values (``None``, NaN) are left out."""
    job: dict[str, Any] = {}
    for name in JOB_FIELDS:
        value = row.get(name)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        job[name] = value
    return job
