"""mmstream: stream answers from multi-modal (text + image) LLMs, from asyncio, trio or a script.

```python
import mmstream as mm

llm = mm.MultiModalLLM("offline:default")
cat = mm.ImageDocument(image_path="cat.png")
for chunk in llm.stream_complete("What is in this picture?", [cat]):
    print(chunk.delta, end="")
```
"""

from __future__ import annotations

import typing as _typing

from mmstream import errors as errors
from mmstream import middleware as middleware
from mmstream import providers as providers
from mmstream._lazy import lazy as _lazy
from mmstream._secret import Secret
from mmstream._stream import ChatStream
from mmstream._sync import SyncStream
from mmstream._version import __version__
from mmstream.content import (
    ChatMessage,
    ContentBlock,
    ImageBlock,
    ImageDocument,
    MessageRole,
    TextBlock,
)
from mmstream.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ClosedError,
    ConfigurationError,
    ContentFilterError,
    ForbiddenURLError,
    IncompleteStreamError,
    InvalidArgumentError,
    InvalidImageError,
    InvalidRequestError,
    MissingExtraError,
    MMStreamError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    ProviderProtocolError,
    QuotaExceededError,
    RateLimitError,
    RequestTooLargeError,
    ServerError,
)
from mmstream.llm import MultiModalLLM
from mmstream.metadata import MultiModalLLMMetadata
from mmstream.request import CallOptions, ChatRequest, HTTPRequest, Timeouts
from mmstream.responses import ChatResponse, CompletionResponse, FinishReason, Usage
from mmstream.transport import Transport

if _typing.TYPE_CHECKING:
    from mmstream import media as media
    from mmstream.media.netguard import URLAccess
    from mmstream.pipeline import MultiModalChatComponent, MultiModalCompleteComponent

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "CallOptions",
    "ChatMessage",
    "ChatRequest",
    "ChatResponse",
    "ChatStream",
    "ClosedError",
    "CompletionResponse",
    "ConfigurationError",
    "ContentBlock",
    "ContentFilterError",
    "FinishReason",
    "ForbiddenURLError",
    "HTTPRequest",
    "ImageBlock",
    "ImageDocument",
    "IncompleteStreamError",
    "InvalidArgumentError",
    "InvalidImageError",
    "InvalidRequestError",
    "MMStreamError",
    "MessageRole",
    "MissingExtraError",
    "MultiModalChatComponent",
    "MultiModalCompleteComponent",
    "MultiModalLLM",
    "MultiModalLLMMetadata",
    "NotFoundError",
    "OverloadedError",
    "PermissionDeniedError",
    "ProviderProtocolError",
    "QuotaExceededError",
    "RateLimitError",
    "RequestTooLargeError",
    "Secret",
    "ServerError",
    "SyncStream",
    "TextBlock",
    "Timeouts",
    "Transport",
    "URLAccess",
    "Usage",
    "__version__",
    "errors",
    "media",
    "middleware",
    "providers",
]

#: public names imported on first use (so that `import mmstream` stays light).
_LAZY = {
    "MultiModalChatComponent": "mmstream.pipeline",
    "MultiModalCompleteComponent": "mmstream.pipeline",
    "URLAccess": "mmstream.media.netguard",
    "media": "mmstream.media",
}

for _name in __all__:
    _obj = globals().get(_name)
    if isinstance(_obj, type) and _obj.__module__.startswith("mmstream."):
        _obj.__module__ = "mmstream"
del _name, _obj


__getattr__, __dir__ = _lazy(globals(), _LAZY, present_as="mmstream")
