"""The one cattrs converter: every public type to JSON-safe dicts and back.

Classes never know their wire format; this module is the only one that imports
cattrs, and it is imported only by those who serialize (``import mmstream``
does not load it). Bytes travel as base64 text, paths as strings, content
blocks as a tagged union on ``"type"`` (``"text"`` / ``"image"``), responses
with their cumulative ``text``. A provider serializes as its configuration
*without* its secrets (API keys and tokens are dropped, never masked copies),
tagged with ``"provider"`` so
[`structure_provider`][mmstream.serde.structure_provider] can rebuild it.

Example:
    ```python
    from mmstream.serde import converter, from_json, to_json
    data = converter.unstructure(message)          # a JSON-safe dict
    assert converter.structure(data, ChatMessage) == message
    ```
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
from cattrs import Converter
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.strategies import configure_tagged_union

from mmstream import content, metadata, request, responses
from mmstream._secret import Secret
from mmstream.content import ChatMessage, ContentBlock, ImageBlock, ImageDocument, TextBlock
from mmstream.errors import ConfigurationError
from mmstream.request import Timeouts
from mmstream.responses import ChatResponse, CompletionResponse, Usage, _Response

if TYPE_CHECKING:
    from mmstream.protocols import Provider

__all__ = ["converter", "from_json", "structure_provider", "to_json"]

T = TypeVar("T")

#: the value modules; a public class (``__module__ == "mmstream"``) is defined in one of them.
_VALUE_MODULES = (content, metadata, request, responses)


def _resolved(cls: type) -> type:
    """``cls`` with its string annotations resolved in its own module (once, on first use).

    Public classes report ``__module__ == "mmstream"``, where cattrs would look
    their annotations up in vain; each value module imports nothing above the
    values, so its own namespace resolves every annotation.
    """
    if cls.__module__ == "mmstream" and any(isinstance(a.type, str) for a in attrs.fields(cls)):
        home = next((m for m in _VALUE_MODULES if vars(m).get(cls.__name__) is cls), None)
        attrs.resolve_types(cls, globalns=None if home is None else vars(home))
    return cls


def _is(cls: type) -> Callable[[Any], bool]:
    """A hook predicate for exactly ``cls`` (registering by class would resolve it at import)."""
    return lambda t: t is cls


def _public(cls: Any) -> bool:
    return isinstance(cls, type) and attrs.has(cls) and cls.__module__ == "mmstream"


converter = Converter()
"""The converter; ``unstructure(obj)`` gives JSON-safe data, ``structure(data, cls)`` the object."""

converter.register_structure_hook_factory(
    _public, lambda cls: make_dict_structure_fn(_resolved(cls), converter)
)
converter.register_unstructure_hook_factory(
    _public, lambda cls: make_dict_unstructure_fn(_resolved(cls), converter)
)


def _lazy_unstructure(cls: type, **overrides: Any) -> Callable[[Any], Any]:
    """An unstructure hook for ``cls`` made on first use (when its types are resolved)."""
    made: list[Callable[[Any], Any]] = []

    def unstructure(value: Any) -> Any:
        if not made:
            made.append(make_dict_unstructure_fn(_resolved(cls), converter, **overrides))
        return made[0](value)

    return unstructure


converter.register_unstructure_hook(bytes, lambda b: base64.b64encode(b).decode("ascii"))
converter.register_structure_hook(bytes, lambda v, _: base64.b64decode(v))
converter.register_unstructure_hook(Path, str)
converter.register_structure_hook(Path, lambda v, _: Path(v))
converter.register_unstructure_hook(Secret, lambda _: None)

# A timeout is seconds or a Timeouts.
_TIMEOUT = float | Timeouts | None
converter.register_structure_hook_func(
    lambda t: t == _TIMEOUT,
    lambda v, _: (
        v if v is None or isinstance(v, (int, float)) else converter.structure(v, Timeouts)
    ),
)

# Content blocks: a tagged union; absent image fields are omitted.
converter.register_unstructure_hook_func(
    _is(ImageBlock),
    _lazy_unstructure(ImageBlock, _cattrs_omit_if_default=True, block_type=override(omit=True)),
)
converter.register_unstructure_hook_func(
    _is(TextBlock), _lazy_unstructure(TextBlock, block_type=override(omit=True))
)
configure_tagged_union(
    ContentBlock,
    converter,
    tag_generator=lambda cls: "text" if cls is TextBlock else "image",
    tag_name="type",
)
converter.register_unstructure_hook_func(
    _is(ChatMessage),
    lambda m: {
        "role": m.role.value,
        "blocks": [converter.unstructure(b, ContentBlock) for b in m.blocks],
        "additional_kwargs": dict(m.additional_kwargs),
    },
)
converter.register_structure_hook_func(
    _is(ChatMessage),
    lambda d, _: ChatMessage(
        d["role"],
        blocks=[converter.structure(b, ContentBlock) for b in d.get("blocks", ())],  # type: ignore[arg-type]
        additional_kwargs=d.get("additional_kwargs"),
    ),
)
converter.register_unstructure_hook_func(
    _is(ImageDocument), _lazy_unstructure(ImageDocument, _cattrs_omit_if_default=True)
)


# Responses: the cumulative text is written out; the lazy accumulator is not.
def _unstructure_response(response: _Response) -> dict[str, Any]:
    return {
        "text": response.text,
        "delta": response.delta,
        "usage": None if response.usage is None else converter.unstructure(response.usage),
        "finish_reason": response.finish_reason,
        "raw": response.raw,
        "additional_kwargs": dict(response.additional_kwargs),
    }


def _response_structurer(cls: type[_Response]) -> Any:
    def structure(data: dict[str, Any], _: Any) -> _Response:
        usage = data.get("usage")
        return cls(
            text=data.get("text", ""),
            delta=data.get("delta"),
            usage=None if usage is None else converter.structure(usage, Usage),
            finish_reason=data.get("finish_reason"),
            raw=data.get("raw"),
            additional_kwargs=data.get("additional_kwargs"),
        )

    return structure


for _cls in (ChatResponse, CompletionResponse):
    converter.register_unstructure_hook_func(_is(_cls), _unstructure_response)
    converter.register_structure_hook_func(_is(_cls), _response_structurer(_cls))


# Providers: configuration without secrets, tagged with the provider's name.
def _is_provider(cls: type) -> bool:
    return (
        attrs.has(cls)
        and isinstance(getattr(cls, "name", None), str)
        and hasattr(cls, "build_request")
    )


def _unstructure_provider(provider: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"provider": type(provider).name}
    for field in attrs.fields(type(provider)):
        value = getattr(provider, field.name)
        if isinstance(value, Secret) or field.name in _SECRET_FIELDS:
            continue
        data[field.name] = converter.unstructure(value)
    return data


_SECRET_FIELDS = frozenset({"api_key", "azure_ad_token", "token", "password"})

converter.register_unstructure_hook_func(_is_provider, _unstructure_provider)


def structure_provider(data: dict[str, Any], **secrets: Any) -> Provider:
    """Rebuild a provider from `converter.unstructure` output (pass keys again here).

    The provider is built from the data alone (its class's constructor, which
    reads no environment); ``secrets`` give back what serializing dropped.

    Raises:
        ConfigurationError: the data names no known provider.
    """
    from mmstream.providers import provider_class

    fields = dict(data)
    name = fields.pop("provider", None)
    if not isinstance(name, str):
        raise ConfigurationError('provider data needs a "provider" name')
    cls = provider_class(name)
    fields.setdefault("model", "default")
    values = {
        key: _structure_field(cls, key, value) for key, value in {**fields, **secrets}.items()
    }
    provider: Provider = cls(**values)
    return provider


def _structure_field(cls: type, name: str, value: Any) -> Any:
    """A provider field's value from JSON data (a timeout's ``Timeouts``; the rest as it is)."""
    if name == "timeout" and isinstance(value, dict):
        return converter.structure(value, Timeouts)
    return value


def to_json(obj: Any) -> str:
    """``obj`` as JSON text (through the converter)."""
    return json.dumps(converter.unstructure(obj), ensure_ascii=False)


def from_json(text: str | bytes, cls: type[T]) -> T:
    """The ``cls`` instance that [`to_json`][mmstream.serde.to_json] wrote."""
    return converter.structure(json.loads(text), cls)
