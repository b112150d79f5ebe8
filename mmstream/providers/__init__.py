"""Providers: stateless translations between mmstream's types and each API's wire format.

``Offline``, ``OpenAI``, ``AzureOpenAI``, ``OpenAICompatible``, ``Anthropic``,
``Gemini`` and ``Ollama`` are imported on first use, so ``import mmstream``
stays cheap. :func:`from_string` turns ``"name:model"`` into a provider.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mmstream.errors import ConfigurationError
from mmstream.providers.base import Provider, StreamDecoder

if TYPE_CHECKING:
    from mmstream.providers.anthropic import Anthropic
    from mmstream.providers.azure import AzureOpenAI
    from mmstream.providers.gemini import Gemini
    from mmstream.providers.offline import Offline
    from mmstream.providers.ollama import Ollama
    from mmstream.providers.openai import OpenAI, OpenAICompatible

__all__ = [
    "Anthropic",
    "AzureOpenAI",
    "Gemini",
    "Offline",
    "Ollama",
    "OpenAI",
    "OpenAICompatible",
    "Provider",
    "StreamDecoder",
    "from_string",
    "registered_names",
]

#: short name -> (module, class); the module is imported only when the name is used.
_REGISTRY: dict[str, tuple[str, str]] = {
    "offline": ("mmstream.providers.offline", "Offline"),
    "anthropic": ("mmstream.providers.anthropic", "Anthropic"),
    "gemini": ("mmstream.providers.gemini", "Gemini"),
    "ollama": ("mmstream.providers.ollama", "Ollama"),
    "openai": ("mmstream.providers.openai", "OpenAI"),
    "azure": ("mmstream.providers.azure", "AzureOpenAI"),
    "openai-compatible": ("mmstream.providers.openai", "OpenAICompatible"),
}
_CLASSES = {cls: (module, cls) for module, cls in _REGISTRY.values()}


def registered_names() -> list[str]:
    """The provider names :func:`from_string` accepts."""
    return sorted(_REGISTRY)


def _load(module: str, cls: str) -> Any:
    return getattr(importlib.import_module(module), cls)


def from_string(spec: str, **fields: Any) -> Provider:
    """The provider for ``"name:model"`` (``"openai:gpt-4o-mini"``, ``"offline:default"``).

    Raises:
        ConfigurationError: the name is unknown or the model is missing.
    """
    name, colon, model = spec.partition(":")
    name = name.strip().lower()
    if name not in _REGISTRY:
        raise ConfigurationError(
            f"unknown provider {name!r} in {spec!r}; use one of {registered_names()} "
            "as 'name:model'"
        )
    if not colon or not model.strip():
        if name != "offline":
            raise ConfigurationError(f"{spec!r} names no model; write it as '{name}:MODEL'")
        model = "default"
    provider: Provider = _load(*_REGISTRY[name])(model=model.strip(), **fields)
    return provider


def __getattr__(attr: str) -> Any:
    if attr in _CLASSES:
        return _load(*_CLASSES[attr])
    raise AttributeError(f"module 'mmstream.providers' has no attribute {attr!r}")
