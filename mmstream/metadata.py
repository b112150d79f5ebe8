"""What a model can do, as LlamaIndex's ``MultiModalLLMMetadata`` describes it."""

from __future__ import annotations

from typing import final

from attrs import frozen

__all__ = ["MultiModalLLMMetadata"]


@final
@frozen(kw_only=True)
class MultiModalLLMMetadata:
    """Limits and abilities of a multi-modal model; the defaults are LlamaIndex's.

    Attributes:
        context_window: tokens the model reads at most (prompt + answer).
        num_output: tokens the model writes at most in one answer.
        num_input_files: images one request may carry.
        is_function_calling_model: whether the model can call tools.
        model_name: the model's name.
        is_chat_model: whether the model takes a conversation of messages.
    """

    context_window: int = 3900
    num_output: int = 256
    num_input_files: int = 10
    is_function_calling_model: bool = False
    model_name: str = "unknown"
    is_chat_model: bool = False
