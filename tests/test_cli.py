"""The `mmstream` command, run as a real subprocess: output, exit statuses and messages."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mmstream.providers import provider_class, registered_names
from mmstream.testing import answer_text

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "docs" / "assets" / "sample.png"
CLI = [sys.executable, "-m", "mmstream.cli"]
BACKENDS = ["asyncio", "trio"]

#: Variables that would point a provider somewhere or give it a key: every name in the
#: providers' own environment tables (so a variable a provider learns is cleared here too).
PROVIDER_VARIABLES = frozenset(
    name
    for provider in registered_names()
    for names in getattr(provider_class(provider), "environment", {}).values()
    for name in names
)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any provider variable (the developer's shell must not count)."""
    env = {k: v for k, v in os.environ.items() if k not in PROVIDER_VARIABLES}
    env.update(extra)
    return env


def run(
    *args: str, env: dict[str, str] | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env() if env is None else env,
        input=input,
        check=False,
        cwd=ROOT,
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("mmstream: error:")]


def assert_usage_error(result: subprocess.CompletedProcess[str], *phrases: str) -> str:
    """Exit status 2 with argparse's usage and one error line holding every phrase."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stdout == ""
    assert result.stderr.startswith("usage: mmstream complete")
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("mmstream complete: error: ")
    for phrase in phrases:
        assert phrase in last, (phrase, last)
    assert "Traceback" not in result.stderr
    return last


# --- answering offline ------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_complete_streams_text_offline_by_default(backend: str) -> None:
    result = run(
        "complete", "What is in this picture?", "--image", str(SAMPLE), "--backend", backend
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "mmstream: no --model given; answering with the offline provider\n"
    assert result.stdout.startswith("Offline answer: no model was called.")
    assert result.stdout.endswith(".\n")
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


def test_max_tokens_option() -> None:
    result = run("complete", "hi", "--json", "--max-tokens", "3")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["usage"]["output_tokens"] == 3
    assert summary["finish_reason"] == "length"


def test_version_and_no_command() -> None:
    from mmstream import __version__

    version = run("--version")
    assert (version.returncode, version.stdout) == (0, f"mmstream {__version__}\n")
    bare = run()
    assert bare.returncode == 2
    assert "complete" in bare.stderr


def test_complete_help_states_the_exit_statuses() -> None:
    result = run("complete", "--help")
    assert result.returncode == 0
    assert "exit status: 0 done, 1 the call failed, 2 usage error, 130 interrupted." in (
        result.stdout
    )
    for option in ("--base-url", "--api-key-file", "--api-key-stdin", "--chunks", "--delay"):
        assert option in result.stdout


# --- the offline provider's knobs -------------------------------------------------------


def test_chunks_sets_the_number_of_streamed_chunks() -> None:
    result = run("complete", "hi", "--json", "--chunks", "5")
    assert result.returncode == 0, result.stderr
    *chunks, summary = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(chunks) == 5
    assert summary["text"] == answer_offline("hi")


def answer_offline(prompt: str) -> str:
    result = run("complete", prompt, "--json")
    text: str = json.loads(result.stdout.splitlines()[-1])["text"]
    return text


def test_delay_paces_the_chunks() -> None:
    result = run("complete", "hi", "--json", "--chunks", "4", "--delay", "0.1")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    # Three pauses of 0.1 s separate four chunks: the stream cannot be shorter than that.
    assert summary["duration"] - summary["time_to_first_chunk"] >= 0.29


@pytest.mark.parametrize("backend", BACKENDS)
def test_fail_after_ends_the_partial_line_and_exits_1(backend: str) -> None:
    result = run("complete", "hi", "--chunks", "8", "--fail-after", "3", "--backend", backend)
    assert result.returncode == 1
    assert result.stdout.startswith("Offline answer")
    assert result.stdout.endswith("\n") and result.stdout.count("\n") == 1
    (line,) = error_lines(result.stderr)
    assert "fails after 3 chunks" in line
    assert f"{len(result.stdout) - 1} characters had arrived, printed above" in line
    assert ".partial" not in line
    assert "Traceback" not in result.stderr


def test_fail_after_in_json_ends_with_a_failure_object() -> None:
    result = run("complete", "hi", "--json", "--chunks", "8", "--fail-after", "3")
    assert result.returncode == 1
    *chunks, failure = [json.loads(line) for line in result.stdout.splitlines()]
    whole = run("complete", "hi", "--json", "--chunks", "8")
    first_three = [json.loads(line)["delta"] for line in whole.stdout.splitlines()[:3]]
    assert failure["done"] is False
    assert failure["error"] == "OverloadedError"
    # Chunks decoded in the read that failed may arrive merged; the text is the same.
    assert failure["text"] == "".join(chunk["delta"] for chunk in chunks) == "".join(first_three)
    assert len(error_lines(result.stderr)) == 1


def test_offline_knobs_are_refused_for_a_real_provider() -> None:
    result = run("complete", "hi", "--model", "openai:gpt-4o-mini", "--chunks", "3", "--delay", "1")
    assert_usage_error(result, "--chunks, --delay", "only for the offline provider", "openai")


@pytest.mark.parametrize(
    "option", [["--base-url", "http://127.0.0.1:9/v1"], ["--api-key", "sk-x"], ["--api-key-stdin"]]
)
def test_server_and_key_options_are_refused_offline(option: list[str]) -> None:
    result = run("complete", "hi", *option, input="sk-x\n")
    last = assert_usage_error(result, "not for the offline provider", "--model NAME:MODEL")
    assert "sk-x" not in result.stderr + last


# --- usage errors: exit status 2 ----------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["--max-tokens", "-1"], "argument --max-tokens: must be at least 1, not -1"),
        (["--max-tokens", "0"], "argument --max-tokens: must be at least 1, not 0"),
        (["--max-tokens", "ten"], "argument --max-tokens: expected a whole number, not 'ten'"),
        (["--timeout", "0"], "argument --timeout: must be greater than 0, not 0"),
        (["--timeout", "-2.5"], "argument --timeout: must be greater than 0, not -2.5"),
        (["--timeout", "inf"], "argument --timeout: expected a finite number, not 'inf'"),
        (["--temperature", "-0.1"], "argument --temperature: must be at least 0, not -0.1"),
        (["--temperature", "nan"], "argument --temperature: expected a finite number"),
        (["--top-p", "1.5"], "argument --top-p: must be at most 1, not 1.5"),
        (["--chunks", "0"], "argument --chunks: must be at least 1, not 0"),
        (["--delay", "-1"], "argument --delay: must be at least 0, not -1"),
        (["--fail-after", "-1"], "argument --fail-after: must be at least 0, not -1"),
        (["--backend", "curio"], "argument --backend: invalid choice: 'curio'"),
        (["--base-url", "127.0.0.1:8000"], "argument --base-url: expected an http:// or https://"),
    ],
)
def test_bad_option_values_are_usage_errors(args: list[str], phrase: str) -> None:
    assert_usage_error(run("complete", "hi", *args), phrase)


def test_an_unknown_provider_is_a_usage_error_with_a_fitting_hint() -> None:
    result = run("complete", "hi", "--model", "nosuch:thing")
    last = assert_usage_error(result, "argument --model/-m: unknown provider 'nosuch'")
    assert "anthropic, azure, gemini, offline, ollama, openai, openai-compatible" in last
    assert "environment variables" not in result.stderr


def test_a_provider_without_a_model_is_a_usage_error() -> None:
    result = run("complete", "hi", "--model", "openai")
    assert_usage_error(result, "'openai' names no model; write it as openai:MODEL")


def test_key_options_exclude_each_other() -> None:
    result = run("complete", "hi", "-m", "openai:gpt-4o-mini", "--api-key", "a", "--api-key-stdin")
    assert_usage_error(result, "argument --api-key-stdin: not allowed with argument --api-key")


# --- call failures: exit status 1 ---------------------------------------------------------


def test_missing_image_is_a_one_line_error() -> None:
    result = run("complete", "hi", "--image", "/no/such/cat.png")
    assert result.returncode == 1
    (line,) = error_lines(result.stderr)
    assert "/no/such/cat.png" in line
    assert "cannot be read" in line
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("model", "variable"),
    [
        ("openai:gpt-4o-mini", "OPENAI_API_KEY"),
        ("anthropic:claude-sonnet-4-5", "ANTHROPIC_API_KEY"),
        ("gemini:gemini-2.5-flash", "GEMINI_API_KEY"),
        ("azure:my-deployment", "AZURE_OPENAI_ENDPOINT"),
    ],
)
def test_missing_configuration_is_reported_before_any_image_is_read(
    model: str, variable: str
) -> None:
    # The image does not exist: had it been read first, the error would be about it.
    result = run("complete", "hi", "--model", model, "--image", "/no/such/big-photo.jpg")
    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = error_lines(result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1
    assert variable in line
    assert "big-photo" not in line
    assert "--api-key-file PATH, --api-key-stdin or --api-key KEY give the key" in line


def test_missing_configuration_in_json_ends_with_a_failure_object() -> None:
    result = run("complete", "hi", "--model", "openai:gpt-4o-mini", "--json")
    assert result.returncode == 1
    (failure,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert failure["done"] is False
    assert failure["error"] == "ConfigurationError"
    assert "OPENAI_API_KEY" in failure["message"]
    assert failure["text"] == ""


def test_an_unreachable_server_is_a_one_line_error() -> None:
    port = free_port()
    result = run(
        "complete",
        "hi",
        *("--model", "openai:gpt-4o-mini", "--base-url", f"http://127.0.0.1:{port}/v1"),
        *("--api-key", "sk-unused", "--timeout", "5"),
    )
    assert result.returncode == 1
    (line,) = error_lines(result.stderr)
    assert "connect" in line.lower()
    assert "sk-unused" not in result.stderr


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- interruption and a closed pipe -------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_ctrl_c_ends_the_partial_line_then_says_interrupted(backend: str) -> None:
    process = subprocess.Popen(
        [*CLI, "complete", "hi", "--chunks", "60", "--delay", "0.05", "--backend", backend],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(),
    )
    assert process.stdout is not None
    first = process.stdout.read(3)  # output has begun, mid-line
    process.send_signal(signal.SIGINT)
    rest, stderr = process.communicate(timeout=30)
    stdout = (first + rest).decode()
    assert process.returncode == 130, stderr
    assert stdout.startswith("Off") and stdout.endswith("\n") and stdout.count("\n") == 1
    assert len(stdout) < len(answer_offline("hi"))  # it really stopped half-way
    assert stderr.decode().splitlines()[-1] == "mmstream: interrupted"
    assert b"Traceback" not in stderr


def test_a_reader_that_leaves_ends_the_command_quietly() -> None:
    process = subprocess.Popen(
        [*CLI, "complete", "hi", "--chunks", "200", "--delay", "0.01"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(),
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.read(5)
    process.stdout.close()  # like `| head -c 5`
    with process.stderr:
        stderr = process.stderr.read()
    assert process.wait(timeout=30) == 1
    assert b"Traceback" not in stderr
    assert b"BrokenPipe" not in stderr


# --- mmstream serve, and each provider pointed at it ------------------------------------

#: provider → (a model for "--model", the key variable)
PROVIDERS = {
    "openai": ("gpt-4o-mini", "OPENAI_API_KEY"),
    "openai-compatible": ("llava", "OPENAI_COMPATIBLE_API_KEY"),
    "azure": ("my-deployment", "AZURE_OPENAI_API_KEY"),
    "anthropic": ("claude-sonnet-4-5", "ANTHROPIC_API_KEY"),
    "gemini": ("gemini-2.5-flash", "GEMINI_API_KEY"),
    "ollama": ("llava", "OLLAMA_API_KEY"),
}


class Served:
    """A running `mmstream serve`: its announcement, parsed."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        match = re.fullmatch(
            r"mmstream test server listening on (http://127\.0\.0\.1:\d+)", lines[0]
        )
        assert match, lines[0]
        self.url = match.group(1)
        #: provider → (its base URL, its environment variable), as printed
        self.base_urls: dict[str, tuple[str, str]] = {}
        for line in lines[2:]:
            parts = line.split()
            if len(parts) == 3 and parts[1].startswith("http://"):
                self.base_urls[parts[0]] = (parts[1], parts[2])
        (self.example,) = [
            lines[i + 1].strip() for i, line in enumerate(lines) if line.endswith("Try:")
        ]


