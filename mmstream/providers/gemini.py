"""Google's Gemini API (generativelanguage), sans-I/O: requests out, SSE chunks in, typed errors.

Wire format: https://ai.google.dev/api/generate-content#method:-models.streamgeneratecontent
(``POST /v1beta/models/{model}:streamGenerateContent?alt=sse``). Each event is a
whole ``GenerateContentResponse``: ``candidates[0].content.parts`` carry the new
text (or a whole ``functionCall``), ``usageMetadata`` is a running snapshot (the
last one wins, never summed), and the last event carries ``finishReason``. The
stream has no end marker: it is complete when a ``finishReason`` was seen and
the body ends. Events are separated by CRLF.
"""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Mapping
from typing import Any, ClassVar, final

from attrs import frozen

from mmstream.content import ChatMessage, ImageBlock, MessageRole, TextBlock
from mmstream.errors import (
    APIError,
    AuthenticationError,
    ContentFilterError,
    InvalidImageError,
    ServerError,
    error_class_for_status,
)
from mmstream.media.policy import MB, ImagePolicy
from mmstream.media.sniff import encoded_form
from mmstream.metadata import MultiModalLLMMetadata
from mmstream.providers.base import (
    APIProvider,
    ResponseBuilder,
    SSEJSONDecoder,
    chat_metadata,
    conversation,
    count,
    default_parse_error,
    error_message_from_body,
    longest_prefix,
    max_line,
    normalize_finish_reason,
    parse_duration,
    parse_retry_after,
    passed_through,
    sampling,
)
from mmstream.request import ChatRequest, HTTPRequest
from mmstream.responses import ChatResponse, Usage
from mmstream.sse import DEFAULT_MAX_LINE

__all__ = [
    "GEMINI_POLICY",
    "Gemini",
    "GeminiDecoder",
]

#: Gemini API. https://ai.google.dev/gemini-api/docs/image-understanding: PNG, JPEG, WEBP,
#: HEIC, HEIF; inline data counts against a 20 MB total request size (text included);
#: up to 3600 images per request; larger images are scaled down to fit 3072x3072.
#: Only Files API URIs are fetched by Gemini, so mmstream downloads http(s) URLs.
#: Its inline base64 must not carry a ``data:`` prefix.
GEMINI_POLICY = ImagePolicy(
    accepted_types=frozenset({"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"}),
    recommended_edge=3072,
    max_images=3600,
    max_request_bytes=19 * MB,  # 20 MB for the whole request: keep 1 MB for the text
    accepts_urls=False,
    # file_data takes Cloud Storage and Files API URIs:
    # https://ai.google.dev/gemini-api/docs/vision#upload-image
    own_urls=("gs://", "https://generativelanguage.googleapis.com/"),
)

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"

#: (model prefix, input token limit, output token limit), from
#: https://ai.google.dev/gemini-api/docs/models. The longest matching prefix wins
#: (``gemini-2.5-flash-lite`` matches ``gemini-2.5-flash``); an unknown model gets
#: the defaults below and is never rejected.
_MODELS: tuple[tuple[str, int, int], ...] = (
    ("gemini-3-pro-image", 65_536, 32_768),
    ("gemini-3", 1_048_576, 65_536),
    ("gemini-2.5-flash-image", 32_768, 32_768),
    ("gemini-2.5-pro", 1_048_576, 65_536),
    ("gemini-2.5-flash", 1_048_576, 65_536),
    ("gemini-2.0-flash", 1_048_576, 8_192),
    ("gemini-1.5-pro", 2_097_152, 8_192),
    ("gemini-1.5-flash", 1_048_576, 8_192),
    ("gemini-flash-latest", 1_048_576, 65_536),
    ("gemini-flash-lite-latest", 1_048_576, 65_536),
    ("gemini-pro-latest", 1_048_576, 65_536),
    ("gemma-3", 131_072, 8_192),
)
_DEFAULT_LIMITS = (1_048_576, 8_192)

#: ``extra`` keys that belong at the top of the request; every other key is a
#: ``generationConfig`` field (``topK``, ``seed``, ``thinkingConfig``, ...).
#: https://ai.google.dev/api/generate-content#request-body
_TOP_LEVEL = frozenset(
    {
        "tools",
        "toolConfig",
        "tool_config",
        "safetySettings",
        "safety_settings",
        "cachedContent",
        "cached_content",
        "labels",
    }
)
_GENERATION_CONFIG = frozenset({"generationConfig", "generation_config"})
#: ``ErrorInfo.reason`` values of a bad key: Gemini answers them with HTTP 400.
_AUTH_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED"})
_BAD_KEY_MESSAGE = "API key not valid"


