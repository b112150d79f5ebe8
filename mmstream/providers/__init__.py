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
    "register",
    "registered_names",
]

#: short name -> (module, class) or the class itself; a module is imported only when used.
_REGISTRY: dict[str, tuple[str, str] | type] = {
    "offline": ("mmstream.providers.offline", "Offline"),
    "anthropic": ("mmstream.providers.anthropic", "Anthropic"),
    "gemini": ("mmstream.providers.gemini", "Gemini"),
    "ollama": ("mmstream.providers.ollama", "Ollama"),
    "openai": ("mmstream.providers.openai", "OpenAI"),
    "azure": ("mmstream.providers.azure", "AzureOpenAI"),
    "openai-compatible": ("mmstream.providers.openai", "OpenAICompatible"),
}
_CLASSES = {entry[1]: entry for entry in _REGISTRY.values() if isinstance(entry, tuple)}


def registered_names() -> list[str]:
    """The provider names :func:`from_string` accepts."""
    return sorted(_REGISTRY)


def register(name: str, provider_class: type) -> None:
    """Make ``"name:model"`` strings build ``provider_class(model=model, **fields)``.

    Example:
        ``register("acme", AcmeProvider)`` and then ``MultiModalLLM("acme:vision-1")``.
    """
    key = name.strip().lower()
    if not key or ":" in key:
        raise ConfigurationError(
            f"a provider name must be non-empty without ':', not {name!r}",
            hint="Register it under a short name such as 'acme'; strings then read 'acme:MODEL'.",
        )
    _REGISTRY[key] = provider_class


def _load(module: str, cls: str) -> Any:
    return getattr(importlib.import_module(module), cls)


def _resolve(entry: tuple[str, str] | type) -> Any:
    return _load(*entry) if isinstance(entry, tuple) else entry


def from_string(spec: str, **fields: Any) -> Provider:
    """The provider for ``"name:model"`` (``"openai:gpt-4o-mini"``, ``"offline:default"``).

    Raises:
        ConfigurationError: the name is unknown or the model is missing.
    """
    name, colon, model = spec.partition(":")
    name = name.strip().lower()
    if name not in _REGISTRY:
        raise ConfigurationError(
            f"unknown provider {name!r} in {spec!r}; the names are {', '.join(registered_names())}",
            hint="Write it as 'NAME:MODEL' (e.g. 'openai:gpt-4o-mini'), or register your "
            "own provider class with mmstream.providers.register().",
        )
    if not colon or not model.strip():
        if name != "offline":
            raise ConfigurationError(
                f"{spec!r} names no model",
                hint=f"Write it as '{name}:MODEL'; the provider's page lists model names.",
            )
        model = "default"
    provider: Provider = _resolve(_REGISTRY[name])(model=model.strip(), **fields)
    return provider


def __getattr__(attr: str) -> Any:
    if attr in _CLASSES:
        return _load(*_CLASSES[attr])
    raise AttributeError(f"module 'mmstream.providers' has no attribute {attr!r}")
