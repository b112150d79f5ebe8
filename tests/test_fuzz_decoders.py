"""Fuzzing every provider's stream decoder: chunks out, or an MMStreamError, never anything else.

Three kinds of input, each fed split at random offsets:

- arbitrary bytes;
- real wire streams (rendered by ``mmstream.testing``'s format module, with text,
  tool calls, usage, in-stream errors and malformed frames) mutated byte-wise:
  flips, deletions, insertions, truncation, duplicated and swapped frames;
- real wire streams whose JSON is mutated structurally: a value somewhere in
  an event replaced by arbitrary JSON (a string where a list was, a null
  where an object was, ...), the mistakes a decoder that trusts the shape makes.
"""

from __future__ import annotations

import importlib
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmstream import ChatMessage, ChatRequest, ChatResponse, MMStreamError
from mmstream.providers.base import Provider
from mmstream.testing import ToolCall
from mmstream.testing._formats import Answer, error_frame, malformed_frame, render_stream

FUZZ = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)

#: wire API of the test server -> (module, class, fields) of the provider that speaks it.
PROVIDERS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "openai": ("mmstream.providers.openai", "OpenAI", {"model": "gpt-4o-mini"}),
    "azure": (
        "mmstream.providers.azure",
        "AzureOpenAI",
        {"deployment": "dep", "endpoint": "https://example.openai.azure.com"},
    ),
    "openai-compatible": (
        "mmstream.providers.openai",
        "OpenAICompatible",
        {"model": "local", "base_url": "http://127.0.0.1:8000/v1"},
    ),
    "anthropic": ("mmstream.providers.anthropic", "Anthropic", {"model": "claude-sonnet-4-5"}),
    "gemini": ("mmstream.providers.gemini", "Gemini", {"model": "gemini-2.5-flash"}),
    "ollama": ("mmstream.providers.ollama", "Ollama", {"model": "llava", "api_key": "fuzz-key"}),
    "offline": ("mmstream.providers.offline", "Offline", {}),
}
for _fields in PROVIDERS.values():
    if _fields[1] != "Offline":
        _fields[2].setdefault("api_key", "fuzz-key")


def _provider(api: str) -> Provider:
    module, cls, fields = PROVIDERS[api]
    provider: Provider = getattr(importlib.import_module(module), cls)(**fields)
    return provider


def _request(provider: Provider) -> ChatRequest:
    return ChatRequest(messages=[ChatMessage("user", "hello there")], provider=provider)


def _corpus(api: str) -> list[list[bytes]]:
    """Real streams of ``api`` as lists of frames: plain text, tool calls, errors, malformed."""
    if api == "offline":
        return _offline_corpus()
    if api == "openai-compatible":  # vLLM, llama.cpp, LM Studio speak OpenAI's format
        api = "openai"
    sse = True
    streams: list[list[bytes]] = []
    for pieces, calls, usage in (
        (["Hello", " wor", "ld ", "✓ é 漢字"], (), True),
        ([], (ToolCall(name="look", arguments={"where": "up", "n": [1, 2]}),), True),
        (["a"], (ToolCall(name="f", arguments={}),), False),
    ):
        answer = Answer(
            api=api,  # type: ignore[arg-type]
            model="m",
            pieces=list(pieces),
            input_tokens=7,
            output_tokens=len(pieces),
            finish_reason="tool_calls" if calls else "stop",
            tool_calls=calls,
            include_usage=usage,
            sse=sse,
        )
        stream = render_stream(answer)
        streams.append([*stream.head, *stream.chunks, *stream.tail])
        cut = [*stream.head, *stream.chunks[:2]]
        streams.append([*cut, error_frame(api, sse, None, "overloaded")])  # type: ignore[arg-type]
        streams.append([*cut, malformed_frame(api, sse)])  # type: ignore[arg-type]
    return streams


def _offline_corpus() -> list[list[bytes]]:
    """The offline provider's NDJSON (its in-process server writes these lines)."""
    deltas = [
        json.dumps({"delta": p}).encode() + b"\n" for p in ["Hello", " wor", "ld ", "✓ é 漢字"]
    ]
    done = b'{"done":true,"finish_reason":"stop","usage":{"input_tokens":7,"output_tokens":4}}\n'
    error = b'{"error":{"type":"overloaded_error","message":"overloaded"}}\n'
    return [[*deltas, done], [*deltas[:2], error], [*deltas[:2], b'{"delta":\n']]


def _apis() -> list[str]:
    return list(PROVIDERS)


def _check(api: str, body: bytes, cuts: list[int]) -> None:
    """Feed ``body`` split at ``cuts`` then flush: only chunks or MMStreamError may come out."""
    provider = _provider(api)
    decoder = provider.new_decoder(_request(provider))
    points = sorted({c % (len(body) + 1) for c in cuts})
    parts = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    try:
        for part in parts:
            out = decoder.feed(part)
            assert isinstance(out, list)
            assert all(isinstance(chunk, ChatResponse) for chunk in out)
            for chunk in out:  # reading a chunk's fields must not fail either
                _ = (chunk.text, chunk.delta, chunk.usage, chunk.finish_reason)
        out = decoder.flush()
        assert all(isinstance(chunk, ChatResponse) for chunk in out)
    except MMStreamError as exc:
        error: MMStreamError | None = exc
    else:
        error = None
    if error is not None:
        str(error)  # the message renders
        assert error.partial is None or isinstance(error.partial.text, str)


