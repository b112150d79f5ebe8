"""The extension points between the layers: a provider, its stream decoder, the stream formats.

This module sits right above the values (content, responses, request, metadata,
errors) and below everything that moves bytes: it imports the values only, and
nothing imports it but the layers above (providers, the endpoint, middleware,
the facade). A request itself knows its provider only as a
[`ProviderRef`][mmstream.request.ProviderRef]; this is the whole contract.

```
values ─► protocols ─► sse, media ─► providers ─► transport ─► endpoint ─► middleware ─► facade
```

A provider is sans-I/O: it turns a [`ChatRequest`][mmstream.request.ChatRequest]
into an [`HTTPRequest`][mmstream.request.HTTPRequest], the body of the answer
into chunks through a per-call [`StreamDecoder`][mmstream.protocols.StreamDecoder]
(bytes in, chunks out), a whole JSON answer into one chunk (`decode_json`), and
an error response into a typed [`APIError`][mmstream.errors.APIError]. The
shared shell, [`BaseProvider`][mmstream.providers.base.BaseProvider], implements
the parts every provider has in common.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

from mmstream.request import ProviderRef, StreamFormat

if TYPE_CHECKING:
    from mmstream.errors import APIError
    from mmstream.metadata import MultiModalLLMMetadata
    from mmstream.request import CallOptions, ChatRequest, HTTPRequest
    from mmstream.responses import ChatResponse

__all__ = ["FrameDecoder", "Provider", "ProviderRef", "StreamDecoder", "StreamFormat"]


@runtime_checkable
class FrameDecoder(Protocol):
    """A stream format's framing: bytes in, frames out (SSE events, NDJSON lines). Pure."""

    def feed(self, data: bytes) -> list[object]:
        """The frames that ``data`` (the next bytes, split anywhere) completed."""
        ...

    def flush(self) -> list[object]:
        """End of body: the frame left without its terminator, if any."""
        ...


@runtime_checkable
class StreamDecoder(Protocol):
    """Per-call decoding state: bytes in, chunks out. Never blocks, never awaits."""

    def feed(self, data: bytes) -> list[ChatResponse]:
        """Decode the next bytes of the body (split anywhere) into zero or more chunks."""
        ...

    def flush(self) -> list[ChatResponse]:
        """End of body: the last chunks; raises IncompleteStreamError if the answer is cut."""
        ...


@runtime_checkable
class Provider(ProviderRef, Protocol):
    """What every provider offers the layers above it (see [`mmstream.providers.base`][])."""

    name: ClassVar[str]

    @property
    def model(self) -> str:
        """The model (or deployment) that answers."""
        ...

    @property
    def options(self) -> CallOptions:
        """The provider's default call options."""
        ...

    @property
    def metadata(self) -> MultiModalLLMMetadata:
        """Context window, output limit and abilities of the model."""
        ...

    @property
    def api_base(self) -> str:
        """The root URL its requests go to (``""`` when it has none), for traces and messages."""
        ...

    @property
    def image_policy(self) -> object:
        """The API's documented image limits (an `ImagePolicy` of the media layer)."""
        ...

    def check(self) -> None:
        """Raise ConfigurationError when a request cannot be made as configured (a missing key).

        Called before any work for a call (images are prepared after it), so a
        misconfigured provider fails at once.
        """
        ...

    def build_request(self, request: ChatRequest) -> HTTPRequest:
        """The HTTP request for a call (pure; images are already loaded)."""
        ...

    def new_decoder(self, request: ChatRequest) -> StreamDecoder:
        """A fresh decoder for one call's response body."""
        ...

    def decode_json(self, body: bytes) -> ChatResponse:
        """A whole (non-streamed) JSON answer as one chunk; its error object as its APIError."""
        ...

    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> APIError:
        """The typed error for an HTTP error response."""
        ...
