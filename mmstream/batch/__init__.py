"""Batch runs: many jobs through one model, resumable, exactly once, under shared limits.

```python
from mmstream.batch import Batch

with Batch("openai:gpt-4o-mini", concurrency=32, requests_per_minute=500) as batch:
    stats = batch.run("jobs.jsonl", "results.jsonl")   # run it again to resume
```

Jobs come from a JSONL file or any iterable ([`Job`][mmstream.batch.Job]),
results go to a JSONL file in completion order ([`JobResult`][mmstream.batch.JobResult]).
The CLI is ``mmstream batch jobs.jsonl -o results.jsonl``; Ray Data runs live in
[`mmstream.batch.ray`][mmstream.batch.ray]. ``import mmstream`` never imports
this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmstream._lazy import lazy

if TYPE_CHECKING:  # imported on first use (see __getattr__): the CLI's parser stays light
    from mmstream.batch._errors import BatchAbortedError, InvalidJobError, OutputFileError
    from mmstream.batch._executor import Executor, Sink, StreamingExecutor
    from mmstream.batch._files import JobsInput, ResultsFile, read_results
    from mmstream.batch._job import JOB_FIELDS, Job
    from mmstream.batch._progress import ProgressBar
    from mmstream.batch._result import BatchStats, JobError, JobResult, Timings
    from mmstream.batch._runner import Batch, ProgressCallback, ResultCallback

__all__ = [
    "JOB_FIELDS",
    "Batch",
    "BatchAbortedError",
    "BatchStats",
    "Executor",
    "InvalidJobError",
    "Job",
    "JobError",
    "JobResult",
    "JobsInput",
    "OutputFileError",
    "ProgressBar",
    "ProgressCallback",
    "ResultCallback",
    "ResultsFile",
    "Sink",
    "StreamingExecutor",
    "Timings",
    "read_results",
]

_LAZY = {
    "BatchAbortedError": "mmstream.batch._errors",
    "InvalidJobError": "mmstream.batch._errors",
    "OutputFileError": "mmstream.batch._errors",
    "Executor": "mmstream.batch._executor",
    "Sink": "mmstream.batch._executor",
    "StreamingExecutor": "mmstream.batch._executor",
    "JobsInput": "mmstream.batch._files",
    "ResultsFile": "mmstream.batch._files",
    "read_results": "mmstream.batch._files",
    "JOB_FIELDS": "mmstream.batch._job",
    "Job": "mmstream.batch._job",
    "ProgressBar": "mmstream.batch._progress",
    "BatchStats": "mmstream.batch._result",
    "JobError": "mmstream.batch._result",
    "JobResult": "mmstream.batch._result",
    "Timings": "mmstream.batch._result",
    "Batch": "mmstream.batch._runner",
    "ProgressCallback": "mmstream.batch._runner",
    "ResultCallback": "mmstream.batch._runner",
}


__getattr__, __dir__ = lazy(globals(), _LAZY)