#: portable options and their names in ``generationConfig``.
_SAMPLING = {
    "temperature": "temperature",
    "top_p": "topP",
    "max_tokens": "maxOutputTokens",
    "stop": "stopSequences",
}


def _limits(model: str) -> tuple[int, int]:
    best = longest_prefix(_MODELS, model)
    return _DEFAULT_LIMITS if best is None else (best[1], best[2])


@final
@frozen(kw_only=True)
class Gemini(APIProvider):
    """Gemini through the Gemini API (``"gemini:MODEL"``).

    Args:
        model: the model (``"gemini-2.5-flash"``; ``"models/..."`` and
            ``"tunedModels/..."`` are taken as they are).
        api_key: the key (``GEMINI_API_KEY`` or ``GOOGLE_API_KEY``, read by
            [`from_env`][mmstream.providers.base.BaseProvider.from_env] and
            ``"gemini:MODEL"``).
        base_url: the API root, without the version,
            ``https://generativelanguage.googleapis.com`` (``GEMINI_BASE_URL`` or
            ``GOOGLE_GEMINI_BASE_URL``, the variable of Google's own SDK).
        api_version: the path version, ``"v1beta"`` by default (``GOOGLE_GENAI_API_VERSION``).
        **options: default call options; ``extra`` keys go to ``generationConfig``
            (``topK``, ``seed``, ``thinkingConfig``, ``responseMimeType``, ...), except
            ``tools``, ``toolConfig``, ``safetySettings``, ``cachedContent`` and ``labels``,
            which go to the top of the request.

    Example:
        ``MultiModalLLM(Gemini(model="gemini-2.5-flash", temperature=0.2))``
    """

    name: ClassVar[str] = "gemini"
    environment: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "api_key": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
        "base_url": ("GEMINI_BASE_URL", "GOOGLE_GEMINI_BASE_URL"),
        "api_version": ("GOOGLE_GENAI_API_VERSION",),
    }

    DEFAULT_BASE_URL: ClassVar[str] = DEFAULT_BASE_URL

    api_version: str = "v1beta"

    @property
    def metadata(self) -> MultiModalLLMMetadata:
        """The model's input and output token limits (by model-name prefix)."""
        return chat_metadata(self.model, *_limits(self.model), GEMINI_POLICY.max_images or 3600)

    @property
    def image_policy(self) -> ImagePolicy:
        """Gemini's documented image limits (``GEMINI_POLICY``, defined in this module)."""
        return GEMINI_POLICY

    def build_request(self, request: ChatRequest) -> HTTPRequest:
        """The ``streamGenerateContent?alt=sse`` request for a call.

        Raises:
            ConfigurationError: no API key (``GEMINI_API_KEY`` / ``GOOGLE_API_KEY``).
            InvalidRequestError: an image in the system instruction, or not loaded.
        """
        api_key = self.key()
        options = request.options
        texts, contents = conversation(
            request, _content, system_in="the system instruction", provider="Gemini"
        )
        system = [{"text": text} for text in texts if text]
        config = sampling(options, _SAMPLING)
        body: dict[str, Any] = {"contents": contents}
        if system:
            body["system_instruction"] = {"parts": system}
        for key, value in passed_through(options):
            if key in _TOP_LEVEL:
                body[key] = value
            elif key in _GENERATION_CONFIG and isinstance(value, Mapping):
                config.update(value)
            else:
                config[key] = value
        if config:
            body["generationConfig"] = config
        path = self.model if "/" in self.model else f"models/{self.model}"
        return HTTPRequest(
            url=f"{self.base_url}/{self.api_version}/{path}:streamGenerateContent?alt=sse",
            headers={
                "x-goog-api-key": api_key,
                "content-type": "application/json",
            },
            json=body,
            stream_format="sse",
            timeout=options.timeout,
        )

    def new_decoder(self, request: ChatRequest | None = None) -> GeminiDecoder:
        """A decoder for one call's event stream."""
        return GeminiDecoder(self.model, max_line=max_line(request))

    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> APIError:
        """The typed error for an HTTP error response.

        ``{"error": {"code", "message", "status", "details": [...]}}``
        (https://ai.google.dev/gemini-api/docs/troubleshooting). A bad key is HTTP 400
        with ``ErrorInfo.reason == "API_KEY_INVALID"``:
        [`AuthenticationError`][mmstream.errors.AuthenticationError]. ``RetryInfo.retryDelay``
        (``"30s"``) gives ``retry_after`` when no ``Retry-After`` header does.
        """
        message, _, code, data = error_message_from_body(body)
        reason, delay = _details(data)
        cls = None
        if reason in _AUTH_REASONS or (
            reason is None and status == 400 and message.startswith(_BAD_KEY_MESSAGE)
        ):
            # A body stripped of its details (by a proxy) still says what it is.
            cls = AuthenticationError
        retry_after = parse_retry_after(headers)
        return default_parse_error(
            self.name,
            status,
            headers,
            body,
            cls=cls,
            code=reason or code,
            retry_after=delay if retry_after is None else retry_after,
        )


