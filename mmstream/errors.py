"""The exceptions mmstream raises, grouped by what the caller can do about them.

Every error is an [`MMStreamError`][mmstream.errors.MMStreamError]; no foreign
exception (httpx, anyio, PIL, json) escapes a public call. An error raised after
output began carries `partial`, the [`ChatResponse`][mmstream.ChatResponse]
received so far. Each message ends with a hint, what to do about it: the class's
`hint`, or a fitting one the raise site passed (`hint=...`).

```
MMStreamError                     .partial, .provider
├── ConfigurationError            fix the setup: missing key, unknown provider, bad option
│   └── MissingExtraError         an optional dependency is not installed (names the extra)
├── ClosedError                   the LLM was closed (or Python is exiting): use an open one
├── InvalidRequestError           local: we or the caller built something the provider won't take
│   ├── InvalidArgumentError      an argument of the wrong type or value (.argument); a ValueError
│   ├── InvalidImageError         an image that cannot be read, sniffed or fitted (.image_index)
│   └── ForbiddenURLError         a URL mmstream will not download from (.rule, .url)
├── APIError                      remote: the provider answered with an error
│   │                             (.status, .type, .code, .request_id, .body)
│   ├── BadRequestError           400 / 422
│   ├── AuthenticationError       401 (and Gemini's 400 API_KEY_INVALID)
│   ├── PermissionDeniedError     403
│   ├── NotFoundError             404: unknown model or deployment
│   ├── RequestTooLargeError      413
│   ├── RateLimitError            429, retryable, honours .retry_after
│   │   └── QuotaExceededError    429 from a spend limit / insufficient_quota: not retryable
│   ├── ContentFilterError        the provider blocked the prompt or the answer for safety
│   └── ServerError               5xx, retryable
│       └── OverloadedError       503 / 529, or an ``overloaded_error`` event
├── APIConnectionError            could not reach the provider, or the connection dropped; retryable
│   └── APITimeoutError           connect / read / pool / total / first chunk / idle (.kind)
└── ProviderProtocolError         remote: the provider sent something we cannot decode
    └── IncompleteStreamError     the stream ended without the provider's completion signal
```

`retryable` says whether repeating the same request may succeed; the
[`Retry`][mmstream.middleware.Retry] middleware reads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from collections.abc import Mapping

    from mmstream.responses import ChatResponse

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ClosedError",
    "ConfigurationError",
    "ContentFilterError",
    "ForbiddenURLError",
    "IncompleteStreamError",
    "InvalidArgumentError",
    "InvalidImageError",
    "MissingExtraError",
    "InvalidRequestError",
    "MMStreamError",
    "NotFoundError",
    "OverloadedError",
    "PermissionDeniedError",
    "ProviderProtocolError",
    "QuotaExceededError",
    "RateLimitError",
    "RequestTooLargeError",
    "ServerError",
    "error_class_for_status",
    "import_extra",
]


class MMStreamError(Exception):
    """The root of every mmstream error.

    Args:
        message: what went wrong.
        provider: the provider's name (``"openai"``, ...), when one was involved.
        partial: the response received before the error, if output had begun.
        hint: what to do about it, when the class's own `hint` does not fit this
            raise site (``""`` for none); it ends the message.
    """

    retryable: ClassVar[bool] = False
    #: What to do about this kind of error; ends the message unless it is already in it.
    hint: str = ""

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        partial: ChatResponse | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.partial = partial
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        text = self.message
        if self.hint and self.hint not in text:
            end = "" if text.endswith((".", "!", "?")) else "."
            text = f"{text}{end} {self.hint}"
        if self.partial is not None:
            text = f"{text} ({len(self.partial.text)} characters had arrived; see .partial)"
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only constructors do not survive the default pickling.
        return (_rebuild, (type(self), self.__dict__))


def _rebuild(cls: type[MMStreamError], state: dict[str, Any]) -> MMStreamError:
    error = cls.__new__(cls)
    Exception.__init__(error, state.get("message", ""))
    error.__dict__.update(state)
    return error


class ConfigurationError(MMStreamError):
    """mmstream is set up wrong: a missing API key, an unknown provider or option."""

    hint = "Check the provider's settings and environment variables."


class MissingExtraError(ConfigurationError, ImportError):
    """An optional part of mmstream needs a package that is not installed; the message names
    the extra that brings it (``pip install 'mmstream[EXTRA]'``)."""

    hint = "Install the extra named above."


def import_extra(module: str, extra: str, feature: str) -> Any:
    """Import ``module`` for an optional ``feature``, or raise `MissingExtraError` naming ``extra``.

    Every optional dependency is imported through this, where it is used, so
    ``import mmstream`` stays light and a missing one always reads the same way.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = exc.name or module
        raise MissingExtraError(
            f"{feature} needs {missing}, which is not installed; "
            f"install it with: pip install 'mmstream[{extra}]'"
        ) from exc


class ClosedError(MMStreamError):
    """The LLM was closed (``close()``, ``aclose()``, the end of ``with``), or Python is exiting.

    A closed LLM stays closed: every later call raises this, and calls still
    running when it was closed end with it.
    """

    hint = "Create a new MultiModalLLM; a closed one cannot be used again."


class InvalidRequestError(MMStreamError):
    """The request cannot be sent as it stands; nothing was sent."""

    hint = "Fix the input and call again."


class InvalidArgumentError(InvalidRequestError, ValueError):
    """An argument of a public call has the wrong type or value; nothing was sent.

    ``argument`` names it (``"messages"``, ``"temperature"``, ``"role"``, ...).
    It is also a ``ValueError``, as attrs-style validation errors are.
    """

    hint = "Fix that argument and call again."

    def __init__(self, message: str, *, argument: str, provider: str | None = None) -> None:
        super().__init__(message, provider=provider)
        self.argument = argument


