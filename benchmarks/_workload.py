"""What every benchmark client asks for and must get back: OpenAI-format SSE, rendered once.

The server and the clients share this module, so each client can check the
text it received against :func:`expected_text` (a client that skips work
fails instead of looking fast).

The number of chunks and the framing travel in the model name:
``"bench:20000:chunked"`` asks for 20,000 text chunks, each SSE event in its
own HTTP chunk (as OpenAI's servers flush them); ``"bench:20000:length"`` sends
the same events with a ``Content-Length`` body (no chunked framing: the
purest measure of what a client adds on top of reading bytes);
``"bench:idle:chunked"`` sends the headers and one text chunk, then holds the
stream open until the client leaves.
"""

from __future__ import annotations

import json
import os
from typing import Literal

__all__ = [
    "API_KEY",
    "IMAGE_PROMPT",
    "PROMPT",
    "expected_text",
    "make_image",
    "model_name",
    "parse_model",
    "render_events",
    "render_response",
]

API_KEY = "sk-bench-not-a-real-key"
PROMPT = "Write a long story."
IMAGE_PROMPT = "What is in this picture?"

Framing = Literal["chunked", "length"]

# Token-sized pieces of text, some non-ASCII, cycled through.
_PIECES = (
    "Once",
    " upon",
    " a",
    " time",
    ",",
    " the",
    " café",
    " by",
    " the",
    " river",
    " served",
    " crêpes",
    " —",
    " and",
    " every",
    " morning",
    " a",
    " fox",
    " came",
    ".",
    "\n",
)


def piece(index: int) -> str:
    """The text of chunk ``index``."""
    return _PIECES[index % len(_PIECES)]


def expected_text(n: int) -> str:
    """The whole answer of an ``n``-chunk stream."""
    return "".join(piece(i) for i in range(n))


def model_name(n: int | str, framing: Framing = "chunked") -> str:
    """The model name that asks the server for ``n`` chunks (or ``"idle"``)."""
    return f"bench:{n}:{framing}"


def parse_model(model: str) -> tuple[int | None, Framing]:
    """(chunk count or ``None`` for an idle stream, framing) from a model name."""
    _, count, framing = model.split(":")
    if framing not in ("chunked", "length"):
        raise ValueError(f"unknown framing {framing!r}")
    return (None if count == "idle" else int(count)), framing  # type: ignore[return-value]


_BASE = {
    "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
    "object": "chat.completion.chunk",
    "created": 1741569952,
    "model": "gpt-4o-mini-2024-07-18",
    "service_tier": "default",
    "system_fingerprint": "fp_06737a9306",
}


def _event(choices: list[object], usage: object = None) -> bytes:
    chunk = {**_BASE, "choices": choices, "usage": usage}
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


def _content(text: str) -> bytes:
    return _event(
        [{"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None}]
    )


def render_events(n: int | None) -> list[bytes]:
    """The SSE events of an answer, as OpenAI sends them (``None``: the start of an idle one).

    A role chunk with empty content, ``n`` text chunks, a finish chunk with an
    empty delta, the usage chunk (``choices: []``), then ``data: [DONE]``.
    """
    role = _event(
        [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": "", "refusal": None},
                "logprobs": None,
                "finish_reason": None,
            }
        ]
    )
    if n is None:
        return [role, _content(piece(0))]
    events = [role]
    cache: dict[str, bytes] = {}
    for i in range(n):
        text = piece(i)
        event = cache.get(text)
        if event is None:
            event = cache[text] = _content(text)
        events.append(event)
    events.append(_event([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]))
    usage = {"prompt_tokens": 12, "completion_tokens": n, "total_tokens": 12 + n}
    events.append(_event([], usage))
    events.append(b"data: [DONE]\n\n")
    return events


def render_response(n: int | None, framing: Framing) -> bytes:
    """The whole HTTP response (head and body) for ``n`` chunks in ``framing``.

    An idle response (``n is None``) is always chunked and has no terminating chunk.
    """
    events = render_events(n)
    head = (
        "HTTP/1.1 200 OK\r\n"
        "content-type: text/event-stream; charset=utf-8\r\n"
        "x-request-id: req_bench\r\n"
        "openai-processing-ms: 1\r\n"
    )
    if framing == "length" and n is not None:
        body = b"".join(events)
        return (head + f"content-length: {len(body)}\r\n\r\n").encode() + body
    parts = [(head + "transfer-encoding: chunked\r\n\r\n").encode()]
    for event in events:
        parts.append(b"%x\r\n%b\r\n" % (len(event), event))
    if n is not None:
        parts.append(b"0\r\n\r\n")
    return b"".join(parts)


def make_image(size: int = 4 * 1024 * 1024, salt: int = 0) -> bytes:
    """A JPEG of about ``size`` bytes (noise), made distinct by ``salt``.

    The salt goes after the end-of-image marker, where decoders ignore it, so
    each run sends new bytes and no cache of the client can answer for it.
    """
    import io

    from PIL import Image

    # Noise at quality 92 costs about 2.9 bytes per pixel; a 4:3 picture of that size.
    pixels = size / 2.9
    width = int((pixels * 4 / 3) ** 0.5)
    height = int(width * 3 / 4)
    picture = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=92)
    return buffer.getvalue() + salt.to_bytes(8, "big")