def _details(data: Any) -> tuple[str | None, float | None]:
    """(``ErrorInfo.reason``, ``RetryInfo.retryDelay`` in seconds) of a Google error body."""
    if isinstance(data, list) and data:
        data = data[0]
    error = data.get("error") if isinstance(data, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    reason: str | None = None
    delay: float | None = None
    for detail in details if isinstance(details, list) else ():
        if not isinstance(detail, dict):
            continue
        if reason is None and isinstance(detail.get("reason"), str):
            reason = detail["reason"]
        if delay is None and isinstance(detail.get("retryDelay"), str):
            delay = parse_duration(detail["retryDelay"])
    return reason, delay


def _content(message: ChatMessage, image_index: int) -> tuple[dict[str, Any], int]:
    """One message as a Gemini ``Content`` (role ``user`` or ``model``)."""
    extras = message.additional_kwargs
    if message.role is MessageRole.TOOL:
        # https://ai.google.dev/gemini-api/docs/function-calling: the result goes back
        # as a functionResponse part in a user turn.
        response: dict[str, Any] = {
            "name": extras.get("name") or extras.get("tool_name"),
            "response": _tool_response(message.content),
        }
        if extras.get("tool_call_id"):
            response["id"] = extras["tool_call_id"]
        return {"role": "user", "parts": [{"functionResponse": response}]}, image_index
    role = "model" if message.role is MessageRole.ASSISTANT else "user"
    parts: list[dict[str, Any]] = []
    for block in message.blocks:
        if isinstance(block, TextBlock):
            if block.text:
                parts.append({"text": block.text})
            continue
        parts.append(_image(block, image_index))
        image_index += 1
    if role == "model":
        for call in extras.get("tool_calls") or ():
            arguments = call.get("arguments")
            if isinstance(arguments, str):
                arguments = _tool_response(arguments)
            parts.append({"functionCall": {"name": call.get("name"), "args": arguments or {}}})
    return {"role": role, "parts": parts or [{"text": ""}]}, image_index


def _tool_response(text: str | None) -> Any:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {"result": text}
    return value if isinstance(value, dict) else {"result": value}


def _image(block: ImageBlock, index: int) -> dict[str, Any]:
    """An image part: ``inline_data`` for bytes, ``file_data`` for a URI.

    https://ai.google.dev/gemini-api/docs/image-understanding: inline data is bare
    base64 (no ``data:`` prefix). URLs are downloaded by mmstream before this
    (the policy says ``accepts_urls=False``); what is left here is a Files API,
    ``gs://`` or other URI that Gemini reads itself.
    """
    if block.image is not None:
        encoded = encoded_form(block, provider="gemini", index=index)
        return {
            "inline_data": {
                "mime_type": encoded.mimetype,
                "data": encoded.base64,
            }
        }
    if block.url is not None:
        data: dict[str, Any] = {"file_uri": block.url}
        guessed = block.image_mimetype or mimetypes.guess_type(block.url.split("?")[0])[0]
        if guessed:
            data["mime_type"] = guessed
        return {"file_data": data}
    raise InvalidImageError(
        f"image {index + 1} ({block.path}) was not loaded; send it through MultiModalLLM, "
        "which reads image files off the event loop",
        image_index=index,
        provider="gemini",
    )


@final
class GeminiDecoder(SSEJSONDecoder):
    """Gemini's SSE stream into chunks.

    Text parts become text chunks; ``"thought": true`` parts are the model's
    thinking, not its answer, and are skipped (their tokens are counted in
    ``usage.reasoning_tokens``). A prompt blocked by ``promptFeedback.blockReason``,
    or a candidate stopped for safety, raises
    [`ContentFilterError`][mmstream.errors.ContentFilterError] with the text
    received so far. The final chunk comes at the end of the body, since only the
    end says that nothing follows the ``finishReason``. A whole response (or the
    JSON array ``streamGenerateContent`` sends without ``alt=sse``) decodes as
    one chunk.
    """

    __slots__ = ("_last",)

    end = "a finishReason"

    def __init__(self, model: str | None = None, *, max_line: int = DEFAULT_MAX_LINE) -> None:
        super().__init__(ResponseBuilder("gemini", model), max_line=max_line)
        self._last: dict[str, Any] | None = None

    def _at_end(self) -> ChatResponse | None:
        builder = self._builder
        return None if builder.finish_reason is None else builder.finish(self._last)

    def event(self, payload: dict[str, Any], name: str, out: list[ChatResponse]) -> None:
        """One ``GenerateContentResponse``: text and calls, the usage so far, a block, an error."""
        builder = self._builder
        self._last = payload
        if payload.get("error") is not None:
            raise self._error(payload)
        if isinstance(payload.get("modelVersion"), str):
            builder.model = payload["modelVersion"]
        usage = payload.get("usageMetadata")
        if isinstance(usage, dict):
            builder.usage = _usage(usage)  # a running snapshot: the last one wins
        feedback = payload.get("promptFeedback")
        if isinstance(feedback, dict) and feedback.get("blockReason"):
            raise self._blocked(
                f"Gemini blocked the prompt ({feedback['blockReason']})",
                str(feedback["blockReason"]),
                payload,
            )
        candidates = payload.get("candidates")
        if isinstance(candidates, list) and candidates:
            self._candidate(candidates[0], payload, out)

    def _candidate(self, candidate: Any, payload: dict[str, Any], out: list[ChatResponse]) -> None:
        if not isinstance(candidate, dict):
            return
        builder = self._builder
        content = candidate.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        for part in parts if isinstance(parts, list) else ():
            if not isinstance(part, dict) or part.get("thought"):
                continue
            text = part.get("text")
            if isinstance(text, str):
                if text:
                    out.append(builder.text(text, payload))
                continue
            call = part.get("functionCall")
            if isinstance(call, dict) and call.get("name"):
                call_id = call.get("id")
                builder.tool_call(
                    id=call_id if isinstance(call_id, str) else None,
                    name=str(call["name"]),
                    arguments=call.get("args") or {},
                )
        reason = candidate.get("finishReason")
        if isinstance(reason, str) and reason:
            builder.finish_reason = reason
            if normalize_finish_reason(reason) == "content_filter":
                raise self._blocked(f"Gemini stopped the answer ({reason})", reason, payload)

    def _blocked(self, message: str, reason: str, payload: dict[str, Any]) -> ContentFilterError:
        return ContentFilterError(
            message,
            status=200,
            provider="gemini",
            code=reason,
            body=json.dumps(payload)[:4096],
            partial=self._builder.snapshot(payload),
        )

    def _error(self, payload: dict[str, Any]) -> APIError:
        error = payload["error"]
        if not isinstance(error, dict):
            error = {"message": str(error)}
        code = error.get("code")
        cls: type[APIError] = ServerError
        if isinstance(code, int) and code >= 400:
            cls = error_class_for_status(code)
        reason, delay = _details(payload)
        if reason in _AUTH_REASONS:
            cls = AuthenticationError
        status_name = error.get("status")
        return cls(
            str(error.get("message") or status_name or "error event"),
            status=200,
            provider="gemini",
            type=None if status_name is None else str(status_name),
            code=reason or (None if code is None else str(code)),
            retry_after=delay,
            body=json.dumps(payload)[:4096],
            partial=self._builder.snapshot(payload),
        )


def _usage(usage: dict[str, Any]) -> Usage:
    """``usageMetadata`` as [`Usage`][mmstream.Usage]; thinking tokens are counted apart."""
    return Usage(
        input_tokens=count(usage.get("promptTokenCount")),
        output_tokens=count(usage.get("candidatesTokenCount")),
        total_tokens=count(usage.get("totalTokenCount")),
        cache_read_tokens=count(usage.get("cachedContentTokenCount")),
        reasoning_tokens=count(usage.get("thoughtsTokenCount")),
    )
