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

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Literal, Protocol, final

import attrs
from attrs import field, frozen

from mmstream.content import ChatMessage
from mmstream.errors import ConfigurationError, InvalidArgumentError

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


def _type_name(value: object) -> str:
    return type(value).__name__


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _to_stop(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Iterable) and not isinstance(value, (bytes, Mapping)):
        stop = tuple(value)
        if all(isinstance(item, str) for item in stop):
            return stop
    raise InvalidArgumentError(
        f"stop must be a str or a list of str, not {_type_name(value)}", argument="stop"
    )


def _to_messages(value: Iterable[ChatMessage]) -> tuple[ChatMessage, ...]:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise InvalidArgumentError(
            f"messages must be a list of ChatMessage, not {_type_name(value)}",
            argument="messages",
        )
    messages = tuple(value)
    for index, message in enumerate(messages):
        if not isinstance(message, ChatMessage):
            raise InvalidArgumentError(
                f"messages[{index}] must be a ChatMessage, not {_type_name(message)}",
                argument="messages",
            )
    return messages


def _to_extra(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidArgumentError(
            f"extra must be a mapping (a dict) of options, not {_type_name(value)}",
            argument="extra",
        )
    return dict(value)


def _number(low: float, high: float = math.inf) -> Any:
    """A validator: ``None`` or a number in [low, high] (not a bool, not NaN)."""

    def check(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None:
            return
        if not _is_number(value) or not low <= value <= high:
            bounds = f">= {low:g}" if high == math.inf else f"between {low:g} and {high:g}"
            if _is_number(value) and not math.isfinite(value):
                bounds += " (NaN and infinity cannot be sent as JSON)"
            raise InvalidArgumentError(
                f"{attribute.name} must be a number {bounds}, not {value!r}",
                argument=attribute.name,
            )

    return check


def _count(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidArgumentError(
            f"{attribute.name} must be a whole number >= 1, not {value!r}", argument=attribute.name
        )


def _seconds(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A Timeouts phase: ``None`` (no limit) or a number of seconds > 0."""
    if value is None:
        return
    if not _is_number(value) or not value > 0:
        raise InvalidArgumentError(
            f"Timeouts({attribute.name}=...) must be a number of seconds > 0 or None, "
            f"not {value!r}",
            argument="timeout",
        )


def _timeout(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        Timeouts.from_value(value)


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

    connect: float | None = field(default=_CONNECT_CAP, validator=_seconds)
    read: float | None = field(default=600.0, validator=_seconds)
    write: float | None = field(default=600.0, validator=_seconds)
    pool: float | None = field(default=600.0, validator=_seconds)
    total: float | None = field(default=None, validator=_seconds)

    @classmethod
    def from_value(cls, value: float | Timeouts | Any | None) -> Timeouts:
        """Timeouts from seconds, an ``httpx.Timeout`` (duck-typed), or ``None`` (the defaults)."""
        if value is None:
            return DEFAULT_TIMEOUT
        if isinstance(value, Timeouts):
            return value
        if _is_number(value):
            if not value > 0:
                raise InvalidArgumentError(
                    f"timeout must be > 0 seconds, not {value!r}", argument="timeout"
                )
            seconds = float(value)
            return cls(
                connect=min(seconds, _CONNECT_CAP), read=seconds, write=seconds, pool=seconds
            )
        phases = ("connect", "read", "write", "pool")
        if all(hasattr(value, phase) for phase in phases):  # an httpx.Timeout
            return cls(**{phase: getattr(value, phase) for phase in phases})
        raise InvalidArgumentError(
            f"timeout must be a number of seconds or a Timeouts, not {type(value).__name__}",
            argument="timeout",
        )


#: connect 10 s, and 600 s for each read/write/pool wait (answers can be long); no total.
DEFAULT_TIMEOUT = Timeouts()


@frozen(kw_only=True)
class CallOptionFields:
    """The call options as fields, declared once: the base of `CallOptions` and of every provider.

    A provider's fields of these names are its defaults; a call's own options win.
    """

    temperature: float | None = field(default=None, validator=_number(0))
    max_tokens: int | None = field(default=None, validator=_count)
    top_p: float | None = field(default=None, validator=_number(0, 1))
    stop: tuple[str, ...] | None = field(default=None, converter=_to_stop)
    timeout: float | Timeouts | None = field(default=None, validator=_timeout)
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
                extra.update(_to_extra(value))
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


def _provider(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not callable(getattr(value, "build_request", None)):
        raise InvalidArgumentError(
            f"provider must be a provider instance, not {_type_name(value)}", argument="provider"
        )


def _options(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, CallOptions):
        raise InvalidArgumentError(
            f"options must be a CallOptions, not {_type_name(value)}", argument="options"
        )


def _operation(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value not in ("chat", "complete"):
        raise InvalidArgumentError(
            f"operation must be 'chat' or 'complete', not {value!r}", argument="operation"
        )


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
    options: CallOptions = field(factory=CallOptions, validator=_options)
    provider: ProviderRef = field(validator=_provider)
    operation: Literal["chat", "complete"] = field(default="chat", validator=_operation)
    attempt: int = field(default=1, validator=_count)

    @property
    def model(self) -> str:
        """The model that will answer."""
        return self.provider.model

    @property
    def provider_name(self) -> str:
        """The provider's short name (``"openai"``, ``"anthropic"``, ...)."""
        return self.provider.name


def _http_text(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str):
        raise ConfigurationError(
            f"the provider built a request whose {attribute.name} is a {_type_name(value)}, "
            "not a str"
        )


def _headers(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"the provider built a request whose headers are a {_type_name(value)}, not a mapping"
        )


def _stream_format(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value not in ("sse", "ndjson"):
        raise ConfigurationError(
            f"the provider built a request with stream_format {value!r} ('sse' or 'ndjson')"
        )


@final
@frozen(kw_only=True)
class HTTPRequest:
    """A pure description of the HTTP request a provider wants sent.

    ``headers`` holds the API key and is kept out of ``repr``.
    ``stream_format`` tells the transport how the response body is framed.
    """

    method: str = field(default="POST", validator=_http_text)
    url: str = field(validator=_http_text)
    headers: Mapping[str, str] = field(factory=dict, repr=False, validator=_headers)
    json: Any = field(default=None, repr=False)
    stream_format: StreamFormat = field(default="sse", validator=_stream_format)
    timeout: float | Timeouts | None = field(default=None, validator=_timeout)

    def __attrs_post_init__(self) -> None:
        if not self.url:
            raise ConfigurationError("the provider built a request without a URL")
