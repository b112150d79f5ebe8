"""Fallback: when a provider fails before answering, ask the next one.

The call first goes to its own provider, then to each provider of the list in
turn, until one starts answering. Only failures before the first chunk fall
back; once text has reached the caller, an error propagates with ``.partial``
(an answer is never stitched together from two models).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any, final

import attrs
from attrs import field, frozen

from mmstream.errors import (
    APIConnectionError,
    APIError,
    ContentFilterError,
    MMStreamError,
    ProviderProtocolError,
)
from mmstream.middleware._support import aclose_quietly, call_handler

if TYPE_CHECKING:
    from mmstream.middleware.chain import CallNext
    from mmstream.protocols import Provider
    from mmstream.request import ChatRequest, ProviderRef
    from mmstream.responses import ChatResponse

__all__ = ["Fallback", "falls_back"]

OnFallback = Callable[["ChatRequest", MMStreamError, "Provider"], Any]


def falls_back(error: BaseException) -> bool:
    """Whether ``error`` lets a call move on to the next provider.

    Yes for everything the provider side did: any [`APIError`][mmstream.errors.APIError]
    (rate limits, quotas, server errors, and also a bad key, a missing model
    or a request that provider refuses — another provider may take it),
    connection errors and timeouts, and protocol errors. No for a
    [`ContentFilterError`][mmstream.errors.ContentFilterError] (a safety refusal is the
    answer, not an outage), for local errors
    ([`InvalidRequestError`][mmstream.errors.InvalidRequestError],
    [`ConfigurationError`][mmstream.errors.ConfigurationError]: the same input or setup must
    be fixed first), and for anything that is not an mmstream error.
    """
    if isinstance(error, ContentFilterError):
        return False
    return isinstance(error, (APIError, APIConnectionError, ProviderProtocolError))


def _to_providers(values: Iterable[Provider | str]) -> tuple[Provider, ...]:
    from mmstream.providers import from_string

    providers = tuple(from_string(v) if isinstance(v, str) else v for v in values)
    if not providers:
        raise ValueError("Fallback(providers=...) needs at least one provider")
    return providers


@final
@frozen(kw_only=True)
class Fallback:
    """Sends a call that failed before its first chunk to the next provider in line.

    The order is the call's own provider, then ``providers`` (a provider equal
    to one already tried is skipped). Each try is ``attrs.evolve(request,
    provider=...)`` with the call's messages and options unchanged; which one
    answered is in the final chunk's ``additional_kwargs["provider"]`` and
    ``["model"]`` (and in [`Tracing`][mmstream.middleware.Tracing]'s ``answered_by``
    when Tracing is outside). Which errors fall back is `falls_back`.
    When every provider fails, the last error is raised.

    Put [`Retry`][mmstream.middleware.Retry] inside it to retry each provider
    before moving on, or outside it to retry the whole list.

    Args:
        providers: the providers to fall back to, in order (instances, or
            ``"name:model"`` strings).
        on_fallback: called as ``on_fallback(request, error, next_provider)``
            before moving on (a plain function or a coroutine function).

    Example:
        ```python
        backup = mm.providers.Anthropic(model="claude-sonnet-4-5")
        fallback = mm.middleware.Fallback(providers=[backup])
        llm = mm.MultiModalLLM("openai:gpt-4o", middleware=[fallback])
        ```
    """

    providers: tuple[Provider, ...] = field(converter=_to_providers)
    on_fallback: OnFallback | None = field(default=None, repr=False)

    async def __call__(
        self, request: ChatRequest, call_next: CallNext
    ) -> AsyncIterator[ChatResponse]:
        """Try each provider until one yields a chunk, then pass its stream on."""
        candidates: list[ProviderRef] = [request.provider]
        for provider in self.providers:
            if provider not in candidates:
                candidates.append(provider)
        current = request
        for index, candidate in enumerate(candidates):
            current = request if index == 0 else attrs.evolve(request, provider=candidate)
            iterator = call_next(current)
            try:
                first = await iterator.__anext__()
            except StopAsyncIteration:
                return
            except MMStreamError as exc:
                await aclose_quietly(iterator)
                if index + 1 == len(candidates) or not falls_back(exc):
                    raise
                await call_handler(self.on_fallback, current, exc, candidates[index + 1])
                continue
            break
        else:  # pragma: no cover - the last candidate always returns or raises above
            return
        last = first
        yield first
        try:
            async for last in iterator:
                yield last
        except MMStreamError as exc:
            if exc.partial is None:
                exc.partial = last
            raise
