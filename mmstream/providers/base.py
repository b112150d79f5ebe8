"""The shared shell of every provider: configuration, requests, decoding, errors, written once.

A provider is a frozen attrs class holding configuration only, on
[`BaseProvider`][mmstream.providers.base.BaseProvider]: the call options as
fields (declared once, in `mmstream.request.CallOptionFields`),
constant defaults, a named constructor that reads the environment
([`from_env`][mmstream.providers.base.BaseProvider.from_env]) and a
configuration check made before any work. It turns a
[`ChatRequest`][mmstream.request.ChatRequest] into an
[`HTTPRequest`][mmstream.request.HTTPRequest] (``build_request``), the
response body into chunks through a per-call decoder on
[`DecoderShell`][mmstream.providers.decoding.DecoderShell] (bytes in, chunks out),
a whole JSON answer into one chunk (``decode_json``) and an error response into
a typed [`APIError`][mmstream.errors.APIError] (``parse_error``).

The decoding half lives in `mmstream.providers.decoding`, the reading of
error responses in `mmstream.providers.http_errors`; both are re-exported
here, so a provider imports its shell from one module. Nothing here does I/O,
awaits, or imports httpx/anyio; providers are tested with bytes in and chunks
out. ``docs/providers/writing-a-provider.md`` shows a new provider written on
this shell.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from attrs import Factory, field, frozen

from mmstream._secret import Secret, to_secret
from mmstream.content import ChatMessage, MessageRole
from mmstream.errors import APIError, ConfigurationError, InvalidRequestError
from mmstream.metadata import MultiModalLLMMetadata
from mmstream.protocols import Provider, StreamDecoder
from mmstream.providers.decoding import (
    DecoderShell,
    JSONLinesDecoder,
    ResponseBuilder,
    SSEJSONDecoder,
    load_json,
    normalize_finish_reason,
)
from mmstream.providers.http_errors import (
    default_parse_error,
    error_message_from_body,
    parse_duration,
    parse_retry_after,
    request_id_from_headers,
)
from mmstream.request import CallOptionFields, CallOptions
from mmstream.responses import ChatResponse
from mmstream.sse import DEFAULT_MAX_LINE

if TYPE_CHECKING:
    from mmstream.request import ChatRequest

__all__ = [
    "MMSTREAM_OPTIONS",
    "APIProvider",
    "BaseProvider",
    "DecoderShell",
    "JSONLinesDecoder",
    "OptionFields",
    "Provider",
    "ResponseBuilder",
    "SSEJSONDecoder",
    "StreamDecoder",
    "chat_metadata",
    "count",
    "default_parse_error",
    "env_value",
    "error_message_from_body",
    "load_json",
    "longest_prefix",
    "max_line",
    "normalize_finish_reason",
    "parse_duration",
    "parse_retry_after",
    "passed_through",
    "request_id_from_headers",
    "require_key",
    "sampling",
    "conversation",
    "strip_slash",
    "to_headers",
]

P = TypeVar("P", bound="BaseProvider")
Entry = TypeVar("Entry", bound=tuple[Any, ...])

#: call options mmstream itself consumes (before a request is built); never sent to an API.
MMSTREAM_OPTIONS = frozenset({"image_policy", "url_access", "max_line_bytes"})


# --- small shared helpers ------------------------------------------------------------


def count(value: Any) -> int | None:
    """A token count from the wire: an integer (not a bool), else ``None``."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def strip_slash(value: str) -> str:
    """attrs converter: a URL without its trailing slashes."""
    return value.rstrip("/")


def to_headers(value: Mapping[str, str] | None) -> Mapping[str, str]:
    """attrs converter: a private copy of extra headers."""
    return {} if value is None else dict(value)


def longest_prefix(table: Sequence[Entry], model: str) -> Entry | None:
    """The entry of ``table`` whose prefix (its first item) is the longest that starts ``model``.

    The comparison ignores case and a router's ``vendor/`` (or Gemini's
    ``models/``) prefix, so dated snapshots and aliases match their family and an
    unknown model matches nothing (it is never rejected).
    """
    name = model.rpartition("/")[2].lower()
    best: Entry | None = None
    for entry in table:
        prefix = entry[0]
        if name.startswith(prefix) and (best is None or len(prefix) > len(best[0])):
            best = entry
    return best


