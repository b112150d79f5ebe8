"""The event vocabulary of the web relay: chunks in, Server-Sent Events out (pure).

A relayed answer is a sequence of SSE events, each an ``event:`` name and one
``data:`` line of JSON (https://html.spec.whatwg.org/multipage/server-sent-events.html):

- ``text`` ``{"delta": str}``: a piece of the answer, in order.
- ``thinking`` ``{"delta": str}``: a piece of the model's reasoning, for models that
  stream it.
- ``tool_call`` ``{"id": str | null, "name": str, "arguments": any}``: a whole tool call
  the model made, before ``done``.
- ``done`` ``{"finish_reason": str | null, "usage": {...} | null}``: the answer is
  complete; always the last event of a successful stream.
- ``error`` ``{"type", "message", "hint", "retryable", "status", "partial"}``: the call
  failed; always the last event of a failed stream, ``partial`` holding the text so far.

Between events, a comment line (``: keep-alive``) keeps proxies from closing a
silent connection; browsers ignore it. Everything here is pure: no I/O, no
Starlette, so it can be tested byte by byte and reused by other frameworks.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any, Final, final

from attrs import define, field

from mmstream.errors import APIError, MMStreamError
from mmstream.responses import ChatResponse, CompletionResponse, Usage

__all__ = [
    "EVENT_NAMES",
    "HEARTBEAT",
    "Event",
    "EventEncoder",
    "chunk_events",
    "error_payload",
    "format_event",
]

#: A relay event: its SSE ``event:`` name and its JSON payload.
Event = tuple[str, Mapping[str, Any]]

#: Every event name the relay sends, in the order a stream may send them.
EVENT_NAMES: Final = ("text", "thinking", "tool_call", "done", "error")

#: The SSE comment sent on long silences (ignored by ``EventSource`` and by parsers).
HEARTBEAT: Final = b": keep-alive\n\n"

_log = logging.getLogger("mmstream.web")

#: The message an error that is no MMStreamError shows the browser (a bug, not the user's).
_INTERNAL_MESSAGE = "the server failed while streaming the answer"
_INTERNAL_HINT = "Try again later; the server's log has the details."

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def chunk_events(chunk: ChatResponse | CompletionResponse) -> list[Event]:
    """The events one chunk becomes, in order: the one place that maps chunks to events.

    A chunk's ``delta`` is a ``text`` event and its reasoning delta (when the
    content model carries one) a ``thinking`` event. A chunk's usage, finish
    reason and assembled tool calls are not events of their own: the
    [`EventEncoder`][mmstream.web.EventEncoder] keeps the latest and sends them
    once, at the end, as ``tool_call`` and ``done`` events.

    Args:
        chunk: a streamed chunk of ``astream_chat`` or ``astream_complete``.

    Returns:
        The chunk's events; empty for a chunk that adds no text.
    """
    events: list[Event] = []
    thinking = getattr(chunk, "thinking_delta", None)
    if thinking:
        events.append(("thinking", {"delta": thinking}))
    delta = chunk.delta
    if delta:
        events.append(("text", {"delta": delta}))
    # Tool-call deltas, when chunks carry them, become ("tool_call.delta", {...}) here.
    return events


def format_event(name: str, payload: Mapping[str, Any]) -> bytes:
    """One SSE event: ``event: <name>``, one ``data:`` line of compact JSON, a blank line.

    JSON escapes line breaks inside strings, so the data always fits on one line.
    """
    return b"event: " + name.encode("ascii") + b"\ndata: " + _dumps(payload).encode() + b"\n\n"


def _usage(usage: Usage | None) -> dict[str, int | None] | None:
    if usage is None:
        return None
    from mmstream.serde import converter  # the one converter; loaded only by those who serialize

    unstructured: dict[str, int | None] = converter.unstructure(usage)
    return unstructured


def _redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if len(secret) >= 8:
            text = text.replace(secret, "***")
    return text


def error_payload(
    error: BaseException, partial: str = "", *, secrets: Iterable[str] = ()
) -> dict[str, Any]:
    """The ``error`` event's payload: the error's class, message and hint, and the text so far.

    An [`MMStreamError`][mmstream.errors.MMStreamError] shows its own message and
    hint (with every value of ``secrets`` masked); any other exception is a bug
    on the server's side, and shows only a generic message, never its own text.

    Args:
        error: what ended the stream.
        partial: the answer's text before the error.
        secrets: values that must not reach the browser (the provider's keys).

    Returns:
        ``{"type", "message", "hint", "retryable", "status", "partial"}``.
    """
    secrets = tuple(secrets)
    if isinstance(error, MMStreamError):
        return {
            "type": type(error).__name__,
            "message": _redact(error.message or type(error).__name__, secrets),
            "hint": _redact(error.hint, secrets),
            "retryable": bool(error.retryable),
            "status": error.status if isinstance(error, APIError) else None,
            "partial": partial,
        }
    return {
        "type": "InternalError",
        "message": _INTERNAL_MESSAGE,
        "hint": _INTERNAL_HINT,
        "retryable": False,
        "status": None,
        "partial": partial,
    }


def _strings(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


@final
@define
class EventEncoder:
    """Per-stream state of the relay: chunks in, SSE bytes out (sans-I/O, like the decoders).

    Call [`feed`][mmstream.web.EventEncoder.feed] with each chunk, then
    [`finish`][mmstream.web.EventEncoder.finish] when the stream ended, or
    [`fail`][mmstream.web.EventEncoder.fail] with the error that ended it. Only
    the latest chunk is kept (for its usage, finish reason, tool calls and
    cumulative text), so a stream's memory does not grow with its length here.

    Args:
        secrets: values masked in error events (the provider's keys).
    """

    secrets: tuple[str, ...] = field(default=(), converter=_strings, repr=False)
    _last: ChatResponse | CompletionResponse | None = field(default=None, init=False, repr=False)
    _usage: Usage | None = field(default=None, init=False)
    _finish_reason: str | None = field(default=None, init=False)
    _tool_calls: Any = field(default=None, init=False, repr=False)

    def feed(self, chunk: ChatResponse | CompletionResponse) -> bytes:
        """The SSE bytes for one chunk (``b""`` for a chunk that adds no text)."""
        self._last = chunk
        if chunk.usage is not None:
            self._usage = chunk.usage
        if chunk.finish_reason is not None:
            self._finish_reason = chunk.finish_reason
        calls = chunk.additional_kwargs.get("tool_calls")
        if calls:
            self._tool_calls = calls
        events = chunk_events(chunk)
        if not events:
            return b""
        if len(events) == 1:
            return format_event(*events[0])
        return b"".join(format_event(name, payload) for name, payload in events)

    @property
    def text(self) -> str:
        """The answer's text so far."""
        return "" if self._last is None else self._last.text

    def finish(self) -> bytes:
        """The closing events of a complete stream: its tool calls, then ``done``."""
        out = [
            format_event("tool_call", {key: call.get(key) for key in ("id", "name", "arguments")})
            for call in self._tool_calls or ()
        ]
        out.append(
            format_event(
                "done", {"finish_reason": self._finish_reason, "usage": _usage(self._usage)}
            )
        )
        return b"".join(out)

    def fail(self, error: BaseException) -> bytes:
        """The ``error`` event that ends a failed stream, with the text that had arrived.

        When the error's ``partial`` holds text no chunk delivered (chunks decoded
        from the same network read as the error), that text is sent first as one
        more ``text`` event, so the ``text`` events always spell ``partial``.
        """
        sent = self.text
        partial = sent
        if isinstance(error, MMStreamError) and error.partial is not None:
            partial = error.partial.text
        if not isinstance(error, MMStreamError):
            _log.error("the relayed stream failed", exc_info=error)
        event = format_event("error", error_payload(error, partial, secrets=self.secrets))
        if len(partial) > len(sent) and partial.startswith(sent):
            return format_event("text", {"delta": partial[len(sent) :]}) + event
        return event
