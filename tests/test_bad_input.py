"""Bad input: a typed error naming the argument, and nothing but mmstream errors, ever.

The named cases are the ones users hit; the property tests throw generated
garbage at every public constructor and method of the facade, the content
values and the call options, and accept only success or an ``MMStreamError``.
(The pipeline components keep LlamaIndex's own ``ValueError`` messages; the
providers' and middleware's constructors are tested in their own files.)
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import mmstream as mm
from mmstream.providers import Offline

GARBAGE = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def closed_image() -> Image.Image:
    image = Image.new("RGB", (4, 4))
    image.close()
    return image


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


#: values of every kind: wrong types, odd numbers, odd text, containers of garbage.
garbage = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(10**20), max_value=10**20),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=20),
        st.binary(max_size=20),
        st.sampled_from(
            [object(), Ellipsis, math.nan, -1, 0, "", "wizard", b"\x89PNG", Path("x.png")]
        ),
        st.builds(lambda: mm.TextBlock("hi")),
        st.builds(lambda: mm.ChatMessage("user", "hi")),
        st.builds(closed_image),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=5), inner, max_size=3),
    ),
    max_leaves=6,
)


def typed_or_fine(call: Callable[[], Any]) -> None:
    """Run ``call``: success, or an MMStreamError; any other exception fails the test."""
    with contextlib.suppress(mm.MMStreamError):
        call()


async def atyped_or_fine(call: Callable[[], Any]) -> None:
    try:
        result = call()
        if hasattr(result, "__aiter__"):
            async with result as stream:
                async for _ in stream:
                    pass
        elif hasattr(result, "__await__"):
            await result
    except mm.MMStreamError:
        pass


# --- the cases users hit ---------------------------------------------------------------------


async def test_the_usual_mistakes_name_their_argument() -> None:
    async with mm.MultiModalLLM() as llm:
        cases: list[tuple[Callable[[], Any], str, str]] = [
            (lambda: llm.achat(None), "messages", "messages must be a list"),  # type: ignore[arg-type]
            (lambda: llm.achat([mm.ChatMessage("user", "hi"), 3]), "messages", r"messages[1]"),  # type: ignore[list-item]
            (lambda: mm.ChatMessage("wizard", "hi"), "role", "unknown message role 'wizard'"),
            (lambda: mm.ChatMessage("user", 123), "content", "content must be a str"),  # type: ignore[arg-type]
            (lambda: llm.acomplete("hi", temperature="hot"), "temperature", "temperature must be"),
            (lambda: llm.acomplete("hi", max_tokens=-1), "max_tokens", "max_tokens must be"),
            (lambda: llm.acomplete("hi", top_p=2), "top_p", "between 0 and 1"),
            (lambda: llm.acomplete("hi", stop=[1, 2]), "stop", "stop must be"),
            (lambda: llm.acomplete("hi", timeout="soon"), "timeout", "timeout must be"),
            (lambda: llm.acomplete(42), "prompt", "prompt must be a str"),  # type: ignore[arg-type]
            (lambda: llm.acomplete("hi", "x.png"), "image_documents", "must be a list"),  # type: ignore[arg-type]
            (lambda: mm.TextBlock(None), "text", "text must be a str"),  # type: ignore[arg-type]
            (lambda: mm.MultiModalLLM(42), "provider", "provider must be"),  # type: ignore[arg-type]
            (lambda: mm.MultiModalLLM(sync_backend="curio"), "sync_backend", "'asyncio' or"),  # type: ignore[arg-type]
            (lambda: mm.MultiModalLLM(middleware=[1]), "middleware", "middleware[0]"),  # type: ignore[list-item]
        ]
        for call, argument, message in cases:
            with pytest.raises(mm.InvalidArgumentError) as caught:
                result = call()
                if hasattr(result, "__await__"):
                    await result
            assert caught.value.argument == argument
            assert message in str(caught.value)
            assert isinstance(caught.value, ValueError)  # attrs-style, and LlamaIndex-style
            assert "Fix that argument" in str(caught.value)


def test_a_closed_pil_image_is_an_invalid_image() -> None:
    with pytest.raises(mm.InvalidImageError, match="closed image"):
        mm.ImageBlock.from_pil(closed_image())
    with pytest.raises(mm.InvalidImageError, match="closed image"):
        mm.ImageDocument.from_pil(closed_image())
    with pytest.raises(mm.InvalidImageError, match="closed image"):
        mm.ImageBlock.from_image(closed_image())


def test_numbers_are_not_images() -> None:
    """Before, ``ImageBlock(image=3)`` made three zero bytes; now it is refused."""
    with pytest.raises(mm.InvalidImageError, match="bytes or base64 text"):
        mm.ImageBlock(image=3)
    with pytest.raises(mm.InvalidImageError, match="takes bytes"):
        mm.ImageBlock.from_bytes(3)  # type: ignore[arg-type]
    with pytest.raises(mm.InvalidImageError, match="takes bytes"):
        mm.ImageDocument.from_bytes("not bytes")  # type: ignore[arg-type]
    with pytest.raises(mm.InvalidImageError, match="base64 text"):
        mm.ImageDocument(image=b"raw")  # type: ignore[arg-type]


def test_blocking_calls_raise_the_same_typed_errors() -> None:
    with mm.MultiModalLLM() as llm:
        with pytest.raises(mm.InvalidArgumentError, match="messages must be a list"):
            llm.chat(None)  # type: ignore[arg-type]
        with pytest.raises(mm.InvalidArgumentError, match="temperature"):
            llm.complete("hi", temperature="hot")
        with pytest.raises(mm.InvalidArgumentError, match="temperature"):
            next(iter(llm.stream_complete("hi", temperature="hot")))
        assert llm.complete("hi", temperature=0.5).finish_reason == "stop"  # still usable


def test_valid_input_still_works() -> None:
    options = mm.CallOptions(temperature=0, max_tokens=5, top_p=1, stop="x", timeout=3)
    assert options.stop == ("x",)
    assert options.merge(temperature=1.5, stop=["a", "b"]).stop == ("a", "b")
    assert mm.Timeouts(connect=None, total=30).total == 30
    message = mm.ChatMessage(
        mm.MessageRole.USER, blocks=[mm.TextBlock("a"), mm.ImageBlock(image=png())]
    )
    assert message.content == "a"
    assert mm.ChatMessage("assistant", "x").role is mm.MessageRole.ASSISTANT
    assert mm.ImageDocument.from_bytes(bytearray(png())).to_block().image == png()


# --- generated garbage ----------------------------------------------------------------------


@GARBAGE
@given(role=garbage, content=garbage, blocks=garbage, extra=garbage, which=st.integers(0, 3))
def test_chat_message_garbage(role: Any, content: Any, blocks: Any, extra: Any, which: int) -> None:
    kwargs: dict[str, Any] = {}
    if which == 0:
        kwargs = {"role": role}
    elif which == 1:
        kwargs = {"content": content}
    elif which == 2:
        kwargs = {"blocks": blocks}
    else:
        kwargs = {"additional_kwargs": extra}
    typed_or_fine(lambda: mm.ChatMessage(**kwargs))
    typed_or_fine(lambda: mm.MessageRole(role))


@GARBAGE
@given(value=garbage, name=st.sampled_from(["image", "path", "url", "image_mimetype", "detail"]))
def test_image_block_garbage(value: Any, name: str) -> None:
    typed_or_fine(lambda: mm.ImageBlock(**{name: value}))
    typed_or_fine(lambda: mm.ImageBlock(image=png(), **{name: value}) if name != "image" else None)
    typed_or_fine(lambda: mm.ImageBlock.from_image(value))
    typed_or_fine(lambda: mm.ImageBlock.from_bytes(value))
    typed_or_fine(lambda: mm.ImageBlock.from_pil(value))
    typed_or_fine(lambda: mm.TextBlock(value))


@GARBAGE
@given(
    value=garbage,
    name=st.sampled_from(
        ["image", "image_path", "image_url", "image_mimetype", "text", "metadata"]
    ),
)
def test_image_document_garbage(value: Any, name: str) -> None:
    typed_or_fine(lambda: mm.ImageDocument(**{name: value}))
    typed_or_fine(lambda: mm.ImageDocument.from_image(value))
    typed_or_fine(lambda: mm.ImageDocument.from_bytes(value))
    typed_or_fine(lambda: mm.ImageDocument.from_pil(value))


OPTION_NAMES = ["temperature", "max_tokens", "top_p", "stop", "timeout", "extra"]


@GARBAGE
@given(value=garbage, name=st.sampled_from(OPTION_NAMES))
def test_call_options_and_timeouts_garbage(value: Any, name: str) -> None:
    typed_or_fine(lambda: mm.CallOptions(**{name: value}))
    typed_or_fine(lambda: mm.CallOptions().merge(**{name: value}))
    typed_or_fine(lambda: mm.Timeouts.from_value(value))
    typed_or_fine(lambda: mm.Timeouts(connect=value))
    typed_or_fine(lambda: mm.Timeouts(total=value))


@GARBAGE
@given(
    value=garbage,
    name=st.sampled_from(["messages", "options", "provider", "operation", "attempt"]),
)
def test_chat_request_garbage(value: Any, name: str) -> None:
    fields: dict[str, Any] = {"messages": [mm.ChatMessage("user", "hi")], "provider": Offline()}
    fields[name] = value
    typed_or_fine(lambda: mm.ChatRequest(**fields))


@GARBAGE
@given(
    value=garbage,
    name=st.sampled_from(["provider", "middleware", "transport", "sync_backend"]),
)
def test_llm_constructor_garbage(value: Any, name: str) -> None:
    typed_or_fine(lambda: mm.MultiModalLLM(**{name: value}))


#: call arguments: the positional ones garbage, or one option garbage beside valid ones.
call_arguments = st.one_of(
    st.tuples(st.just("prompt"), garbage),
    st.tuples(st.just("image_documents"), garbage),
    st.tuples(st.just("messages"), garbage),
    st.tuples(st.sampled_from([*OPTION_NAMES, "seed", "user"]), garbage),
)


def call_of(llm: mm.MultiModalLLM, method: str, name: str, value: Any) -> Callable[[], Any]:
    """``llm.<method>`` with the argument ``name`` set to ``value`` (the others valid)."""
    chat = method.endswith("chat")
    if name == "messages":
        args: tuple[Any, ...] = (value,) if chat else ("hi",)
        kwargs: dict[str, Any] = {}
    elif name in ("prompt", "image_documents"):
        args = (["hi"],) if chat else (value, []) if name == "prompt" else ("hi", value)
        kwargs = {}
    else:
        args, kwargs = ((["hi"],) if chat else ("hi",)), {name: value}
    return lambda: getattr(llm, method)(*args, **kwargs)


@GARBAGE
@given(
    argument=call_arguments,
    method=st.sampled_from(["acomplete", "achat", "astream_complete", "astream_chat"]),
)
async def test_async_methods_garbage(argument: tuple[str, Any], method: str) -> None:
    llm = mm.MultiModalLLM(Offline(chunks=3))
    name, value = argument
    await atyped_or_fine(call_of(llm, method, name, value))
    await llm.aclose()


@pytest.fixture(scope="module")
def blocking_llm() -> Any:
    with mm.MultiModalLLM(Offline(chunks=3)) as llm:
        yield llm


@GARBAGE
@given(
    argument=call_arguments,
    method=st.sampled_from(["complete", "chat", "stream_complete", "stream_chat"]),
)
def test_blocking_methods_garbage(
    blocking_llm: mm.MultiModalLLM, argument: tuple[str, Any], method: str
) -> None:
    name, value = argument

    def call() -> None:
        result = call_of(blocking_llm, method, name, value)()
        if isinstance(result, mm.SyncStream):
            with result:
                for _ in result:
                    pass

    typed_or_fine(call)
