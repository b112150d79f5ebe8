"""The results file (append-only, whole lines, recovered on resume) and the job sources.

The results file is what makes a run resumable and exactly once:

- Each result is appended with **one** ``write`` of one whole line to a file
  opened with ``O_APPEND``, from one thread, so lines never interleave. A
  process killed at any point (``kill -9`` included) leaves every line whole
  except, at worst, the last one, which has no newline.
- On open, that torn last line is cut off (its job runs again); the ids of the
  complete lines are the jobs that are done, and are skipped.
- The file is locked (``flock``) while a run writes to it, so two runs on the
  same file cannot both write a job.
- ``fsync`` is not needed for a killed process (the kernel holds what ``write``
  returned); it guards against a power loss or an OS crash. It runs at most
  once per ``fsync_interval`` seconds in a worker thread and once at the end,
  so the cost is not paid per job. A power loss can then lose the results of
  the last interval: those jobs run again (still once in the file), and a
  garbled tail (NUL bytes) is cut off like a torn line.

A job source reads jobs lazily: a JSONL file in blocks from a worker thread,
a sequence or an iterable one item at a time. Only the ids are remembered (to
find repeated ids and skip finished jobs), never the jobs or the results.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sys
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Collection,
    Iterable,
    Mapping,
    Sequence,
)
from pathlib import Path
from typing import IO, Any, Union, final

import anyio.lowlevel
import anyio.to_thread

from mmstream.batch._errors import InvalidJobError, OutputFileError
from mmstream.batch._job import Job
from mmstream.errors import InvalidRequestError

__all__ = ["JobSource", "JobsInput", "ResultsFile", "job_source", "read_results"]

#: what a run takes as its jobs: a JSONL path (``"-"``: standard input) or jobs in memory.
JobsInput = Union[  # a runtime alias (3.10 has no `|` between a str and a class)
    str,
    "os.PathLike[str]",
    Iterable[Union[Job, Mapping[str, Any]]],  # noqa: UP007
    AsyncIterable[Union[Job, Mapping[str, Any]]],  # noqa: UP007
]

#: lines read from a jobs file per worker-thread call.
_READ_LINES = 512


@final
class ResultsFile:
    """An append-only JSONL results file, locked while open; see the module docstring."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd
        self._dirty = False

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], *, redo_failed: bool = False
    ) -> tuple[ResultsFile, set[str]]:
        """Open (or create) a results file, repair a torn tail, and read which jobs are done.

        Blocking: call it from a worker thread.

        Args:
            path: the file.
            redo_failed: first rewrite the file without its failed jobs, so they run again.

        Returns:
            The open file and the ids of the jobs it holds.

        Raises:
            OutputFileError: it cannot be opened, is locked by another run, or
                holds a line that is not a result.
        """
        target = Path(path)
        name = str(target)
        try:
            fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_APPEND | _O_BINARY, 0o644)
        except OSError as exc:
            raise OutputFileError(
                f"cannot open the results file ({exc.strerror})", path=name
            ) from exc
        try:
            _lock(fd, name)
            if redo_failed:
                fd = _without_failures(target, fd)
            done = _recover(fd, name)
        except BaseException:
            os.close(fd)
            raise
        return cls(target, fd), done

    def append(self, line: str) -> None:
        """Append one record (a whole line) with one write."""
        fd = self._fd
        if fd is None:
            raise OutputFileError("the results file is closed", path=str(self.path))
        data = line.encode("utf-8")
        try:
            written = os.write(fd, data)
            while written < len(data):  # a short write (nearly full disk): finish the line
                written += os.write(fd, data[written:])
        except OSError as exc:
            raise OutputFileError(
                f"cannot write a result ({exc.strerror}); the run stopped, and resuming "
                "cuts off a partly written last line",
                path=str(self.path),
            ) from exc
        self._dirty = True

    def sync(self) -> None:
        """Flush written records to the disk (blocking: call it from a worker thread)."""
        fd = self._fd
        if fd is None or not self._dirty:
            return
        self._dirty = False
        try:
            os.fsync(fd)
        except OSError as exc:
            raise OutputFileError(f"cannot fsync ({exc.strerror})", path=str(self.path)) from exc

    def close(self) -> None:
        """Sync, unlock and close (blocking)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self._dirty:
                with contextlib.suppress(OSError):
                    os.fsync(fd)
        finally:
            os.close(fd)  # releases the lock


_O_BINARY = getattr(os, "O_BINARY", 0)


def _lock(fd: int, name: str) -> None:
    """Take the run's exclusive lock on the file (where the platform has ``flock``)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory lock
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise OutputFileError(
            "another run is writing to this results file; wait for it to end", path=name
        ) from None


def _lines(fd: int) -> Iterable[tuple[int, int, bytes]]:
    """``(line number, offset, line)`` of a file from its start, newline included."""
    os.lseek(fd, 0, os.SEEK_SET)
    with os.fdopen(os.dup(fd), "rb", buffering=1 << 16) as stream:
        stream.seek(0)
        offset = 0
        for number, line in enumerate(stream, 1):
            yield number, offset, line
            offset += len(line)


