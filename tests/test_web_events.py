"""The relay's event vocabulary (pure), the missing extra, and ``mmstream serve --ui``."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import textwrap
from typing import Any

import attrs
import httpx
import pytest

import mmstream as mm
from mmstream.providers.offline import Offline
from mmstream.sse import SSEDecoder
from mmstream.web import EVENT_NAMES, EventEncoder, chunk_events, error_payload, format_event
from tests._web import png_bytes

SECRET = "sk-live-abcdefghijklmnop"


def decode(raw: bytes) -> list[tuple[str, Any]]:
    decoder = SSEDecoder()
    return [(e.event, json.loads(e.data)) for e in decoder.feed(raw) + decoder.flush()]


async def test_a_real_stream_encodes_to_events_that_decode_at_every_split() -> None:
    llm = mm.MultiModalLLM(Offline(chunks=12))
    image = mm.ImageDocument.from_bytes(png_bytes())
    encoder = EventEncoder()
    raw = b""
    last = None
    async with llm.astream_complete("What is this? ünïcödé ✓", [image]) as stream:
        async for chunk in stream:
            raw += encoder.feed(chunk)
            last = chunk
    raw += encoder.finish()
    assert last is not None and last.usage is not None
    events = decode(raw)
    assert [name for name, _ in events] == ["text"] * 12 + ["done"]
    assert "".join(p["delta"] for n, p in events if n == "text") == last.text
    assert events[-1][1] == {"finish_reason": "stop", "usage": attrs.asdict(last.usage)}
    for cut in range(len(raw) + 1):  # a proxy may cut the bytes anywhere
        decoder = SSEDecoder()
        split = decoder.feed(raw[:cut]) + decoder.feed(raw[cut:]) + decoder.flush()
        assert [(e.event, json.loads(e.data)) for e in split] == events


def test_a_chunk_without_text_is_no_event_and_every_name_is_listed() -> None:
    assert chunk_events(mm.ChatResponse(text="", delta=None, finish_reason="stop")) == []
    assert chunk_events(mm.ChatResponse(text="ab", delta="b")) == [("text", {"delta": "b"})]
    assert EVENT_NAMES == ("text", "thinking", "tool_call", "done", "error")


def test_a_reasoning_delta_is_a_thinking_event_before_the_text() -> None:
    @attrs.frozen
    class ReasoningChunk:  # the shape chunks take when the content model carries reasoning
        delta: str | None
        thinking_delta: str | None

    chunk: Any = ReasoningChunk(delta="42", thinking_delta="six times seven")
    assert chunk_events(chunk) == [
        ("thinking", {"delta": "six times seven"}),
        ("text", {"delta": "42"}),
    ]


def test_an_error_shows_its_class_message_and_hint_never_a_secret() -> None:
    error = mm.RateLimitError(f"slow down, key {SECRET}", status=429, provider="openai")
    payload = error_payload(error, "so far", secrets=[SECRET])
    assert payload == {
        "type": "RateLimitError",
        "message": "slow down, key ***",
        "hint": mm.RateLimitError.hint,
        "retryable": True,
        "status": 429,
        "partial": "so far",
    }
    bug = error_payload(KeyError(f"internal {SECRET}"))
    assert bug["type"] == "InternalError" and SECRET not in json.dumps(bug)


def test_a_failure_sends_the_text_no_chunk_delivered_before_the_error() -> None:
    encoder = EventEncoder(secrets=[SECRET])
    assert decode(encoder.feed(mm.ChatResponse(text="Hel", delta="Hel"))) == [
        ("text", {"delta": "Hel"})
    ]
    partial = mm.ChatResponse(text="Hello, wor", delta=None)
    error = mm.IncompleteStreamError("the stream ended early", partial=partial)
    events = decode(encoder.fail(error))
    assert events[0] == ("text", {"delta": "lo, wor"})
    assert events[1][0] == "error" and events[1][1]["partial"] == "Hello, wor"


def test_format_event_keeps_the_data_on_one_line() -> None:
    raw = format_event("text", {"delta": "line one\nline two\r\n\u2028"})
    assert raw.count(b"\n") == 3  # event:, data:, the blank line
    assert decode(raw) == [("text", {"delta": "line one\nline two\r\n\u2028"})]


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )


def test_import_mmstream_does_not_import_starlette() -> None:
    result = _run(
        """
        import sys, mmstream
        print(sorted(m for m in sys.modules if m.split(".")[0] in
                     ("starlette", "python_multipart", "uvicorn", "hypercorn", "mmstream.web")))
        """
    )
    assert result.stdout.strip() == "[]", result.stderr


def test_without_the_extra_mmstream_web_is_a_typed_error_naming_it() -> None:
    result = _run(
        """
        import sys
        sys.modules["starlette"] = None  # as if it were not installed
        import mmstream
        try:
            import mmstream.web
        except ImportError as exc:
            print(type(exc).__name__, isinstance(exc, mmstream.ConfigurationError), exc)
        """
    )
    assert result.stdout.startswith("MissingExtraError True "), result.stderr
    assert "pip install 'mmstream[web]'" in result.stdout


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_mmstream_serve_ui_serves_the_demo(backend: str) -> None:
    command = [sys.executable, "-m", "mmstream.cli", "serve", "--ui", "--port", "0"]
    process = subprocess.Popen(
        [*command, "--backend", backend], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        match = re.search(r"demo on (http://127\.0\.0\.1:\d+)/ +\(answering with offline:", first)
        assert match, first + (process.stderr.read() if process.stderr else "")
        with httpx.Client(base_url=match.group(1), timeout=30) as client:
            page = client.get("/")
            files = {"image": ("red.png", png_bytes((30, 20), (230, 20, 20)), "image/png")}
            answer = client.post("/api/ask", data={"question": "What colour?"}, files=files)
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl+C
        out, err = process.communicate(timeout=10)
    assert page.status_code == 200 and "<title>mmstream demo</title>" in page.text
    assert "offline:default" in page.text
    events = decode(answer.content)
    assert events[-1][0] == "done"
    text = "".join(p["delta"] for n, p in events if n == "text")
    assert "What colour?" in text and "mostly red" in text  # the offline model looked at it
    assert process.returncode == 0, err
    assert out.strip().endswith("stopped")
