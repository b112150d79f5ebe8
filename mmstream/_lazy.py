"""Names a package imports on first use, so that importing the package stays light.

Every package of mmstream that defers imports does it through
[`lazy`][mmstream._lazy.lazy]: the one way, with the same errors and the same
caching, instead of a ``__getattr__`` written per package.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy"]


def lazy(
    namespace: dict[str, Any], names: Mapping[str, str], *, present_as: str | None = None
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A package's ``__getattr__`` and ``__dir__`` for names imported on first use.

    Args:
        namespace: the package's ``globals()``; a name, once imported, is kept there
            (later lookups are plain attribute reads).
        names: public name -> the module that holds it; a name that is the module's
            own last part (``"media": "mmstream.media"``) is the module itself.
        present_as: set this ``__module__`` on the classes (the top-level package
            shows its names as ``mmstream.X``).

    Returns:
        ``(__getattr__, __dir__)``: assign both at the package's top level.
    """
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        imported = importlib.import_module(module)
        value = imported if module.rpartition(".")[2] == name else getattr(imported, name)
        if present_as is not None and isinstance(value, type):
            value.__module__ = present_as
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *names})

    return __getattr__, __dir__