def _recover(fd: int, name: str) -> set[str]:
    """Cut a torn or garbled tail, then return the ids the file holds."""
    done: set[str] = set()
    cut: int | None = None
    for number, offset, line in _lines(fd):
        if not line.endswith(b"\n") or not line.strip(b"\x00\n"):
            cut = offset  # torn by a kill (no newline) or zeroed by a power loss
            break
        try:
            record = json.loads(line)
            job_id = record["id"]
        except (ValueError, TypeError, KeyError):
            raise OutputFileError(
                "this line is not a result record; is this a results file?", path=name, line=number
            ) from None
        if not isinstance(job_id, str):
            raise OutputFileError("a result's id is not a string", path=name, line=number)
        if job_id in done:
            raise OutputFileError(
                f"job {job_id!r} is in the file twice (not written by one mmstream run)",
                path=name,
                line=number,
            )
        done.add(job_id)
    if cut is not None:
        os.ftruncate(fd, cut)
        os.fsync(fd)
    return done


def _without_failures(target: Path, fd: int) -> int:
    """Rewrite the file keeping its successful records; return the new file's locked fd."""
    temporary = target.with_name(f".{target.name}.redo-{os.getpid()}")
    kept = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _O_BINARY, 0o644)
    try:
        with os.fdopen(kept, "wb", closefd=False) as out:
            for _, _, line in _lines(fd):
                if not line.endswith(b"\n"):
                    break
                with contextlib.suppress(ValueError):
                    if json.loads(line).get("error") is not None:
                        continue
                out.write(line)
        os.fsync(kept)
    finally:
        os.close(kept)
    os.replace(temporary, target)
    with contextlib.suppress(OSError):  # make the rename itself durable
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    os.close(fd)
    fd = os.open(target, os.O_RDWR | os.O_APPEND | _O_BINARY)
    try:
        _lock(fd, str(target))
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_results(path: str | os.PathLike[str]) -> Iterable[dict[str, Any]]:
    """The complete records of a results file, one parsed JSON object at a time.

    A torn last line (a run killed while writing it) is left out. Blocking.
    """
    with open(path, "rb") as stream:
        for line in stream:
            if line.endswith(b"\n") and line.strip(b"\x00\n"):
                yield json.loads(line)


# --------------------------------------------------------------------- job sources


class JobSource:
    """Where the jobs come from: checked before the run where possible, then read lazily."""

    #: whether `prepare` reads every job first (a file, a sequence).
    checked_first: bool = False
    #: jobs of the input found already done (counted by `prepare`, or as they are read).
    skipped: int = 0

    async def prepare(self, done: Collection[str]) -> tuple[int | None, int]:
        """Check every job and count them; return ``(total, already done)``.

        Raises:
            InvalidJobError: a job is invalid or an id repeats (nothing was run).
        """
        return None, 0

    async def check(self) -> None:
        """Fail early, before the results file is touched, if the jobs cannot be read."""

    def jobs(self, done: Collection[str]) -> AsyncIterator[Job]:
        """The jobs not in ``done``, in input order, read as they are needed."""
        raise NotImplementedError


def _to_job(item: Any, base_dir: Path | None, where: str) -> Job:
    if isinstance(item, Job):
        return item
    if isinstance(item, Mapping):
        try:
            return Job.from_dict(item, base_dir=base_dir)
        except InvalidJobError as exc:
            raise InvalidJobError(f"{where}: {exc.message}", job_id=exc.job_id) from None
    raise InvalidJobError(f"{where} is a {type(item).__name__}, not a Job or a mapping")


def _repeated(job_id: str, where: str, line: int | None = None) -> InvalidJobError:
    return InvalidJobError(
        f"{where}the id {job_id!r} is used twice; job ids must be unique within a run",
        job_id=job_id,
        line=line,
    )


@final
class _FileSource(JobSource):
    """A JSONL jobs file: checked whole in a worker thread, then read in blocks."""

    checked_first = True

    def __init__(self, path: Path, base_dir: Path | None) -> None:
        self.path = path
        self.base_dir = base_dir if base_dir is not None else path.parent

    async def prepare(self, done: Collection[str]) -> tuple[int | None, int]:
        return await anyio.to_thread.run_sync(self._scan, done)

    def _scan(self, done: Collection[str]) -> tuple[int, int]:
        seen: set[str] = set()
        skipped = 0
        with self._open() as stream:
            for job in _parse_lines(stream, itertools.count(1), self.base_dir, seen):
                skipped += job.id in done
        self.skipped = skipped
        return len(seen), skipped

    def _open(self) -> IO[bytes]:
        try:
            return open(self.path, "rb")
        except OSError as exc:
            raise InvalidRequestError(
                f"cannot read the jobs file {self.path} ({exc.strerror})"
            ) from exc

    async def check(self) -> None:
        await anyio.to_thread.run_sync(lambda: self._open().close())

    async def jobs(self, done: Collection[str]) -> AsyncIterator[Job]:
        stream = await anyio.to_thread.run_sync(self._open)
        numbers = itertools.count(1)
        try:
            while True:
                block = await anyio.to_thread.run_sync(self._read, stream, numbers)
                if not block:
                    return
                for job in block:
                    if job.id not in done:
                        yield job
        finally:
            stream.close()

    def _read(self, stream: IO[bytes], numbers: Iterable[int]) -> list[Job]:
        lines = list(itertools.islice(stream, _READ_LINES))
        return list(_parse_lines(lines, numbers, self.base_dir, None))


