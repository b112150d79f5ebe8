"""A call, normalized: what the middleware see and what providers translate.

[`ChatRequest`][mmstream.request.ChatRequest] is one call (messages, options, the
provider that serves it); [`HTTPRequest`][mmstream.request.HTTPRequest] is a
provider's pure description of the HTTP request to send for it. Both are frozen
values, derived with `attrs.evolve`.

Like every value module this one imports nothing above the values: a request
knows its provider only as a [`ProviderRef`][mmstream.request.ProviderRef] (a
name and a model); the whole contract is
[`Provider`][mmstream.protocols.Provider], one layer up.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Literal, Protocol, final

import attrs
from attrs import field, frozen

from mmstream.content import ChatMessage
from mmstream.errors import ConfigurationError, InvalidRequestError

__all__ = [
    "CallOptionFields",
    "CallOptions",
    "ChatRequest",
    "DEFAULT_TIMEOUT",
    "HTTPRequest",
    "ProviderRef",
    "StreamFormat",
    "Timeouts",
]

StreamFormat = Literal["sse", "ndjson"]

#: the longest connect timeout a plain number of seconds sets.
_CONNECT_CAP = 10.0


def _to_stop(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def _to_messages(value: Iterable[ChatMessage]) -> tuple[ChatMessage, ...]:
    return tuple(value)


def _to_extra(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return {} if value is None else dict(value)


@final
@frozen(kw_only=True)
class Timeouts:
    """Deadlines for one HTTP exchange, in seconds; ``None`` means no limit.

    Attributes:
        connect: to open the connection (TCP and TLS).
        read: between two reads of the response: the longest silence of a stream.
        write: to send a piece of the request body.
        pool: to wait for a free connection of the pool.
        total: for the whole exchange, from sending the request to the last byte
            of the answer. Reported as ``APITimeoutError(kind="total")``.

    A plain number ``t`` (``timeout=30``) means ``read``, ``write`` and ``pool``
    of ``t`` and ``connect`` of ``min(t, 10)``, with no total (the httpx and
    OpenAI SDK meaning). Give ``Timeouts`` for a total or finer control, to
    [`Transport`][mmstream.Transport] (for every call) or as a call's ``timeout`` option (which
    replaces the transport's for that call).

    Example:
        ``Transport(timeout=Timeouts(connect=5, read=30, total=120))``, or per call
        ``await llm.acomplete("...", timeout=Timeouts(total=20))``.
    """

    connect: float | None = _CONNECT_CAP
    read: float | None = 600.0
    write: float | None = 600.0
    pool: float | None = 600.0
    total: float | None = None

    @classmethod
    def from_value(cls, value: float | Timeouts | Any | None) -> Timeouts:
        """Timeouts from seconds, an ``httpx.Timeout`` (duck-typed), or ``None`` (the defaults)."""
        if value is None:
            return DEFAULT_TIMEOUT
        if isinstance(value, Timeouts):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not value > 0:
                raise InvalidRequestError(f"timeout must be > 0 seconds, not {value!r}")
            seconds = float(value)
            return cls(
                connect=min(seconds, _CONNECT_CAP), read=seconds, write=seconds, pool=seconds
            )
        phases = ("connect", "read", "write", "pool")
        if all(hasattr(value, phase) for phase in phases):  # an httpx.Timeout
            return cls(**{phase: getattr(value, phase) for phase in phases})
        raise InvalidRequestError(
            f"timeout must be a number of seconds or a Timeouts, not {type(value).__name__}"
        )


#: connect 10 s, and 600 s for each read/write/pool wait (answers can be long); no total.
DEFAULT_TIMEOUT = Timeouts()


@frozen(kw_only=True)
class CallOptionFields:
    """The call options as fields, declared once: the base of `CallOptions` and of every provider.

    A provider's fields of these names are its defaults; a call's own options win.
    """

    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: tuple[str, ...] | None = field(default=None, converter=_to_stop)
    timeout: float | Timeouts | None = None
    extra: Mapping[str, Any] = field(factory=dict, converter=_to_extra)


@final
@frozen(kw_only=True)
class CallOptions(CallOptionFields):
    """Sampling and call options; a provider's defaults, overridden per call.

    ``extra`` holds options mmstream does not model (``tools``, ``seed``,
    ``response_format``, ``keep_alive``, ...): each provider passes through the
    ones its API takes. ``timeout`` (seconds) bounds the HTTP exchange.
    """

    @classmethod
    def of(cls, fields: CallOptionFields) -> CallOptions:
        """The options held by ``fields`` (a provider's defaults), as a `CallOptions`."""
        if type(fields) is cls:
            return fields
        return cls(**{name: getattr(fields, name) for name in _ALL_OPTION_NAMES})

    def merge(self, **overrides: Any) -> CallOptions:
        """These options with the given ones on top; ``None`` leaves a value as it is.

        Unknown names go into ``extra``.
        """
        known: dict[str, Any] = {}
        extra = dict(self.extra)
        for name, value in overrides.items():
            if value is None:
                continue
            if name == "extra":
                extra.update(value)
            elif name in _OPTION_NAMES:
                known[name] = value
            else:
                extra[name] = value
        return attrs.evolve(self, extra=extra, **known)


_ALL_OPTION_NAMES = tuple(a.name for a in attrs.fields(CallOptionFields))
_OPTION_NAMES = frozenset(_ALL_OPTION_NAMES) - {"extra"}


class ProviderRef(Protocol):
    """What a request knows of the provider that serves it: its name and model.

    The provider travels with the request (a middleware such as Fallback swaps
    it); the transport-facing contract is [`Provider`][mmstream.protocols.Provider].
    """

    name: ClassVar[str]

    @property
    def model(self) -> str:
        """The model (or deployment) that answers."""
        ...


@final
@frozen(kw_only=True)
class ChatRequest:
    """One call as every middleware sees it.

    Attributes:
        messages: the conversation.
        options: the merged call options.
        provider: the provider that will serve the call (a middleware such as
            Fallback may swap it with `attrs.evolve`).
        operation: ``"chat"`` or ``"complete"``, for traces.
        attempt: 1 for the first try; the Retry middleware counts up.
    """

    messages: tuple[ChatMessage, ...] = field(converter=_to_messages)
    options: CallOptions = field(factory=CallOptions)
    provider: ProviderRef
    operation: Literal["chat", "complete"] = "chat"
    attempt: int = 1

    @property
    def model(self) -> str:
        """The model that will answer."""
        return self.provider.model

    @property
    def provider_name(self) -> str:
        """The provider's short name (``"openai"``, ``"anthropic"``, ...)."""
        return self.provider.name


@final
@frozen(kw_only=True)
class HTTPRequest:
    """A pure description of the HTTP request a provider wants sent.

    ``headers`` holds the API key and is kept out of ``repr``.
    ``stream_format`` tells the transport how the response body is framed.
    """

    method: str = "POST"
    url: str
    headers: Mapping[str, str] = field(factory=dict, repr=False)
    json: Any = field(default=None, repr=False)
    stream_format: StreamFormat = "sse"
    timeout: float | Timeouts | None = None

    def __attrs_post_init__(self) -> None:
        if not self.url:
            raise ConfigurationError("the provider built a request without a URL")
