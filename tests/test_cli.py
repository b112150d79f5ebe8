"""The `mmstream` command, run as a real subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mmstream.testing import answer_text

SAMPLE = Path(__file__).parent.parent / "docs" / "assets" / "sample.png"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mmstream.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_complete_streams_text_offline_by_default() -> None:
    result = run("complete", "What is in this picture?", "--image", str(SAMPLE))
    assert result.returncode == 0, result.stderr
    assert "offline provider" in result.stderr
    assert result.stdout.startswith("Offline answer: no model was called.")
    assert "320×200 PNG (landscape)" in result.stdout
    assert "“What is in this picture?”" in result.stdout


def test_complete_json_lines_end_with_usage_and_timing() -> None:
    result = run("complete", "Describe", "--image", str(SAMPLE), "--json", "--system", "Be brief.")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    *chunks, summary = lines
    assert len(chunks) > 10
    assert all(set(chunk) == {"delta"} for chunk in chunks)
    assert summary["done"] is True
    assert summary["text"] == "".join(chunk["delta"] for chunk in chunks)
    assert summary["finish_reason"] == "stop"
    assert summary["usage"]["output_tokens"] == len(chunks)
    assert summary["usage"]["input_tokens"] > 85
    assert 0 <= summary["time_to_first_chunk"] <= summary["duration"]


def test_missing_image_is_a_one_line_error() -> None:
    result = run("complete", "hi", "--image", "/no/such/cat.png")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("mmstream: error:")]
    assert len(errors) == 1
    assert "/no/such/cat.png" in errors[0]
    assert "cannot be read" in errors[0]
    assert "Traceback" not in result.stderr


def test_unknown_model_is_a_one_line_error() -> None:
    result = run("complete", "hi", "--model", "nope:x")
    assert result.returncode == 1
    assert result.stderr.strip().startswith("mmstream: error: unknown provider 'nope'")


def test_max_tokens_option() -> None:
    result = run("complete", "hi", "--json", "--max-tokens", "3")
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["usage"]["output_tokens"] == 3
    assert summary["finish_reason"] == "length"


def test_no_command_prints_usage() -> None:
    result = run()
    assert result.returncode == 2
    assert "complete" in result.stderr


@pytest.fixture
def served() -> Iterator[str]:
    """`mmstream serve` in a subprocess; yields its base URL and stops it afterwards."""
    process = subprocess.Popen(
        [sys.executable, "-m", "mmstream.cli", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", first)
        assert match, first
        yield match.group(1)
    finally:
        process.terminate()
        process.communicate(timeout=10)


def test_complete_against_mmstream_serve_with_openai_base_url(served: str) -> None:
    env = {**os.environ, "OPENAI_API_KEY": "sk-cli-test", "OPENAI_BASE_URL": f"{served}/v1"}
    result = run(
        "complete",
        "Compare these",
        "--model",
        "openai:gpt-4o-mini",
        "--image",
        str(SAMPLE),
        "--json",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "offline" not in result.stderr
    *chunks, summary = [json.loads(line) for line in result.stdout.splitlines()]
    expected = answer_text("Compare these", images=1)
    assert summary["text"] == expected == "".join(c["delta"] for c in chunks)
    assert summary["model"] == "openai:gpt-4o-mini"
    assert summary["usage"]["input_tokens"] is not None


def test_a_refused_key_is_a_one_line_error(served: str) -> None:
    env = {**os.environ, "OPENAI_BASE_URL": f"{served}/v1"}
    env.pop("OPENAI_API_KEY", None)
    result = run("complete", "hi", "--model", "openai:gpt-4o-mini", env=env)
    assert result.returncode == 1
    assert "OPENAI_API_KEY" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
