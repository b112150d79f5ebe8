"""The incremental SSE and NDJSON decoders: spec framing, and any split of the bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmstream.sse import NDJSONDecoder, SSEDecoder, SSEEvent


def decode(chunks: list[bytes], **kwargs: object) -> list[SSEEvent]:
    decoder = SSEDecoder(**kwargs)  # type: ignore[arg-type]
    events: list[SSEEvent] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    return events + decoder.flush()


def splits(data: bytes) -> list[list[bytes]]:
    """The body whole, byte by byte, and cut in two at every offset."""
    ways = [[data], [data[i : i + 1] for i in range(len(data))]]
    ways += [[data[:i], data[i:]] for i in range(len(data) + 1)]
    return ways


# --- framing, as the WHATWG spec has it -----------------------------------------------


def test_data_lines_join_with_newline_and_blank_line_dispatches() -> None:
    assert decode([b"data: a\ndata: b\n\ndata: c\n\n"]) == [SSEEvent("a\nb"), SSEEvent("c")]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_every_line_ending_gives_the_same_events(eol: bytes) -> None:
    body = eol.join([b"event: x", b"data: 1", b"data: 2", b"", b"data: 3", b"", b""])
    expected = [SSEEvent("1\n2", "x"), SSEEvent("3")]
    for chunks in splits(body):
        assert decode(chunks) == expected


def test_mixed_line_endings() -> None:
    assert decode([b"data: a\r\ndata: b\rdata: c\n\r\n"]) == [SSEEvent("a\nb\nc")]


def test_cr_ends_the_line_at_once() -> None:
    """A CR-terminated event is dispatched without waiting for the next read."""
    decoder = SSEDecoder()
    assert decoder.feed(b"data: x\r\r") == [SSEEvent("x")]
    assert decoder.feed(b"\ndata: y\r\n\r\n") == [SSEEvent("y")]  # that LF ends nothing new
    assert decoder.flush() == []


def test_comments_and_keep_alives_are_ignored() -> None:
    body = b": keep-alive\n\n:\ndata: a\n: in the middle\ndata: b\n\n: OPENROUTER PROCESSING\n\n"
    assert decode([body]) == [SSEEvent("a\nb")]


def test_one_space_after_the_colon_is_dropped_and_only_one() -> None:
    assert decode([b"data:x\n\ndata:  y\n\ndata\n\ndata:\n\n"]) == [
        SSEEvent("x"),
        SSEEvent(" y"),
        SSEEvent(""),
        SSEEvent(""),
    ]


def test_event_type_resets_after_each_event_and_id_persists() -> None:
    body = b"event: first\nid: 7\ndata: a\n\ndata: b\n\nid\ndata: c\n\n"
    assert decode([body]) == [
        SSEEvent("a", "first", "7"),
        SSEEvent("b", "message", "7"),
        SSEEvent("c", "message", ""),
    ]


def test_id_with_nul_is_ignored() -> None:
    assert decode([b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n"]) == [
        SSEEvent("a", id="1"),
        SSEEvent("b", id="1"),
    ]


def test_retry_takes_ascii_digits_only() -> None:
    events = decode(
        [b"retry: 1500\ndata: a\n\nretry: 15x\ndata: b\n\nretry: \xd9\xa3\ndata: c\n\n"]
    )
    assert [(e.data, e.retry) for e in events] == [("a", 1500), ("b", None), ("c", None)]
    assert "retry=1500" in repr(events[0])


def test_blank_lines_without_data_dispatch_nothing() -> None:
    assert decode([b"\n\n\nevent: lonely\n\nid: 3\n\n"]) == []


def test_unknown_fields_are_ignored() -> None:
    assert decode([b"foo: bar\nerror: {}\ndata: a\n\n"]) == [SSEEvent("a")]


def test_extra_data_fields_become_named_events() -> None:
    """llama.cpp's old ``error: {...}`` line, then its ``data: [DONE]``."""
    body = b'error: {"code":400}\n\ndata: [DONE]\n\n'
    assert decode([body], data_fields=("error",)) == [
        SSEEvent('{"code":400}', "error"),
        SSEEvent("[DONE]"),
    ]


def test_last_event_without_blank_line_is_kept_at_flush() -> None:
    for body in (
        b"data: a\n\ndata: [DONE]",
        b"data: a\n\ndata: [DONE]\n",
        b"data: a\n\ndata: [DONE]\r",
    ):
        for chunks in splits(body):
            assert decode(chunks) == [SSEEvent("a"), SSEEvent("[DONE]")]


def test_a_leading_bom_is_dropped_even_when_split() -> None:
    body = b"\xef\xbb\xbfdata: a\n\n"
    for chunks in splits(body):
        assert decode(chunks) == [SSEEvent("a")]
    # Only at the very start: later it is part of a (then unknown) field name.
    assert decode([b"data: a\n\n\xef\xbb\xbfdata: b\n\n"]) == [SSEEvent("a")]
    assert decode([b"\xef\xbb"]) == []
    assert decode([b"\xef\xbb", b"data: x\n\n"]) == []  # not a BOM: a field named b"\xef\xbbdata"


@pytest.mark.parametrize("text", ["héllo", "日本語", "emoji 🎉 ok", "mixed ü🎉語"])
def test_utf8_split_inside_a_character(text: str) -> None:
    body = f"data: {text}\n\n".encode()
    for chunks in splits(body):
        assert decode(chunks) == [SSEEvent(text)]


def test_invalid_utf8_is_replaced_not_raised() -> None:
    assert decode([b"data: \xff\xfe\n\n"]) == [SSEEvent("\ufffd\ufffd")]


def test_empty_feeds_change_nothing() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"") == []
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"") == []
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b"\n") == [SSEEvent("a")]
    assert decoder.flush() == []


