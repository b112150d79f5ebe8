"""Pipeline components: an LLM call as a step with named inputs and outputs.

[`MultiModalCompleteComponent`][mmstream.pipeline.MultiModalCompleteComponent] is LlamaIndex's
query-pipeline component
for multi-modal LLMs (same input keys, output key, ``streaming`` flag and
validation errors), so code written against it keeps working.
[`MultiModalChatComponent`][mmstream.pipeline.MultiModalChatComponent] does the same for
conversations, and
`then` chains components: the output of
one step feeds the next.

Example:
    ```python
    import mmstream as mm

    llm = mm.MultiModalLLM("offline:default")
    describe = mm.MultiModalCompleteComponent(llm)
    shorten = mm.MultiModalCompleteComponent(llm)
    pipeline = describe.then(
        shorten, map=lambda out: {"prompt": "Shorten this: " + out["output"].text}
    )
    result = pipeline.run(prompt="Describe the image", image_documents=[])
    print(result["output"].text)
    ```
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Protocol,
    TypeVar,
    Union,
    cast,
    final,
    runtime_checkable,
)

from attrs import evolve, field, frozen

from mmstream._stream import ChatStream
from mmstream._sync import Lease, SyncStream, blocking
from mmstream.content import ChatMessage, ImageDocument, MessageRole
from mmstream.responses import ChatResponse, CompletionResponse

if TYPE_CHECKING:
    from mmstream.llm import MultiModalLLM

__all__ = [
    "Chain",
    "Component",
    "MultiModalChatComponent",
    "MultiModalCompleteComponent",
    "validate_and_convert_stringable",
]

#: How the outputs of one step become the inputs of the next: a rename table
#: ``{output_key: input_key}`` or a function ``outputs -> inputs``.
C = TypeVar("C", bound="_LLMComponent")

InputMap = Union[Mapping[str, str], Callable[[dict[str, Any]], Mapping[str, Any]]]  # noqa: UP007


@runtime_checkable
class Component(Protocol):
    """Anything that can be a pipeline step: named inputs in, named outputs out."""

    @property
    def input_keys(self) -> frozenset[str]: ...

    @property
    def output_keys(self) -> frozenset[str]: ...

    def run(self, **inputs: Any) -> dict[str, Any]: ...

    def arun(self, **inputs: Any) -> Awaitable[dict[str, Any]]: ...


# --- converting inputs ---------------------------------------------------------------


def _is_response(value: object) -> bool:
    return isinstance(value, (ChatResponse, CompletionResponse))


def validate_and_convert_stringable(value: Any) -> str:
    """Turn a pipeline input into prompt text, as LlamaIndex's function of that name does.

    A response gives its text; a (sync) stream of chunks is drained and gives the
    whole answer; a list gives ``str()`` of its converted items; anything else
    with its own ``__str__`` or ``__repr__`` gives ``str(value)``.

    Raises:
        ValueError: for an object that has no text form (``Input ... is not stringable.``).
    """
    if isinstance(value, str):
        return value
    if _is_response(value):
        return str(value.text)
    if isinstance(value, list):
        return str([validate_and_convert_stringable(item) for item in value])
    if isinstance(value, Iterator):
        return _drain(value)
    if isinstance(value, AsyncIterator):
        raise ValueError(
            f"Input {value!r} is an async stream; use arun() (or await the stream) "
            "to feed a streamed answer into the next step."
        )
    if any("__str__" in vars(k) or "__repr__" in vars(k) for k in type(value).__mro__[:-1]):
        return str(value)
    raise ValueError(f"Input {value!r} is not stringable.")


def _text(last: Any) -> str:
    """The whole answer of a drained stream, from its last chunk."""
    return "" if last is None else str(last.text)


def _checked(chunk: Any) -> Any:
    if not _is_response(chunk):
        raise ValueError(f"Input {chunk!r} is not stringable.")
    return chunk


def _drain(stream: Iterator[Any]) -> str:
    """The whole text of a sync stream of chunks, closing it."""
    last: Any = None
    try:
        for last in stream:
            _checked(last)
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    return _text(last)


async def _adrain(stream: AsyncIterator[Any]) -> str:
    """The whole text of an async stream of chunks, closing it."""
    last: Any = None
    try:
        async for last in stream:
            _checked(last)
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
    return _text(last)


async def _aresolve(inputs: dict[str, Any]) -> dict[str, Any]:
    """Drain the streams among the inputs into their text.

    An async stream is drained here; a blocking one (a step's output from
    ``run``) is drained in a worker thread, since its chunks come through the
    event loop this runs on.
    """
    for key, value in inputs.items():
        if isinstance(value, AsyncIterator) and not isinstance(value, Iterator):
            inputs[key] = await _adrain(value)
        elif isinstance(value, Iterator) and not isinstance(value, (str, bytes)):
            import anyio.to_thread

            inputs[key] = await anyio.to_thread.run_sync(_drain, value)
    return inputs


def _blocking_outputs(lease: Lease, outputs: dict[str, Any]) -> dict[str, Any]:
    """``arun``'s outputs for a blocking caller: an async stream becomes a SyncStream."""
    for key, value in outputs.items():
        if isinstance(value, ChatStream):
            outputs[key] = SyncStream(lease, value)
    return outputs


