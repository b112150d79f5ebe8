"""A progress bar for batch runs on a terminal (``rich``, from the ``batch`` extra).

[`Batch.arun`][mmstream.batch.Batch.arun] takes any progress callback; this
is the one the CLI shows. ``rich`` is imported when the bar starts, never
before, and a missing ``rich`` is a [`MissingExtraError`][mmstream.errors.MissingExtraError]
that names the extra.
"""

from __future__ import annotations

import math
import sys
from types import TracebackType
from typing import Any, TextIO, final

from mmstream.batch._result import BatchStats
from mmstream.errors import import_extra

__all__ = ["ProgressBar", "format_duration"]


def format_duration(seconds: float | None) -> str:
    """``1:02:03``, ``4:05`` or ``--:--`` (unknown or endless)."""
    if seconds is None or math.isinf(seconds) or math.isnan(seconds):
        return "--:--"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@final
class ProgressBar:
    """A live bar on a terminal: done / total, failed, jobs per second, tokens, ETA.

    Use it as a context manager around the run and pass it as ``progress``;
    it prints the run's summary when it stops.

    Args:
        file: the terminal to draw on (standard error by default).
        description: the text before the bar.

    Raises:
        MissingExtraError: ``rich`` is not installed (``pip install 'mmstream[batch]'``).

    Example:
        ```python
        from mmstream.batch import Batch, ProgressBar

        with Batch() as batch, ProgressBar() as bar:
            batch.run([{"id": "1", "prompt": "hi"}], progress=bar)
        ```
    """

    def __init__(self, file: TextIO | None = None, *, description: str = "batch") -> None:
        try:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
            )
        except ImportError:
            import_extra("rich", "batch", "the batch progress bar")
            raise
        self._console = Console(file=file if file is not None else sys.stderr)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[red]{task.fields[failed]} failed"),
            TextColumn("{task.fields[rate]}/s"),
            TextColumn("{task.fields[tokens]} tokens"),
            TextColumn("ETA {task.fields[eta]}"),
            console=self._console,
            transient=False,
        )
        self._task: Any = self._progress.add_task(
            description, total=None, failed=0, rate="0.0", tokens="0", eta="--:--"
        )
        self._last: BatchStats | None = None
        self._started = False

    def __call__(self, stats: BatchStats) -> None:
        """Show a snapshot (the progress callback)."""
        if not self._started:
            self.start()
        self._last = stats
        total = None if stats.total is None else max(0, stats.total - stats.skipped)
        self._progress.update(
            self._task,
            total=total,
            completed=stats.done,
            failed=stats.failed,
            rate=f"{stats.rate:.1f}",
            tokens=_short(stats.input_tokens + stats.output_tokens),
            eta=format_duration(stats.eta),
        )

    def start(self) -> None:
        """Start drawing."""
        if not self._started:
            self._started = True
            self._progress.start()

    def stop(self) -> None:
        """Stop drawing and print the summary of the last snapshot."""
        if self._started:
            self._started = False
            self._progress.stop()
        if self._last is not None:
            self._console.print(self._last.summary(), highlight=False, soft_wrap=True)

    def __enter__(self) -> ProgressBar:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _short(count: int) -> str:
    for size, suffix in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if count >= size:
            return f"{count / size:.1f}{suffix}"
    return str(count)
