"""The demo page in a real headless Chromium: upload, stream, Stop, upstream closed.

The browser is Debian's Chromium (``/usr/bin/chromium``, installed by ``.ci/run``)
driven by Playwright, which downloads no browser of its own here. The demo app
is served by uvicorn (asyncio) or hypercorn (trio) in a background thread; its
model is the loopback ``TestServer`` speaking OpenAI's wire format.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from anyio.from_thread import start_blocking_portal

import mmstream as mm
from mmstream.middleware import Tracing
from mmstream.middleware.tracing import TraceRecord
from mmstream.testing import Script, TestServer
from mmstream.web import demo_app, serve
from tests._web import openai_for, png_bytes

CHROMIUM = os.environ.get("MMSTREAM_CHROMIUM", "/usr/bin/chromium")

#: The flags every run uses: no sandbox (root in CI), no GPU, nothing fetched in the
#: background (updates, sync, safe browsing lists), no first-run dialogs.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install -e '.[test]')"
    if shutil.which(CHROMIUM) is None:
        return f"no Chromium at {CHROMIUM} (apt-get install -y chromium chromium-driver)"
    return None


# CI installs the browser (.ci/run): there a missing one fails the test instead of skipping it.
pytestmark = pytest.mark.skipif(
    _browser_missing() is not None and os.environ.get("CI") != "true",
    reason=str(_browser_missing()),
)


@pytest.fixture(params=["asyncio", "trio"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def upstream(backend: str) -> Iterator[TestServer]:
    with TestServer.start_in_thread(backend=backend, script=Script(chunks=400, pause=0.02)) as s:
        yield s


@contextlib.contextmanager
def serve_in_thread(llm: mm.MultiModalLLM, backend: str) -> Iterator[str]:
    """Serve the demo for ``llm`` on its own event loop in a thread; yield its base URL."""
    ready = threading.Event()
    urls: list[str] = []

    def on_ready(url: str) -> None:
        urls.append(url)
        ready.set()

    with start_blocking_portal(backend) as portal:
        future = portal.start_task_soon(partial(serve, demo_app(llm), on_ready=on_ready))
        assert ready.wait(10), "the demo server did not start"
        try:
            yield urls[0]
        finally:
            future.cancel()
            portal.call(llm.aclose)  # the connection pool of that loop


def test_the_demo_page_streams_an_answer_and_stop_closes_the_upstream_call(
    backend: str, upstream: TestServer, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    records: list[TraceRecord] = []
    llm = mm.MultiModalLLM(openai_for(upstream), middleware=[Tracing(sink=records.append)])
    picture = tmp_path / "red.png"
    picture.write_bytes(png_bytes((96, 64), (220, 30, 30)))

    with (
        sync_playwright() as playwright,
        serve_in_thread(llm, backend) as url,
    ):
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh user-data dir
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
        )
        try:
            page = context.new_page()
            page.goto(url + "/")
            expect(page.locator("#model")).to_have_text("openai:gpt-4o-mini")
            page.set_input_files("#image", str(picture))
            expect(page.locator("#drop-text")).to_contain_text("red.png")
            page.fill("#question", "What colour is this?")
            page.click("#ask")

            # The answer streams in: text appears, and keeps growing.
            answer = page.locator("#answer")
            expect(answer).to_contain_text("You said: What colour is this?", timeout=10_000)
            page.wait_for_function(
                "document.getElementById('answer').textContent.length > 80", timeout=10_000
            )
            expect(page.locator("#stop")).to_be_enabled()
            page.screenshot(path=str(tmp_path / "streaming.png"))

            request = upstream.requests[-1]
            parts = request.json["messages"][-1]["content"]
            assert [p["type"] for p in parts] == ["image_url", "text"]  # the upload went up
            assert parts[0]["image_url"]["url"].startswith("data:image/png;base64,")

            page.click("#stop")
            disconnect = upstream.wait_disconnect_blocking(timeout=1.0)
            expect(page.locator("#status")).to_have_text("Stopped.")
            deadline = time.monotonic() + 1.0
            while not records and time.monotonic() < deadline:  # the relay's loop records it
                time.sleep(0.01)
            shown = answer.text_content() or ""
        finally:
            context.close()

    assert 0 < disconnect.chunks_sent < 400  # stopped mid-answer, upstream closed
    assert disconnect.request.path == "/v1/chat/completions"
    assert shown.startswith("You said: What colour is this?")
    assert [r.event for r in records] == ["chat.closed"]