def _parse_lines(
    lines: Iterable[bytes], numbers: Iterable[int], base_dir: Path | None, seen: set[str] | None
) -> Iterable[Job]:
    """Parse JSONL job lines (blank lines are skipped); ``numbers`` counts lines across calls."""
    for number, line in zip(numbers, lines, strict=False):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise InvalidJobError(f"not JSON ({exc})", line=number) from None
        job = Job.from_dict(data, base_dir=base_dir, line=number)
        if seen is not None:
            if job.id in seen:
                raise _repeated(job.id, "", number)
            seen.add(job.id)
        yield job


@final
class _StreamSource(JobSource):
    """JSONL jobs from a stream read once (standard input): ids checked as they come."""

    def __init__(self, stream: IO[bytes], base_dir: Path | None) -> None:
        self.stream = stream
        self.base_dir = base_dir

    async def jobs(self, done: Collection[str]) -> AsyncIterator[Job]:
        seen: set[str] = set()
        numbers = itertools.count(1)
        while True:
            lines = await anyio.to_thread.run_sync(
                lambda: list(itertools.islice(self.stream, _READ_LINES))
            )
            if not lines:
                return
            for job in list(_parse_lines(lines, numbers, self.base_dir, seen)):
                if job.id in done:
                    self.skipped += 1
                else:
                    yield job


@final
class _SequenceSource(JobSource):
    """A list or tuple of jobs (or dicts): checked whole first, then taken one by one."""

    checked_first = True

    def __init__(self, items: Sequence[Any], base_dir: Path | None) -> None:
        self.items = items
        self.base_dir = base_dir

    async def prepare(self, done: Collection[str]) -> tuple[int | None, int]:
        seen: set[str] = set()
        skipped = 0
        for index, item in enumerate(self.items):
            job = _to_job(item, self.base_dir, f"jobs[{index}]")
            if job.id in seen:
                raise _repeated(job.id, f"jobs[{index}]: ")
            seen.add(job.id)
            skipped += job.id in done
            if index % 1000 == 999:
                await anyio.lowlevel.checkpoint()
        self.skipped = skipped
        return len(seen), skipped

    async def jobs(self, done: Collection[str]) -> AsyncIterator[Job]:
        for index, item in enumerate(self.items):
            job = _to_job(item, self.base_dir, f"jobs[{index}]")
            if job.id not in done:
                yield job


@final
class _IterableSource(JobSource):
    """An iterator or async iterable, read once: ids are checked as the jobs come."""

    def __init__(self, items: Iterable[Any] | AsyncIterable[Any], base_dir: Path | None) -> None:
        self.items = items
        self.base_dir = base_dir

    async def jobs(self, done: Collection[str]) -> AsyncIterator[Job]:
        seen: set[str] = set()
        index = 0
        async with contextlib.aclosing(_aiter(self.items)) as items:
            async for item in items:
                job = _to_job(item, self.base_dir, f"job {index + 1}")
                if job.id in seen:
                    raise _repeated(job.id, f"job {index + 1}: ")
                seen.add(job.id)
                index += 1
                if job.id in done:
                    self.skipped += 1
                else:
                    yield job


async def _aiter(items: Iterable[Any] | AsyncIterable[Any]) -> AsyncGenerator[Any, None]:
    """The items of either kind; an async generator the run stops reading is closed."""
    if isinstance(items, AsyncIterable):
        try:
            async for item in items:
                yield item
        finally:
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()
        return
    for item in items:
        yield item
        await anyio.lowlevel.checkpoint()


def job_source(jobs: Any, base_dir: str | os.PathLike[str] | None = None) -> JobSource:
    """The source for what a run was given: a path, ``"-"`` (stdin), a sequence, an iterable.

    Raises:
        InvalidJobError: ``jobs`` is none of these.
    """
    base = None if base_dir is None else Path(base_dir)
    if isinstance(jobs, JobSource):
        return jobs
    if isinstance(jobs, str) and jobs == "-":
        return _StreamSource(sys.stdin.buffer, base)
    if isinstance(jobs, (str, os.PathLike)):
        return _FileSource(Path(jobs), base)
    if isinstance(jobs, (Job, Mapping)):
        raise InvalidJobError("pass a list (or an iterable) of jobs, not a single job")
    if isinstance(jobs, Sequence):
        return _SequenceSource(jobs, base)
    if isinstance(jobs, (Iterable, AsyncIterable)):
        return _IterableSource(jobs, base)
    raise InvalidJobError(
        f"jobs must be a JSONL path, a sequence or an iterable of jobs, not {type(jobs).__name__}"
    )
