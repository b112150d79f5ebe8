"""Providers: stateless translations between mmstream's types and each API's wire format.

``Offline``, ``OpenAI``, ``AzureOpenAI``, ``OpenAICompatible``, ``Anthropic``,
``Gemini`` and ``Ollama`` are imported on first use, so ``import mmstream``
stays cheap. [`from_string`][mmstream.providers.from_string] turns
``"name:model"`` into a provider configured from the environment (its
``from_env``); constructing a provider class directly reads nothing.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mmstream._lazy import lazy
from mmstream.errors import ConfigurationError
from mmstream.protocols import Provider, StreamDecoder
from mmstream.providers.base import BaseProvider

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
    "provider_class",
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
    """The provider names [`from_string`][mmstream.providers.from_string] accepts."""
    return sorted(_REGISTRY)


def register(name: str, cls: type) -> None:
    """Make ``"name:model"`` strings build ``cls.from_env(model=model, **fields)``.

    A class without ``from_env`` (not on the shared shell) is called as
    ``cls(model=model, **fields)``.

    Example:
        ``register("acme", AcmeProvider)`` and then ``MultiModalLLM("acme:vision-1")``.
    """
    key = name.strip().lower()
    if not key or ":" in key:
        raise ConfigurationError(
            f"a provider name must be non-empty without ':', not {name!r}",
            hint="Register it under a short name such as 'acme'; strings then read 'acme:MODEL'.",
        )
    _REGISTRY[key] = cls


def _load(module: str, cls: str) -> Any:
    return getattr(importlib.import_module(module), cls)


def _resolve(entry: tuple[str, str] | type) -> Any:
    return _load(*entry) if isinstance(entry, tuple) else entry


def provider_class(name: str) -> Any:
    """The provider class registered as ``name`` (``"openai"``, ``"azure"``, ...).

    Raises:
        ConfigurationError: no provider has that name.
    """
    key = name.strip().lower()
    if key not in _REGISTRY:
        raise ConfigurationError(
            f"unknown provider {key!r}; use one of {registered_names()} as 'name:model'"
        )
    return _resolve(_REGISTRY[key])


def from_string(spec: str, *, environ: Mapping[str, str] | None = None, **fields: Any) -> Provider:
    """The provider for ``"name:model"`` (``"openai:gpt-4o-mini"``, ``"offline:default"``).

    The provider is configured from the environment (``from_env``: keys, base
    URLs), with ``fields`` on top.

    Args:
        spec: ``"name:model"``; ``"offline"`` alone means ``"offline:default"``.
        environ: the variables to read (``os.environ`` by default).
        **fields: provider fields, which win over the environment.

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
    cls = provider_class(name)
    if isinstance(cls, type) and issubclass(cls, BaseProvider):
        return cls.from_env(environ, model=model.strip(), **fields)  # type: ignore[return-value]
    provider: Provider = cls(model=model.strip(), **fields)
    return provider


__getattr__, __dir__ = lazy(globals(), {cls: module for module, cls in _CLASSES.values()})
