"""A griffe extension: document generated blocking twins (`chat = blocking(achat)`) as methods.

Statically, `chat = blocking(achat)` is an attribute with no docstring, so the API
reference would leave out the blocking methods. This turns each such attribute into a
method with its async original's parameters, a return type that fits it (the awaited
value, or a `SyncStream` for a stream), and a docstring that links to the original.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import griffe

#: generator function → what the blocking twin gives back, in words.
_GENERATORS = {
    "blocking": "It returns the async method's result in the caller's thread, and raises "
    "its errors there.",
    "blocking_stream": "It returns a [`SyncStream`][mmstream.SyncStream] of the same chunks: "
    "an iterator and a context manager.",
}


def _returns(generator: str, original: griffe.Function) -> str | griffe.Expr | None:
    returns = original.returns
    if generator != "blocking_stream":
        return returns
    if isinstance(returns, griffe.ExprSubscript) and isinstance(returns.left, griffe.ExprName):
        # ChatStream[X] -> SyncStream[X]
        return dataclasses.replace(
            returns, left=dataclasses.replace(returns.left, name="SyncStream")
        )
    return "SyncStream"


def blocking_twin(cls: griffe.Class, name: str, member: griffe.Object) -> griffe.Function | None:
    """The method that `name = blocking(original)` generates, or ``None`` for another value."""
    value = getattr(member, "value", None)
    if not isinstance(value, griffe.ExprCall):
        return None
    # `blocking(arun, convert=...)`: the one positional argument is the original.
    positional = [a for a in value.arguments if not isinstance(a, griffe.ExprKeyword)]
    if len(positional) != 1:
        return None
    generator = str(value.function)
    if generator not in _GENERATORS:
        return None
    original = cls.members.get(str(positional[0]))
    if original is None or original.is_alias or not isinstance(original, griffe.Function):
        return None
    summary = original.docstring.value.split("\n\n", 1)[0] if original.docstring else ""
    text = (
        f"Blocking twin of [`{original.name}`][{original.path}]: the same call, run on "
        f"mmstream's background event loop. {_GENERATORS[generator]}\n\n{summary}"
    )
    twin = griffe.Function(
        name,
        parameters=original.parameters,
        returns=_returns(generator, original),
        lineno=member.lineno,
        endlineno=member.endlineno,
        parent=cls,
    )
    twin.docstring = griffe.Docstring(
        text, lineno=member.lineno, endlineno=member.endlineno, parent=twin
    )
    return twin


class BlockingTwins(griffe.Extension):
    """Replace `name = blocking(original)` attributes by documented methods."""

    def on_class_members(self, *, cls: griffe.Class, **kwargs: Any) -> None:
        """Swap each generated-twin attribute of the class for a method."""
        for name, member in list(cls.members.items()):
            if member.is_alias or not member.is_attribute:
                continue
            twin = blocking_twin(cls, name, member)
            if twin is not None:
                cls.set_member(name, twin)