cuts_strategy = st.lists(st.integers(min_value=0, max_value=10_000), max_size=8)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**40), max_value=2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=10,
)


@pytest.mark.parametrize("api", _apis())
@FUZZ
@given(body=st.binary(max_size=1500), cuts=cuts_strategy)
def test_arbitrary_bytes(api: str, body: bytes, cuts: list[int]) -> None:
    _check(api, body, cuts)


@st.composite
def mutated_stream(draw: st.DrawFn, api: str) -> bytes:
    frames = list(draw(st.sampled_from(_corpus(api))))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        op = draw(st.sampled_from(["flip", "delete", "insert", "truncate", "dup", "swap", "drop"]))
        if op in ("dup", "swap", "drop") and frames:
            i = draw(st.integers(min_value=0, max_value=len(frames) - 1))
            j = draw(st.integers(min_value=0, max_value=len(frames) - 1))
            if op == "dup":
                frames.insert(j, frames[i])
            elif op == "swap":
                frames[i], frames[j] = frames[j], frames[i]
            else:
                del frames[i]
            continue
        body = bytearray(b"".join(frames))
        if not body:
            continue
        at = draw(st.integers(min_value=0, max_value=len(body) - 1))
        if op == "flip":
            body[at] = draw(st.integers(min_value=0, max_value=255))
        elif op == "delete":
            del body[at : at + draw(st.integers(min_value=1, max_value=16))]
        elif op == "insert":
            body[at:at] = draw(
                st.sampled_from([b"\n", b"\r\n\r\n", b"data: ", b"{", b"}", b"\xff\xfe", b"\x00"])
                | st.binary(min_size=1, max_size=8)
            )
        else:
            del body[at:]
        frames = [bytes(body)]
    return b"".join(frames)


@pytest.mark.parametrize("api", _apis())
@FUZZ
@given(data=st.data(), cuts=cuts_strategy)
def test_mutated_wire_streams(api: str, data: st.DataObject, cuts: list[int]) -> None:
    _check(api, data.draw(mutated_stream(api)), cuts)


def _replace_somewhere(value: Any, draw: st.DrawFn, replacement: Any) -> Any:
    """``value`` with one node (chosen by ``draw``) replaced by ``replacement``."""
    if isinstance(value, dict) and value and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(value)))
        return {**value, key: _replace_somewhere(value[key], draw, replacement)}
    if isinstance(value, list) and value and draw(st.booleans()):
        index = draw(st.integers(min_value=0, max_value=len(value) - 1))
        copy = list(value)
        copy[index] = _replace_somewhere(value[index], draw, replacement)
        return copy
    return replacement


def _mutate_frame(frame: bytes, draw: st.DrawFn) -> bytes:
    """Replace a JSON value inside one SSE ``data:`` or NDJSON frame."""
    text = frame.decode("utf-8")
    lines = text.split("\n")
    for index, line in enumerate(lines):
        prefix, payload = ("data: ", line[6:]) if line.startswith("data: ") else ("", line)
        try:
            value = json.loads(payload)
        except ValueError:
            continue
        mutated = _replace_somewhere(value, draw, draw(json_values))
        lines[index] = prefix + json.dumps(mutated)
        return "\n".join(lines).encode()
    return frame


@st.composite
def reshaped_stream(draw: st.DrawFn, api: str) -> bytes:
    frames = list(draw(st.sampled_from(_corpus(api)[::3])))  # the valid streams
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        index = draw(st.integers(min_value=0, max_value=len(frames) - 1))
        frames[index] = _mutate_frame(frames[index], draw)
    return b"".join(frames)


@pytest.mark.parametrize("api", _apis())
@FUZZ
@given(data=st.data(), cuts=cuts_strategy)
def test_reshaped_json_events(api: str, data: st.DataObject, cuts: list[int]) -> None:
    _check(api, data.draw(reshaped_stream(api)), cuts)


@pytest.mark.parametrize("api", _apis())
def test_the_corpus_decodes_cleanly_at_every_split(api: str) -> None:
    """The unmutated streams are valid: the fuzzing starts from real, decodable input."""
    corpus = _corpus(api)
    body = b"".join(corpus[0])
    for cut in range(0, len(body) + 1, max(1, len(body) // 97)):
        provider = _provider(api)
        decoder = provider.new_decoder(_request(provider))
        chunks = decoder.feed(body[:cut]) + decoder.feed(body[cut:]) + decoder.flush()
        assert chunks[-1].text == "Hello world ✓ é 漢字"
        assert chunks[-1].finish_reason == "stop"
