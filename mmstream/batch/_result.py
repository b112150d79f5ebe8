"""What a job ended with (`JobResult`) and how a run stands (`BatchStats`).

A result is one line of the results file: `JobResult.to_json` writes it
(one JSON object, ending in a newline) and `JobResult.from_dict` reads it
back. Every executor (the local streaming one today, the providers' batch APIs
later) produces these same records, so resuming, progress and the file format
do not depend on how a job ran.
"""

from __future__ import annotations

import json
import math
from typing import Any, final

from attrs import frozen

from mmstream.errors import APIError, MMStreamError
from mmstream.responses import ChatResponse, Usage

__all__ = ["BatchStats", "JobError", "JobResult", "Timings"]

_USAGE_EXTRAS = ("cache_read_tokens", "cache_creation_tokens", "reasoning_tokens")


@final
@frozen(kw_only=True)
class JobError:
    """Why a job failed: the error's class, its message, and the HTTP status if one came.

    Attributes:
        kind: the exception's class name (``"RateLimitError"``, ``"InvalidImageError"``, ...).
        message: its message (with the hint; secrets are never in it).
        status: the provider's HTTP status, for an [`APIError`][mmstream.errors.APIError].
        retryable: whether the same request may succeed later.
    """

    kind: str
    message: str
    status: int | None = None
    retryable: bool = False

    @classmethod
    def from_exception(cls, error: BaseException) -> JobError:
        """The record of an exception a job raised."""
        status = error.status if isinstance(error, APIError) else None
        retryable = bool(error.retryable) if isinstance(error, MMStreamError) else False
        message = " ".join(str(error).split()) or type(error).__name__
        return cls(kind=type(error).__name__, message=message, status=status, retryable=retryable)


@final
@frozen(kw_only=True)
class Timings:
    """When a job ran and how long it took.

    Attributes:
        started: when its first attempt began (seconds since the epoch).
        first_chunk: seconds from ``started`` to the first streamed text, or ``None``.
        total: seconds from ``started`` to the end (retries and pauses included).
    """

    started: float
    first_chunk: float | None
    total: float


