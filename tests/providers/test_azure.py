"""Azure OpenAI provider: Azure's URLs, keys and content-filter chunks, bytes in and chunks out."""

from __future__ import annotations

import base64
import importlib
import io
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from PIL import Image

import mmstream as mm
from mmstream.errors import (
    AuthenticationError,
    ConfigurationError,
    ContentFilterError,
    IncompleteStreamError,
    NotFoundError,
    RateLimitError,
)
from mmstream.providers.azure import AzureOpenAI
from mmstream.providers.openai import OpenAIChatDecoder
from mmstream.request import ChatRequest
from mmstream.responses import ChatResponse, Usage

ENDPOINT = "https://myres.openai.azure.com"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "AZURE_OPENAI_ENDPOINT",
        "AZURE_OPENAI_API_KEY",
        "AZURE_OPENAI_AD_TOKEN",
        "OPENAI_API_VERSION",
        "AZURE_OPENAI_API_VERSION",
    ):
        monkeypatch.delenv(name, raising=False)


def azure(**kwargs: Any) -> AzureOpenAI:
    values: dict[str, Any] = {"deployment": "gpt4o-prod", "endpoint": ENDPOINT, "api_key": "az-key"}
    values.update(kwargs)
    return AzureOpenAI(**values)


def chat(provider: Any, messages: list[mm.ChatMessage], **options: Any) -> ChatRequest:
    return ChatRequest(
        messages=messages, options=provider.options.merge(**options), provider=provider
    )


