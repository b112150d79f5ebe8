"""Content, response and error types: the values users build and receive."""

from __future__ import annotations

import base64
import pickle

import pytest

import mmstream as mm
from mmstream.errors import error_class_for_status
from mmstream.providers.base import ResponseBuilder

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


def test_chat_message_content_shortcut() -> None:
    message = mm.ChatMessage(role="user", content="hi")
    assert message.blocks == (mm.TextBlock("hi"),)
    assert message.role is mm.MessageRole.USER
    assert message.content == "hi"
    images = mm.ChatMessage("user", blocks=[mm.ImageBlock(image=PNG)])
    assert images.content is None
    assert len(images.images) == 1
    with pytest.raises(ValueError, match="either content or blocks"):
        mm.ChatMessage("user", "a", blocks=[mm.TextBlock("b")])
    with pytest.raises(ValueError, match="unknown message role"):
        mm.ChatMessage("robot", "hi")


def test_image_block_accepts_bytes_base64_and_data_urls() -> None:
    b64 = base64.b64encode(PNG).decode()
    assert mm.ImageBlock(image=b64).image == PNG
    assert mm.ImageBlock(image=PNG).image == PNG
    from_url = mm.ImageBlock(url=f"data:image/png;base64,{b64}")
    assert from_url.image == PNG
    assert from_url.url is None
    assert from_url.image_mimetype == "image/png"
    with pytest.raises(mm.InvalidImageError, match="not valid base64"):
        mm.ImageBlock(image="this is not base64!")
    with pytest.raises(mm.InvalidImageError, match="needs one of"):
        mm.ImageBlock()
    assert "image=" not in repr(mm.ImageBlock(image=PNG))  # bytes are kept out of reprs


def test_image_document_forms() -> None:
    doc = mm.ImageDocument.from_bytes(PNG, image_mimetype="image/png")
    assert doc.to_block() == mm.ImageBlock(image=PNG, image_mimetype="image/png")
    assert mm.ImageDocument(image_url="https://x/y.png").to_block().url == "https://x/y.png"
    with pytest.raises(mm.InvalidImageError):
        mm.ImageDocument()


def test_chunks_share_one_accumulator() -> None:
    builder = ResponseBuilder("offline", "m")
    chunks = [builder.text(piece) for piece in ("a", "b", "c")]
    final = builder.finish()
    assert [c.text for c in chunks] == ["a", "ab", "abc"]
    assert chunks[0].text == "a"  # earlier chunks keep their own prefix
    assert final.text == "abc"
    assert final.delta == ""
    assert final.additional_kwargs == {"provider": "offline", "model": "m"}
    assert chunks[1] == mm.ChatResponse(text="ab", delta="b")  # equality by resolved text


def test_tool_calls_are_assembled() -> None:
    builder = ResponseBuilder("openai")
    builder.tool_call_delta(0, id="call_1", name="weather", arguments='{"ci')
    builder.tool_call_delta(0, arguments='ty": "Paris"}')
    builder.tool_call(id=None, name="time", arguments={"tz": "UTC"})
    builder.finish_reason = "tool_calls"
    final = builder.finish()
    assert final.finish_reason == "tool_calls"
    assert final.additional_kwargs["tool_calls"] == [
        {"id": "call_1", "name": "weather", "arguments": {"city": "Paris"}},
        {"id": None, "name": "time", "arguments": {"tz": "UTC"}},
    ]
    assert final.message.additional_kwargs["tool_calls"][0]["name"] == "weather"


def test_usage_total_is_derived_and_unknown_stays_none() -> None:
    assert mm.Usage(input_tokens=2, output_tokens=3).total_tokens == 5
    assert mm.Usage(input_tokens=2).total_tokens is None
    assert mm.Usage().output_tokens is None


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, mm.BadRequestError),
        (401, mm.AuthenticationError),
        (403, mm.PermissionDeniedError),
        (404, mm.NotFoundError),
        (413, mm.RequestTooLargeError),
        (422, mm.BadRequestError),
        (429, mm.RateLimitError),
        (500, mm.ServerError),
        (502, mm.ServerError),
        (503, mm.OverloadedError),
        (529, mm.OverloadedError),
    ],
)
def test_status_classes(status: int, cls: type[mm.APIError]) -> None:
    assert error_class_for_status(status) is cls


def test_errors_say_what_to_do_and_survive_pickling() -> None:
    partial = mm.ChatResponse(text="half an ans")
    error = mm.RateLimitError(
        "slow down",
        status=429,
        provider="openai",
        request_id="req_1",
        retry_after=2.5,
        partial=partial,
    )
    text = str(error)
    assert text.startswith("openai returned HTTP 429: slow down.")
    assert "Use the Retry and RateLimit middleware" in text or "Retry and RateLimit" in text
    assert "request_id=req_1" in text
    assert "11 characters had arrived" in text
    assert error.retryable
    assert not mm.QuotaExceededError("x", status=429).retryable
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is mm.RateLimitError
    assert copy.retry_after == 2.5
    assert copy.partial == partial
    assert issubclass(mm.APITimeoutError, mm.APIConnectionError)
    assert issubclass(mm.IncompleteStreamError, mm.ProviderProtocolError)
    for name in mm.errors.__all__:
        value = getattr(mm.errors, name)
        if isinstance(value, type):
            assert issubclass(value, mm.MMStreamError)


def test_secret_never_shows() -> None:
    secret = mm.Secret("sk-abc123")
    assert "abc123" not in repr(secret)
    assert "abc123" not in str(secret)
    assert "abc123" not in f"{secret}"
    assert secret.get_secret_value() == "sk-abc123"
    assert pickle.loads(pickle.dumps(secret)) == secret


def test_register_a_provider_name() -> None:
    from mmstream.providers import Offline, from_string, register, registered_names

    register("toy", Offline)
    assert "toy" in registered_names()
    assert from_string("toy:tiny", chunks=2) == Offline(model="tiny", chunks=2)
    with pytest.raises(mm.ConfigurationError):
        register("bad:name", Offline)
