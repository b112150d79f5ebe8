"""The innermost layer of every call: media, provider request, transport, decoder.

:func:`batches` turns one :class:`~mmstream.request.ChatRequest` into the
chunks of each network read (a list per read); :func:`chunks` is the same,
one chunk at a time, as the middleware see it. Everything above (the stream,
middleware, the facade) treats this as the one source of chunks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from mmstream.errors import MMStreamError, ProviderProtocolError
from mmstream.request import Timeouts
from mmstream.responses import ChatResponse

if TYPE_CHECKING:
    from mmstream.providers.base import Provider
    from mmstream.request import ChatRequest
    from mmstream.transport import Transport

__all__ = ["batches", "chunks"]


async def chunks(request: ChatRequest, transport: Transport) -> AsyncIterator[ChatResponse]:
    """The chunks of a call one at a time (the innermost layer, as middleware see it)."""
    source = batches(request, transport)
    try:
        async for batch in source:
            for chunk in batch:
                yield chunk
    finally:
        await source.aclose()  # type: ignore[attr-defined]


async def batches(request: ChatRequest, transport: Transport) -> AsyncIterator[list[ChatResponse]]:
    """Images, provider request, transport, decoder: the chunks of each network read."""
    provider = request.provider
    from mmstream.media.prepare import (
        prepare_request,  # on first use: keeps `import mmstream` light
    )

    deadline = _deadline(request, transport)  # the total timeout covers preparing the images
    request = await prepare_request(request, transport=transport, deadline=deadline)
    http_request = provider.build_request(request)
    decoder = provider.new_decoder(request)
    last: ChatResponse | None = None
    body = transport.stream(http_request, provider, deadline=deadline)
    try:
        async for data in body:
            try:
                got = decoder.feed(data)
            except MMStreamError:
                raise
            except Exception as exc:
                raise _protocol_error(provider, exc) from exc
            if got:
                last = got[-1]
                yield got
        try:
            got = decoder.flush()
        except MMStreamError:
            raise
        except Exception as exc:
            raise _protocol_error(provider, exc) from exc
        if got:
            last = got[-1]
            yield got
    except MMStreamError as exc:
        exc.provider = exc.provider or provider.name
        partial = exc.partial
        if partial is None:
            exc.partial = last
        elif len(partial.text) > (seen := len(last.text) if last is not None else 0):
            # The decoder failed in the middle of a read: deliver the text it had
            # decoded before the error, then raise (nothing received is lost).
            last = ChatResponse(text=partial._text, delta=partial.text[seen:])
            exc.partial = last
            yield [last]
        raise
    finally:
        await body.aclose()  # type: ignore[attr-defined]


def _deadline(request: ChatRequest, transport: Transport) -> float | None:
    """When the call's total timeout ends, on the ``anyio.current_time()`` clock (or ``None``)."""
    timeout = request.options.timeout
    total = (transport.timeouts if timeout is None else Timeouts.from_value(timeout)).total
    if total is None:
        return None
    import anyio

    return anyio.current_time() + total


def _protocol_error(provider: Provider, exc: Exception) -> ProviderProtocolError:
    return ProviderProtocolError(
        f"{provider.name} sent an event the decoder could not handle: {exc!r}",
        provider=provider.name,
    )
