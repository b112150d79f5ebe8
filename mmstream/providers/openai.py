"""OpenAI's Chat Completions API, and the servers that speak it (``"openai:MODEL"``).

[`OpenAI`][mmstream.providers.openai.OpenAI] is OpenAI's own API;
[`OpenAICompatible`][mmstream.providers.openai.OpenAICompatible] is any server
that speaks it (vLLM, llama.cpp, LM Studio, gateways). Both are configuration on
the shared shell; the wire format (request body, stream decoder, errors) is in
[`mmstream.providers.chat_completions`][], shared with Azure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, final

from attrs import field, frozen

from mmstream._secret import Secret
from mmstream.errors import APIError
from mmstream.media.policy import COMMON_TYPES, MB, ImagePolicy
from mmstream.metadata import MultiModalLLMMetadata
from mmstream.providers.base import (
    APIProvider,
    chat_metadata,
    longest_prefix,
    max_line,
    to_headers,
)
from mmstream.providers.chat_completions import (
    OpenAIChatDecoder,
    chat_body,
    chat_messages,
    parse_openai_error,
    stream_error,
)
from mmstream.request import ChatRequest, HTTPRequest

__all__ = [
    "COMPATIBLE_POLICY",
    "DEFAULT_BASE_URL",
    "DEFAULT_COMPATIBLE_BASE_URL",
    "OPENAI_POLICY",
    "OpenAI",
    "OpenAIChatDecoder",
    "OpenAICompatible",
    "chat_body",
    "chat_messages",
    "openai_metadata",
    "parse_openai_error",
    "stream_error",
]

#: OpenAI (Chat Completions / Responses).
#: https://platform.openai.com/docs/guides/images-vision ("Image input requirements"):
#: PNG, JPEG, WEBP, non-animated GIF; up to 50 MB total payload per request and up to
#: 500 images per request; 20 MB per image (the older vision guide). "high" detail first
#: fits the image in 2048x2048 (then 768 px on the short side); "low" looks at 512x512.
#: Inline images go as data: URLs; http(s) URLs are fetched by OpenAI.
OPENAI_POLICY = ImagePolicy(
    accepted_types=COMMON_TYPES,
    max_bytes=20 * MB,
    recommended_edge=2048,
    max_images=500,
    max_request_bytes=50 * MB,
    accepts_urls=True,
    low_detail_edge=512,
    accepts_animation=False,
)

#: OpenAI-compatible servers (vLLM, llama.cpp, LM Studio): OpenAI's wire format, but not
#: every server fetches URLs (llama.cpp does not), so images are sent inline.
COMPATIBLE_POLICY = ImagePolicy(
    accepted_types=COMMON_TYPES,
    recommended_edge=2048,
    accepts_urls=False,
    accepts_animation=False,
)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
#: vLLM's default address; LM Studio listens on :1234/v1, llama.cpp on :8080/v1.
DEFAULT_COMPATIBLE_BASE_URL = "http://localhost:8000/v1"

# --- models --------------------------------------------------------------------------

#: (model prefix, context window, output limit, takes images), from OpenAI's model
#: pages (https://platform.openai.com/docs/models): gpt-4o and gpt-4o-mini 128k/16k;
#: the gpt-4.1 family 1,047,576/32,768; o1, o3, o4-mini 200k/100k (o1-mini,
#: o1-preview and o3-mini read no images); gpt-5, 5.1, 5.2 400k/128k, gpt-5.4 and
#: 5.5 1,050,000/128k; the ``*-chat`` models 128k/16k. The longest matching prefix
#: wins, so dated snapshots match their family. Azure's ``gpt-35-turbo`` is listed.
_MODELS: tuple[tuple[str, int, int, bool], ...] = (
    ("gpt-5.5", 1_050_000, 128_000, True),
    ("gpt-5.4", 1_050_000, 128_000, True),
    ("gpt-5.2-chat", 128_000, 16_384, True),
    ("gpt-5.1-chat", 128_000, 16_384, True),
    ("gpt-5-chat", 128_000, 16_384, True),
    ("gpt-5", 400_000, 128_000, True),
    ("gpt-4.5", 128_000, 16_384, True),
    ("gpt-4.1", 1_047_576, 32_768, True),
    ("gpt-4o-2024-05-13", 128_000, 4_096, True),
    ("gpt-4o", 128_000, 16_384, True),
    ("chatgpt-4o", 128_000, 16_384, True),
    ("gpt-4-turbo", 128_000, 4_096, True),
    ("gpt-4-32k", 32_768, 4_096, False),
    ("gpt-4", 8_192, 8_192, False),
    ("gpt-3.5-turbo", 16_385, 4_096, False),
    ("gpt-35-turbo", 16_385, 4_096, False),
    ("o1-mini", 128_000, 65_536, False),
    ("o1-preview", 128_000, 32_768, False),
    ("o1", 200_000, 100_000, True),
    ("o3-mini", 200_000, 100_000, False),
    ("o3", 200_000, 100_000, True),
    ("o4-mini", 200_000, 100_000, True),
)
#: an OpenAI model not in the table (a newer one): today's common limits, images on.
_DEFAULT_MODEL = ("", 128_000, 16_384, True)
#: models that cannot call tools.
_NO_TOOLS = ("o1-mini", "o1-preview")


def openai_metadata(
    model: str, *, max_images: int | None = None, default: tuple[int, int] | None = None
) -> MultiModalLLMMetadata:
    """Context window, output limit and abilities of an OpenAI model, by longest prefix.

    An unknown model gets ``default`` (context, output) or OpenAI's current
    common limits; it is never rejected.
    """
    entry = longest_prefix(_MODELS, model)
    if entry is None:
        context, output = default or _DEFAULT_MODEL[1:3]
        vision, tools = True, default is None
    else:
        _, context, output, vision = entry
        tools = not entry[0].startswith(_NO_TOOLS)
    images = max_images if max_images is not None else OPENAI_POLICY.max_images or 0
    return chat_metadata(model, context, output, images if vision else 0, tools=tools)


def _bearer(key: Secret | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}


# --- the providers -------------------------------------------------------------------


@final
@frozen(kw_only=True)
class OpenAI(APIProvider):
    """OpenAI's models through the Chat Completions API (``"openai:MODEL"``).

    Args:
        model: the model (``"gpt-4o-mini"``, ``"gpt-4.1"``, ``"o4-mini"``, ``"gpt-5"``, ...).
        api_key: the key. [`from_env`][mmstream.providers.base.BaseProvider.from_env]
            (and ``"openai:MODEL"``) read it from ``OPENAI_API_KEY``; a missing
            key is reported when a call starts, not here.
        base_url: the API root, ``https://api.openai.com/v1`` (``OPENAI_BASE_URL``).
        organization: sent as ``OpenAI-Organization`` (``OPENAI_ORG_ID``).
        project: sent as ``OpenAI-Project`` (``OPENAI_PROJECT_ID``).
        headers: more headers for every request (proxies, gateways).
        **options: default call options (``temperature``, ``max_tokens``, ``top_p``,
            ``stop``, ``timeout``, ``extra``); ``extra`` keys (``tools``, ``seed``,
            ``response_format``, ``reasoning_effort``, ...) go into the body.

    ``max_tokens`` is sent as ``max_completion_tokens`` (the only spelling the
    o-series and gpt-5 take). Images go as ``image_url`` parts: bytes as
    ``data:`` URLs, http(s) URLs as they are, with ``ImageBlock.detail``.

    Example:
        ``MultiModalLLM(OpenAI(model="gpt-4o-mini", api_key=key, temperature=0.2))``,
        ``OpenAI.from_env(model="gpt-4o-mini")``, or ``MultiModalLLM("openai:gpt-4o-mini")``.
    """

    name: ClassVar[str] = "openai"
    environment: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "api_key": ("OPENAI_API_KEY",),
        "base_url": ("OPENAI_BASE_URL",),
        "organization": ("OPENAI_ORG_ID",),
        "project": ("OPENAI_PROJECT_ID",),
    }

    DEFAULT_BASE_URL: ClassVar[str] = DEFAULT_BASE_URL

    organization: str | None = None
    project: str | None = None
    headers: Mapping[str, str] = field(factory=dict, converter=to_headers, repr=False)

    @property
    def metadata(self) -> MultiModalLLMMetadata:
        """The model's limits (known models by prefix; others get common limits)."""
        return openai_metadata(self.model)

    @property
    def image_policy(self) -> ImagePolicy:
        """OpenAI's documented image limits (``OPENAI_POLICY``, defined in this module)."""
        return OPENAI_POLICY

    def build_request(self, request: ChatRequest) -> HTTPRequest:
        """``POST {base_url}/chat/completions`` with a bearer key and a streaming body.

        Raises:
            ConfigurationError: no API key (pass ``api_key`` or use ``from_env``).
        """
        self.check()
        headers = {**self.headers, **_bearer(self.api_key)}
        if self.organization:
            headers["OpenAI-Organization"] = self.organization
        if self.project:
            headers["OpenAI-Project"] = self.project
        return HTTPRequest(
            url=f"{self.base_url}/chat/completions",
            headers=headers,
            json=chat_body(request, self.name, model=self.model),
            timeout=request.options.timeout,
        )

    def new_decoder(self, request: ChatRequest | None = None) -> OpenAIChatDecoder:
        """A strict decoder: only ``data: [DONE]`` completes the stream."""
        return OpenAIChatDecoder(self.name, self.model, max_line=max_line(request))

    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> APIError:
        """The typed error for an HTTP error (request id from ``x-request-id``)."""
        return parse_openai_error(self.name, status, headers, body)


