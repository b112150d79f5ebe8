"""The OpenAI decoder's fast path gives exactly what a full JSON parse of every chunk gives.

Consecutive text chunks are read through a template (only the content string
is parsed); these tests build streams whose chunks sometimes fit the template
and sometimes do not (other fields, whitespace, escapes, the word "content"
inside values, usage, finish reasons, tool calls) and check every chunk's
delta, text and raw against ``json.loads`` of what was sent.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmstream.errors import ProviderProtocolError
from mmstream.providers.openai import OpenAIChatDecoder
from mmstream.responses import ChatResponse


def text_chunk(content: str, **changes: Any) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1741569952,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {"index": 0, "delta": {"content": content}, "logprobs": None, "finish_reason": None}
        ],
        "usage": None,
    }
    chunk.update(changes)
    return chunk


def body(chunks: list[dict[str, Any]], *, spaced: bool = False, done: bool = True) -> bytes:
    separators = (", ", ": ") if spaced else (",", ":")
    events = [
        b"data: " + json.dumps(c, separators=separators, ensure_ascii=False).encode() + b"\n\n"
        for c in chunks
    ]
    if done:
        events.append(b"data: [DONE]\n\n")
    return b"".join(events)


def decode(data: bytes, size: int = 0) -> list[ChatResponse]:
    decoder = OpenAIChatDecoder("openai", "gpt-4o-mini")
    out: list[ChatResponse] = []
    step = size or len(data) or 1
    for start in range(0, len(data), step):
        out += decoder.feed(data[start : start + step])
    return out + decoder.flush()


def expected_texts(chunks: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(delta, raw) of every chunk that adds text, from the parsed chunks."""
    out = []
    for chunk in chunks:
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) not in (0, None):
                continue
            content = (choice.get("delta") or {}).get("content")
            if isinstance(content, str) and content:
                out.append((content, chunk))
    return out


def check(chunks: list[dict[str, Any]], data: bytes, size: int = 0) -> list[ChatResponse]:
    got = decode(data, size)
    texts = [c for c in got if c.delta]
    expected = expected_texts(chunks)
    assert [(c.delta, c.raw) for c in texts] == expected
    running = ""
    for chunk, (delta, _) in zip(texts, expected, strict=True):
        running += delta
        assert chunk.text == running
    final = got[-1]
    assert final.text == running
    return got


def test_a_plain_stream_takes_the_template_and_matches_a_full_parse() -> None:
    pieces = ["Hello", ",", " wor", "ld", ' "quoted"', "\n", "é—✓", "\\", "content", ""]
    chunks = [text_chunk(p) for p in pieces]
    data = body(chunks)
    decoder = OpenAIChatDecoder("openai", "gpt-4o-mini")
    out = decoder.feed(data[: data.index(b"[DONE]") - 6])
    assert decoder._template is not None  # the fast path is in use for this stream
    out += decoder.feed(data[data.index(b"[DONE]") - 6 :]) + decoder.flush()
    assert [c.delta for c in out if c.delta] == [p for p in pieces if p]
    assert out[-1].text == "".join(pieces)
    check(chunks, data)


def test_raw_dicts_are_fresh_objects_per_chunk() -> None:
    chunks = [text_chunk(p) for p in ["a", "b", "c"]]
    got = [c for c in decode(body(chunks)) if c.delta]
    raws = [c.raw for c in got]
    assert raws == chunks
    assert len({id(r) for r in raws}) == 3
    assert len({id(r["choices"]) for r in raws}) == 3
    assert len({id(r["choices"][0]) for r in raws}) == 3
    assert len({id(r["choices"][0]["delta"]) for r in raws}) == 3


def test_chunks_that_differ_outside_the_content_are_parsed_in_full() -> None:
    chunks = [
        text_chunk("a"),
        text_chunk("b", model="gpt-4o-2024-08-06"),  # another model: the prefix differs
        text_chunk("c"),
        text_chunk("d", usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}),
        text_chunk("e", obfuscation="xY"),  # a field after the content: the suffix differs
        text_chunk("f", obfuscation="xYz1"),
        text_chunk("g"),
        text_chunk(
            "h",
            choices=[
                {"index": 0, "delta": {"content": "h"}, "logprobs": None, "finish_reason": "stop"}
            ],
        ),
        text_chunk("", choices=[]),
    ]
    got = check(chunks, body(chunks))
    final = got[-1]
    assert final.additional_kwargs["model"] == "gpt-4o-mini-2024-07-18"
    assert final.finish_reason == "stop"
    assert final.usage is not None
    assert final.usage.total_tokens == 3


def test_template_match_restores_the_model_of_its_chunk() -> None:
    chunks = [text_chunk("a"), text_chunk("b"), text_chunk("c", model="other"), text_chunk("d")]
    got = check(chunks, body(chunks))
    assert got[-1].additional_kwargs["model"] == "gpt-4o-mini-2024-07-18"


def test_content_key_inside_values_and_spaced_json() -> None:
    chunks = [
        text_chunk("x", id="content"),
        text_chunk("y", id="content"),
        text_chunk('"content":"', id='"content"'),
        text_chunk("z"),
        text_chunk("w"),
    ]
    check(chunks, body(chunks))
    check(chunks, body(chunks, spaced=True))


def test_a_broken_string_after_a_matching_prefix_is_a_protocol_error() -> None:
    good = body([text_chunk("a"), text_chunk("b")], done=False)
    bad = b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1741569952,'
    bad += b'"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"content":"\x01'
    bad += b'"}}]}\n\n'
    decoder = OpenAIChatDecoder("openai", "gpt-4o-mini")
    assert [c.delta for c in decoder.feed(good)] == ["a", "b"]
    with pytest.raises(ProviderProtocolError) as caught:
        decoder.feed(bad)
    assert caught.value.partial is not None
    assert caught.value.partial.text == "ab"


def test_tool_calls_between_text_chunks() -> None:
    call: dict[str, Any] = {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "f", "arguments": '{"content": 1}'},
    }
    chunks = [
        text_chunk("a"),
        text_chunk("b"),
        text_chunk(
            "",
            choices=[{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}],
        ),
        text_chunk("c"),
        text_chunk("d"),
    ]
    got = check(chunks, body(chunks))
    assert got[-1].additional_kwargs["tool_calls"] == [
        {"id": "call_1", "name": "f", "arguments": {"content": 1}}
    ]


_text = st.lists(
    st.sampled_from([*'ab "\\/\n\t\u00e9\u2014\U0001f600:,{}[]', "content", '"content"']),
    max_size=6,
).map("".join)
_chunk = st.one_of(
    _text.map(text_chunk),
    _text.map(text_chunk),
    _text.map(text_chunk),
    _text.map(lambda t: text_chunk(t, model="m2")),
    _text.map(lambda t: text_chunk(t, extra={"content": t})),
    _text.map(lambda t: text_chunk(t, obfuscation=t)),
    _text.map(lambda t: text_chunk(t, id=t)),
)


@settings(max_examples=300, deadline=None)
@given(
    chunks=st.lists(_chunk, min_size=1, max_size=12),
    spaced=st.booleans(),
    size=st.integers(0, 97),
)
def test_any_stream_any_split_matches_a_full_parse(
    chunks: list[dict[str, Any]], spaced: bool, size: int
) -> None:
    check(chunks, body(chunks, spaced=spaced), size)