def user(text: str) -> mm.ChatMessage:
    return mm.ChatMessage(role="user", content=text)


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (3, 3), (0, 200, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


# --- requests, checked against the official SDK's AzureOpenAI client ----------------------


def sdk_request(call: Callable[[Any], Any], **client_kwargs: Any) -> dict[str, Any]:
    openai = pytest.importorskip("openai")
    http = sys.modules.get("httpx2") or importlib.import_module("httpx")
    seen: dict[str, Any] = {}

    def handler(request: Any) -> Any:
        seen["url"] = str(request.url)
        seen["headers"] = {k.lower(): v for k, v in request.headers.items()}
        seen["json"] = json.loads(request.content)
        return http.Response(
            200, headers={"content-type": "text/event-stream"}, content=b"data: [DONE]\n\n"
        )

    factory = client_kwargs.pop("factory", openai.AzureOpenAI)
    client = factory(
        http_client=http.Client(transport=http.MockTransport(handler)), **client_kwargs
    )
    for _ in call(client):
        pass
    client.close()
    return seen


def ours(provider: AzureOpenAI, messages: list[mm.ChatMessage], **options: Any) -> dict[str, Any]:
    http = provider.build_request(chat(provider, messages, **options))
    return {
        "url": http.url,
        "headers": {k.lower(): v for k, v in http.headers.items()},
        "json": http.json,
    }


SDK_AZURE = {"api_key": "az-key", "api_version": "2024-10-21", "azure_endpoint": ENDPOINT}


def create(model: str, messages: list[dict[str, Any]], **kwargs: Any) -> Callable[[Any], Any]:
    return lambda c: c.chat.completions.create(
        model=model,
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
        **kwargs,
    )


def test_text_only_request_matches_the_sdk() -> None:
    mine = ours(azure(), [user("Hi")])
    sdk = sdk_request(create("gpt4o-prod", [{"role": "user", "content": "Hi"}]), **SDK_AZURE)
    assert (
        mine["url"]
        == sdk["url"]
        == (f"{ENDPOINT}/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21")
    )
    assert mine["json"] == sdk["json"]
    assert mine["headers"]["api-key"] == sdk["headers"]["api-key"] == "az-key"
    assert "authorization" not in mine["headers"]


def test_base64_image_request_is_a_data_url_and_matches_the_sdk() -> None:
    data = png()
    message = mm.ChatMessage(
        role="user",
        blocks=[mm.TextBlock("What colour?"), mm.ImageBlock(image=data, detail="low")],
    )
    mine = ours(azure(), [message], max_tokens=30)
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    content = [
        {"type": "text", "text": "What colour?"},
        {"type": "image_url", "image_url": {"url": url, "detail": "low"}},
    ]
    sdk = sdk_request(
        create("gpt4o-prod", [{"role": "user", "content": content}], max_completion_tokens=30),
        **SDK_AZURE,
    )
    assert mine["json"] == sdk["json"]
    assert mine["url"] == sdk["url"]


def test_url_image_request_matches_the_sdk() -> None:
    message = mm.ChatMessage(role="user", blocks=[mm.ImageBlock(url="https://x.test/a.png")])
    mine = ours(azure(), [message])
    content = [{"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}]
    sdk = sdk_request(create("gpt4o-prod", [{"role": "user", "content": content}]), **SDK_AZURE)
    assert mine["json"] == sdk["json"]


def test_system_and_multi_turn_with_entra_token_matches_the_sdk() -> None:
    messages = [
        mm.ChatMessage(role="system", content="Answer in French."),
        user("Hello"),
        mm.ChatMessage(role="assistant", content="Bonjour"),
        user("Thanks"),
    ]
    mine = ours(azure(api_key=None, azure_ad_token="eyJ-token"), messages, temperature=0.0)
    wire = [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Bonjour"},
        {"role": "user", "content": "Thanks"},
    ]
    sdk = sdk_request(
        create("gpt4o-prod", wire, temperature=0.0),
        azure_ad_token="eyJ-token",
        api_version="2024-10-21",
        azure_endpoint=ENDPOINT,
    )
    assert mine["json"] == sdk["json"]
    assert mine["headers"]["authorization"] == sdk["headers"]["authorization"] == "Bearer eyJ-token"
    assert "api-key" not in mine["headers"]


def test_v1_api_path_puts_the_deployment_in_model() -> None:
    provider = azure(api_version="v1")
    assert provider.uses_v1_api
    mine = ours(provider, [user("Hi")])
    openai = pytest.importorskip("openai")
    sdk = sdk_request(
        create("gpt4o-prod", [{"role": "user", "content": "Hi"}]),
        factory=openai.OpenAI,
        api_key="az-key",
        base_url=f"{ENDPOINT}/openai/v1/",
    )
    assert mine["url"] == sdk["url"] == f"{ENDPOINT}/openai/v1/chat/completions"
    assert mine["json"] == sdk["json"]
    assert mine["json"]["model"] == "gpt4o-prod"
    assert mine["headers"]["api-key"] == "az-key"
    preview = azure(api_version="preview").build_request(chat(azure(), [user("x")]))
    assert preview.url == f"{ENDPOINT}/openai/v1/chat/completions?api-version=preview"


def test_older_api_versions_get_max_tokens_and_no_stream_options() -> None:
    body = (
        azure(api_version="2024-06-01").build_request(chat(azure(), [user("x")], max_tokens=5)).json
    )
    assert body["max_tokens"] == 5
    assert "max_completion_tokens" not in body
    assert "stream_options" not in body


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://envres.openai.azure.com/openai/")
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "env-key")
    monkeypatch.setenv("OPENAI_API_VERSION", "2025-04-01-preview")
    provider = AzureOpenAI.from_env(deployment="dep")
    http = provider.build_request(chat(provider, [user("x")]))
    assert http.url == (
        "https://envres.openai.azure.com/openai/deployments/dep/chat/completions"
        "?api-version=2025-04-01-preview"
    )
    assert http.headers["api-key"] == "env-key"


def test_string_form_and_model_for_metadata() -> None:
    llm = mm.MultiModalLLM("azure:my-4o", endpoint=ENDPOINT, api_key="k")
    assert isinstance(llm.provider, AzureOpenAI)
    assert (llm.provider.deployment, llm.provider.model) == ("my-4o", "my-4o")
    named = AzureOpenAI(deployment="prod-east", model="gpt-4.1", endpoint=ENDPOINT, api_key="k")
    assert named.metadata.context_window == 1_047_576
    assert named.metadata.num_input_files == 50
    assert named.image_policy.max_images == 50
    with pytest.raises(ConfigurationError, match="deployment"):
        AzureOpenAI(endpoint=ENDPOINT, api_key="k")


def test_missing_endpoint_or_credential_fails_at_build_request() -> None:
    no_endpoint = AzureOpenAI(deployment="d", api_key="k")
    with pytest.raises(ConfigurationError, match="AZURE_OPENAI_ENDPOINT"):
        no_endpoint.build_request(chat(no_endpoint, [user("x")]))
    no_key = AzureOpenAI(deployment="d", endpoint=ENDPOINT)
    with pytest.raises(ConfigurationError, match="AZURE_OPENAI_API_KEY"):
        no_key.build_request(chat(no_key, [user("x")]))


def test_secrets_never_show() -> None:
    provider = azure(api_key="az-secret-1", azure_ad_token="tok-secret-2")
    for text in (repr(provider), repr(provider.build_request(chat(provider, [user("x")])))):
        assert "az-secret-1" not in text and "tok-secret-2" not in text


# --- Azure's stream, at every split point ---------------------------------------------

FILTERS = {
    "hate": {"filtered": False, "severity": "safe"},
    "self_harm": {"filtered": False, "severity": "safe"},
    "sexual": {"filtered": False, "severity": "safe"},
    "violence": {"filtered": False, "severity": "safe"},
}


def azure_chunk(content: str | None = None, finish: str | None = None, **extra: Any) -> str:
    choice: dict[str, Any] = {
        "content_filter_results": FILTERS,
        "finish_reason": finish,
        "index": 0,
        "logprobs": None,
    }
    if content is not None or extra.get("role"):
        delta: dict[str, Any] = {"content": content}
        if extra.get("role"):
            delta["role"] = extra["role"]
        choice["delta"] = delta
    elif finish is not None:
        choice["delta"] = {}
    return json.dumps(
        {
            "choices": [choice],
            "created": 1736407895,
            "id": "chatcmpl-Az1",
            "model": "gpt-4o-2024-11-20",
            "object": "chat.completion.chunk",
            "system_fingerprint": "fp_az",
            "usage": None,
        }
    )


#: As Azure sends it: the prompt-filter chunk with empty choices and empty model, text
#: chunks carrying content_filter_results, the finish, an asynchronous-filter
#: annotation chunk without a delta, the usage chunk, [DONE].
AZURE_WIRE = "".join(
    f"data: {event}\n\n"
    for event in [
        json.dumps(
            {
                "choices": [],
                "created": 0,
                "id": "",
                "model": "",
                "object": "",
                "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": FILTERS}],
            }
        ),
        azure_chunk("", role="assistant"),
        azure_chunk("Bonjour"),
        azure_chunk(" à tous"),
        azure_chunk(finish="stop"),
        json.dumps(
            {
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": None,
                        "content_filter_results": FILTERS,
                        "content_filter_offsets": {
                            "check_offset": 0,
                            "start_offset": 0,
                            "end_offset": 16,
                        },
                    }
                ],
                "created": 0,
                "id": "",
                "model": "",
                "object": "",
                "usage": None,
            }
        ),
        json.dumps(
            {
                "choices": [],
                "created": 1736407895,
                "id": "chatcmpl-Az1",
                "model": "gpt-4o-2024-11-20",
                "object": "chat.completion.chunk",
                "usage": {
                    "completion_tokens": 4,
                    "prompt_tokens": 9,
                    "total_tokens": 13,
                    "prompt_tokens_details": {"cached_tokens": 0},
                    "completion_tokens_details": {"reasoning_tokens": 0},
                },
            }
        ),
        "[DONE]",
    ]
).encode()


