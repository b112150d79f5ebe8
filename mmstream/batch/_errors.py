"""The errors of a batch run, in the tree of [`mmstream.errors`][mmstream.errors].

```
MMStreamError
├── ConfigurationError
│   └── OutputFileError       the results file cannot be used (.path, .line)
├── InvalidRequestError
│   └── InvalidJobError       a job cannot run as written, or its id repeats (.job_id, .line)
└── BatchAbortedError         more jobs failed than max_failures allows (.stats, .last_error)
```

A job that fails while it runs is not an exception of the run: it is recorded
in the results (``error.kind`` names the class, e.g. ``"RateLimitError"``) and
the run goes on. These three are what stops a run, and each leaves the
results file whole, so the same command resumes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmstream.errors import ConfigurationError, InvalidRequestError, MMStreamError

if TYPE_CHECKING:
    from mmstream.batch._result import BatchStats, JobError

__all__ = ["BatchAbortedError", "InvalidJobError", "OutputFileError"]


class InvalidJobError(InvalidRequestError):
    """A job cannot run as written (bad JSON, no id, no prompt, unknown field, a repeated id).

    Attributes:
        job_id: the job's id, when it has one.
        line: the line of the jobs file (1-based), when the job came from one.
    """

    hint = "Fix the job and start the run again; nothing was sent for it."

    def __init__(self, message: str, *, job_id: str | None = None, line: int | None = None) -> None:
        where = f"line {line}: " if line is not None else ""
        super().__init__(f"{where}{message}")
        self.job_id = job_id
        self.line = line


class OutputFileError(ConfigurationError):
    """The results file cannot be used: unreadable, not results, or written by another run.

    Attributes:
        path: the results file.
        line: the offending line (1-based), when one is to blame.
    """

    hint = "Pass another output file, or repair or remove this one."

    def __init__(self, message: str, *, path: str, line: int | None = None) -> None:
        where = f" (line {line})" if line is not None else ""
        super().__init__(f"{path}{where}: {message}")
        self.path = path
        self.line = line


class BatchAbortedError(MMStreamError):
    """More jobs failed than ``max_failures`` allows; the run stopped.

    Every job that ended is in the results file; the ones in flight were
    dropped and run again on resume.

    Attributes:
        stats: the run's counts when it stopped.
        last_error: the error of the job that went over the limit.
    """

    hint = "Look at the recorded errors, fix the cause, and run the same command again to resume."

    def __init__(self, message: str, *, stats: BatchStats, last_error: JobError | None) -> None:
        super().__init__(message)
        self.stats = stats
        self.last_error = last_error
