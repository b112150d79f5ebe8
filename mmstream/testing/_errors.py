"""The providers' errors, rendered to bytes: error bodies, in-stream error events, broken frames.

Pure functions (no I/O), shared by the stream renderer (``_formats``) and the
server. The bodies follow each provider's documentation (see ``_formats``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Literal

__all__ = [
    "API",
    "auth_problem",
    "error_body",
    "error_frame",
    "html_error_body",
    "malformed_frame",
    "reason_phrase",
]

API = Literal["openai", "azure", "anthropic", "gemini", "ollama"]

#: compact JSON text (what the providers send).
_dumps: Callable[[Any], str] = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), check_circular=False
).encode

_AZURE_FILTER = {
    "hate": {"filtered": False, "severity": "safe"},
    "self_harm": {"filtered": False, "severity": "safe"},
    "sexual": {"filtered": False, "severity": "safe"},
    "violence": {"filtered": False, "severity": "safe"},
}


def _sse(event: str, data: str) -> bytes:
    return f"event: {event}\ndata: {data}\n\n".encode()


_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    409: "Conflict",
    413: "Request Entity Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    529: "Site is overloaded",
}


def reason_phrase(status: int) -> str:
    """The status line's reason phrase."""
    return _REASONS.get(status, "OK" if status < 300 else "Error")


_OPENAI_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request: check the request body."),
    401: (
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
    ),
    403: (
        "invalid_request_error",
        "unsupported_country_region_territory",
        "Country, region, or territory not supported",
    ),
    404: (
        "invalid_request_error",
        "model_not_found",
        "The model does not exist or you do not have access to it.",
    ),
    413: ("invalid_request_error", "request_too_large", "Request too large."),
    429: (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests. Please try again in 1s.",
    ),
    500: (
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}

_ANTHROPIC_ERRORS: dict[int, tuple[str, str]] = {
    400: (
        "invalid_request_error",
        "There was an issue with the format or content of your request.",
    ),
    401: ("authentication_error", "invalid x-api-key"),
    403: (
        "permission_error",
        "Your API key does not have permission to use the specified resource.",
    ),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "This request would exceed the rate limit for your organization."),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timed out"),
    529: ("overloaded_error", "Overloaded"),
}

_GEMINI_ERRORS: dict[int, tuple[str, str]] = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "Request had invalid authentication credentials."),
    403: ("PERMISSION_DENIED", "The caller does not have permission"),
    404: ("NOT_FOUND", "Requested entity was not found."),
    409: ("ABORTED", "The operation was aborted."),
    413: ("INVALID_ARGUMENT", "Request payload size exceeds the limit."),
    429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    500: (
        "INTERNAL",
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
    ),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "The request timed out. Please try again."),
}

_OLLAMA_ERRORS: dict[int, str] = {
    400: "invalid request",
    404: "model not found, try pulling it first",
    429: "server busy, please try again.  maximum pending requests exceeded",
    500: "an error was encountered while running the model",
    503: "server busy, please try again.  maximum pending requests exceeded",
}


def _nearest(table: Mapping[int, Any], status: int) -> Any:
    if status in table:
        return table[status]
    return table[500] if status >= 500 else table[400]


def error_body(
    api: API,
    status: int,
    message: str | None = None,
    *,
    error_type: str | None = None,
    retry_delay: str | None = None,
) -> dict[str, Any]:
    """The provider's JSON error body for ``status``.

    ``error_type`` replaces the type: OpenAI's ``type`` and ``code`` (e.g.
    ``"insufficient_quota"``), Azure's ``code`` (e.g. ``"content_filter"``),
    Anthropic's ``error.type``, Gemini's ``status``.
    """
    if api == "openai":
        kind, code, default = _nearest(_OPENAI_ERRORS, status)
        if error_type is not None:
            kind = code = error_type
        return {"error": {"message": message or default, "type": kind, "param": None, "code": code}}
    if api == "azure":
        _, _, default = _nearest(_OPENAI_ERRORS, status)
        if status == 429 and message is None:
            default = (
                "Requests to the ChatCompletions_Create Operation under Azure OpenAI API "
                "have exceeded token rate limit of your current pricing tier. Please retry "
                f"after {retry_delay or '30'} seconds."
            )
        if status == 401 and message is None:
            default = (
                "Access denied due to invalid subscription key or wrong API endpoint. Make "
                "sure to provide a valid key for an active subscription and use a correct "
                "regional API endpoint for your resource."
            )
        error: dict[str, Any] = {"code": error_type or str(status), "message": message or default}
        if error_type == "content_filter":
            error.update(
                {
                    "message": message
                    or "The response was filtered due to the prompt triggering Azure OpenAI's "
                    "content management policy.",
                    "param": "prompt",
                    "type": None,
                    "status": status,
                    "innererror": {
                        "code": "ResponsibleAIPolicyViolation",
                        "content_filter_result": {
                            **_AZURE_FILTER,
                            "violence": {"filtered": True, "severity": "high"},
                        },
                    },
                }
            )
        return {"error": error}
    if api == "anthropic":
        kind, default = _nearest(_ANTHROPIC_ERRORS, status)
        return {
            "type": "error",
            "error": {"type": error_type or kind, "message": message or default},
        }
    if api == "gemini":
        name, default = _nearest(_GEMINI_ERRORS, status)
        details: list[dict[str, Any]] = []
        if status == 429:
            details = [
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [
                        {
                            "quotaMetric": "generativelanguage.googleapis.com/"
                            "generate_content_free_tier_requests",
                            "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                        }
                    ],
                },
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": f"{retry_delay or '30'}s",
                },
            ]
        body: dict[str, Any] = {
            "code": status,
            "message": message or default,
            "status": error_type or name,
        }
        if details:
            body["details"] = details
        return {"error": body}
    return {"error": message or _nearest(_OLLAMA_ERRORS, status)}


