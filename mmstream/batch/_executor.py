"""Executors: how jobs become results. The runner around them owns files, resume and progress.

An executor takes the jobs still to run (an async iterator, read lazily) and
reports each one to a [`Sink`][mmstream.batch.Sink]: ``started(job)`` when it
begins and ``await finished(result)`` once, when it ended, in completion
order. It may run jobs in any order and any number at once, but must report
each job it was given at most once, and must not report a job it did not
finish (a job in flight when the run stops is simply not reported: it runs
again on resume).

[`StreamingExecutor`][mmstream.batch.StreamingExecutor] streams each job through a
[`MultiModalLLM`][mmstream.MultiModalLLM] with a bounded number of workers.
The providers' batch APIs plug in later as another executor that submits jobs
in chunks, polls, and reports the downloaded results to the same sink.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, final

import anyio

from mmstream.batch._limits import ATTEMPTS, AttemptCounter
from mmstream.batch._result import JobResult, Timings

if TYPE_CHECKING:
    from mmstream.batch._job import Job
    from mmstream.llm import MultiModalLLM
    from mmstream.responses import ChatResponse

__all__ = ["Executor", "Sink", "StreamingExecutor", "run_all"]


class Sink(Protocol):
    """Where an executor reports jobs as they start and end."""

    def started(self, job: Job) -> None:
        """A job began."""

    async def finished(self, result: JobResult) -> None:
        """A job ended (called once per job, in completion order); may stop the run by raising."""


class Executor(Protocol):
    """Runs jobs and reports each to the sink once."""

    async def run(self, jobs: AsyncIterator[Job], sink: Sink) -> None:
        """Run every job of ``jobs``; return when all are reported."""


async def run_all(tasks: Sequence[Callable[[], Awaitable[Any]]]) -> None:
    """Run tasks together; the first failure cancels the rest and is raised as it is.

    (A bare task group would wrap it in an exception group.)
    """
    errors: list[Exception] = []
    async with anyio.create_task_group() as group:

        async def guarded(task: Callable[[], Awaitable[Any]]) -> None:
            try:
                await task()
            except Exception as exc:
                errors.append(exc)
                group.cancel_scope.cancel()

        for task in tasks:
            group.start_soon(guarded, task)
    if errors:
        raise errors[0]


@final
class StreamingExecutor:
    """Streams each job through one LLM, ``concurrency`` at a time.

    A job's failure (any exception it raises) is its result; the run goes on.
    The answer that arrived before a mid-stream failure is kept.

    Args:
        llm: the client every job goes through (its middleware carry the run's limits).
        concurrency: jobs in flight at once.
        clock: monotonic seconds, for the timings.
    """

    def __init__(
        self,
        llm: MultiModalLLM,
        *,
        concurrency: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.llm = llm
        self.concurrency = concurrency
        self.clock = clock

    async def run(self, jobs: AsyncIterator[Job], sink: Sink) -> None:
        """Feed the jobs to ``concurrency`` workers through a rendezvous channel."""
        send, receive = anyio.create_memory_object_stream["Job"](0)

        async def produce() -> None:
            try:
                async with send:
                    async for job in jobs:
                        await send.send(job)
            finally:
                aclose = getattr(jobs, "aclose", None)
                if aclose is not None:
                    with anyio.CancelScope(shield=True):
                        await aclose()

        async def work(channel: Any) -> None:
            async with channel:
                async for job in channel:
                    sink.started(job)
                    result = await self.run_one(job)
                    await sink.finished(result)

        workers = [receive.clone() for _ in range(self.concurrency)]
        receive.close()
        await run_all([produce, *[(lambda channel=channel: work(channel)) for channel in workers]])

    async def run_one(self, job: Job) -> JobResult:
        """Stream one job to its end and make its result (never raises for the job's failure)."""
        counter = AttemptCounter()
        token = ATTEMPTS.set(counter)
        started = time.time()
        start = self.clock()
        first: float | None = None
        last: ChatResponse | None = None
        try:
            async with self.llm.astream_chat(job.to_messages(), **job.options) as stream:
                async for chunk in stream:
                    if first is None and chunk.delta:
                        first = self.clock() - start
                    last = chunk
        except Exception as exc:
            timings = Timings(started=started, first_chunk=first, total=self.clock() - start)
            return JobResult.from_exception(
                job.id, exc, attempts=max(counter.count, 1), timings=timings, metadata=job.metadata
            )
        finally:
            ATTEMPTS.reset(token)
        timings = Timings(started=started, first_chunk=first, total=self.clock() - start)
        return JobResult.from_response(
            job.id, last, attempts=max(counter.count, 1), timings=timings, metadata=job.metadata
        )