def env_value(environ: Mapping[str, str], *names: str) -> str | None:
    """The first non-empty environment variable among ``names``."""
    for name in names:
        value = environ.get(name)
        if value:
            return value
    return None


def sampling(options: CallOptions, names: Mapping[str, str]) -> dict[str, Any]:
    """The portable options that are set, under the API's own ``names`` for them.

    ``names`` maps ``temperature``, ``top_p``, ``max_tokens`` and ``stop`` to the
    wire's spelling; ``stop`` is sent as a list.
    """
    out: dict[str, Any] = {}
    for option, wire in names.items():
        value = getattr(options, option)
        if value is None or (option == "stop" and not value):
            continue
        out[wire] = list(value) if option == "stop" else value
    return out


def passed_through(options: CallOptions) -> Iterator[tuple[str, Any]]:
    """The ``extra`` options a provider passes to its API (mmstream's own are left out)."""
    for key, value in options.extra.items():
        if key not in MMSTREAM_OPTIONS:
            yield key, value


def max_line(request: ChatRequest | None) -> int:
    """The per-line cap of a call's decoder: its ``max_line_bytes`` option, else 16 MiB."""
    if request is None:
        return DEFAULT_MAX_LINE
    value = request.options.extra.get("max_line_bytes")
    return value if isinstance(value, int) and value > 0 else DEFAULT_MAX_LINE


def chat_metadata(
    model: str, context: int, output: int, images: int, *, tools: bool = True
) -> MultiModalLLMMetadata:
    """The metadata of a chat model: its context window, output limit and image count."""
    return MultiModalLLMMetadata(
        context_window=context,
        num_output=output,
        num_input_files=images,
        is_function_calling_model=tools,
        model_name=model,
        is_chat_model=True,
    )


def require_key(provider: str, key: object, *variables: str) -> None:
    """Raise a ConfigurationError naming the variables when a provider has no API key."""
    if not key:
        names = " or ".join(variables)
        raise ConfigurationError(
            f"{provider} needs an API key: pass api_key=..., or build the provider with "
            f"from_env() (or the '{provider}:MODEL' string), which reads {names}.",
            provider=provider,
        )


# --- the provider shell --------------------------------------------------------------


@frozen(kw_only=True)
class BaseProvider(CallOptionFields):
    """The shell every provider stands on: option fields, ``from_env``, ``check``, defaults.

    A provider subclasses it as a frozen attrs class, names itself (``name``),
    lists the environment variables of its fields (``environment``) and adds
    ``metadata``, ``image_policy``, ``build_request``, ``new_decoder`` and, when
    it differs from the common JSON shapes, ``parse_error``. Field defaults are
    constants: constructing a provider never reads the environment;
    [`from_env`][mmstream.providers.base.BaseProvider.from_env] does.
    """

    name: ClassVar[str]
    #: field name -> the environment variables that set it in ``from_env``, first wins.
    environment: ClassVar[Mapping[str, tuple[str, ...]]] = {}

    @classmethod
    def from_env(cls: type[P], environ: Mapping[str, str] | None = None, **overrides: Any) -> P:
        """The provider configured from the environment, with ``overrides`` on top.

        Args:
            environ: the variables to read (``os.environ`` by default).
            **overrides: fields given here win over the environment.

        Returns:
            ``cls(**fields)`` with each field of ``environment`` that is not
            overridden read from its variables (unset or empty ones are skipped).

        Example:
            ``OpenAI.from_env(model="gpt-4o-mini")`` reads ``OPENAI_API_KEY``,
            ``OPENAI_BASE_URL``, ``OPENAI_ORG_ID`` and ``OPENAI_PROJECT_ID``.
        """
        source = os.environ if environ is None else environ
        fields: dict[str, Any] = {}
        for field_name, variables in cls.environment.items():
            if field_name not in overrides:
                value = env_value(source, *variables)
                if value is not None:
                    fields[field_name] = value
        fields.update(overrides)
        return cls(**fields)

    @property
    def options(self) -> CallOptions:
        """The provider's default call options (its option fields)."""
        return CallOptions.of(self)

    @property
    def api_base(self) -> str:
        """The root URL of the API (``""`` when the provider has none)."""
        return ""

    def check(self) -> None:
        """Raise ConfigurationError when no request can be made as configured (nothing here)."""

    def require(self, field_name: str, value: object, what: str = "an API key") -> None:
        """Raise a ConfigurationError when ``value`` (the field ``field_name``) is missing.

        The message names the argument, ``from_env`` and the field's variables.
        """
        if value:
            return
        variables = " or ".join(self.environment.get(field_name, ()))
        where = (
            f", or build it with {type(self).__name__}.from_env(...) (or the "
            f"'{self.name}:MODEL' string), which reads {variables}"
            if variables
            else ""
        )
        raise ConfigurationError(
            f"{self.name} needs {what}: pass {field_name}=...{where}.", provider=self.name
        )

    def decode_json(self, body: bytes) -> ChatResponse:
        """A whole JSON answer as one chunk (a provider that can overrides this)."""
        raise ConfigurationError(f"{self.name} does not decode whole JSON answers")

    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> APIError:
        """The typed error for an HTTP error response in the common JSON shapes."""
        return default_parse_error(self.name, status, headers, body)