#: the portal lease of chains whose steps bring none (no LLM component among them).
_shared_lease = Lease("asyncio")


def _is_chat(value: object) -> bool:
    if isinstance(value, ChatMessage):
        return True
    return isinstance(value, (list, tuple)) and any(isinstance(v, ChatMessage) for v in value)


def _to_defaults(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return {} if value is None else dict(value)


# --- the LLM components --------------------------------------------------------------


@frozen
class _LLMComponent:
    """Fields and plumbing shared by the complete and chat components."""

    multi_modal_llm: MultiModalLLM
    streaming: bool = field(default=False, kw_only=True)
    options: Mapping[str, Any] = field(factory=dict, converter=_to_defaults, kw_only=True)
    partial_inputs: Mapping[str, Any] = field(
        factory=dict, converter=_to_defaults, kw_only=True, repr=False
    )

    _input_keys: ClassVar[frozenset[str]] = frozenset()
    #: the input key that a previous step's output goes to by default.
    primary_input_key: ClassVar[str] = ""

    @property
    def input_keys(self) -> frozenset[str]:
        """The names `run` takes."""
        return self._input_keys

    @property
    def output_keys(self) -> frozenset[str]:
        """The names `run` returns: ``{"output"}``."""
        return frozenset({"output"})

    def partial(self: C, **inputs: Any) -> C:
        """This component with some inputs fixed (LlamaIndex's ``partial``)."""
        self._check_keys(inputs)
        return evolve(self, partial_inputs={**self.partial_inputs, **inputs})

    def then(self, other: Component, *, map: InputMap | None = None) -> Chain:
        """A pipeline running this component, then ``other`` on its output.

        Args:
            other: the next step.
            map: how this step's outputs become ``other``'s inputs: a rename
                table such as ``{"output": "prompt"}`` or a function from the
                outputs dict to the inputs dict. By default ``output`` goes to
                ``other``'s primary input (``prompt`` or ``messages``).
        """
        return Chain((cast(Component, self),)).then(other, map=map)

    def _blocking_lease(self) -> Lease:
        return self.multi_modal_llm._blocking_lease()

    def _check_keys(self, inputs: Mapping[str, Any]) -> None:
        unknown = sorted(set(inputs) - self._input_keys)
        if unknown:
            raise ValueError(
                f"unknown input keys {unknown}; {type(self).__name__} takes "
                f"{sorted(self._input_keys)}."
            )

    def _merge(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        merged = {**self.partial_inputs, **inputs}
        self._check_keys(merged)
        return merged


@final
@frozen
class MultiModalCompleteComponent(_LLMComponent):
    """LlamaIndex's multi-modal completion component: ``prompt`` and images in, ``output`` out.

    ``run(prompt=..., image_documents=[...])`` returns ``{"output": response}``:
    the [`CompletionResponse`][mmstream.CompletionResponse], or with ``streaming=True`` the
    stream itself (a sync stream from `run`, an async one from
    [`arun`][mmstream.pipeline.MultiModalCompleteComponent.arun]). A prompt that is not a string is
    converted to text when it
    has one (a response, a drained stream, ``str()``).

    Args:
        multi_modal_llm: the LLM to call.
        streaming: return the stream instead of the final response.
        options: call options for every call (``temperature``, ``max_tokens``, ...).
        partial_inputs: inputs fixed in advance (see `partial`).

    Raises:
        ValueError: ``Prompt must be in input dict.``, ``image_documents must be a
            list.``, ``image_documents must be a list of ImageDocument objects.``
        NotImplementedError: for a [`ChatMessage`][mmstream.ChatMessage] prompt or a list
            of them (use [`MultiModalChatComponent`][mmstream.pipeline.MultiModalChatComponent]).
    """

    _input_keys: ClassVar[frozenset[str]] = frozenset({"prompt", "image_documents"})
    primary_input_key: ClassVar[str] = "prompt"

    def validate_inputs(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Check and normalize the inputs, with LlamaIndex's messages.

        Returns:
            ``{"prompt": str, "image_documents": list[ImageDocument]}``
            (no images: an empty list).
        """
        inputs = self._merge(inputs)
        if "prompt" not in inputs:
            raise ValueError("Prompt must be in input dict.")
        prompt = inputs["prompt"]
        if _is_chat(prompt):
            raise NotImplementedError(
                "Chat messages not yet supported as input to multi-modal model."
            )
        documents = inputs.get("image_documents", [])
        if not isinstance(documents, list):
            raise ValueError("image_documents must be a list.")
        for document in documents:
            if not isinstance(document, ImageDocument):
                raise ValueError("image_documents must be a list of ImageDocument objects.")
        return {"prompt": validate_and_convert_stringable(prompt), "image_documents": documents}

    async def arun(self, /, **inputs: Any) -> dict[str, Any]:
        """Call ``acomplete`` (or ``astream_complete``) and return ``{"output": ...}``.

        An async stream given as the prompt (a previous step's streamed output)
        is drained first.
        """
        valid = self.validate_inputs(await _aresolve({**inputs}))
        llm = self.multi_modal_llm
        if self.streaming:
            return {"output": llm.astream_complete(**valid, **self.options)}
        return {"output": await llm.acomplete(**valid, **self.options)}

    #: ``arun``, blocking: ``{"output": response}`` (with ``streaming``: a sync stream).
    run = blocking(arun, convert=_blocking_outputs)

    # LlamaIndex's names for the same calls.
    run_component = run
    arun_component = arun


@final
@frozen
class MultiModalChatComponent(_LLMComponent):
    """A conversation as a pipeline step: ``messages`` in, ``output`` out.

    ``messages`` is a list of [`ChatMessage`][mmstream.ChatMessage] (or strings, as
    user messages), one message, or anything with a text form (a previous
    step's response or stream), which becomes one user message. The output is
    the [`ChatResponse`][mmstream.ChatResponse], or with ``streaming=True`` the stream.

    Raises:
        ValueError: ``Messages must be in input dict.``, or messages that are
            neither chat messages nor text.
    """

    _input_keys: ClassVar[frozenset[str]] = frozenset({"messages"})
    primary_input_key: ClassVar[str] = "messages"

    def validate_inputs(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Check and normalize the inputs.

        Returns:
            ``{"messages": list[ChatMessage]}``.
        """
        inputs = self._merge(inputs)
        if "messages" not in inputs:
            raise ValueError("Messages must be in input dict.")
        value = inputs["messages"]
        if isinstance(value, ChatMessage):
            return {"messages": [value]}
        if isinstance(value, (list, tuple)) and value:
            if all(isinstance(m, (ChatMessage, str)) for m in value):
                return {"messages": [_user(m) for m in value]}
            raise ValueError("messages must be a list of ChatMessage objects.")
        return {"messages": [_user(validate_and_convert_stringable(value))]}

    async def arun(self, /, **inputs: Any) -> dict[str, Any]:
        """Call ``achat`` (or ``astream_chat``) and return ``{"output": ...}``."""
        valid = self.validate_inputs(await _aresolve({**inputs}))
        messages: Sequence[ChatMessage] = valid["messages"]
        llm = self.multi_modal_llm
        if self.streaming:
            return {"output": llm.astream_chat(messages, **self.options)}
        return {"output": await llm.achat(messages, **self.options)}

    #: ``arun``, blocking: ``{"output": response}`` (with ``streaming``: a sync stream).
    run = blocking(arun, convert=_blocking_outputs)
    run_component = run
    arun_component = arun


def _user(message: ChatMessage | str) -> ChatMessage:
    if isinstance(message, ChatMessage):
        return message
    return ChatMessage(MessageRole.USER, message)


# --- composition ---------------------------------------------------------------------


def _mapper(
    component: Component, map: InputMap | None
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    if callable(map):
        function = map
        return lambda outputs: dict(function(outputs))
    if map is None:
        key = getattr(component, "primary_input_key", "")
        if not key:
            raise ValueError(
                f"{type(component).__name__} has no primary input; pass map= to say "
                "which outputs feed which inputs."
            )
        map = {"output": key}
    table = dict(map)

    def rename(outputs: dict[str, Any]) -> dict[str, Any]:
        missing = sorted(set(table) - set(outputs))
        if missing:
            raise ValueError(
                f"the previous step has no outputs {missing}; it gave {sorted(outputs)}."
            )
        return {target: outputs[source] for source, target in table.items()}

    return rename


@final
@frozen
class Chain:
    """Steps run one after another, each one's outputs mapped to the next one's inputs.

    Build it with `MultiModalCompleteComponent.then`. A streamed output
    in the middle of a chain is drained into text before the next step; the
    last step's output is returned as it is (a stream, if it streams).
    """

    steps: tuple[Component, ...]
    maps: tuple[Callable[[dict[str, Any]], dict[str, Any]], ...] = ()

    @property
    def input_keys(self) -> frozenset[str]:
        """The first step's inputs."""
        return self.steps[0].input_keys

    @property
    def output_keys(self) -> frozenset[str]:
        """The last step's outputs."""
        return self.steps[-1].output_keys

    def then(self, other: Component, *, map: InputMap | None = None) -> Chain:
        """This chain with one more step (see `MultiModalCompleteComponent.then`)."""
        return Chain((*self.steps, other), (*self.maps, _mapper(other, map)))

    async def arun(self, /, **inputs: Any) -> dict[str, Any]:
        """Run every step with the async calls; return the last step's outputs."""
        outputs = await self.steps[0].arun(**inputs)
        for step, map in zip(self.steps[1:], self.maps, strict=True):
            outputs = await step.arun(**map(outputs))
        return outputs

    #: ``arun``, blocking: the last step's outputs (a stream in them is a sync stream).
    run = blocking(arun, convert=_blocking_outputs)

    def _blocking_lease(self) -> Lease:
        for step in self.steps:
            lease = getattr(step, "_blocking_lease", None)
            if lease is not None:
                return lease()  # type: ignore[no-any-return]
        return _shared_lease
