"""The demo page of ``mmstream serve --ui``: pick an image, ask, watch the answer stream, stop.

One Starlette app with two routes: ``GET /`` is a plain HTML page (shipped as
package data, no build step) and ``POST /api/ask`` takes a multipart form
(``question``, and ``image`` files) and answers with an
[`EventStreamResponse`][mmstream.web.EventStreamResponse]. The page reads the
events with ``fetch`` streaming; Stop aborts the fetch, which closes the
connection, which closes the upstream call.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import importlib.resources
import sys
from collections.abc import AsyncIterator
from typing import Any, TextIO

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from mmstream.llm import MultiModalLLM
from mmstream.web._response import EventStreamResponse
from mmstream.web._upload import MiB, read_form

__all__ = ["DEFAULT_QUESTION", "demo_app", "run_demo"]

#: The question asked when the form's is empty.
DEFAULT_QUESTION = "What is in this picture?"


def _page(model: str) -> str:
    template = importlib.resources.files("mmstream.web").joinpath("demo.html")
    return template.read_text(encoding="utf-8").replace("{{model}}", html.escape(model))


def demo_app(
    llm: MultiModalLLM | str = "offline:default",
    *,
    max_image_bytes: int = 20 * MiB,
    heartbeat: float | None = 15.0,
) -> Starlette:
    """The demo as a Starlette app: mount it, or serve it with any ASGI server.

    Args:
        llm: the model that answers, or a ``"provider:model"`` string (then the app
            owns the client and closes it at shutdown).
        max_image_bytes: the largest image accepted (a larger one is answered 413).
        heartbeat: seconds of silence before a keep-alive comment.

    Returns:
        An app serving the page at ``/`` and the stream at ``POST /api/ask``.
    """
    owned = isinstance(llm, str)
    client = MultiModalLLM(llm) if isinstance(llm, str) else llm
    page = _page(f"{client.provider.name}:{client.provider.model}")

    async def index(request: Request) -> Response:
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    async def ask(request: Request) -> Response:
        form = await read_form(request, max_file_bytes=max_image_bytes, max_files=4)
        question = form.fields.get("question", "").strip() or DEFAULT_QUESTION
        images = form.images("image")
        return EventStreamResponse(client.astream_complete(question, images), heartbeat=heartbeat)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if owned:
                await client.aclose()

    return Starlette(
        routes=[Route("/", index), Route("/api/ask", ask, methods=["POST"])],
        lifespan=lifespan,
    )


def _llm_for(args: argparse.Namespace) -> MultiModalLLM:
    """The CLI's model: ``--model``, else the offline provider, paced to be seen streaming."""
    model = getattr(args, "model", None)
    if model:
        return MultiModalLLM(model)
    from mmstream.providers.offline import Offline

    pause = args.pause if getattr(args, "pause", 0.0) else 0.04
    return MultiModalLLM(Offline(chunks=getattr(args, "chunks", None), delay=pause))


def run_demo(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """``mmstream serve --ui``: serve the demo until interrupted; returns the exit status."""
    import anyio

    from mmstream.errors import MMStreamError
    from mmstream.web._serve import serve

    stream = out or sys.stdout
    try:
        llm = _llm_for(args)
    except MMStreamError as exc:
        sys.stderr.write(f"mmstream: error: {exc}\n")
        return 1

    def announce(url: str) -> None:
        stream.write(f"mmstream demo on {url}/  (answering with {llm.provider.name}:")
        stream.write(f"{llm.provider.model})\nPress Ctrl+C to stop.\n")
        stream.flush()

    async def main() -> None:
        async with llm:
            await serve(demo_app(llm), host=args.host, port=args.port, on_ready=announce)

    try:
        anyio.run(main, backend=args.backend)
    except (MMStreamError, OSError) as exc:
        sys.stderr.write(f"mmstream: error: {exc}\n")
        return 1
    except BaseException as exc:
        if not _interrupted(exc):
            raise
        stream.write("stopped\n")
    return 0


def _interrupted(exc: BaseException) -> bool:
    """Ctrl+C, also as it comes out of a task group (inside an exception group)."""
    if isinstance(exc, KeyboardInterrupt):
        return True
    inner: Any = getattr(exc, "exceptions", None) or ()
    return bool(inner) and all(_interrupted(e) for e in inner)
