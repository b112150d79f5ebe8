"""A loopback HTTP server that speaks every provider's streaming wire format, with faults.

It answers OpenAI Chat Completions, Azure OpenAI, Anthropic Messages, Gemini
and Ollama requests the way the real APIs do (SSE or NDJSON, usage, finish
reasons, request-id headers, error bodies), records every request, counts
connections, notices clients that leave mid-stream, and misbehaves on demand.
It runs on asyncio and trio, in a background thread, and from the shell
(``python -m mmstream.testing --port 8000`` or ``mmstream serve``).

A short tour:

```python
import httpx
from mmstream.testing import Fault, Script, TestServer, answer_text

async with TestServer() as server:
    async with httpx.AsyncClient(base_url=server.url("/v1")) as client:
        r = await client.post(
            "/chat/completions",
            headers={"authorization": "Bearer sk-test"},
            json={"model": "gpt-4o-mini", "stream": True,
                  "messages": [{"role": "user", "content": "hi there"}]},
        )
    assert server.requests[-1].answer == answer_text("hi there")  # "You said: hi there."

    server.enqueue(Script(chunks=100, pause=0.01))          # shape the next answer
    server.inject(Fault.http_status(429, retry_after=2))    # fail the next request
    server.inject(Fault.drop(after_chunks=3), api="anthropic")
    ...
    await server.wait_disconnect(timeout=1.0)               # the client left mid-stream
```

mmstream refuses to download images from loopback and private addresses (a
URL in a user's message must not reach inside the server's network); a test
whose images are served by this server opts in explicitly, with
``url_access=ALLOW_LOOPBACK`` as a call option.

In pytest, add ``pytest_plugins = ["mmstream.testing.pytest_plugin"]`` to a
``conftest.py`` and use the ``mmstream_server`` fixture (or
``mmstream_thread_server`` in synchronous tests).
"""

from __future__ import annotations

from mmstream.media.netguard import URLAccess
from mmstream.testing._formats import prompt_of
from mmstream.testing._script import (
    FAULT_KINDS,
    IMAGE_TOKENS,
    Fault,
    FaultKind,
    Script,
    ToolCall,
    answer_text,
    split_text,
)
from mmstream.testing._server import Disconnect, RecordedRequest, TestServer

__all__ = [
    "ALLOW_LOOPBACK",
    "FAULT_KINDS",
    "IMAGE_TOKENS",
    "Disconnect",
    "Fault",
    "FaultKind",
    "RecordedRequest",
    "Script",
    "TestServer",
    "ToolCall",
    "answer_text",
    "prompt_of",
    "split_text",
]

ALLOW_LOOPBACK = URLAccess(allow=["127.0.0.0/8", "::1", "localhost"])
"""The ``url_access`` call option that lets mmstream download from this server (and any
other loopback address): for tests only, never for user-supplied URLs."""