def test_event_equality_and_repr() -> None:
    assert SSEEvent("a") == SSEEvent("a", "message", None, None)
    assert SSEEvent("a") != SSEEvent("a", "other")
    assert SSEEvent("a") != "a"
    assert len({SSEEvent("a"), SSEEvent("a")}) == 1
    assert repr(SSEEvent("a", id="1")) == "SSEEvent(event='message', data='a', id='1')"


# --- a real OpenAI stream, cut at every offset ----------------------------------------

OPENAI_WIRE = (
    b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,'
    b'"delta":{"role":"assistant","content":""},"finish_reason":null}]}\r\n\r\n'
    b": keep-alive\r\n\r\n"
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":'
    b'"Gr\xc3\xbc\xc3\x9fe \xf0\x9f\x8e\x89"},'
    b'"finish_reason":null}]}\r\n\r\n'
    b'data: {"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\r\n\r\n'
    b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}\r\n\r\n'
    b"data: [DONE]\r\n\r\n"
)


def test_openai_wire_bytes_at_every_split_point() -> None:
    expected = decode([OPENAI_WIRE])
    assert [e.data[:12] for e in expected] == [
        '{"id":"c1","',
        '{"id":"c1","',
        '{"id":"c1","',
        '{"id":"c1","',
        "[DONE]",
    ]
    assert "Grüße 🎉" in expected[1].data
    for chunks in splits(OPENAI_WIRE):
        assert decode(chunks) == expected
    for a in range(0, len(OPENAI_WIRE), 7):  # and in three pieces
        for b in range(a, len(OPENAI_WIRE), 13):
            assert decode([OPENAI_WIRE[:a], OPENAI_WIRE[a:b], OPENAI_WIRE[b:]]) == expected


# --- property: the same events for every way of splitting the same bytes --------------


def _cut(data: bytes, points: list[int]) -> list[bytes]:
    cuts = sorted({min(p, len(data)) for p in points})
    pieces, start = [], 0
    for cut in cuts:
        pieces.append(data[start:cut])
        start = cut
    pieces.append(data[start:])
    return pieces


_LINE = st.one_of(
    st.sampled_from(
        [b"data: x", b"data:", b"data", b"event: e", b"id: 1", b"retry: 10", b": c", b"", b"id"]
    ),
    st.binary(max_size=12),
    st.text(max_size=8).map(lambda t: ("data: " + t).encode()),
)
_EOL = st.sampled_from([b"\n", b"\r\n", b"\r"])


@st.composite
def sse_bodies(draw: st.DrawFn) -> bytes:
    parts = [draw(st.sampled_from([b"", b"\xef\xbb\xbf", b"\xef\xbb"]))]
    for _ in range(draw(st.integers(0, 12))):
        parts.append(draw(_LINE) + draw(_EOL))
    if draw(st.booleans()):
        parts.append(draw(_LINE))  # an unterminated last line
    return b"".join(parts)


@settings(max_examples=400, deadline=None)
@given(body=sse_bodies(), points=st.lists(st.integers(0, 200), max_size=8))
def test_any_split_gives_the_same_events(body: bytes, points: list[int]) -> None:
    assert decode(_cut(body, points)) == decode([body])


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=120), points=st.lists(st.integers(0, 120), max_size=6))
def test_any_split_of_any_bytes_gives_the_same_events(body: bytes, points: list[int]) -> None:
    assert decode(_cut(body, points)) == decode([body])


@st.composite
def event_lists(draw: st.DrawFn) -> list[SSEEvent]:
    text = st.text(
        st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n\x00"), max_size=10
    )
    events = []
    for _ in range(draw(st.integers(0, 6))):
        lines = draw(st.lists(text, min_size=1, max_size=3))
        name = draw(st.sampled_from(["message", "ping", "error", "ünïcode"]))
        events.append(SSEEvent("\n".join(lines), name))
    return events


@settings(max_examples=300, deadline=None)
@given(
    events=event_lists(),
    eol=_EOL,
    comments=st.booleans(),
    points=st.lists(st.integers(0, 400), max_size=10),
)
def test_encoded_events_round_trip_at_any_split(
    events: list[SSEEvent], eol: bytes, comments: bool, points: list[int]
) -> None:
    body = b""
    for event in events:
        if comments:
            body += b": ping" + eol
        if event.event != "message":
            body += b"event: " + event.event.encode() + eol
        for line in event.data.split("\n"):
            body += b"data: " + line.encode() + eol
        body += eol
    assert decode(_cut(body, points)) == events


# --- NDJSON ---------------------------------------------------------------------------


def ndjson(chunks: list[bytes]) -> list[bytes]:
    decoder = NDJSONDecoder()
    lines: list[bytes] = []
    for chunk in chunks:
        lines += decoder.feed(chunk)
    return lines + decoder.flush()


def test_ndjson_lines_at_every_split_point() -> None:
    body = '{"a":1}\r\n\n  \n{"b":"ü🎉"}\n{"c":3}'.encode()
    expected = [b'{"a":1}', '{"b":"ü🎉"}'.encode(), b'{"c":3}']
    for chunks in splits(body):
        assert ndjson(chunks) == expected


def test_ndjson_holds_an_unfinished_line_until_its_newline() -> None:
    decoder = NDJSONDecoder()
    assert decoder.feed(b'{"a"') == []
    assert decoder.feed(b":1}") == []
    assert decoder.feed(b"\n") == [b'{"a":1}']
    assert decoder.flush() == []


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=100), points=st.lists(st.integers(0, 100), max_size=6))
def test_ndjson_any_split_gives_the_same_lines(body: bytes, points: list[int]) -> None:
    assert ndjson(_cut(body, points)) == ndjson([body])
