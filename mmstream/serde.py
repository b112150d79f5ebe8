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
from pathlib import Path
from typing import Any, TypeVar

import attrs
from cattrs import Converter
from cattrs.gen import make_dict_unstructure_fn, override
from cattrs.strategies import configure_tagged_union

from mmstream import content, metadata, request, responses
from mmstream._secret import Secret
from mmstream.content import ChatMessage, ContentBlock, ImageBlock, ImageDocument, TextBlock
from mmstream.errors import ConfigurationError
from mmstream.middleware import tracing
from mmstream.providers import Provider, from_string
from mmstream.request import Timeouts
from mmstream.responses import ChatResponse, CompletionResponse, Usage, _Response

__all__ = ["converter", "from_json", "structure_provider", "to_json"]

T = TypeVar("T")

# Public classes report ``__module__ == "mmstream"``; resolve their string
# annotations against the modules that define them before cattrs reads them.
for _module in (content, metadata, request, responses, tracing):
    for _value in vars(_module).values():
        if isinstance(_value, type) and attrs.has(_value) and _value.__module__ == "mmstream":
            attrs.resolve_types(_value, globalns={**vars(_module), "Provider": Provider})

converter = Converter()
"""The converter; ``unstructure(obj)`` gives JSON-safe data, ``structure(data, cls)`` the object."""

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
converter.register_unstructure_hook(
    ImageBlock,
    make_dict_unstructure_fn(
        ImageBlock, converter, _cattrs_omit_if_default=True, block_type=override(omit=True)
    ),
)
converter.register_unstructure_hook(
    TextBlock, make_dict_unstructure_fn(TextBlock, converter, block_type=override(omit=True))
)
configure_tagged_union(
    ContentBlock,
    converter,
    tag_generator=lambda cls: "text" if cls is TextBlock else "image",
    tag_name="type",
)
converter.register_unstructure_hook(
    ChatMessage,
    lambda m: {
        "role": m.role.value,
        "blocks": [converter.unstructure(b, ContentBlock) for b in m.blocks],
        "additional_kwargs": dict(m.additional_kwargs),
    },
)
converter.register_structure_hook(
    ChatMessage,
    lambda d, _: ChatMessage(
        d["role"],
        blocks=[converter.structure(b, ContentBlock) for b in d.get("blocks", ())],  # type: ignore[arg-type]
        additional_kwargs=d.get("additional_kwargs"),
    ),
)
converter.register_unstructure_hook(
    ImageDocument, make_dict_unstructure_fn(ImageDocument, converter, _cattrs_omit_if_default=True)
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
    converter.register_unstructure_hook(_cls, _unstructure_response)
    converter.register_structure_hook(_cls, _response_structurer(_cls))


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
    """Rebuild a provider from `converter.unstructure(provider)` (pass keys again here).

    Raises:
        ConfigurationError: the data names no known provider.
    """
    fields = dict(data)
    name = fields.pop("provider", None)
    if not isinstance(name, str):
        raise ConfigurationError('provider data needs a "provider" name')
    model = fields.pop("model", None) or "default"
    return from_string(f"{name}:{model}", **fields, **secrets)


def to_json(obj: Any) -> str:
    """``obj`` as JSON text (through the converter)."""
    return json.dumps(converter.unstructure(obj), ensure_ascii=False)


def from_json(text: str | bytes, cls: type[T]) -> T:
    """The ``cls`` instance that [`to_json`][mmstream.serde.to_json] wrote."""
    return converter.structure(json.loads(text), cls)
