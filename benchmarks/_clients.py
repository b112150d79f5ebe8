"""The clients compared, each behind the same small interface.

* ``httpx``: the baseline, a bare loop: ``client.stream(...)`` +
  ``aiter_lines()`` + ``json.loads`` of each ``data:`` line, accumulating the
  text. It reads every body to its end (no ``break`` at ``[DONE]``), so its
  connection goes back to the pool.
* ``mmstream``: :class:`mmstream.MultiModalLLM` with the OpenAI provider.
* ``openai``: the official SDK (``AsyncOpenAI``/``OpenAI``, ``max_retries=0``).

Every ``stream`` call returns the text it received and when its first text
arrived; the caller checks the text.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from _workload import API_KEY, IMAGE_PROMPT, PROMPT

__all__ = ["CLIENTS", "BenchClient", "StreamResult", "make_client"]

StreamResult = tuple[str, float]  # (text received, perf_counter() at the first text)


def _messages(model: str, image: bytes | None) -> list[dict[str, Any]]:
    if image is None:
        return [{"role": "user", "content": PROMPT}]
    url = "data:image/jpeg;base64," + base64.b64encode(image).decode("ascii")
    return [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": url}},
                {"type": "text", "text": IMAGE_PROMPT},
            ],
        }
    ]


class BenchClient:
    """One client library: ``start``/``stream``/``aclose`` on an event loop, ``*_sync`` without."""

    name = "?"

    def __init__(self, base_url: str, options: dict[str, Any]) -> None:
        self.base_url = base_url
        self.options = options

    async def start(self) -> None:
        """Make the client (on the running event loop)."""

    async def stream(self, model: str, image: bytes | None = None) -> StreamResult:
        """Stream one answer; return its text and when the first text came."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Close the client's connection pool."""

    def start_sync(self) -> None:
        """Make the blocking client."""

    def stream_sync(self, model: str) -> StreamResult:
        """Stream one answer with the blocking API."""
        raise NotImplementedError

    def close_sync(self) -> None:
        """Close the blocking client."""

    async def hold(self, model: str, opened: Callable[[], Any], release: Any) -> int:
        """Open a stream, read its first text, call ``opened()``, wait for ``release``.

        Returns the number of text characters read (for the check).
        """
        raise NotImplementedError


class HttpxClient(BenchClient):
    """The baseline: httpx + aiter_lines + json.loads, nothing else."""

    name = "httpx"

    async def start(self) -> None:
        import httpx

        self.client = httpx.AsyncClient(
            timeout=600,
            limits=httpx.Limits(max_connections=2000, max_keepalive_connections=200),
        )
        self.headers = {"Authorization": f"Bearer {API_KEY}"}

    def _body(self, model: str, image: bytes | None) -> dict[str, Any]:
        return {
            "model": model,
            "messages": _messages(model, image),
            "stream": True,
            "stream_options": {"include_usage": True},
        }

    async def stream(self, model: str, image: bytes | None = None) -> StreamResult:
        pieces: list[str] = []
        first = 0.0
        async with self.client.stream(
            "POST",
            self.base_url + "/chat/completions",
            json=self._body(model, image),
            headers=self.headers,
        ) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    continue  # read on to the end of the body: the connection is reused
                chunk = json.loads(data)
                choices = chunk["choices"]
                if choices:
                    content = choices[0]["delta"].get("content")
                    if content:
                        if not pieces:
                            first = time.perf_counter()
                        pieces.append(content)
        return "".join(pieces), first

    async def hold(self, model: str, opened: Callable[[], Any], release: Any) -> int:
        async with self.client.stream(
            "POST",
            self.base_url + "/chat/completions",
            json=self._body(model, None),
            headers=self.headers,
        ) as response:
            lines = response.aiter_lines()
            got = 0
            async for line in lines:
                if line.startswith("data: "):
                    choices = json.loads(line[6:])["choices"]
                    if choices and choices[0]["delta"].get("content"):
                        got += len(choices[0]["delta"]["content"])
                        break
            opened()
            await release.wait()
            await lines.aclose()  # type: ignore[attr-defined]
        return got

    async def aclose(self) -> None:
        await self.client.aclose()

    def start_sync(self) -> None:
        import httpx

        self.sync_client = httpx.Client(timeout=600)
        self.headers = {"Authorization": f"Bearer {API_KEY}"}

    def stream_sync(self, model: str) -> StreamResult:
        pieces: list[str] = []
        first = 0.0
        with self.sync_client.stream(
            "POST",
            self.base_url + "/chat/completions",
            json=self._body(model, None),
            headers=self.headers,
        ) as response:
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    continue
                choices = json.loads(data)["choices"]
                if choices:
                    content = choices[0]["delta"].get("content")
                    if content:
                        if not pieces:
                            first = time.perf_counter()
                        pieces.append(content)
        return "".join(pieces), first

    def close_sync(self) -> None:
        self.sync_client.close()