@contextmanager
def serving(*args: str) -> Iterator[Served]:
    """`mmstream serve` in a subprocess until its announcement ends; stopped afterwards."""
    process = subprocess.Popen(
        [*CLI, "serve", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        while not lines or lines[-1] != "Press Ctrl+C to stop.":
            line = process.stdout.readline()
            assert line, process.stderr.read() if process.stderr else ""
            lines.append(line.rstrip("\n"))
        yield Served(lines)
    finally:
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=10)
        assert process.returncode == 0
        assert out.endswith("stopped\n")


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with serving() as server:
        yield server


def test_serve_prints_each_provider_base_url_once(served: Served) -> None:
    assert served.base_urls == {
        "openai": (f"{served.url}/v1", "OPENAI_BASE_URL"),
        "openai-compatible": (f"{served.url}/v1", "OPENAI_COMPATIBLE_BASE_URL"),
        "azure": (served.url, "AZURE_OPENAI_ENDPOINT"),
        "anthropic": (served.url, "ANTHROPIC_BASE_URL"),
        "gemini": (served.url, "GEMINI_BASE_URL"),
        "ollama": (served.url, "OLLAMA_HOST"),
    }
    assert "/v1beta" not in "\n".join(served.lines)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_each_provider_answers_through_the_printed_base_url(
    served: Served, provider: str, backend: str
) -> None:
    model, _ = PROVIDERS[provider]
    base_url, _ = served.base_urls[provider]
    result = run(
        "complete",
        "Compare these",
        *("--model", f"{provider}:{model}", "--base-url", base_url, "--api-key", "sk-cli-test"),
        *("--image", str(SAMPLE), "--json", "--backend", backend),
    )
    assert result.returncode == 0, result.stderr
    assert "sk-cli-test" not in result.stdout + result.stderr
    *chunks, summary = [json.loads(line) for line in result.stdout.splitlines()]
    expected = answer_text("Compare these", images=1)
    assert summary["text"] == expected == "".join(c["delta"] for c in chunks)
    assert summary["model"] == f"{provider}:{model}"


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_each_provider_answers_through_the_printed_variable(served: Served, provider: str) -> None:
    model, key_variable = PROVIDERS[provider]
    base_url, variable = served.base_urls[provider]
    env = clean_env(**{variable: base_url, key_variable: "sk-cli-test"})
    result = run("complete", "hi there", "--model", f"{provider}:{model}", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == answer_text("hi there") + "\n"


def test_the_printed_example_command_works(served: Served) -> None:
    command = shlex.split(served.example)
    assert command[:2] == ["mmstream", "complete"]
    result = run(*command[1:])
    assert result.returncode == 0, result.stderr
    assert result.stdout == answer_text("What is in this picture?", images=1) + "\n"


def test_a_refused_key_is_a_one_line_error(served: Served) -> None:
    env = clean_env(OPENAI_BASE_URL=served.base_urls["openai"][0])
    result = run("complete", "hi", "--model", "openai:gpt-4o-mini", env=env)
    assert result.returncode == 1
    assert "OPENAI_API_KEY" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# --- keys: from the command line, a file or stdin; never shown ---------------------------

KEY = "sk-right-4f1c9e"


@pytest.fixture(scope="module")
def keyed() -> Iterator[Served]:
    """A server that accepts one key only."""
    with serving("--api-key", KEY) as server:
        yield server


def openai_at(
    server: Served, *args: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    base = server.base_urls["openai"][0]
    return run("complete", "hi", "-m", "openai:gpt-4o-mini", "--base-url", base, *args, input=input)


@pytest.mark.parametrize(
    "how",
    ["--api-key", "--api-key -", "--api-key-stdin", "--api-key-file", "--api-key-file -"],
)
def test_the_key_reaches_the_server_every_way(keyed: Served, how: str, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(f"{KEY}\n", encoding="utf-8")
    args = {
        "--api-key": ["--api-key", KEY],
        "--api-key -": ["--api-key", "-"],
        "--api-key-stdin": ["--api-key-stdin"],
        "--api-key-file": ["--api-key-file", str(key_file)],
        "--api-key-file -": ["--api-key-file", "-"],
    }[how]
    result = openai_at(keyed, *args, input=f"{KEY}\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == answer_text("hi") + "\n"
    assert KEY not in result.stdout + result.stderr


@pytest.mark.parametrize("how", ["--api-key", "--api-key-stdin"])
def test_a_wrong_key_is_refused_without_being_shown(keyed: Served, how: str) -> None:
    wrong = "sk-wrong-77a0d2"
    args = ["--api-key", wrong] if how == "--api-key" else ["--api-key-stdin"]
    result = openai_at(keyed, *args, input=f"{wrong}\n")
    assert result.returncode == 1
    (line,) = error_lines(result.stderr)
    assert "401" in line
    assert wrong not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreadable_key_file_is_a_usage_error(keyed: Served, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-key"
    result = openai_at(keyed, "--api-key-file", str(missing))
    assert_usage_error(result, f"cannot read --api-key-file {missing}: No such file or directory")


@pytest.mark.parametrize(
    ("content", "phrase"),
    [("\n", "is empty"), (f"{KEY} extra\n", "contains spaces or control characters")],
)
def test_a_bad_key_file_is_a_usage_error_that_hides_its_content(
    keyed: Served, tmp_path: Path, content: str, phrase: str
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(content, encoding="utf-8")
    result = openai_at(keyed, "--api-key-file", str(key_file))
    assert_usage_error(result, f"the API key from --api-key-file {key_file}", phrase)
    assert KEY not in result.stderr


def test_a_key_with_a_control_character_on_stdin_is_refused_unseen(keyed: Served) -> None:
    result = openai_at(keyed, "--api-key-stdin", input=f"{KEY}\x07\n")
    assert_usage_error(result, "the API key from stdin contains spaces or control characters")
    assert KEY not in result.stderr


# --- serve's own command line -------------------------------------------------------------


@pytest.mark.parametrize("command", [[*CLI, "serve"], [sys.executable, "-m", "mmstream.testing"]])
def test_serve_help_is_plain_text(command: list[str]) -> None:
    result = subprocess.run(
        [*command, "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0
    assert "--port" in result.stdout and "--chunks" in result.stdout
    assert "base URL" in result.stdout
    for markup in ("``", ":class:", ":func:", "::"):
        assert markup not in result.stdout


def test_serve_refuses_a_bad_port() -> None:
    result = subprocess.run(
        [*CLI, "serve", "--port", "70000"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "argument --port/-p: must be at most 65535, not 70000" in result.stderr


def test_serve_on_a_taken_port_is_a_one_line_error(served: Served) -> None:
    port = served.url.rsplit(":", 1)[1]
    result = subprocess.run(
        [*CLI, "serve", "--port", port], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"mmstream: error: cannot listen on 127.0.0.1:{port}: ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_serve_announces_a_keyed_server_without_its_key(keyed: Served) -> None:
    text = "\n".join(keyed.lines)
    assert KEY not in text
    assert "only the key given to --api-key" in text
