"""Pipeline components: LlamaIndex's validation, run/arun, streaming, chat, chaining."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import attrs
import pytest
from PIL import Image

import mmstream as mm
from mmstream.middleware import CallNext
from mmstream.pipeline import Chain, Component, validate_and_convert_stringable


@pytest.fixture
def llm() -> Iterator[mm.MultiModalLLM]:
    with mm.MultiModalLLM("offline:default") as model:
        yield model


def red_square() -> mm.ImageDocument:
    return mm.ImageDocument.from_pil(Image.new("RGB", (32, 32), (220, 30, 30)))


@attrs.define
class Recorder:
    """A middleware that keeps every request it sees (to check what the component sent)."""

    requests: list[mm.ChatRequest] = attrs.field(factory=list)

    async def __call__(
        self, request: mm.ChatRequest, call_next: CallNext
    ) -> AsyncIterator[mm.ChatResponse]:
        self.requests.append(request)
        async for chunk in call_next(request):
            yield chunk


# --- validation, exactly as LlamaIndex words it ---------------------------------------


def test_keys(llm: mm.MultiModalLLM) -> None:
    component = mm.MultiModalCompleteComponent(llm)
    assert component.input_keys == {"prompt", "image_documents"}
    assert component.output_keys == {"output"}
    assert component.streaming is False
    chat = mm.MultiModalChatComponent(llm, streaming=True)
    assert chat.input_keys == {"messages"}
    assert chat.output_keys == {"output"}
    assert isinstance(component, Component)
    assert isinstance(chat, Component)


def test_missing_prompt(llm: mm.MultiModalLLM) -> None:
    component = mm.MultiModalCompleteComponent(llm)
    with pytest.raises(ValueError, match=r"^Prompt must be in input dict\.$"):
        component.run(image_documents=[])


@pytest.mark.parametrize(
    "prompt",
    [
        mm.ChatMessage("user", "hi"),
        [mm.ChatMessage("user", "hi")],
        [mm.ChatMessage("system", "be brief"), mm.ChatMessage("user", "hi")],
        (mm.ChatMessage("user", "hi"),),
    ],
)
def test_chat_message_prompt(llm: mm.MultiModalLLM, prompt: Any) -> None:
    component = mm.MultiModalCompleteComponent(llm)
    with pytest.raises(NotImplementedError) as info:
        component.run(prompt=prompt)
    assert str(info.value) == "Chat messages not yet supported as input to multi-modal model."


@pytest.mark.parametrize("documents", [(), red_square(), "cat.png", {"a": 1}])
def test_image_documents_not_a_list(llm: mm.MultiModalLLM, documents: Any) -> None:
    component = mm.MultiModalCompleteComponent(llm)
    with pytest.raises(ValueError, match=r"^image_documents must be a list\.$"):
        component.run(prompt="hi", image_documents=documents)


@pytest.mark.parametrize("item", ["cat.png", mm.ImageBlock(url="https://x/a.png"), None])
def test_image_documents_of_the_wrong_type(llm: mm.MultiModalLLM, item: Any) -> None:
    component = mm.MultiModalCompleteComponent(llm)
    with pytest.raises(
        ValueError, match=r"^image_documents must be a list of ImageDocument objects\.$"
    ):
        component.run(prompt="hi", image_documents=[red_square(), item])


def test_unknown_input_key(llm: mm.MultiModalLLM) -> None:
    component = mm.MultiModalCompleteComponent(llm)
    with pytest.raises(ValueError, match=r"unknown input keys \['images'\]"):
        component.run(prompt="hi", images=[])


def test_validation_happens_before_any_call(llm: mm.MultiModalLLM) -> None:
    recorder = Recorder()
    model = mm.MultiModalLLM("offline:default", middleware=[recorder])
    component = mm.MultiModalCompleteComponent(model)
    with pytest.raises(ValueError):
        component.run(prompt="hi", image_documents="x")
    assert recorder.requests == []


def test_defaults_and_conversion(llm: mm.MultiModalLLM) -> None:
    component = mm.MultiModalCompleteComponent(llm)
    assert component.validate_inputs({"prompt": "hi"}) == {"prompt": "hi", "image_documents": []}
    assert component.validate_inputs({"prompt": 42})["prompt"] == "42"
    response = mm.CompletionResponse(text="a cat", delta=None)
    assert component.validate_inputs({"prompt": response})["prompt"] == "a cat"
    assert component.validate_inputs({"prompt": ["a", response]})["prompt"] == "['a', 'a cat']"


def test_not_stringable() -> None:
    with pytest.raises(ValueError, match=r"is not stringable\.$"):
        validate_and_convert_stringable(object())
    with pytest.raises(ValueError, match="is not stringable"):
        validate_and_convert_stringable(iter([object()]))


# --- running -------------------------------------------------------------------------


def test_run(llm: mm.MultiModalLLM) -> None:
    component = mm.MultiModalCompleteComponent(llm)
    result = component.run(prompt="What colour is it?", image_documents=[red_square()])
    assert set(result) == {"output"}
    output = result["output"]
    assert isinstance(output, mm.CompletionResponse)
    assert "You asked: “What colour is it?”" in output.text
    assert "mostly red" in output.text
    assert output.finish_reason == "stop"
    assert output.usage is not None and output.usage.output_tokens


def test_run_without_images(llm: mm.MultiModalLLM) -> None:
    output = mm.MultiModalCompleteComponent(llm).run(prompt="hello")["output"]
    assert "There is no image to look at." in output.text


def test_run_streaming(llm: mm.MultiModalLLM) -> None:
    component = mm.MultiModalCompleteComponent(llm, streaming=True)
    stream = component.run(prompt="Describe", image_documents=[red_square()])["output"]
    assert isinstance(stream, mm.SyncStream)
    with stream:
        chunks = list(stream)
    assert len(chunks) > 3
    assert all(isinstance(c, mm.CompletionResponse) for c in chunks)
    assert "".join(c.delta or "" for c in chunks) == chunks[-1].text
    assert "mostly red" in chunks[-1].text


def test_options_reach_the_call() -> None:
    recorder = Recorder()
    with mm.MultiModalLLM("offline:default", middleware=[recorder]) as model:
        component = mm.MultiModalCompleteComponent(model, options={"max_tokens": 3})
        output = component.run(prompt="Describe this")["output"]
    assert recorder.requests[0].options.max_tokens == 3
    assert recorder.requests[0].operation == "complete"
    assert output.finish_reason == "length"
    assert output.usage.output_tokens == 3


def test_run_component_alias(llm: mm.MultiModalLLM) -> None:
    component = mm.MultiModalCompleteComponent(llm)
    assert "You asked: “hi”" in component.run_component(prompt="hi")["output"].text


async def test_arun(llm: mm.MultiModalLLM) -> None:
    component = mm.MultiModalCompleteComponent(llm)
    result = await component.arun(prompt="What colour?", image_documents=[red_square()])
    output = result["output"]
    assert isinstance(output, mm.CompletionResponse)
    assert "mostly red" in output.text
    await llm.aclose()


async def test_arun_validation(llm: mm.MultiModalLLM) -> None:
    component = mm.MultiModalCompleteComponent(llm)
    with pytest.raises(ValueError, match=r"^Prompt must be in input dict\.$"):
        await component.arun()
    with pytest.raises(NotImplementedError):
        await component.arun(prompt=[mm.ChatMessage("user", "hi")])
    with pytest.raises(ValueError, match=r"^image_documents must be a list\.$"):
        await component.arun(prompt="hi", image_documents=red_square())


async def test_arun_streaming(llm: mm.MultiModalLLM) -> None:
    component = mm.MultiModalCompleteComponent(llm, streaming=True)
    stream = (await component.arun(prompt="Describe", image_documents=[red_square()]))["output"]
    assert isinstance(stream, mm.ChatStream)
    deltas = []
    async with stream:
        async for chunk in stream:
            assert isinstance(chunk, mm.CompletionResponse)
            deltas.append(chunk.delta or "")
    assert len(deltas) > 3
    assert "mostly red" in "".join(deltas)
    await llm.aclose()


async def test_arun_streaming_early_exit_closes(llm: mm.MultiModalLLM) -> None:
    seen: list[str] = []
    model = mm.MultiModalLLM(
        "offline:default",
        middleware=[mm.middleware.Callbacks(on_close=lambda r: seen.append("closed"))],
    )
    component = mm.MultiModalCompleteComponent(model, streaming=True)
    stream = (await component.arun(prompt="Describe"))["output"]
    async with stream:
        async for _ in stream:
            break
    assert seen == ["closed"]


# --- the chat component --------------------------------------------------------------


def test_chat_validation(llm: mm.MultiModalLLM) -> None:
    chat = mm.MultiModalChatComponent(llm)
    with pytest.raises(ValueError, match=r"^Messages must be in input dict\.$"):
        chat.run()
    with pytest.raises(ValueError, match=r"^messages must be a list of ChatMessage objects\.$"):
        chat.run(messages=[mm.ChatMessage("user", "hi"), 3])
    message = mm.ChatMessage("user", "hi")
    assert chat.validate_inputs({"messages": message}) == {"messages": [message]}
    assert chat.validate_inputs({"messages": "hi"}) == {"messages": [message]}
    assert chat.validate_inputs({"messages": ["hi"]}) == {"messages": [message]}


def test_chat_run(llm: mm.MultiModalLLM) -> None:
    chat = mm.MultiModalChatComponent(llm)
    messages = [
        mm.ChatMessage("system", "Be brief."),
        mm.ChatMessage(
            "user",
            blocks=[mm.TextBlock("Which colour?"), red_square().to_block()],
        ),
    ]
    output = chat.run(messages=messages)["output"]
    assert isinstance(output, mm.ChatResponse)
    assert "You asked: “Which colour?”" in output.text
    assert output.message.role == mm.MessageRole.ASSISTANT


def test_chat_run_streaming(llm: mm.MultiModalLLM) -> None:
    stream = mm.MultiModalChatComponent(llm, streaming=True).run(messages="hi")["output"]
    with stream:
        chunks = list(stream)
    assert all(isinstance(c, mm.ChatResponse) for c in chunks)
    assert "You asked: “hi”" in chunks[-1].text


async def test_chat_arun(llm: mm.MultiModalLLM) -> None:
    chat = mm.MultiModalChatComponent(llm)
    output = (await chat.arun(messages=[mm.ChatMessage("user", "hello there")]))["output"]
    assert isinstance(output, mm.ChatResponse)
    assert "You asked: “hello there”" in output.text
    stream = (await attrs.evolve(chat, streaming=True).arun(messages="hi"))["output"]
    async with stream:
        texts = [chunk.text async for chunk in stream]
    assert "You asked: “hi”" in texts[-1]
    await llm.aclose()


# --- composition ---------------------------------------------------------------------


def test_partial(llm: mm.MultiModalLLM) -> None:
    component = mm.MultiModalCompleteComponent(llm).partial(image_documents=[red_square()])
    output = component.run(prompt="Which colour?")["output"]
    assert "I see one image." in output.text
    with pytest.raises(ValueError, match="unknown input keys"):
        component.partial(images=[])


def test_then_runs_in_order(llm: mm.MultiModalLLM) -> None:
    recorder = Recorder()
    with mm.MultiModalLLM("offline:default", middleware=[recorder]) as model:
        describe = mm.MultiModalCompleteComponent(model)
        shorten = mm.MultiModalCompleteComponent(model, options={"max_tokens": 4})
        pipeline = describe.then(shorten)
        assert isinstance(pipeline, Chain)
        assert pipeline.input_keys == {"prompt", "image_documents"}
        result = pipeline.run(prompt="Which colour?", image_documents=[red_square()])
    first, second = recorder.requests
    assert first.messages[0].content == "Which colour?"
    # By default the first answer's text becomes the second step's prompt.
    assert "mostly red" in (second.messages[0].content or "")
    assert len(second.messages[0].images) == 0
    assert result["output"].finish_reason == "length"


def test_then_with_a_rename_table_and_a_function(llm: mm.MultiModalLLM) -> None:
    recorder = Recorder()
    with mm.MultiModalLLM("offline:default", middleware=[recorder]) as model:
        complete = mm.MultiModalCompleteComponent(model)
        chat = mm.MultiModalChatComponent(model)
        pipeline = complete.then(chat, map={"output": "messages"}).then(
            complete, map=lambda out: {"prompt": "Again: " + out["output"].text}
        )
        result = pipeline.run(prompt="one")
        with pytest.raises(ValueError, match=r"the previous step has no outputs \['answer'\]"):
            complete.then(complete, map={"answer": "prompt"}).run(prompt="x")
    assert [r.operation for r in recorder.requests][:3] == ["complete", "chat", "complete"]
    assert (recorder.requests[2].messages[0].content or "").startswith("Again: Offline answer")
    assert isinstance(result["output"], mm.CompletionResponse)


def test_then_drains_a_streamed_middle_step(llm: mm.MultiModalLLM) -> None:
    streamed = mm.MultiModalCompleteComponent(llm, streaming=True)
    final = mm.MultiModalCompleteComponent(llm, streaming=True)
    stream = streamed.then(final).run(prompt="first question")["output"]
    with stream:
        text = [chunk.text for chunk in stream][-1]
    assert "You asked: “Offline answer: no model was called. You asked: “first question”" in text


async def test_athen_drains_a_streamed_middle_step(llm: mm.MultiModalLLM) -> None:
    streamed = mm.MultiModalCompleteComponent(llm, streaming=True)
    chat = mm.MultiModalChatComponent(llm)
    result = await streamed.then(chat).arun(prompt="first question", image_documents=[])
    assert isinstance(result["output"], mm.ChatResponse)
    assert "You asked: “first question”" in result["output"].text
    assert result["output"].text.count("Offline answer") == 2
    await llm.aclose()


def test_then_needs_a_map_for_foreign_components(llm: mm.MultiModalLLM) -> None:
    @attrs.frozen
    class Upper:
        input_keys: frozenset[str] = frozenset({"text"})
        output_keys: frozenset[str] = frozenset({"output"})

        def run(self, **inputs: Any) -> dict[str, Any]:
            return {"output": inputs["text"].upper()}

        async def arun(self, **inputs: Any) -> dict[str, Any]:
            return self.run(**inputs)

    component = mm.MultiModalCompleteComponent(llm)
    with pytest.raises(ValueError, match="pass map="):
        component.then(Upper())
    pipeline = component.then(Upper(), map=lambda out: {"text": out["output"].text})
    assert pipeline.run(prompt="hi")["output"].startswith("OFFLINE ANSWER")