class MMStreamClient(BenchClient):
    """mmstream through its OpenAI provider (``options["middleware"]``: pass-through layers)."""

    name = "mmstream"

    def _llm(self, model: str) -> Any:
        llm = self.llms.get(model)
        if llm is None:
            import mmstream as mm
            from mmstream.providers.openai import OpenAI

            extra: dict[str, Any] = {}
            if self.options.get("fit") is False:
                import attrs

                from mmstream.images import OPENAI_POLICY

                extra["image_policy"] = attrs.evolve(OPENAI_POLICY, fit=False)
            provider = OpenAI(model=model, api_key=API_KEY, base_url=self.base_url, extra=extra)
            llm = self.llms[model] = mm.MultiModalLLM(
                provider, transport=self.transport, middleware=_passthrough(self.options)
            )
        return llm

    async def start(self) -> None:
        import mmstream as mm

        self.transport = mm.Transport()
        self.llms: dict[str, Any] = {}

    def _messages(self, image: bytes | None) -> list[Any]:
        import mmstream as mm

        if image is None:
            return [mm.ChatMessage("user", PROMPT)]
        blocks = [mm.ImageBlock(image=image), mm.TextBlock(IMAGE_PROMPT)]
        return [mm.ChatMessage("user", blocks=blocks)]

    async def stream(self, model: str, image: bytes | None = None) -> StreamResult:
        pieces: list[str] = []
        first = 0.0
        last = None
        async with self._llm(model).astream_chat(self._messages(image)) as stream:
            async for last in stream:
                delta = last.delta
                if delta:
                    if not pieces:
                        first = time.perf_counter()
                    pieces.append(delta)
        text = "".join(pieces)
        assert last is not None
        assert last.text == text, "the final chunk's text differs"
        return text, first

    async def hold(self, model: str, opened: Callable[[], Any], release: Any) -> int:
        async with self._llm(model).astream_chat(self._messages(None)) as stream:
            got = 0
            async for chunk in stream:
                if chunk.delta:
                    got += len(chunk.delta)
                    break
            opened()
            await release.wait()
        return got

    async def aclose(self) -> None:
        await self.transport.aclose()

    def start_sync(self) -> None:
        import mmstream as mm

        self.transport = mm.Transport()
        self.llms = {}

    def stream_sync(self, model: str) -> StreamResult:
        pieces: list[str] = []
        first = 0.0
        last = None
        with self._llm(model).stream_chat(self._messages(None)) as stream:
            for last in stream:
                delta = last.delta
                if delta:
                    if not pieces:
                        first = time.perf_counter()
                    pieces.append(delta)
        text = "".join(pieces)
        assert last is not None
        assert last.text == text, "the final chunk's text differs"
        return text, first

    def close_sync(self) -> None:
        for llm in self.llms.values():
            llm.close()


def _passthrough(options: dict[str, Any]) -> list[Any]:
    """``options["middleware"]`` pass-through layers that see every chunk and change nothing."""

    async def passthrough(request: Any, call_next: Any) -> AsyncIterator[Any]:
        async for chunk in call_next(request):
            yield chunk

    return [passthrough] * int(options.get("middleware", 0))


class OpenAIClient(BenchClient):
    """The official SDK."""

    name = "openai"

    async def start(self) -> None:
        import openai

        self.client = openai.AsyncOpenAI(
            api_key=API_KEY, base_url=self.base_url, max_retries=0, timeout=600
        )

    async def stream(self, model: str, image: bytes | None = None) -> StreamResult:
        pieces: list[str] = []
        first = 0.0
        stream = await self.client.chat.completions.create(
            model=model,
            messages=_messages(model, image),  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
        async with stream:
            async for chunk in stream:
                if chunk.choices:
                    content = chunk.choices[0].delta.content
                    if content:
                        if not pieces:
                            first = time.perf_counter()
                        pieces.append(content)
        return "".join(pieces), first

    async def hold(self, model: str, opened: Callable[[], Any], release: Any) -> int:
        stream = await self.client.chat.completions.create(
            model=model, messages=_messages(model, None), stream=True
        )
        async with stream:
            got = 0
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    got += len(chunk.choices[0].delta.content)
                    break
            opened()
            await release.wait()
        return got

    async def aclose(self) -> None:
        await self.client.close()

    def start_sync(self) -> None:
        import openai

        self.sync_client = openai.OpenAI(
            api_key=API_KEY, base_url=self.base_url, max_retries=0, timeout=600
        )

    def stream_sync(self, model: str) -> StreamResult:
        pieces: list[str] = []
        first = 0.0
        stream = self.sync_client.chat.completions.create(
            model=model,
            messages=_messages(model, None),  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
        with stream:
            for chunk in stream:
                if chunk.choices:
                    content = chunk.choices[0].delta.content
                    if content:
                        if not pieces:
                            first = time.perf_counter()
                        pieces.append(content)
        return "".join(pieces), first

    def close_sync(self) -> None:
        self.sync_client.close()


CLIENTS: dict[str, type[BenchClient]] = {
    "httpx": HttpxClient,
    "mmstream": MMStreamClient,
    "openai": OpenAIClient,
}


def make_client(name: str, base_url: str, options: dict[str, Any] | None = None) -> BenchClient:
    """A client by name."""
    return CLIENTS[name](base_url, dict(options or {}))
