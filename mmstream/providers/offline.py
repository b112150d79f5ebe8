"""The offline provider: answers without network or key, from what it measures.

It looks at each image (format, size, orientation, dominant colour,
brightness) and at the prompt, and streams a description word by word. It is
the CLI's default, the README's first example, and the fast workhorse of
tests: ``chunks`` forces the number of streamed chunks, ``delay`` pauses
between them, ``fail_after`` raises a mid-stream error after that many.

Like every provider it is a pure codec. Its server runs in-process behind the
``offline://`` URL (``mmstream._offline_transport``, a transport mount that
[`MultiModalLLM`][mmstream.MultiModalLLM] installs), so offline calls go
through the same transport, decoder and middleware as real ones. Its wire
format is NDJSON: ``{"delta": ...}`` lines, then ``{"done": true, "usage": ...,
"finish_reason": ...}``, or ``{"error": {"type": ..., "message": ...}}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, final

from attrs import field, frozen

from mmstream.content import ImageBlock, TextBlock
from mmstream.errors import OverloadedError, ServerError
from mmstream.media.policy import ImagePolicy
from mmstream.media.sniff import encoded_form
from mmstream.metadata import MultiModalLLMMetadata
from mmstream.providers.base import BaseProvider, JSONLinesDecoder, count, max_line
from mmstream.request import ChatRequest, HTTPRequest
from mmstream.responses import ChatResponse, Usage

__all__ = ["OFFLINE_URL", "Offline", "OfflineDecoder"]

#: where offline requests go: the in-process server mounted on the transport.
OFFLINE_URL = "offline://local"


def _non_negative(instance: object, attribute: Any, value: float | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, not {value}")


@final
@frozen(kw_only=True)
class Offline(BaseProvider):
    """A provider that needs no network and no key.

    Args:
        model: any name; it is echoed in the metadata.
        chunks: stream exactly this many chunks (the words are cycled or grouped).
        delay: seconds to pause between chunks.
        fail_after: raise a mid-stream [`OverloadedError`][mmstream.errors.OverloadedError]
            after this many chunks.
    """

    name: ClassVar[str] = "offline"

    model: str = "default"
    chunks: int | None = field(default=None, validator=_non_negative)
    delay: float = field(default=0.0, validator=_non_negative)
    fail_after: int | None = field(default=None, validator=_non_negative)

    @property
    def metadata(self) -> MultiModalLLMMetadata:
        """Generous limits: the offline provider reads anything."""
        return MultiModalLLMMetadata(
            context_window=128_000,
            num_output=4096,
            num_input_files=100,
            model_name=self.model,
            is_chat_model=True,
        )

    @property
    def image_policy(self) -> ImagePolicy:
        """No limits but the common types; URLs are described, never fetched."""
        return ImagePolicy(accepts_urls=True, fit=False)

    @property
    def api_base(self) -> str:
        """The in-process server's address."""
        return OFFLINE_URL

    def build_request(self, request: ChatRequest) -> HTTPRequest:
        """The request for the in-process offline server."""
        options = request.options
        return HTTPRequest(
            url=f"{OFFLINE_URL}/v1/answer",
            json={
                "model": self.model,
                "messages": [_message(m.role.value, m.blocks) for m in request.messages],
                "chunks": self.chunks,
                "delay": self.delay,
                "fail_after": self.fail_after,
                "max_tokens": options.max_tokens,
            },
            stream_format="ndjson",
            timeout=options.timeout,
        )

    def new_decoder(self, request: ChatRequest | None = None) -> OfflineDecoder:
        """A decoder for one offline answer."""
        return OfflineDecoder(self.model, max_line=max_line(request))

    def decode_json(self, body: bytes) -> ChatResponse:
        """The offline server's ``done`` line as a whole answer."""
        return self.new_decoder().whole(body)


def _message(role: str, blocks: Sequence[TextBlock | ImageBlock]) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    for block in blocks:
        if isinstance(block, TextBlock):
            parts.append({"type": "text", "text": block.text})
        elif block.image is not None:
            parts.append(
                {
                    "type": "image",
                    "data": encoded_form(block, provider="offline").base64,
                    "mime_type": block.image_mimetype,
                }
            )
        else:
            parts.append({"type": "image_url", "url": block.url})
    return {"role": role, "content": parts}


@final
class OfflineDecoder(JSONLinesDecoder):
    """NDJSON lines of the offline server into chunks."""

    __slots__ = ()

    provider = "offline"
    end = 'its "done" line'

    def event(self, event: dict[str, Any], out: list[ChatResponse]) -> None:
        """One line: a delta, the ``done`` summary, or an error."""
        builder = self._builder
        delta = event.get("delta")
        if isinstance(delta, str):
            out.append(builder.text(delta, event))
        elif event.get("done"):
            usage = event.get("usage")
            usage = usage if isinstance(usage, dict) else {}
            builder.usage = Usage(
                input_tokens=count(usage.get("input_tokens")),
                output_tokens=count(usage.get("output_tokens")),
            )
            reason = event.get("finish_reason")
            builder.finish_reason = reason if isinstance(reason, str) and reason else "stop"
            out.append(builder.finish(event))
        elif "error" in event:
            error = event["error"] if isinstance(event["error"], dict) else {}
            cls = OverloadedError if error.get("type") == "overloaded_error" else ServerError
            raise cls(
                str(error.get("message") or event["error"]),
                status=200,
                provider="offline",
                type=error.get("type"),
                partial=builder.snapshot(event),
            )