class InvalidImageError(InvalidRequestError):
    """An image could not be loaded, recognised, or fitted to the provider's limits.

    ``image_index`` is the position of the image in the request (0-based) when known.
    """

    hint = "Pass a readable image (PNG, JPEG, GIF, WebP; others are converted)."

    def __init__(
        self,
        message: str,
        *,
        image_index: int | None = None,
        provider: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, provider=provider, hint=hint)
        self.image_index = image_index


class ForbiddenURLError(InvalidRequestError):
    """A URL mmstream was asked to download from is refused; nothing was fetched.

    ``rule`` names the rule that refused it (``"loopback"``, ``"private"``,
    ``"link-local"``, ``"credentials"``, ...); ``url`` is the URL without its
    credentials, query or fragment; ``image_index`` the image's position (0-based)
    when the URL is an image's.
    """

    hint = "Pass the image inline, or allow the host with the url_access option."

    def __init__(
        self,
        message: str,
        *,
        rule: str,
        url: str,
        image_index: int | None = None,
        provider: str | None = None,
    ) -> None:
        super().__init__(message, provider=provider)
        self.rule = rule
        self.url = url
        self.image_index = image_index


class APIError(MMStreamError):
    """The provider answered with an error.

    Attributes:
        status: the HTTP status (200 for an error sent inside a stream).
        type: the provider's error type (``"invalid_request_error"``, ...).
        code: the provider's error code, as a string.
        request_id: the provider's request id, to quote to its support.
        retry_after: seconds the provider asked us to wait, or ``None``.
        body: the error body as received (text, cut to 4 KiB).
    """

    hint = "See the provider's message above."

    def __init__(
        self,
        message: str,
        *,
        status: int,
        provider: str | None = None,
        type: str | None = None,
        code: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
        body: str | None = None,
        partial: ChatResponse | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, provider=provider, partial=partial, hint=hint)
        self.status = status
        self.type = type
        self.code = code
        self.request_id = request_id
        self.retry_after = retry_after
        self.body = body

    def __str__(self) -> str:
        head = f"{self.provider or 'provider'} returned HTTP {self.status}"
        if self.status == 200:
            head = f"{self.provider or 'provider'} sent an error inside the stream"
        details = ", ".join(
            f"{name}={value}"
            for name, value in (
                ("type", self.type),
                ("code", self.code),
                ("request_id", self.request_id),
            )
            if value
        )
        text = f"{head}: {super().__str__()}"
        return f"{text} [{details}]" if details else text


class BadRequestError(APIError):
    """The provider rejected the request as malformed (400 / 422)."""

    hint = "Check the model name, the options and the message contents."


class AuthenticationError(APIError):
    """The API key is missing, wrong or revoked (401)."""

    hint = "Check the API key (its environment variable or the provider's api_key)."


class PermissionDeniedError(APIError):
    """The key is valid but may not use this model or resource (403)."""

    hint = "Check the key's project, region and model access."


class NotFoundError(APIError):
    """The model, deployment or endpoint does not exist (404)."""

    hint = "Check the model or deployment name and the base URL."


class RequestTooLargeError(APIError):
    """The request body is over the provider's size limit (413)."""

    hint = "Send fewer or smaller images, or let mmstream fit images to the provider."


class RateLimitError(APIError):
    """Too many requests or tokens (429); wait ``retry_after`` seconds and retry."""

    retryable = True
    hint = "Slow down, or use the Retry and RateLimit middleware."


class QuotaExceededError(RateLimitError):
    """A spend limit or quota is used up (429 ``insufficient_quota``); retrying will not help."""

    retryable = False
    hint = "Check the plan and billing for this key; retrying will not help."


class ContentFilterError(APIError):
    """The provider blocked the prompt or the answer for safety reasons."""

    hint = "Rephrase the prompt or change the images; see .code for the reason."


class ServerError(APIError):
    """The provider failed (5xx); the same request may succeed later."""

    retryable = True
    hint = "Retry later, or use the Retry middleware."


class OverloadedError(ServerError):
    """The provider is overloaded (503 / 529, or an ``overloaded_error`` event)."""

    hint = "Retry later with backoff, or fall back to another provider."


class APIConnectionError(MMStreamError):
    """The provider could not be reached, or the connection dropped."""

    retryable = True
    hint = "Check the network and the base URL; retrying may help."


class APITimeoutError(APIConnectionError):
    """A deadline passed; ``kind`` says which one.

    Kinds: ``connect``, ``read``, ``write``, ``pool`` (from the HTTP stack),
    ``total``, ``first_chunk`` and ``idle`` (from the Timeout middleware).
    """

    hint = "Raise the timeout, or retry."

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        provider: str | None = None,
        partial: ChatResponse | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, provider=provider, partial=partial, hint=hint)
        self.kind = kind


class ProviderProtocolError(MMStreamError):
    """The provider sent bytes that do not follow its own wire format."""

    retryable = True
    hint = "This is the provider's fault; retrying may help. Please report it if it persists."


class IncompleteStreamError(ProviderProtocolError):
    """The stream ended before the provider's completion signal (truncated or dropped)."""

    hint = "The answer is cut short; .partial holds what arrived. Retrying may help."


_STATUS_CLASSES: Mapping[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    413: RequestTooLargeError,
    422: BadRequestError,
    429: RateLimitError,
    503: OverloadedError,
    529: OverloadedError,
}


def error_class_for_status(status: int) -> type[APIError]:
    """The error class for an HTTP status: the table above, else 5xx → ServerError."""
    cls = _STATUS_CLASSES.get(status)
    if cls is not None:
        return cls
    if status >= 500:
        return ServerError
    if 400 <= status < 500:
        return BadRequestError
    return APIError
