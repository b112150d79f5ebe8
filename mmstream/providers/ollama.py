"""Ollama's chat API, sans-I/O: requests out, NDJSON lines in, typed errors.

Wire format: https://github.com/ollama/ollama/blob/main/docs/api.md#generate-a-chat-completion
(``POST /api/chat`` with ``"stream": true``). Each line is a JSON object with a
``message`` (``content``, maybe ``thinking`` or whole ``tool_calls``); the last
line has ``"done": true`` and carries ``done_reason``, the token counts
(``prompt_eval_count``, ``eval_count``) and the timings, so reading stops only
after it. An ``{"error": "..."}`` line ends the stream with an error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar, final

import attrs
from attrs import field, frozen

from mmstream.content import ChatMessage, ImageBlock, MessageRole, TextBlock
from mmstream.errors import APIError, InvalidImageError, OverloadedError, ServerError
from mmstream.media.policy import ImagePolicy
from mmstream.media.sniff import encoded_form
from mmstream.metadata import MultiModalLLMMetadata
from mmstream.providers.base import (
    APIProvider,
    JSONLinesDecoder,
    chat_metadata,
    conversation,
    count,
    longest_prefix,
    max_line,
    passed_through,
    sampling,
)
from mmstream.request import ChatRequest, HTTPRequest
from mmstream.responses import ChatResponse, Usage

__all__ = [
    "OLLAMA_POLICY",
    "Ollama",
    "OllamaDecoder",
]

#: Ollama. https://github.com/ollama/ollama/blob/main/docs/api.md: ``images`` is a list of
#: base64 strings (no URLs, no data: prefix); the server decodes PNG and JPEG. No size
#: limits are documented; its vision models look at 336-1120 px, so 2048 px is plenty
#: (mmstream's choice, to keep the local request small).
OLLAMA_POLICY = ImagePolicy(
    accepted_types=frozenset({"image/png", "image/jpeg"}),
    recommended_edge=2048,
    accepts_urls=False,
    accepts_animation=False,
)

DEFAULT_BASE_URL = "http://localhost:11434"
DEFAULT_PORT = "11434"
#: Ollama's own default context (``num_ctx``) when neither the call nor the server
#: (``OLLAMA_CONTEXT_LENGTH``) sets one: https://github.com/ollama/ollama/blob/main/docs/faq.md
DEFAULT_NUM_CTX = 4096
#: Ollama has no output limit of its own (``num_predict`` -1 fills the context);
#: this is the room the metadata reserves for an answer when ``max_tokens`` is unset.
DEFAULT_NUM_OUTPUT = 1024

#: (model prefix, the model's native context window), from the models' pages on
#: https://ollama.com/library. Ollama serves ``min(native, num_ctx)``; the
#: metadata reports that. Unknown models are served with the defaults.
_MODELS: tuple[tuple[str, int], ...] = (
    ("llama3.2-vision", 131_072),
    ("llama4", 10_485_760),
    ("gemma3", 131_072),
    ("gemma3n", 32_768),
    ("qwen2.5vl", 128_000),
    ("qwen3-vl", 262_144),
    ("mistral-small3.1", 131_072),
    ("mistral-small3.2", 131_072),
    ("granite3.2-vision", 16_384),
    ("minicpm-v", 32_768),
    ("llava-llama3", 8_192),
    ("llava-phi3", 4_096),
    ("llava", 4_096),
    ("bakllava", 4_096),
    ("moondream", 2_048),
)

#: ``extra`` keys that belong at the top of the request; every other key is an
#: ``options`` field (``num_ctx``, ``seed``, ``top_k``, ``repeat_penalty``, ...).
_TOP_LEVEL = frozenset({"keep_alive", "format", "tools", "think"})
#: The durations of the ``done`` line (nanoseconds), kept as ``additional_kwargs["timings"]``.
_TIMINGS = ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration")

_ROLES: Mapping[MessageRole, str] = {
    MessageRole.SYSTEM: "system",
    MessageRole.DEVELOPER: "system",
    MessageRole.USER: "user",
    MessageRole.ASSISTANT: "assistant",
    MessageRole.TOOL: "tool",
}


#: portable options and their names in Ollama's ``options``.
_SAMPLING = {
    "temperature": "temperature",
    "top_p": "top_p",
    "max_tokens": "num_predict",
    "stop": "stop",
}


def _native_context(model: str) -> int | None:
    best = longest_prefix(_MODELS, model)
    return None if best is None else best[1]


def _normalize_host(value: str) -> str:
    """A base URL from ``OLLAMA_HOST``-style text, as the Ollama client reads it.

    ``"example.com"`` → ``http://example.com:11434``, ``"example.com:8080"`` →
    ``http://example.com:8080``, ``"https://example.com"`` stays (the scheme's port);
    the "listen everywhere" addresses ``0.0.0.0`` and ``::`` mean this machine.
    Mirrors ``envconfig.Host`` in https://github.com/ollama/ollama/blob/main/envconfig/config.go.
    """
    text = value.strip().rstrip("/")
    if not text:
        return DEFAULT_BASE_URL
    scheme, sep, rest = text.partition("://")
    default_port: str | None = None
    if sep:
        scheme = scheme.lower()
    else:
        scheme, rest, default_port = "http", text, DEFAULT_PORT
    hostport, _, path = rest.partition("/")
    if hostport.startswith("["):
        end = hostport.find("]")
        host, port = hostport[: end + 1], hostport[end + 2 :] if end >= 0 else ""
    elif hostport.count(":") == 1:
        host, _, port = hostport.partition(":")
    elif hostport.count(":") > 1:  # a bare IPv6 address
        host, port = f"[{hostport}]", ""
    else:
        host, port = hostport, ""
    if host in ("", "0.0.0.0", "[::]"):
        host = "localhost"
    port = port or (default_port or "")
    url = f"{scheme}://{host}"
    if port:
        url += f":{port}"
    if path:
        url += f"/{path}"
    return url


@final
@frozen(kw_only=True)
class Ollama(APIProvider):
    """A model served by Ollama (``"ollama:MODEL"``), local or behind a proxy.

    Args:
        model: the model tag (``"llama3.2-vision"``, ``"gemma3:4b"``, ``"qwen2.5vl"``).
        api_key: optional; sent as a bearer token (Ollama's cloud, or a proxy that
            wants one; ``OLLAMA_API_KEY``). A local server needs none.
        base_url: the server, ``http://localhost:11434`` (``OLLAMA_HOST``, as
            Ollama's own client reads it). A host without scheme or port is
            completed as Ollama does (``"gpu-box"`` → ``http://gpu-box:11434``).
        keep_alive: how long the model stays loaded after the call (``"5m"``, ``0``, ...).
        num_ctx: the context window to serve (Ollama's default is 4096 tokens).
        **options: default call options; ``max_tokens`` is sent as ``num_predict``.
            ``extra`` keys go to ``options`` (``seed``, ``top_k``, ...), except
            ``keep_alive``, ``format``, ``tools`` and ``think``, which go to the top.

    Example:
        ``MultiModalLLM(Ollama(model="gemma3", num_ctx=8192))``
    """

    name: ClassVar[str] = "ollama"
    environment: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "api_key": ("OLLAMA_API_KEY",),
        "base_url": ("OLLAMA_HOST",),
    }

    DEFAULT_BASE_URL: ClassVar[str] = DEFAULT_BASE_URL
    requires_key: ClassVar[bool] = False

    base_url: str = field(default=DEFAULT_BASE_URL, converter=_normalize_host)
    keep_alive: str | float | None = None
    num_ctx: int | None = None

    @property
    def metadata(self) -> MultiModalLLMMetadata:
        """The context Ollama will serve: ``num_ctx`` if set, else its default (4096).

        A model whose native window is smaller is reported with that window.
        """
        explicit = self.num_ctx or self.extra.get("num_ctx")
        if isinstance(explicit, int) and explicit > 0:
            context = explicit
        else:
            context = min(_native_context(self.model) or DEFAULT_NUM_CTX, DEFAULT_NUM_CTX)
        return chat_metadata(
            self.model, context, min(self.max_tokens or DEFAULT_NUM_OUTPUT, context), 10
        )

    @property
    def image_policy(self) -> ImagePolicy:
        """Ollama's image rules (``OLLAMA_POLICY``, defined in this module): inline only."""
        return OLLAMA_POLICY

    def build_request(self, request: ChatRequest) -> HTTPRequest:
        """The streaming ``POST /api/chat`` request for a call.

        Raises:
            InvalidImageError: an image that is a URL or was not loaded (Ollama
                takes only inline images; mmstream downloads URLs first).
        """
        options = request.options
        _, messages = conversation(request, _message)
        settings = sampling(options, _SAMPLING)
        if self.num_ctx is not None:
            settings["num_ctx"] = self.num_ctx
        body: dict[str, Any] = {"model": self.model, "messages": messages, "stream": True}
        if self.keep_alive is not None:
            body["keep_alive"] = self.keep_alive
        for key, value in passed_through(options):
            if key in _TOP_LEVEL:
                body[key] = value
            elif key == "options" and isinstance(value, Mapping):
                settings.update(value)
            else:
                settings[key] = value
        if settings:
            body["options"] = settings
        headers = {"content-type": "application/json"}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key.get_secret_value()}"
        return HTTPRequest(
            url=f"{self.base_url}/api/chat",
            headers=headers,
            json=body,
            stream_format="ndjson",
            timeout=options.timeout,
        )

    def new_decoder(self, request: ChatRequest | None = None) -> OllamaDecoder:
        """A decoder for one call's NDJSON lines (a non-streamed answer is one such line).

        Errors are the common ``{"error": "..."}`` shape (the shell's ``parse_error``):
        an HTTP 404 is a model that is not pulled
        ([`NotFoundError`][mmstream.errors.NotFoundError], with Ollama's "try
        pulling it first"), a 503 a busy server.
        """
        return OllamaDecoder(self.model, max_line=max_line(request))


def _message(message: ChatMessage, image_index: int) -> tuple[dict[str, Any], int]:
    """One message: ``content`` is the text, ``images`` the base64 images."""
    texts: list[str] = []
    images: list[str] = []
    for block in message.blocks:
        if isinstance(block, TextBlock):
            texts.append(block.text)
            continue
        images.append(_image(block, image_index))
        image_index += 1
    entry: dict[str, Any] = {"role": _ROLES[message.role], "content": "".join(texts)}
    if images:
        entry["images"] = images
    extras = message.additional_kwargs
    if message.role is MessageRole.TOOL and (extras.get("name") or extras.get("tool_name")):
        entry["tool_name"] = extras.get("name") or extras.get("tool_name")
    if message.role is MessageRole.ASSISTANT and extras.get("tool_calls"):
        entry["tool_calls"] = [
            {"function": {"name": call.get("name"), "arguments": _arguments(call)}}
            for call in extras["tool_calls"]
        ]
    return entry, image_index


def _arguments(call: Mapping[str, Any]) -> Any:
    arguments = call.get("arguments")
    if isinstance(arguments, str):
        try:
            return json.loads(arguments) if arguments else {}
        except ValueError:
            return {"input": arguments}
    return arguments or {}


def _image(block: ImageBlock, index: int) -> str:
    if block.image is not None:
        return encoded_form(block, provider="ollama", index=index).base64
    where = block.url if block.url is not None else block.path
    raise InvalidImageError(
        f"image {index + 1} ({where}) is not inline; Ollama takes only image bytes. "
        "Send it through MultiModalLLM, which loads files and downloads URLs first",
        image_index=index,
        provider="ollama",
    )


@final
class OllamaDecoder(JSONLinesDecoder):
    """Ollama's NDJSON lines into chunks.

    ``message.content`` is answer text; ``message.thinking`` is not. Tool calls
    arrive whole, their arguments already JSON objects. The ``done`` line gives
    the usage (``prompt_eval_count`` in, ``eval_count`` out); its durations are in
    the final chunk's ``additional_kwargs["timings"]`` (nanoseconds) and ``raw``.
    """

    __slots__ = ()

    provider = "ollama"
    end = 'its "done": true line'

    def event(self, event: dict[str, Any], out: list[ChatResponse]) -> None:
        """One line: an answer piece, tool calls, the ``done`` summary, or an error."""
        builder = self._builder
        if event.get("error") is not None:
            raise self._error(event)
        if isinstance(event.get("model"), str):
            builder.model = event["model"]
        done = event.get("done") is True
        message = event.get("message")
        last = ""  # a done line's own text (a non-streamed answer) comes with the final chunk
        if isinstance(message, dict):
            content = message.get("content")
            if isinstance(content, str) and content:
                if done:
                    last = content
                else:
                    out.append(builder.text(content, event))
            calls = message.get("tool_calls")
            for call in calls if isinstance(calls, list) else ():
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict) and function.get("name"):
                    call_id = call.get("id")
                    builder.tool_call(
                        id=call_id if isinstance(call_id, str) else None,
                        name=str(function["name"]),
                        arguments=function.get("arguments") or {},
                    )
        if done:
            builder.finish_reason = str(event.get("done_reason") or "stop")
            builder.usage = Usage(
                input_tokens=count(event.get("prompt_eval_count")),
                output_tokens=count(event.get("eval_count")),
            )
            final = builder.finish(event, last)
            timings = {k: event[k] for k in _TIMINGS if count(event.get(k)) is not None}
            if timings:
                extras = {**final.additional_kwargs, "timings": timings}
                final = attrs.evolve(final, additional_kwargs=extras)
            out.append(final)

    def _error(self, event: dict[str, Any]) -> APIError:
        error = event["error"]
        message = error.get("message") if isinstance(error, dict) else error
        text = str(message or "error line")
        # "server busy, please try again" is Ollama's overload answer (its HTTP 503).
        cls = OverloadedError if "busy" in text.lower() else ServerError
        return cls(
            text,
            status=200,
            provider="ollama",
            body=json.dumps(event)[:4096],
            partial=self._builder.snapshot(event),
        )
