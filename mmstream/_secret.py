"""A string that never shows itself: API keys live in [`Secret`][mmstream.Secret]."""

from __future__ import annotations

from typing import final

__all__ = ["Secret", "to_secret"]


@final
class Secret:
    """An API key or token; ``repr``/``str`` are masked, the value is read explicitly.

    Example:
        ``Secret("sk-...").get_secret_value()`` returns the key; ``repr`` shows ``Secret('***')``.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        """The secret itself, for the one place that must send it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> tuple[type[Secret], tuple[str]]:
        return (Secret, (self._value,))


def to_secret(value: str | Secret | None) -> Secret | None:
    """attrs converter: wrap a plain string (an empty string means no key)."""
    if value is None or isinstance(value, Secret):
        return value
    return Secret(value) if value else None
