"""What every provider gets from the shared shell, checked on every provider with its real bytes.

- a body cut inside its last event (JSON cut short, no blank line) is an
  ``IncompleteStreamError`` carrying the text so far, never a protocol error;
- a 200 body that is one JSON answer (a gateway that ignored ``stream: true``)
  is a one-chunk answer with text, usage and finish reason, and
  ``provider.decode_json`` reads the same body;
- a 200 body that is a JSON error object raises the typed error its code or type
  maps to, with the server's message;
- a line longer than the cap raises ``ProviderProtocolError`` with the partial
  answer, after the chunks completed before it;
- configuration: field defaults are constants, ``from_env`` reads each
  provider's variables, a missing key names ``from_env`` and the variable.

The wire bytes are rendered by ``mmstream.testing`` (the loopback server's
renderer of each API's documented format).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

import mmstream as mm
from mmstream.errors import (
    APIError,
    AuthenticationError,
    ConfigurationError,
    IncompleteStreamError,
    NotFoundError,
    OverloadedError,
    ProviderProtocolError,
    RateLimitError,
    ServerError,
)
from mmstream.protocols import Provider
from mmstream.providers import (
    Anthropic,
    AzureOpenAI,
    Gemini,
    Offline,
    Ollama,
    OpenAI,
    OpenAICompatible,
    from_string,
)
from mmstream.providers.base import BaseProvider, DecoderShell
from mmstream.request import ChatRequest
from mmstream.responses import ChatResponse
from mmstream.testing._formats import Answer, error_body, render_json, render_stream

#: every HTTP provider, configured with explicit values only, and the API it speaks.
PROVIDERS: dict[str, tuple[Provider, str]] = {
    "openai": (OpenAI(model="gpt-4o-mini", api_key="sk-test"), "openai"),
    "azure": (
        AzureOpenAI(deployment="dep", endpoint="https://res.openai.azure.com", api_key="k"),
        "azure",
    ),
    "openai-compatible": (OpenAICompatible(model="local"), "openai"),
    "anthropic": (Anthropic(model="claude-sonnet-4-5", api_key="sk-ant"), "anthropic"),
    "gemini": (Gemini(model="gemini-2.5-flash", api_key="AIza"), "gemini"),
    "ollama": (Ollama(model="llava"), "ollama"),
}
NAMES = list(PROVIDERS)
PIECES = ["The ", "sky ", "is ", "blue — ", "ünïcode ✓."]
TEXT = "".join(PIECES)


def _answer(api: str, *, usage: bool = True) -> Answer:
    return Answer(
        api=api,  # type: ignore[arg-type]
        model="m",
        pieces=list(PIECES),
        input_tokens=7,
        output_tokens=len(PIECES),
        finish_reason="stop",
        include_usage=usage,
    )


def _decode(provider: Provider, parts: list[bytes]) -> list[ChatResponse]:
    decoder = provider.new_decoder(_request(provider))
    out: list[ChatResponse] = []
    for part in parts:
        out += decoder.feed(part)
    return out + decoder.flush()


def _request(provider: Provider, **options: Any) -> ChatRequest:
    return ChatRequest(
        messages=[mm.ChatMessage("user", "hi")],
        options=provider.options.merge(**options),
        provider=provider,
    )


def _text(chunks: list[ChatResponse]) -> str:
    return "".join(chunk.delta or "" for chunk in chunks)


@pytest.fixture(params=NAMES)
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# --- a body cut inside its last event -----------------------------------------------------


def test_a_body_cut_inside_its_last_event_is_incomplete_with_the_partial_text(
    name: str,
) -> None:
    provider, api = PROVIDERS[name]
    stream = render_stream(_answer(api))
    frames = [*stream.head, *stream.chunks, *stream.tail]
    whole = b"".join(frames)
    assert _text(_decode(provider, [whole])) == TEXT  # the uncut body is a whole answer
    # Every frame after the text began, cut at every byte inside its JSON: the outcome is
    # that of the body without that frame (incomplete, with the text so far, for every
    # provider but a lenient one that had its finish_reason), never a protocol error.
    for index in range(len(stream.head) + 1, len(frames)):
        before = b"".join(frames[:index])
        try:
            complete: str | None = _text(_decode(provider, [before]))
        except IncompleteStreamError as cut_short:
            complete, partial = None, cut_short.partial
            so_far = "" if partial is None else partial.text
        frame = frames[index]
        for cut in range(1, len(frame)):
            if not frame[cut:].strip() or not any(c in frame[:cut] for c in b"{["):
                continue  # only the end of the line is missing, or no JSON began yet
            body = before + frame[:cut]
            if complete is not None:
                assert _text(_decode(provider, [body])) == complete, (name, index, cut)
                continue
            with pytest.raises(IncompleteStreamError) as info:
                _decode(provider, [body[:cut], body[cut:]])
            assert info.value.partial is not None, (name, index, cut)
            assert info.value.partial.text == so_far, (name, index, cut)
            assert info.value.provider == provider.name


def test_the_offline_body_cut_inside_its_done_line_is_incomplete() -> None:
    provider = Offline()
    deltas = b'{"delta":"Hel"}\n{"delta":"lo"}\n'
    done = b'{"done":true,"finish_reason":"stop","usage":{"output_tokens":2}}\n'
    for cut in range(1, len(done) - 1):
        with pytest.raises(IncompleteStreamError) as info:
            _decode(provider, [deltas + done[:cut]])
        assert info.value.partial is not None and info.value.partial.text == "Hello"


# --- a 200 body that is one JSON answer ----------------------------------------------------


def test_a_whole_json_answer_is_one_chunk_at_every_split(name: str) -> None:
    provider, api = PROVIDERS[name]
    body = render_json(_answer(api))
    results = []
    for cut in range(len(body) + 1):
        chunks = _decode(provider, [body[:cut], body[cut:]])
        assert len(chunks) == 1, (name, cut)
        results.append(chunks[0])
    final = results[0]
    assert all(r.text == final.text and r.usage == final.usage for r in results)
    assert final.text == final.delta == TEXT
    assert final.finish_reason == "stop"
    assert final.usage is not None
    assert (final.usage.input_tokens, final.usage.output_tokens) == (7, len(PIECES))
    assert final.additional_kwargs["provider"] == provider.name


def test_decode_json_reads_a_whole_answer(name: str) -> None:
    provider, api = PROVIDERS[name]
    final = provider.decode_json(render_json(_answer(api)))
    assert (final.text, final.delta, final.finish_reason) == (TEXT, TEXT, "stop")
    assert final.usage is not None and final.usage.output_tokens == len(PIECES)


def test_decode_json_refuses_what_is_not_an_answer(name: str) -> None:
    provider, _ = PROVIDERS[name]
    for body in (b"", b"<html>no</html>", b"[1, 2]" if name != "gemini" else b"[[1]]", b"{}"):
        with pytest.raises(ProviderProtocolError):
            provider.decode_json(body)


def test_a_gemini_json_array_body_is_one_answer() -> None:
    """``streamGenerateContent`` without ``alt=sse`` sends a JSON array of responses."""
    provider, _ = PROVIDERS["gemini"]
    answer = _answer("gemini")
    answer.sse = False
    stream = render_stream(answer)
    body = b"".join([*stream.head, *stream.chunks, *stream.tail])
    assert body.lstrip().startswith(b"[")
    [final] = _decode(provider, [body])
    assert final.text == TEXT
    assert final.finish_reason == "stop"


#: (status of the error body, the class its code or type maps to) per API family.
ERRORS: dict[str, list[tuple[int, type[APIError]]]] = {
    "openai": [
        (401, AuthenticationError),
        (404, NotFoundError),
        (429, RateLimitError),
        (500, ServerError),
    ],
    "azure": [(401, AuthenticationError), (404, NotFoundError), (429, RateLimitError)],
    "anthropic": [
        (401, AuthenticationError),
        (404, NotFoundError),
        (429, RateLimitError),
        (529, OverloadedError),
    ],
    "gemini": [(404, NotFoundError), (429, RateLimitError), (503, OverloadedError)],
    "ollama": [(404, ServerError), (503, OverloadedError)],
}


def test_a_json_error_body_with_status_200_is_its_typed_error(name: str) -> None:
    provider, api = PROVIDERS[name]
    for status, cls in ERRORS[api]:
        error = error_body(api, status)  # type: ignore[arg-type]
        body = json.dumps(error).encode()
        message = error["error"] if api == "ollama" else error["error"]["message"]
        for parts in ([body], [body[:7], body[7:]]):
            with pytest.raises(APIError) as info:
                _decode(provider, parts)
            assert type(info.value) is cls, (name, status, info.value)
            assert info.value.message == message
            assert info.value.provider == provider.name
        with pytest.raises(cls):
            provider.decode_json(body)


# --- a line over the cap ---------------------------------------------------------------------


def test_a_line_over_the_cap_raises_after_the_chunks_before_it(name: str) -> None:
    provider, api = PROVIDERS[name]
    stream = render_stream(_answer(api))
    before = b"".join([*stream.head, *stream.chunks[:2]])
    decoder = provider.new_decoder(_request(provider, max_line_bytes=4096))
    endless = (b"data: " if api != "ollama" else b"") + b"x" * 5000
    # the chunks completed in the same read come first; the error comes with the next call
    got = decoder.feed(before + endless)
    assert _text(got) == "The sky "
    with pytest.raises(ProviderProtocolError) as info:
        decoder.feed(b"more")
    assert "4,096 bytes" in str(info.value)
    assert info.value.partial is not None and info.value.partial.text == "The sky "
    assert info.value.provider == provider.name
    with pytest.raises(ProviderProtocolError):
        decoder.flush()  # the body cannot be read further


def test_a_line_that_never_ends_is_refused_once_over_the_cap(name: str) -> None:
    provider, api = PROVIDERS[name]
    decoder = provider.new_decoder(_request(provider, max_line_bytes=1000))
    decoder.feed(b"data: " if api != "ollama" else b"{")
    with pytest.raises(ProviderProtocolError) as info:
        for _ in range(100):
            decoder.feed(b"y" * 64)
    assert info.value.partial is None  # nothing had arrived


def test_a_line_under_the_cap_arrives_whole(name: str) -> None:
    provider, api = PROVIDERS[name]
    answer = _answer(api)
    answer.pieces = ["start ", "z" * 100_000, " end"]
    stream = render_stream(answer)
    body = b"".join([*stream.head, *stream.chunks, *stream.tail])
    decoder = provider.new_decoder(_request(provider, max_line_bytes=200_000))
    chunks = [c for i in range(0, len(body), 1000) for c in decoder.feed(body[i : i + 1000])]
    chunks += decoder.flush()
    assert chunks[-1].text == "start " + "z" * 100_000 + " end"


# --- configuration -----------------------------------------------------------------------------

#: every provider variable, set to a value no test would pick.
ODD = {
    "OPENAI_API_KEY": "odd-openai-key",
    "OPENAI_BASE_URL": "http://odd.invalid/openai",
    "OPENAI_ORG_ID": "odd-org",
    "OPENAI_PROJECT_ID": "odd-project",
    "OPENAI_COMPATIBLE_API_KEY": "odd-compatible-key",
    "OPENAI_COMPATIBLE_BASE_URL": "http://odd.invalid/compatible",
    "AZURE_OPENAI_ENDPOINT": "https://odd.invalid",
    "AZURE_OPENAI_API_KEY": "odd-azure-key",
    "AZURE_OPENAI_AD_TOKEN": "odd-azure-token",
    "OPENAI_API_VERSION": "2099-01-01",
    "ANTHROPIC_API_KEY": "odd-anthropic-key",
    "ANTHROPIC_BASE_URL": "http://odd.invalid/anthropic",
    "GEMINI_API_KEY": "odd-gemini-key",
    "GEMINI_BASE_URL": "http://odd.invalid/gemini",
    "GOOGLE_GENAI_API_VERSION": "v9",
    "OLLAMA_API_KEY": "odd-ollama-key",
    "OLLAMA_HOST": "odd.invalid:1",
}

#: provider -> (the fields from_env fills from ODD, and their values there).
FROM_ENV: dict[str, dict[str, Any]] = {
    "openai": {
        "api_key": "odd-openai-key",
        "base_url": "http://odd.invalid/openai",
        "organization": "odd-org",
        "project": "odd-project",
    },
    "openai-compatible": {
        "api_key": "odd-compatible-key",
        "base_url": "http://odd.invalid/compatible",
    },
    "azure": {
        "endpoint": "https://odd.invalid",
        "api_key": "odd-azure-key",
        "azure_ad_token": "odd-azure-token",
        "api_version": "2099-01-01",
    },
    "anthropic": {"api_key": "odd-anthropic-key", "base_url": "http://odd.invalid/anthropic"},
    "gemini": {
        "api_key": "odd-gemini-key",
        "base_url": "http://odd.invalid/gemini",
        "api_version": "v9",
    },
    "ollama": {"api_key": "odd-ollama-key", "base_url": "http://odd.invalid:1"},
}


def _value(value: Any) -> Any:
    return value.get_secret_value() if isinstance(value, mm.Secret) else value


def test_constructing_a_provider_reads_no_environment(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable, value in ODD.items():
        monkeypatch.setenv(variable, value)
    provider, _ = PROVIDERS[name]
    rebuilt = type(provider)(**_explicit(name))
    for field in FROM_ENV[name]:
        assert "odd" not in str(_value(getattr(rebuilt, field))), field
        assert "2099" not in str(_value(getattr(rebuilt, field))), field


def _explicit(name: str) -> dict[str, Any]:
    return {
        "openai": {"model": "m"},
        "openai-compatible": {"model": "m"},
        "azure": {"deployment": "d"},
        "anthropic": {"model": "m"},
        "gemini": {"model": "m"},
        "ollama": {"model": "m"},
    }[name]


def test_from_env_reads_each_variable_and_overrides_win(name: str) -> None:
    provider, _ = PROVIDERS[name]
    cls = type(provider)
    assert isinstance(provider, BaseProvider)
    built = cls.from_env(ODD, **_explicit(name))  # type: ignore[attr-defined]
    for field, value in FROM_ENV[name].items():
        assert _value(getattr(built, field)) == value, field
    first = next(iter(FROM_ENV[name]))
    given = "https://given.test" if "url" in first or first == "endpoint" else "given"
    overridden = cls.from_env(ODD, **_explicit(name), **{first: given})  # type: ignore[attr-defined]
    assert _value(getattr(overridden, first)) == given
    empty = cls.from_env({}, **_explicit(name))  # type: ignore[attr-defined]
    assert empty == cls(**_explicit(name))


def test_a_string_reads_the_environment_it_is_given(name: str) -> None:
    provider, _ = PROVIDERS[name]
    built = from_string(f"{name}:the-model", environ=ODD)
    assert type(built) is type(provider)
    for field, value in FROM_ENV[name].items():
        assert _value(getattr(built, field)) == value, field


def test_gemini_reads_googles_own_base_url_variable() -> None:
    built = Gemini.from_env({"GOOGLE_GEMINI_BASE_URL": "http://gw.test/"}, model="m", api_key="k")
    assert built.base_url == "http://gw.test"
    url = built.build_request(_request(built)).url
    assert url == "http://gw.test/v1beta/models/m:streamGenerateContent?alt=sse"
    first = Gemini.from_env(
        {"GEMINI_BASE_URL": "http://a.test", "GOOGLE_GEMINI_BASE_URL": "http://b.test"}, model="m"
    )
    assert first.base_url == "http://a.test"  # GEMINI_BASE_URL first


@pytest.mark.parametrize(
    ("provider", "variables"),
    [
        (OpenAI(model="m"), "OPENAI_API_KEY"),
        (Anthropic(model="m"), "ANTHROPIC_API_KEY"),
        (Gemini(model="m"), "GEMINI_API_KEY or GOOGLE_API_KEY"),
        (AzureOpenAI(deployment="d", endpoint="https://x.test"), "AZURE_OPENAI_API_KEY"),
        (AzureOpenAI(deployment="d", api_key="k"), "AZURE_OPENAI_ENDPOINT"),
    ],
    ids=["openai", "anthropic", "gemini", "azure-key", "azure-endpoint"],
)
def test_a_missing_setting_names_from_env_and_its_variable(
    provider: BaseProvider, variables: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        provider.check()
    message = str(info.value)
    assert variables in message
    assert f"{type(provider).__name__}.from_env(" in message
    assert info.value.provider == provider.name


def test_providers_without_a_required_key_check_clean() -> None:
    for provider in (OpenAICompatible(model="m"), Ollama(model="m"), Offline()):
        provider.check()  # nothing to report


def test_every_provider_declares_its_api_base(name: str) -> None:
    provider, _ = PROVIDERS[name]
    assert provider.api_base.startswith(("http://", "https://"))
    assert Offline().api_base == "offline://local"


def test_every_decoder_stands_on_the_shell(name: str) -> None:
    provider, _ = PROVIDERS[name]
    assert isinstance(provider.new_decoder(_request(provider)), DecoderShell)
    assert isinstance(Offline().new_decoder(_request(Offline())), DecoderShell)


def test_passed_through_options_never_touch_the_credentials(name: str) -> None:
    provider, _ = PROVIDERS[name]
    plain = provider.build_request(_request(provider))
    extras = provider.build_request(_request(provider, key="x", topK=3, api_key="y", seed=1))
    assert extras.headers == plain.headers
    assert extras.url == plain.url
