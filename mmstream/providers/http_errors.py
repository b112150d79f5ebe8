"""Reading an API's error response: message, type, code, request id and when to retry.

Shared by every provider's ``parse_error`` (and its in-stream error events):
the common JSON shapes (``{"error": {"message", "type", "code"}}``, Ollama's
``{"error": "text"}``, a proxy's HTML page), ``Retry-After`` in seconds, as a
date or in milliseconds, Go-style durations (``"6m0s"``), request-id headers.
Pure: no I/O.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
import time
from collections.abc import Mapping
from typing import Any

from mmstream.errors import APIError, QuotaExceededError, error_class_for_status

__all__ = [
    "default_parse_error",
    "error_message_from_body",
    "parse_duration",
    "parse_retry_after",
    "request_id_from_headers",
]


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)(ms|h|m|s))")


def parse_duration(value: str) -> float | None:
    """Seconds in a duration such as ``"6m0s"``, ``"1.5s"``, ``"20ms"`` or ``"30"``."""
    value = value.strip()
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(number) * scale[unit] for number, unit in parts)


def _lowered(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date)."""
    lowered = _lowered(headers)
    millis = lowered.get("retry-after-ms")
    if millis:
        try:
            seconds = float(millis) / 1000.0
        except ValueError:
            pass
        else:
            if math.isfinite(seconds):  # "inf" / "nan" are no waits
                return max(0.0, seconds)
    value = lowered.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


_REQUEST_ID_HEADERS = (
    "x-request-id",
    "request-id",
    "apim-request-id",
    "x-ms-request-id",
    "x-goog-request-id",
    "cf-ray",
)


def request_id_from_headers(headers: Mapping[str, str]) -> str | None:
    """The provider's request id, from the usual headers."""
    lowered = _lowered(headers)
    for name in _REQUEST_ID_HEADERS:
        if lowered.get(name):
            return lowered[name]
    return None


def error_message_from_body(body: bytes) -> tuple[str, str | None, str | None, Any]:
    """(message, type, code, parsed JSON) from an error body, JSON or not.

    Understands ``{"error": {"message", "type", "code"}}`` (OpenAI, Anthropic,
    Gemini's ``status``), ``{"error": "text"}`` (Ollama) and ``{"message": ...}``;
    anything else (a proxy's HTML page) gives its text, tags stripped and cut short.
    """
    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text) if text.strip() else None
    except ValueError:
        data = None
    if isinstance(data, list) and data and isinstance(data[0], dict):
        data = data[0]  # Gemini's non-SSE error body is a one-element array
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, str):
            return error, None, None, data
        if isinstance(error, dict):
            message = error.get("message") or error.get("msg") or json.dumps(error)[:500]
            type_ = error.get("type") or error.get("status")
            code = error.get("code")
            return (
                str(message),
                None if type_ is None else str(type_),
                None if code is None else str(code),
                data,
            )
    stripped = re.sub(r"<[^>]+>", " ", text)
    stripped = " ".join(stripped.split())
    return (stripped[:300] or "(empty body)"), None, None, data


def default_parse_error(
    provider: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    cls: type[APIError] | None = None,
    message: str | None = None,
    error_type: str | None = None,
    code: str | None = None,
    request_id: str | None = None,
    retry_after: float | None = None,
) -> APIError:
    """The typed error for an error response in the common JSON shapes.

    The class follows the status (a 429 ``insufficient_quota`` is a
    [`QuotaExceededError`][mmstream.errors.QuotaExceededError]); a provider's
    own reading of its body is passed as the keyword arguments, which win.
    """
    found, found_type, found_code, _ = error_message_from_body(body)
    type_ = found_type if error_type is None else error_type
    code = found_code if code is None else code
    if cls is None:
        cls = error_class_for_status(status)
        if status == 429 and "insufficient_quota" in (code, type_):
            cls = QuotaExceededError
    return cls(
        found if message is None else message,
        status=status,
        provider=provider,
        type=type_,
        code=code,
        request_id=request_id or request_id_from_headers(headers),
        retry_after=parse_retry_after(headers) if retry_after is None else retry_after,
        body=body[:4096].decode("utf-8", "replace"),
    )
