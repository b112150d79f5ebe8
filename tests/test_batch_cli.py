"""The `mmstream batch` command as a real subprocess: defaults, exit codes, progress, Ctrl-C."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mmstream.testing import Fault, Script, TestServer, answer_text

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX terminals and signals")


def batch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mmstream.cli", "batch", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def write_jobs(path: Path, count: int) -> Path:
    lines = (json.dumps({"id": n, "prompt": f"job {n}"}) + "\n" for n in range(count))
    path.write_text("".join(lines))
    return path


@pytest.fixture
def served() -> Iterator[TestServer]:
    with TestServer.start_in_thread() as server:
        yield server


def server_env(server: TestServer) -> dict[str, str]:
    return {**os.environ, "OPENAI_API_KEY": "sk-cli-test", "OPENAI_BASE_URL": server.url("/v1")}


def test_offline_by_default_with_no_key_and_a_summary(tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", 30)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    result = batch(str(jobs), "-o", str(tmp_path / "out.jsonl"), "--concurrency", "4", env=env)
    assert result.returncode == 0, result.stderr
    assert "offline provider" in result.stderr
    assert "30 succeeded, 0 failed" in result.stderr
    assert "━" not in result.stderr  # no bar when standard error is not a terminal
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert sorted(int(r["id"]) for r in records) == list(range(30))
    assert all(r["text"].startswith("Offline answer") for r in records)
    again = batch(str(jobs), "-o", str(tmp_path / "out.jsonl"), "--quiet")
    assert again.returncode == 0 and "succeeded" not in again.stderr


def test_exit_codes_usage_invalid_jobs_and_too_many_failures(
    tmp_path: Path, served: TestServer
) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", 20)
    out = str(tmp_path / "out.jsonl")
    assert batch(str(jobs)).returncode == 2  # no -o
    assert batch(str(jobs), "-o", out, "--concurrency", "0").returncode == 2
    assert batch(str(jobs), "-o", out, "--rpm", "-3").returncode == 2

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "prompt": "a"}\n{"id": 1, "prompt": "b"}\n')
    result = batch(str(bad), "-o", out)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("mmstream: error:")]
    assert errors == [errors[0]] and "line 2: the id '1' is used twice" in errors[0]
    assert not Path(out).read_text()

    served.inject_when(lambda _, prompt: prompt in ("job 3", "job 4"), Fault.http_status(400))
    result = batch(
        str(jobs), "-o", out, "--model", "openai:gpt-4o-mini", "--max-failures", "1",
        "--concurrency", "1", env=server_env(served),
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "more than max_failures=1" in result.stderr
    lines = Path(out).read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [str(n) for n in range(5)]


def test_a_progress_bar_on_a_terminal(tmp_path: Path, served: TestServer) -> None:
    served.script = Script(pause=0.002, chunks=3)
    jobs = write_jobs(tmp_path / "jobs.jsonl", 60)
    served.inject_when(lambda _, prompt: prompt == "job 7", Fault.http_status(400))
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "mmstream.cli", "batch", str(jobs), "-o",
         str(tmp_path / "out.jsonl"), "--model", "openai:gpt-4o-mini", "--concurrency", "4"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=follower,
        env={**server_env(served), "COLUMNS": "160", "TERM": "xterm"},
    )  # fmt: skip
    os.close(follower)
    screen = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the other side closed
                break
            if not data:
                break
            screen += data
        elif process.poll() is not None:
            break
    os.close(leader)
    assert process.wait(timeout=30) == 0
    text = screen.decode("utf-8", "replace")
    assert "60/60" in text and "1 failed" in text and "ETA" in text and "tokens" in text
    assert "59 succeeded, 1 failed" in text  # the summary under the bar


def test_ctrl_c_stops_with_130_and_the_same_command_resumes(
    tmp_path: Path, served: TestServer
) -> None:
    served.script = Script(pause=0.01, chunks=4)
    jobs = write_jobs(tmp_path / "jobs.jsonl", 400)
    output = tmp_path / "out.jsonl"
    args = [str(jobs), "-o", str(output), "--model", "openai:gpt-4o-mini", "--concurrency", "4"]
    process = subprocess.Popen(
        [sys.executable, "-m", "mmstream.cli", "batch", *args],
        env=server_env(served),
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not output.exists() or output.read_bytes().count(b"\n") < 20:
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "resume" in stderr
    data = output.read_bytes()
    assert data.endswith(b"\n")
    first = [json.loads(line)["id"] for line in data.splitlines()]
    assert 20 <= len(first) < 400 and len(first) == len(set(first))

    result = batch(*args, env=server_env(served))
    assert result.returncode == 0, result.stderr
    assert f"{len(first)} already done" in result.stderr
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(int(r["id"]) for r in records) == list(range(400))
    assert {r["text"] for r in records} == {answer_text(f"job {n}") for n in range(400)}


def test_jobs_from_standard_input_and_a_resume_from_it(tmp_path: Path) -> None:
    lines = "".join(json.dumps({"id": n, "prompt": f"job {n}"}) + "\n" for n in range(12))
    output = tmp_path / "out.jsonl"
    command = [sys.executable, "-m", "mmstream.cli", "batch", "-", "-o", str(output)]

    def run(text: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command, input=text, capture_output=True, text=True, timeout=60, check=False
        )

    first = run(lines[: lines.index('{"id": 5')])  # the first five
    assert first.returncode == 0, first.stderr
    assert "5 succeeded" in first.stderr
    second = run(lines)
    assert second.returncode == 0, second.stderr
    assert "7 succeeded, 0 failed, 5 already done" in second.stderr
    ids = [json.loads(line)["id"] for line in output.read_text().splitlines()]
    assert sorted(map(int, ids)) == list(range(12))
    repeated = run(lines + json.dumps({"id": 3, "prompt": "again"}) + "\n")
    assert repeated.returncode == 1 and "line 13: the id '3' is used twice" in repeated.stderr