@final
@frozen(kw_only=True)
class OpenAICompatible(APIProvider):
    """A server that speaks OpenAI's Chat Completions (``"openai-compatible:MODEL"``).

    vLLM, llama.cpp's ``llama-server``, LM Studio, LocalAI, text-generation-inference
    and gateways such as LiteLLM or OpenRouter.

    Args:
        model: the model name the server knows.
        base_url: the API root, up to and including ``/v1``;
            ``http://localhost:8000/v1`` (``OPENAI_COMPATIBLE_BASE_URL``).
        api_key: optional, sent as a bearer token (``OPENAI_COMPATIBLE_API_KEY``).
        headers: more headers for every request.
        max_tokens_field: how ``max_tokens`` is spelled in the body
            (``"max_tokens"``, which every server knows, or ``"max_completion_tokens"``).
        include_usage: send ``stream_options.include_usage`` (turn off for a
            server that rejects unknown fields).
        context_window / num_output: the model's limits, for ``metadata`` (a
            known OpenAI model name is looked up; otherwise 32768 / 4096).
        function_calling: whether the served model can call tools.

    The stream is decoded leniently: no usage (``usage`` is then ``None``),
    usage on every chunk (the last counts), no ``[DONE]`` (the end of the body
    after a ``finish_reason`` completes the answer; without one it is an
    [`IncompleteStreamError`][mmstream.errors.IncompleteStreamError]), and error
    objects with string or integer codes.
    """

    name: ClassVar[str] = "openai-compatible"
    environment: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "api_key": ("OPENAI_COMPATIBLE_API_KEY",),
        "base_url": ("OPENAI_COMPATIBLE_BASE_URL",),
    }

    DEFAULT_BASE_URL: ClassVar[str] = DEFAULT_COMPATIBLE_BASE_URL
    requires_key: ClassVar[bool] = False

    headers: Mapping[str, str] = field(factory=dict, converter=to_headers, repr=False)
    max_tokens_field: str = "max_tokens"
    include_usage: bool = True
    context_window: int | None = None
    num_output: int | None = None
    function_calling: bool = False

    @property
    def metadata(self) -> MultiModalLLMMetadata:
        """The configured limits, else an OpenAI model's by name, else 32768 / 4096."""
        known = longest_prefix(_MODELS, self.model)
        base = openai_metadata(self.model, default=(32_768, 4_096))
        return chat_metadata(
            self.model,
            self.context_window or base.context_window,
            self.num_output or base.num_output,
            base.num_input_files,
            tools=self.function_calling or (known is not None and base.is_function_calling_model),
        )

    @property
    def image_policy(self) -> ImagePolicy:
        """Inline images only: not every server fetches URLs (llama.cpp does not)."""
        return COMPATIBLE_POLICY

    def build_request(self, request: ChatRequest) -> HTTPRequest:
        """``POST {base_url}/chat/completions``; the ``developer`` role is sent as ``system``."""
        return HTTPRequest(
            url=f"{self.base_url}/chat/completions",
            headers={**self.headers, **_bearer(self.api_key)},
            json=chat_body(
                request,
                self.name,
                model=self.model,
                max_tokens_field=self.max_tokens_field,
                include_usage=self.include_usage,
                developer_role="system",
            ),
            timeout=request.options.timeout,
        )

    def new_decoder(self, request: ChatRequest | None = None) -> OpenAIChatDecoder:
        """A lenient decoder (see the class docstring)."""
        return OpenAIChatDecoder(self.name, self.model, lenient=True, max_line=max_line(request))

    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> APIError:
        """The typed error for an HTTP error (OpenAI's shapes and vLLM's bare one)."""
        return parse_openai_error(self.name, status, headers, body)
