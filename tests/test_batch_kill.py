"""2,000 jobs, a tenth faulted, through `mmstream batch`; killed with SIGKILL and resumed.

The command runs as a real subprocess against the loopback server (in a
thread of the test process). A run killed at a random point and started
again must end with the same results as an uninterrupted run (as a set of
ids and outcomes), with every job exactly once in the file.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mmstream.testing import Fault, Script, TestServer, answer_text

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")

JOBS = 2000

#: job n with n % 10 == 0 is faulted; (n // 10) % 4 picks how.
FAULTS = {
    0: (Fault.http_status(500), "ServerError"),
    1: (Fault.http_status(400), "BadRequestError"),
    2: (Fault.drop(after_chunks=1), "IncompleteStreamError"),
    3: (Fault.error_event(after_chunks=2), "ServerError"),
}


def prompt(n: int) -> str:
    return f"describe picture {n}"


def expected_error(n: int) -> str | None:
    return None if n % 10 else FAULTS[(n // 10) % 4][1]


@pytest.fixture(scope="module")
def server() -> Iterator[TestServer]:
    with TestServer.start_in_thread(script=Script(chunks=3)) as server:
        for how, (fault, _) in FAULTS.items():
            server.inject_when(faulted_as(how), fault)
        yield server


def faulted_as(how: int) -> Callable[[int, str], bool]:
    """The rule for the jobs faulted the ``how``-th way."""
    prompts = {prompt(n) for n in range(0, JOBS, 10) if (n // 10) % 4 == how}
    return lambda _, text: text in prompts


@pytest.fixture(scope="module")
def jobs_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("jobs") / "jobs.jsonl"
    with path.open("w") as out:
        for n in range(JOBS):
            out.write(json.dumps({"id": f"p{n}", "prompt": prompt(n)}) + "\n")
    return path


def command(jobs: Path, output: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mmstream.cli",
        "batch",
        str(jobs),
        "-o",
        str(output),
        "--model",
        "openai:gpt-4o-mini",
        "--concurrency",
        "32",
        "--max-attempts",
        "2",
        "--fsync-interval",
        "0.2",
    ]


def environment(server: TestServer) -> dict[str, str]:
    return {**os.environ, "OPENAI_API_KEY": "sk-batch-test", "OPENAI_BASE_URL": server.url("/v1")}


def run_to_end(server: TestServer, jobs: Path, output: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command(jobs, output),
        env=environment(server),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result


def lines_in(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def outcomes(path: Path) -> tuple[set[tuple[str, str | None, str]], list[str]]:
    """``{(id, error kind, text)}`` and the ids in file order; every line must be whole."""
    data = path.read_bytes()
    assert data.endswith(b"\n")
    records: list[dict[str, Any]] = [json.loads(line) for line in data.splitlines()]
    found = {(r["id"], r["error"]["kind"] if r["error"] else None, r["text"]) for r in records}
    return found, [r["id"] for r in records]


@pytest.fixture(scope="module")
def uninterrupted(
    server: TestServer, jobs_file: Path
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """One run from start to end: the reference the killed runs are compared with."""
    output = jobs_file.parent / "uninterrupted.jsonl"
    return output, run_to_end(server, jobs_file, output)


def test_every_job_ends_exactly_once_as_a_success_or_a_typed_error(
    uninterrupted: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    output, result = uninterrupted
    found, order = outcomes(output)
    assert len(order) == len(set(order)) == JOBS
    by_id = {job_id: (kind, text) for job_id, kind, text in found}
    for n in range(JOBS):
        kind, text = by_id[f"p{n}"]
        assert kind == expected_error(n), n
        if kind is None:
            assert text == answer_text(prompt(n))
        elif kind == "IncompleteStreamError":  # dropped after the first piece: it is kept
            assert text and answer_text(prompt(n)).startswith(text)
    assert "1800 succeeded, 200 failed" in result.stderr


def test_killed_at_random_points_and_resumed_equals_an_uninterrupted_run(
    server: TestServer,
    jobs_file: Path,
    tmp_path: Path,
    uninterrupted: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    expected, _ = outcomes(uninterrupted[0])

    seed = random.randrange(1 << 30)
    chooser = random.Random(seed)
    output = tmp_path / "killed.jsonl"
    kills: list[int] = []
    for _ in range(2):
        target = min(JOBS - 100, lines_in(output) + chooser.randrange(50, 800))
        process = subprocess.Popen(
            command(jobs_file, output),
            env=environment(server),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while lines_in(output) < target and process.poll() is None:
            assert time.monotonic() < deadline, f"seed {seed}: the run did not progress"
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        kills.append(lines_in(output))
        assert process.returncode == -signal.SIGKILL, f"seed {seed}: it ended before the kill"
    assert 0 < kills[0] < kills[1] < JOBS, (seed, kills)

    result = run_to_end(server, jobs_file, output)
    found, order = outcomes(output)
    assert len(order) == len(set(order)) == JOBS, f"seed {seed}: a job is missing or doubled"
    assert found == expected, f"seed {seed}: the outcomes differ from the uninterrupted run"
    assert "already done" in result.stderr
