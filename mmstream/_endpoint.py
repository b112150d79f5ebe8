"""The innermost layer of every call: check, media, provider request, transport, decoder.

[`batches`][mmstream._endpoint.batches] turns one
[`ChatRequest`][mmstream.request.ChatRequest] into the chunks of each network
read (a list per read); [`chunks`][mmstream._endpoint.chunks] is the same, one
chunk at a time, as the middleware see it. Everything above (the stream,
middleware, the facade) treats this as the one source of chunks.

This is where the provider and the transport meet: the provider checks its
configuration (before any image is prepared), builds the request and decodes
the body; the transport moves the bytes and reports the status; an error status
is turned into the provider's typed error here.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, cast

from mmstream.errors import MMStreamError, ProviderProtocolError
from mmstream.providers.base import default_parse_error
from mmstream.request import Timeouts
from mmstream.responses import ChatResponse
from mmstream.transport import MAX_ERROR_BODY

if TYPE_CHECKING:
    from mmstream.protocols import Provider
    from mmstream.request import ChatRequest
    from mmstream.transport import Response, Transport

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
    """Check, images, provider request, transport, decoder: the chunks of each network read."""
    provider = cast("Provider", request.provider)
    provider.check()  # a missing key fails here, before any image is read or fetched
    from mmstream.media.prepare import (
        prepare_request,  # on first use: `import mmstream` stays light
    )

    deadline = _deadline(request, transport)  # the total timeout covers preparing the images
    request = await prepare_request(request, transport=transport, deadline=deadline)
    http_request = provider.build_request(request)
    decoder = provider.new_decoder(request)
    last: ChatResponse | None = None
    response = await transport.send(http_request, label=provider.name, deadline=deadline)
    try:
        if not 200 <= response.status < 300 or _is_html(response):
            await _refuse(provider, response)
        next_read = response.next_read
        data: bytes | None = b""
        while data is not None:
            data = await next_read()
            try:
                got = decoder.feed(data) if data is not None else decoder.flush()
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
        await response.aclose()


def _is_html(response: Response) -> bool:
    content_type: str = response.headers.get("content-type", "")
    return content_type.startswith("text/html")


async def _refuse(provider: Provider, response: Response) -> None:
    """Raise the provider's typed error for an error status, or for an HTML page with 200."""
    if not 200 <= response.status < 300:
        body = await response.read(MAX_ERROR_BODY)
        try:
            error = provider.parse_error(response.status, response.headers, body)
        except Exception:  # a parse_error with a bug still gives the common shapes
            error = default_parse_error(provider.name, response.status, response.headers, body)
        raise error
    # A captive portal or a proxy's page with status 200: not the provider.
    page = await response.read(2048)
    raise ProviderProtocolError(
        f"{provider.name} answered with an HTML page instead of a stream "
        f"({_page_text(page)!r}); check the base URL and any proxy in between",
        provider=provider.name,
    )


def _page_text(page: bytes) -> str:
    text = re.sub(r"<[^>]+>", " ", page.decode("utf-8", "replace"))
    return " ".join(text.split())[:120]


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