def html_error_body(status: int) -> bytes:
    """The HTML page a reverse proxy (nginx) sends for an error status."""
    title = f"{status} {reason_phrase(status)}"
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    ).encode()


_IN_STREAM_STATUS = {"openai": 500, "azure": 500, "anthropic": 529, "gemini": 503, "ollama": 500}


def error_frame(api: API, sse: bool, status: int | None, message: str | None) -> bytes:
    """The provider's in-stream error event (sent inside a 200 response)."""
    code = status or _IN_STREAM_STATUS[api]
    if api == "anthropic":
        body = error_body(api, code, message)
        return _sse("error", _dumps(body))
    if api == "ollama":
        text = message or (
            "an error was encountered while running the model"
            if code != 529
            else "server overloaded"
        )
        return f"{_dumps({'error': text})}\n".encode()
    if api == "gemini":
        data = _dumps(error_body(api, code, message))
        return f"data: {data}\r\n\r\n".encode() if sse else f",\r\n{data}".encode()
    return f"data: {_dumps(error_body('openai', code, message))}\n\n".encode()


def malformed_frame(api: API, sse: bool) -> bytes:
    """An event whose JSON is cut short (a truncated write by a broken proxy)."""
    if api == "anthropic":
        return (
            b"event: content_block_delta\n"
            b'data: {"type":"content_block_delta","index":0,"delta":{\n\n'
        )
    if api == "ollama":
        return b'{"model":"broken","message":{"role":"assistant","content":\n'
    if api == "gemini":
        return b'data: {"candidates":[{"content":\r\n\r\n' if sse else b',\r\n{"candidates":[{'
    return b'data: {"id":"chatcmpl-broken","choices":[{"delta":\n\n'


def auth_problem(
    api: API,
    deployment: str | None,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    expected: str | None,
) -> tuple[int, str] | None:
    """The provider's answer to a missing or wrong key or header, or ``None`` if all is well."""

    def check(
        key: str | None, missing: tuple[int, str], wrong: tuple[int, str]
    ) -> tuple[int, str] | None:
        if not key:
            return missing
        if expected is not None and key != expected:
            return wrong
        return None

    bearer = headers.get("authorization", "")
    token = bearer[7:].strip() if bearer[:7].lower() == "bearer " else None
    if api == "openai":
        return check(
            token,
            (
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            ),
            (
                401,
                "Incorrect API key provided. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
            ),
        )
    if api == "azure":
        if deployment is not None and "api-version" not in query:
            return 404, "Resource not found"
        wrong = (
            401,
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure "
            "to provide a valid key for an active subscription and use a correct regional "
            "API endpoint for your resource.",
        )
        return check(headers.get("api-key") or token, wrong, wrong)
    if api == "anthropic":
        problem = check(
            headers.get("x-api-key"),
            (401, "x-api-key header is required"),
            (401, "invalid x-api-key"),
        )
        if problem is None and not headers.get("anthropic-version"):
            return 400, "anthropic-version: header is required"
        return problem
    if api == "gemini":
        return check(
            headers.get("x-goog-api-key") or query.get("key"),
            (
                403,
                "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity to "
                "call this API.",
            ),
            (400, "API key not valid. Please pass a valid API key."),
        )
    return None