def decode(make: Callable[[], OpenAIChatDecoder], pieces: list[bytes]) -> list[ChatResponse]:
    decoder = make()
    out: list[ChatResponse] = []
    for piece in pieces:
        out += decoder.feed(piece)
    return out + decoder.flush()


def every_split(body: bytes) -> Iterator[list[bytes]]:
    yield [body]
    yield [body[i : i + 1] for i in range(len(body))]
    for i in range(len(body) + 1):
        yield [body[:i], body[i:]]


def decoder() -> OpenAIChatDecoder:
    return azure().new_decoder(None)


def test_azure_stream_at_every_split_point() -> None:
    for pieces in every_split(AZURE_WIRE):
        chunks = decode(decoder, pieces)
        assert [c.delta for c in chunks] == ["Bonjour", " à tous", ""]
        final = chunks[-1]
        assert final.text == "Bonjour à tous"
        assert final.finish_reason == "stop"
        assert final.usage == Usage(
            input_tokens=9,
            output_tokens=4,
            total_tokens=13,
            cache_read_tokens=0,
            reasoning_tokens=0,
        )
        assert final.additional_kwargs["model"] == "gpt-4o-2024-11-20"  # "" never replaces it


def test_content_filter_finish_reason() -> None:
    body = f"data: {azure_chunk('Some')}\n\ndata: {azure_chunk(finish='content_filter')}\n\n"
    final = decode(decoder, [(body + "data: [DONE]\n\n").encode()])[-1]
    assert final.finish_reason == "content_filter"
    assert final.additional_kwargs["provider_finish_reason"] == "content_filter"
    assert final.text == "Some"


def test_azure_stream_without_done_is_incomplete() -> None:
    cut = AZURE_WIRE[: AZURE_WIRE.index(b"data: [DONE]")]
    with pytest.raises(IncompleteStreamError) as info:
        decode(decoder, [cut])
    assert info.value.partial is not None and info.value.partial.text == "Bonjour à tous"


# --- errors ------------------------------------------------------------------------------


def test_content_filter_400_is_a_content_filter_error_with_apim_request_id() -> None:
    body = json.dumps(
        {
            "error": {
                "message": "The response was filtered due to the prompt triggering Azure "
                "OpenAI's content management policy.",
                "type": None,
                "param": "prompt",
                "code": "content_filter",
                "status": 400,
                "innererror": {"code": "ResponsibleAIPolicyViolation"},
            }
        }
    ).encode()
    headers = {"apim-request-id": "apim-1", "x-request-id": "x-1"}
    error = azure().parse_error(400, headers, body)
    assert isinstance(error, ContentFilterError)
    assert error.code == "content_filter"
    assert error.request_id == "apim-1"
    assert "content management policy" in error.message


@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (
            401,
            {
                "error": {
                    "code": "401",
                    "message": "Access denied due to invalid subscription key.",
                }
            },
            AuthenticationError,
        ),
        (404, {"error": {"code": "DeploymentNotFound", "message": "No deployment"}}, NotFoundError),
        (
            429,
            {"error": {"code": "429", "message": "Requests have exceeded the rate limit."}},
            RateLimitError,
        ),
    ],
)
def test_azure_errors(status: int, body: dict[str, Any], cls: type[Exception]) -> None:
    error = azure().parse_error(
        status, {"apim-request-id": "r-9", "retry-after-ms": "2500"}, json.dumps(body).encode()
    )
    assert type(error) is cls
    assert error.request_id == "r-9"
    assert error.message == body["error"]["message"]
    if status == 429:
        assert error.retry_after == 2.5
