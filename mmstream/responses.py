"""What comes out of a model: streamed chunks and final responses.

A stream of N chunks costs O(N): every chunk shares one append-only
accumulator of text pieces, and a chunk's cumulative ``text`` is joined only
when somebody reads it (then cached). ``delta`` is always the new piece,
``text`` always the whole answer so far.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, final

from attrs import field, frozen

from mmstream.content import ChatMessage, MessageRole

__all__ = ["ChatResponse", "CompletionResponse", "FinishReason", "Usage"]

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error"]


@final
@frozen(kw_only=True)
class Usage:
    """Token counts of one call; a count the provider did not report is ``None``, never 0.

    ``total_tokens`` is derived from the other two when the provider omits it.
    """

    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_creation_tokens: int | None = None
    reasoning_tokens: int | None = None

    def __attrs_post_init__(self) -> None:
        if (
            self.total_tokens is None
            and self.input_tokens is not None
            and self.output_tokens is not None
        ):
            object.__setattr__(self, "total_tokens", self.input_tokens + self.output_tokens)


class _TextAccumulator:
    """Append-only text pieces shared by all chunks of one stream (internal).

    ``text(n)`` joins the first ``n`` pieces; the longest join is cached and
    extended, so reading the latest chunk's text after every chunk stays O(total).
    """

    __slots__ = ("_cached", "_cached_n", "pieces")

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self._cached = ""
        self._cached_n = 0

    def append(self, piece: str) -> int:
        """Add a piece; return the number of pieces now held."""
        self.pieces.append(piece)
        return len(self.pieces)

    def text(self, n: int) -> str:
        """The text of the first ``n`` pieces."""
        if n == self._cached_n:
            return self._cached
        if n > self._cached_n:
            joined = self._cached + "".join(self.pieces[self._cached_n : n])
            self._cached, self._cached_n = joined, n
            return joined
        return "".join(self.pieces[:n])


class _LazyText:
    """A chunk's cumulative text: the first ``n`` pieces of a shared accumulator."""

    __slots__ = ("acc", "n")

    def __init__(self, acc: _TextAccumulator, n: int) -> None:
        self.acc = acc
        self.n = n

    def __str__(self) -> str:
        return self.acc.text(self.n)


def _resolve(value: str | _LazyText) -> str:
    return value if isinstance(value, str) else str(value)


def _to_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return {} if value is None else value


@frozen(kw_only=True)
class _Response:
    """Fields common to chat and completion responses."""

    _text: str | _LazyText = field(default="", alias="text", eq=_resolve, repr=False)
    delta: str | None = None
    usage: Usage | None = None
    finish_reason: FinishReason | None = None
    raw: Any = field(default=None, eq=False, repr=False)
    additional_kwargs: Mapping[str, Any] = field(factory=dict, converter=_to_mapping, eq=False)

    @property
    def text(self) -> str:
        """The whole answer so far (cumulative)."""
        text = self._text
        return text if isinstance(text, str) else text.acc.text(text.n)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(text={_short(self.text)}, delta={self.delta!r}, "
            f"usage={self.usage!r}, finish_reason={self.finish_reason!r})"
        )


def _short(text: str, limit: int = 60) -> str:
    return repr(text) if len(text) <= limit else repr(text[: limit - 1] + "…")


@final
@frozen(kw_only=True, repr=False)
class ChatResponse(_Response):
    """A chunk of a chat stream, or the final answer of ``chat``.

    Attributes:
        text: the cumulative answer so far.
        delta: the piece this chunk added (``None`` on chunks that add no text).
        message: the answer as an assistant [`ChatMessage`][mmstream.ChatMessage].
        usage: token counts, on the chunk where the provider reports them.
        finish_reason: ``"stop" | "length" | "tool_calls" | "content_filter" | "error"``.
        raw: the provider's decoded event behind this chunk.
        additional_kwargs: ``provider_finish_reason``, ``tool_calls``, ... .
    """

    @property
    def message(self) -> ChatMessage:
        """The answer so far as an assistant message."""
        kwargs = {k: v for k, v in self.additional_kwargs.items() if k == "tool_calls"}
        return ChatMessage(MessageRole.ASSISTANT, self.text, additional_kwargs=kwargs)


_new = object.__new__
_set = object.__setattr__


def _text_chunk(text: _LazyText, delta: str, raw: Any) -> ChatResponse:
    """``ChatResponse(text=text, delta=delta, raw=raw)`` without attrs' ``__init__`` (hot path).

    Decoders make one of these per streamed text delta; skipping the generated
    ``__init__`` (keyword parsing, the ``additional_kwargs`` factory and
    converter) halves its cost. The fields are the same as the constructor's.
    """
    chunk = _new(ChatResponse)
    _set(chunk, "_text", text)
    _set(chunk, "delta", delta)
    _set(chunk, "usage", None)
    _set(chunk, "finish_reason", None)
    _set(chunk, "raw", raw)
    _set(chunk, "additional_kwargs", {})
    return chunk


@final
@frozen(kw_only=True, repr=False)
class CompletionResponse(_Response):
    """A chunk of a completion stream, or the final answer of ``complete``.

    Same fields as [`ChatResponse`][mmstream.ChatResponse], without ``message``.
    """

    @classmethod
    def from_chat(cls, chunk: ChatResponse) -> CompletionResponse:
        """The same chunk seen as a completion (O(1): the text is shared, not copied)."""
        return cls(
            text=chunk._text,
            delta=chunk.delta,
            usage=chunk.usage,
            finish_reason=chunk.finish_reason,
            raw=chunk.raw,
            additional_kwargs=chunk.additional_kwargs,
        )