#: the shell's former name (providers and tests written against it keep working).
OptionFields = BaseProvider


def _default_base_url(provider: APIProvider) -> str:
    return provider.DEFAULT_BASE_URL


@frozen(kw_only=True)
class APIProvider(BaseProvider):
    """The shell of a provider reached at a base URL with an API key: the usual three fields.

    A subclass sets ``DEFAULT_BASE_URL`` (the constant default of ``base_url``),
    whether the key is required (``requires_key``), and ``new_decoder``;
    ``decode_json`` then reads a whole answer with that decoder.

    Attributes:
        model: the model that answers.
        api_key: the key (``None``: not given; see ``from_env``).
        base_url: the API root, without a trailing slash.
    """

    DEFAULT_BASE_URL: ClassVar[str] = ""
    requires_key: ClassVar[bool] = True

    model: str
    api_key: Secret | None = field(default=None, converter=to_secret, repr=False)
    base_url: str = field(
        default=Factory(_default_base_url, takes_self=True), converter=strip_slash
    )

    @property
    def api_base(self) -> str:
        """The API root (``base_url``)."""
        return self.base_url

    def check(self) -> None:
        """Raise ConfigurationError without a required API key (naming its variables)."""
        if self.requires_key:
            self.require("api_key", self.api_key)

    def key(self) -> str:
        """The API key's value, for a request's headers.

        Raises:
            ConfigurationError: there is no key (the message names its variables).
        """
        self.require("api_key", self.api_key)
        assert self.api_key is not None
        return self.api_key.get_secret_value()

    def new_decoder(self, request: ChatRequest | None = None) -> DecoderShell:
        """A fresh decoder for one call's response body."""
        raise NotImplementedError

    def decode_json(self, body: bytes) -> ChatResponse:
        """A whole (non-streamed) JSON answer as one chunk, or the error it holds."""
        return self.new_decoder().whole(body)


#: translates one message, given the index of its first image: (wire form, next image index).
Translate = Callable[[ChatMessage, int], tuple[dict[str, Any], int]]


def conversation(
    request: ChatRequest, translate: Translate, *, system_in: str | None = None, provider: str = ""
) -> tuple[list[str], list[dict[str, Any]]]:
    """A request's messages in a provider's wire form, images numbered across the request.

    Args:
        request: the call.
        translate: one message to its wire form (images counted from the index given).
        system_in: the API's separate place for system (and developer) text
            (``"system messages"``); ``None`` keeps them in the conversation.
        provider: the provider's display name, for the error.

    Returns:
        (the system texts, the translated messages), both in order.

    Raises:
        InvalidRequestError: a system message holds an image, and the API takes
            only text in ``system_in``.
    """
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    image_index = 0
    for message in request.messages:
        if system_in is not None and message.role in (MessageRole.SYSTEM, MessageRole.DEVELOPER):
            if message.images:
                raise InvalidRequestError(
                    f"{provider} takes only text in {system_in}; move the images into a user "
                    "message",
                    provider=provider.lower(),
                )
            system.append(message.content or "")
            continue
        entry, image_index = translate(message, image_index)
        messages.append(entry)
    return system, messages
