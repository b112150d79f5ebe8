"""Azure OpenAI's Chat Completions, sans-I/O: OpenAI's wire format behind Azure's URLs and keys.

Two URL shapes (https://learn.microsoft.com/azure/ai-foundry/openai/api-version-lifecycle):

- the dated API, ``POST {endpoint}/openai/deployments/{deployment}/chat/completions
  ?api-version=2024-10-21`` (the latest GA version; the default here);
- the v1 API (GA since August 2025), ``POST {endpoint}/openai/v1/chat/completions``
  with no ``api-version``, where the body's ``model`` names the deployment. Choose
  it with ``api_version="v1"`` (or ``"preview"`` for ``?api-version=preview``).

Authentication is the ``api-key`` header, or ``Authorization: Bearer`` with a
Microsoft Entra ID token (``azure_ad_token``). The stream is OpenAI's, plus
Azure's content filtering: a first chunk with ``choices: []`` and
``prompt_filter_results``, chunks with ``content_filter_results`` and no
``delta``, annotation chunks after the finish, and ``finish_reason:
"content_filter"``. Inline images must be ``data:`` URLs (bare base64 is
refused). The request id is the ``apim-request-id`` header.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, final
from urllib.parse import quote

from attrs import field, frozen

from mmstream._secret import Secret, to_secret
from mmstream.errors import APIError, ConfigurationError
from mmstream.media.policy import COMMON_TYPES, MB, ImagePolicy
from mmstream.metadata import MultiModalLLMMetadata
from mmstream.providers.base import BaseProvider, max_line, to_headers
from mmstream.providers.chat_completions import OpenAIChatDecoder, chat_body, parse_openai_error
from mmstream.providers.openai import openai_metadata
from mmstream.request import ChatRequest, HTTPRequest
from mmstream.responses import ChatResponse

__all__ = [
    "AZURE_POLICY",
    "DEFAULT_API_VERSION",
    "AzureOpenAI",
]

#: Azure OpenAI: OpenAI's models and rules; inline images must be data: URLs (bare base64
#: is refused). https://learn.microsoft.com/azure/ai-services/openai/how-to/gpt-with-vision
#: and https://learn.microsoft.com/azure/ai-services/openai/quotas-limits (images per
#: request: 50 for GPT-4o class models, 10 for the older gpt-4 vision-preview; 20 MB each).
AZURE_POLICY = ImagePolicy(
    accepted_types=COMMON_TYPES,
    max_bytes=20 * MB,
    recommended_edge=2048,
    max_images=50,
    max_request_bytes=50 * MB,
    accepts_urls=True,
    low_detail_edge=512,
    accepts_animation=False,
)

#: the latest GA dated API version (it takes ``stream_options`` and ``max_completion_tokens``).
DEFAULT_API_VERSION = "2024-10-21"
#: dated versions before this one know neither ``stream_options`` nor
#: ``max_completion_tokens`` (both came with 2024-09-01-preview).
_FIRST_MODERN_VERSION = "2024-09-01"
#: api_version values that select the v1 API.
_V1_VERSIONS = frozenset({"v1", "preview", "latest"})


def _to_endpoint(value: str) -> str:
    """The resource root: a trailing ``/``, ``/openai`` or ``/openai/v1`` is dropped."""
    value = value.strip().rstrip("/")
    for suffix in ("/openai/v1", "/openai"):
        if value.endswith(suffix):
            value = value[: -len(suffix)]
    return value


@final
@frozen(kw_only=True)
class AzureOpenAI(BaseProvider):
    """A deployment of Azure OpenAI (``"azure:DEPLOYMENT"``).

    Args:
        deployment: the deployment name (it goes into the URL, or into ``model``
            for the v1 API).
        model: the model behind the deployment, for ``metadata`` (limits are looked
            up by it); defaults to the deployment name. Either one is enough.
        endpoint: ``https://RESOURCE.openai.azure.com``, the base URL
            (``AZURE_OPENAI_ENDPOINT``).
        api_version: a dated version (``2024-10-21`` by default;
            ``OPENAI_API_VERSION`` or ``AZURE_OPENAI_API_VERSION``), or ``"v1"`` for
            the v1 API (``"preview"`` adds ``?api-version=preview``).
        api_key: sent as ``api-key`` (``AZURE_OPENAI_API_KEY``).
        azure_ad_token: a Microsoft Entra ID token, sent as ``Authorization: Bearer``
            instead of the key (``AZURE_OPENAI_AD_TOKEN``).
        headers: more headers for every request.
        **options: default call options; ``extra`` keys go into the body.

    The variables are read by
    [`from_env`][mmstream.providers.base.BaseProvider.from_env] and by
    ``"azure:DEPLOYMENT"``. A missing endpoint or credential is reported when a
    call starts.

    Example:
        ``AzureOpenAI(deployment="gpt4o-prod", model="gpt-4o", endpoint="https://x.openai.azure.com")``
    """

    name: ClassVar[str] = "azure"
    environment: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "endpoint": ("AZURE_OPENAI_ENDPOINT",),
        "api_version": ("OPENAI_API_VERSION", "AZURE_OPENAI_API_VERSION"),
        "api_key": ("AZURE_OPENAI_API_KEY",),
        "azure_ad_token": ("AZURE_OPENAI_AD_TOKEN",),
    }

    deployment: str = ""
    model: str = ""
    endpoint: str = field(default="", converter=_to_endpoint)
    api_version: str = DEFAULT_API_VERSION
    api_key: Secret | None = field(default=None, converter=to_secret, repr=False)
    azure_ad_token: Secret | None = field(default=None, converter=to_secret, repr=False)
    headers: Mapping[str, str] = field(factory=dict, converter=to_headers, repr=False)

    def __attrs_post_init__(self) -> None:
        if not self.deployment and not self.model:
            raise ConfigurationError(
                "AzureOpenAI needs a deployment: pass deployment=... or use 'azure:DEPLOYMENT'",
                provider=self.name,
            )
        if not self.deployment:
            object.__setattr__(self, "deployment", self.model)
        if not self.model:
            object.__setattr__(self, "model", self.deployment)

    @property
    def uses_v1_api(self) -> bool:
        """Whether requests go to the v1 API (``/openai/v1/...``) instead of a deployment URL."""
        return self.api_version.strip().lower() in _V1_VERSIONS

    @property
    def metadata(self) -> MultiModalLLMMetadata:
        """The limits of the model behind the deployment (looked up by ``model``)."""
        return openai_metadata(self.model, max_images=AZURE_POLICY.max_images)

    @property
    def image_policy(self) -> ImagePolicy:
        """Azure's documented image limits (``AZURE_POLICY``, defined in this module)."""
        return AZURE_POLICY

    @property
    def api_base(self) -> str:
        """The resource's endpoint."""
        return self.endpoint

    def check(self) -> None:
        """Raise ConfigurationError without an endpoint, or without a key or token."""
        self.require("endpoint", self.endpoint, "an endpoint ('https://RESOURCE.openai.azure.com')")
        if not self.azure_ad_token:
            self.require("api_key", self.api_key, "a credential (api_key, or azure_ad_token)")

    def _url(self) -> str:
        version = self.api_version.strip()
        if self.uses_v1_api:
            url = f"{self.endpoint}/openai/v1/chat/completions"
            return f"{url}?api-version=preview" if version.lower() == "preview" else url
        deployment = quote(self.deployment, safe="")
        return (
            f"{self.endpoint}/openai/deployments/{deployment}/chat/completions"
            f"?api-version={quote(version, safe='')}"
        )

    def _modern(self) -> bool:
        return self.uses_v1_api or self.api_version.strip() >= _FIRST_MODERN_VERSION

    def build_request(self, request: ChatRequest) -> HTTPRequest:
        """The chat request for this deployment, authenticated by token or key.

        Raises:
            ConfigurationError: no endpoint, or neither a key nor a token.
        """
        self.check()
        headers = dict(self.headers)
        if self.azure_ad_token:
            headers["Authorization"] = f"Bearer {self.azure_ad_token.get_secret_value()}"
        elif self.api_key:
            headers["api-key"] = self.api_key.get_secret_value()
        modern = self._modern()
        return HTTPRequest(
            url=self._url(),
            headers=headers,
            json=chat_body(
                request,
                self.name,
                # The v1 API reads the deployment from ``model``; the dated API takes it
                # from the URL and ignores ``model`` (Azure's own SDK sends it anyway).
                model=self.deployment,
                max_tokens_field="max_completion_tokens" if modern else "max_tokens",
                include_usage=modern,
            ),
            timeout=request.options.timeout,
        )

    def new_decoder(self, request: ChatRequest | None = None) -> OpenAIChatDecoder:
        """OpenAI's strict decoder (empty-``choices`` and filter-only chunks are skipped)."""
        return OpenAIChatDecoder(self.name, self.model, max_line=max_line(request))

    def decode_json(self, body: bytes) -> ChatResponse:
        """A ``chat.completion`` JSON body as one chunk (text, tool calls, usage, finish)."""
        return self.new_decoder().whole(body)

    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> APIError:
        """The typed error; ``code: "content_filter"`` is a ContentFilterError."""
        return parse_openai_error(
            self.name, status, headers, body, request_id_header="apim-request-id"
        )
