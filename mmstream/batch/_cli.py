"""``mmstream batch JOBS -o RESULTS``: run a JSONL file of jobs, resumably, from the shell.

Exit status: 0 when every job is in the results file (failed jobs included:
they are recorded), 1 when the run stopped (an invalid job, an unusable
results file, ``--max-failures`` exceeded, a setup error), 2 for a usage
error, 130 when interrupted. Running the same command again resumes.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

__all__ = ["add_batch_parser", "run_batch"]

from mmstream._cli_args import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    real_number,
    whole_number,
)

_positive_int = whole_number(1)
_non_negative_int = whole_number(0)
_positive_float = real_number(0, exclusive=True)
_non_negative_float = real_number(0)


def add_batch_parser(commands: Any) -> argparse.ArgumentParser:
    """Add the ``batch`` subcommand to the ``mmstream`` command's subparsers."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "batch",
        help="run a JSONL file of jobs, writing one result a line (resumable)",
        description=(
            "Run every job of JOBS (JSONL: one {'id', 'prompt' | 'messages', 'images', "
            "'options'} object a line) and append each result to RESULTS as it ends. "
            "Run the same command again to resume: finished jobs are skipped."
        ),
    )
    parser.add_argument("jobs", help="the jobs file (JSONL), or - for standard input")
    parser.add_argument(
        "-o", "--output", required=True, help="the results file (JSONL), created or resumed"
    )
    parser.add_argument(
        "--model",
        "-m",
        default=None,
        help="provider:model, e.g. openai:gpt-4o-mini (default: offline:default)",
    )
    parser.add_argument(
        "--concurrency", "-c", type=_positive_int, default=8, help="jobs in flight (default 8)"
    )
    parser.add_argument("--rpm", type=_positive_float, default=None, help="requests per minute")
    parser.add_argument("--tpm", type=_positive_float, default=None, help="tokens per minute")
    parser.add_argument(
        "--max-attempts",
        type=_positive_int,
        default=3,
        help="attempts per job, retries included (default 3; 1 turns retries off)",
    )
    parser.add_argument(
        "--max-failures",
        type=_non_negative_int,
        default=None,
        help="stop once more jobs than this failed (default: never)",
    )
    parser.add_argument(
        "--redo-failed", action="store_true", help="run the jobs recorded as failed again"
    )
    parser.add_argument(
        "--base-dir", default=None, help="where relative image paths start (default: JOBS's folder)"
    )
    parser.add_argument("--max-tokens", type=_positive_int, default=None, help="limit each answer")
    parser.add_argument("--temperature", type=float, default=None, help="sampling temperature")
    parser.add_argument(
        "--timeout", type=_positive_float, default=None, help="HTTP timeout per request, seconds"
    )
    parser.add_argument(
        "--fsync-interval",
        type=_non_negative_float,
        default=1.0,
        help="seconds between fsyncs of RESULTS (0: after each result; default 1)",
    )
    parser.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="the progress bar: auto shows it on a terminal (default)",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="print no summary")
    return parser


def run_batch(args: argparse.Namespace, err: TextIO | None = None) -> int:
    """Run the ``batch`` subcommand; return its exit status."""
    import anyio

    from mmstream.errors import MMStreamError

    err = err if err is not None else sys.stderr
    try:
        return anyio.run(_run, args, err)
    except MMStreamError as exc:
        _error(err, exc)
        return EXIT_ERROR
    except KeyboardInterrupt:
        err.write(
            "mmstream: interrupted; the results so far are saved: run the same command to resume\n"
        )
        return EXIT_INTERRUPTED


def _error(err: TextIO, exc: BaseException) -> None:
    message = " ".join(str(exc).split())
    err.write(f"mmstream: error: {message}\n")


async def _run(args: argparse.Namespace, err: TextIO) -> int:
    from mmstream.batch._runner import Batch
    from mmstream.middleware.retry import Retry

    model = args.model
    if model is None:
        model = "offline:default"
        err.write("mmstream: no --model given; answering with the offline provider\n")
    options = {
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "timeout": args.timeout,
    }
    options = {k: v for k, v in options.items() if v is not None}
    bar = _progress_bar(args.progress, err)
    retry = Retry(max_attempts=args.max_attempts) if args.max_attempts > 1 else None
    async with Batch(
        model,
        concurrency=args.concurrency,
        requests_per_minute=args.rpm,
        tokens_per_minute=args.tpm,
        retry=retry,
        max_failures=args.max_failures,
        fsync_interval=args.fsync_interval or 0,
        **options,
    ) as batch:
        try:
            stats = await batch.arun(
                args.jobs,
                args.output,
                progress=bar,
                redo_failed=args.redo_failed,
                base_dir=args.base_dir,
            )
        finally:
            if bar is not None:
                bar.stop()
    if not args.quiet and bar is None:
        err.write(f"mmstream: {stats.summary()}\n")
    return 0


def _progress_bar(mode: str, err: TextIO) -> Any:
    """The bar to show, or ``None``: on a terminal (``auto``), always, or never."""
    if mode == "never" or (mode == "auto" and not err.isatty()):
        return None
    from mmstream.batch._progress import ProgressBar
    from mmstream.errors import ConfigurationError

    try:
        return ProgressBar(err)
    except ConfigurationError:
        if mode == "always":
            raise
        err.write("mmstream: pip install 'mmstream[batch]' for a progress bar\n")
        return None
