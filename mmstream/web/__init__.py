"""Web backends: relay a stream to a browser, and read the images users upload (``mmstream[web]``).

```python
from starlette.applications import Starlette
from starlette.routing import Route
import mmstream as mm
from mmstream.web import EventStreamResponse, read_form

llm = mm.MultiModalLLM("offline:default")

async def ask(request):
    form = await read_form(request, max_file_bytes=10 * 1024 * 1024)
    images = form.images("image")
    return EventStreamResponse(llm.astream_complete(form.fields.get("question", ""), images))

app = Starlette(routes=[Route("/ask", ask, methods=["POST"])])
```

- [`EventStreamResponse`][mmstream.web.EventStreamResponse] streams the answer as
  Server-Sent Events (``text``, ``thinking``, ``tool_call``, ``done``, ``error``),
  sends keep-alive comments on long silences, and closes the upstream call the
  moment the browser disconnects.
- [`read_form`][mmstream.web.read_form] reads a multipart form into memory, with
  every limit enforced while reading, and sniffs each file's real type; a bad
  upload is an [`UploadError`][mmstream.web.UploadError], which Starlette and
  FastAPI answer with its 4xx status.
- [`demo_app`][mmstream.web.demo_app] is the page ``mmstream serve --ui`` serves.

This package needs Starlette and python-multipart: ``pip install 'mmstream[web]'``.
``import mmstream`` never imports it.
"""

from __future__ import annotations

from mmstream.errors import import_extra

__all__ = [
    "EVENT_NAMES",
    "HEARTBEAT",
    "SSE_HEADERS",
    "EventEncoder",
    "EventStreamResponse",
    "Form",
    "UploadError",
    "UploadedFile",
    "chunk_events",
    "demo_app",
    "error_payload",
    "format_event",
    "read_form",
    "serve",
]


def _require(module: str, extra: str) -> None:
    import_extra(module, extra, "mmstream.web")


_require("starlette", "web")
_require("python_multipart", "web")

from mmstream.web._demo import demo_app  # noqa: E402
from mmstream.web._events import (  # noqa: E402
    EVENT_NAMES,
    HEARTBEAT,
    EventEncoder,
    chunk_events,
    error_payload,
    format_event,
)
from mmstream.web._response import SSE_HEADERS, EventStreamResponse  # noqa: E402
from mmstream.web._serve import serve  # noqa: E402
from mmstream.web._upload import Form, UploadedFile, UploadError, read_form  # noqa: E402

for _name in __all__:
    _value = globals()[_name]
    if isinstance(_value, type):
        _value.__module__ = __name__
del _name, _value
