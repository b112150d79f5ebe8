"""Each error's hint fits it: a raise site may replace its class's hint, and the choice survives."""

from __future__ import annotations

import pickle

import pytest

import mmstream as mm
from mmstream.errors import (
    APIError,
    APITimeoutError,
    ConfigurationError,
    InvalidImageError,
    MMStreamError,
    OverloadedError,
)

GENERIC = ConfigurationError.hint


def test_the_class_hint_ends_the_message_by_default() -> None:
    error = ConfigurationError("openai needs an API key")
    assert error.hint == GENERIC
    assert str(error) == f"openai needs an API key. {GENERIC}"


def test_a_raise_site_hint_replaces_the_class_hint() -> None:
    error = ConfigurationError("no model", hint="Write it as 'openai:MODEL'.")
    assert str(error) == "no model. Write it as 'openai:MODEL'."
    assert GENERIC not in str(error)
    assert ConfigurationError.hint == GENERIC  # the class keeps its own


def test_an_empty_hint_means_none() -> None:
    assert str(ConfigurationError("closed", hint="")) == "closed"


@pytest.mark.parametrize(
    "error",
    [
        ConfigurationError("x", hint="Do this."),
        InvalidImageError("bad image", image_index=2, hint="Use a PNG."),
        APIError("boom", status=418, provider="acme", hint="Ask the teapot."),
        OverloadedError("busy", status=529, provider="anthropic", hint="Try tonight."),
        APITimeoutError("slow", kind="read", hint="Wait longer."),
    ],
)
def test_every_constructor_takes_a_hint_and_pickling_keeps_it(error: MMStreamError) -> None:
    assert error.hint.endswith(".") and error.hint in str(error)
    assert error.hint != type(error).hint
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert (copy.hint, str(copy)) == (error.hint, str(error))


def test_pickling_keeps_the_class_hint_when_none_was_given() -> None:
    copy = pickle.loads(pickle.dumps(ConfigurationError("x")))
    assert copy.hint == GENERIC
    assert "hint" not in vars(copy)


@pytest.mark.parametrize(
    ("spec", "phrases"),
    [
        ("nosuch:thing", ["unknown provider 'nosuch'", "register", "'NAME:MODEL'"]),
        ("openai", ["'openai' names no model", "Write it as 'openai:MODEL'"]),
        ("anthropic:  ", ["names no model", "'anthropic:MODEL'"]),
    ],
)
def test_from_string_errors_say_how_to_write_the_string(spec: str, phrases: list[str]) -> None:
    with pytest.raises(ConfigurationError) as info:
        mm.providers.from_string(spec)
    text = str(info.value)
    for phrase in phrases:
        assert phrase in text
    assert GENERIC not in text


@pytest.mark.parametrize("name", ["", "acme:v1", "  "])
def test_register_refuses_a_bad_name_with_a_fitting_hint(name: str) -> None:
    before = mm.providers.registered_names()
    with pytest.raises(ConfigurationError) as info:
        mm.providers.register(name, object)
    assert "short name" in str(info.value)
    assert GENERIC not in str(info.value)
    assert mm.providers.registered_names() == before