@final
@frozen(kw_only=True)
class JobResult:
    """How one job ended: its text and usage, or the error it failed with.

    A failed job keeps the text that had arrived before the error (``text``).

    Attributes:
        id: the job's id.
        text: the answer (the part that arrived, when it failed mid-stream).
        usage: token counts, when the provider reported them.
        finish_reason: ``"stop"``, ``"length"``, ... (``None`` when it failed).
        error: why it failed, or ``None``.
        attempts: the requests made for it (retries included).
        timings: when it ran and for how long.
        metadata: the job's ``metadata``, unchanged.
    """

    id: str
    text: str
    usage: Usage | None
    finish_reason: str | None
    error: JobError | None
    attempts: int
    timings: Timings
    metadata: Any = None

    @property
    def ok(self) -> bool:
        """Whether the job succeeded."""
        return self.error is None

    @classmethod
    def from_response(
        cls,
        job_id: str,
        response: ChatResponse | None,
        *,
        attempts: int,
        timings: Timings,
        metadata: Any = None,
    ) -> JobResult:
        """The result of a job whose stream ended well (``response``: its last chunk)."""
        return cls(
            id=job_id,
            text="" if response is None else response.text,
            usage=None if response is None else response.usage,
            finish_reason=None if response is None else response.finish_reason,
            error=None,
            attempts=attempts,
            timings=timings,
            metadata=metadata,
        )

    @classmethod
    def from_exception(
        cls,
        job_id: str,
        error: BaseException,
        *,
        attempts: int,
        timings: Timings,
        metadata: Any = None,
    ) -> JobResult:
        """The result of a job that failed; the partial answer is kept."""
        partial = error.partial if isinstance(error, MMStreamError) else None
        return cls(
            id=job_id,
            text="" if partial is None else partial.text,
            usage=None if partial is None else partial.usage,
            finish_reason=None,
            error=JobError.from_exception(error),
            attempts=attempts,
            timings=timings,
            metadata=metadata,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON record (the results file's line, parsed)."""
        usage: dict[str, Any] | None = None
        if self.usage is not None:
            u = self.usage
            usage = {
                "input_tokens": u.input_tokens,
                "output_tokens": u.output_tokens,
                "total_tokens": u.total_tokens,
            }
            for name in _USAGE_EXTRAS:
                value = getattr(u, name)
                if value is not None:
                    usage[name] = value
        error = self.error
        record: dict[str, Any] = {
            "id": self.id,
            "text": self.text,
            "usage": usage,
            "finish_reason": self.finish_reason,
            "error": None
            if error is None
            else {
                "kind": error.kind,
                "message": error.message,
                "status": error.status,
                "retryable": error.retryable,
            },
            "attempts": self.attempts,
            "timings": {
                "started": round(self.timings.started, 6),
                "first_chunk": None
                if self.timings.first_chunk is None
                else round(self.timings.first_chunk, 6),
                "total": round(self.timings.total, 6),
            },
        }
        if self.metadata is not None:
            record["metadata"] = self.metadata
        return record

    def to_row(self) -> dict[str, Any]:
        """The result as flat columns (for tables and Ray Data); the same facts as the record.

        Columns: ``id``, ``text``, ``finish_reason``, ``input_tokens``,
        ``output_tokens``, ``total_tokens``, ``error_kind``, ``error_message``,
        ``error_status``, ``attempts``, ``started``, ``first_chunk``, ``seconds``
        (``timings.total``); a value that is absent is ``None``.
        """
        usage, error, timings = self.usage, self.error, self.timings
        return {
            "id": self.id,
            "text": self.text,
            "finish_reason": self.finish_reason,
            "input_tokens": None if usage is None else usage.input_tokens,
            "output_tokens": None if usage is None else usage.output_tokens,
            "total_tokens": None if usage is None else usage.total_tokens,
            "error_kind": None if error is None else error.kind,
            "error_message": None if error is None else error.message,
            "error_status": None if error is None else error.status,
            "attempts": self.attempts,
            "started": timings.started,
            "first_chunk": timings.first_chunk,
            "seconds": timings.total,
        }

    def to_json(self) -> str:
        """One line of the results file: compact JSON and a newline."""
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":")) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobResult:
        """A result from its JSON record (a line of a results file, parsed).

        Raises:
            ValueError: it is not a result record.
        """
        try:
            usage = data.get("usage")
            error = data.get("error")
            timings = data.get("timings") or {}
            return cls(
                id=str(data["id"]),
                text=str(data.get("text") or ""),
                usage=None if usage is None else Usage(**usage),
                finish_reason=data.get("finish_reason"),
                error=None if error is None else JobError(**error),
                attempts=int(data.get("attempts", 1)),
                timings=Timings(
                    started=float(timings.get("started", 0.0)),
                    first_chunk=timings.get("first_chunk"),
                    total=float(timings.get("total", 0.0)),
                ),
                metadata=data.get("metadata"),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a result record: {exc}") from None


@final
@frozen(kw_only=True)
class BatchStats:
    """How a run stands: given to the progress callback after each job, returned at the end.

    Attributes:
        total: jobs in the input (``None`` when the input is read once, as it comes).
        skipped: jobs already in the results file when the run started (not run again).
        succeeded: jobs that succeeded in this run.
        failed: jobs that failed in this run (recorded with their error).
        in_flight: jobs running now.
        input_tokens: prompt tokens reported in this run.
        output_tokens: answer tokens reported in this run.
        elapsed: seconds since the run started.
        finished: whether the run is over (the last snapshot).
    """

    total: int | None
    skipped: int
    succeeded: int
    failed: int
    in_flight: int
    input_tokens: int
    output_tokens: int
    elapsed: float
    finished: bool = False

    @property
    def done(self) -> int:
        """Jobs that ended in this run (succeeded or failed)."""
        return self.succeeded + self.failed

    @property
    def remaining(self) -> int | None:
        """Jobs still to run, when the total is known."""
        if self.total is None:
            return None
        return max(0, self.total - self.skipped - self.done)

    @property
    def rate(self) -> float:
        """Jobs ended per second in this run."""
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds until the end at the current rate, when it can be told."""
        remaining = self.remaining
        if remaining is None:
            return None
        if remaining == 0:
            return 0.0
        rate = self.rate
        return remaining / rate if rate > 0 else math.inf

    def summary(self) -> str:
        """A one-line account of the run, for a terminal or a log."""
        parts = [f"{self.succeeded} succeeded", f"{self.failed} failed"]
        if self.skipped:
            parts.append(f"{self.skipped} already done")
        if self.in_flight and not self.finished:
            parts.append(f"{self.in_flight} in flight")
        tokens = f"{self.input_tokens:,} in / {self.output_tokens:,} out tokens"
        return f"{', '.join(parts)}; {tokens}; {self.elapsed:.1f} s ({self.rate:.1f} jobs/s)"
