"""The `mmstream` command: stream an answer about images from the terminal.

`mmstream complete PROMPT [--image PATH_OR_URL ...] [--model NAME:MODEL]` prints
the answer as it arrives (JSON lines with `--json`, closed by a summary with
usage and timing). Without `--model` it uses the offline provider and says so on
stderr. `mmstream serve` runs the loopback test server that speaks every
provider's wire format.

Exit statuses: 0 done, 1 the call failed (one line on stderr), 2 the command
line is wrong (argparse's usage message), 130 interrupted. The command checks
the provider's configuration (key, endpoint) before it reads any image, and an
API key given to it is never printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

if TYPE_CHECKING:
    from mmstream._secret import Secret
    from mmstream.content import ChatMessage, ImageBlock
    from mmstream.errors import ConfigurationError, MMStreamError
    from mmstream.providers.base import Provider

from mmstream._cli_args import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    real_number,
    whole_number,
)

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "main"]

#: The provider field that ``--base-url`` sets, where it is not ``base_url``.
_BASE_URL_FIELDS = {"azure": "endpoint"}
#: Offline-only options (``dest`` → flag), which shape the offline provider's answer.
_OFFLINE_KNOBS = {"chunks": "--chunks", "delay": "--delay", "fail_after": "--fail-after"}
#: Said after a configuration error: how to give the missing setting on the command line.
_CONFIG_HINT = (
    "On the command line, --api-key-file PATH, --api-key-stdin or --api-key KEY give "
    "the key, --base-url URL the server."
)

_EPILOG = """\
examples:
  mmstream complete "What is in this picture?" --image docs/assets/sample.png
  mmstream complete "Describe it" -i photo.jpg -m openai:gpt-4o-mini --api-key-file ~/.openai-key
  mmstream complete "hi" --chunks 20 --delay 0.1          (watch the offline provider stream)

The key comes from the provider's environment variable (OPENAI_API_KEY, ...)
unless --api-key, --api-key-file or --api-key-stdin gives it; prefer the file
or stdin, since a key on the command line shows in the process list.

exit status: 0 done, 1 the call failed, 2 usage error, 130 interrupted.
"""


class _UsageError(Exception):
    """The command line asks for something the command cannot do (exit status 2)."""


def _model_spec(text: str) -> str:
    """``--model``: a registered provider name and, except for offline, a model."""
    from mmstream.providers import registered_names

    name, colon, model = text.partition(":")
    name = name.strip().lower()
    names = registered_names()
    if name not in names:
        raise argparse.ArgumentTypeError(
            f"unknown provider {name!r}; write NAME:MODEL with NAME one of {', '.join(names)}"
        )
    if name != "offline" and not model.strip():
        raise argparse.ArgumentTypeError(
            f"{text!r} names no model; write it as {name}:MODEL (e.g. openai:gpt-4o-mini)"
        )
    return f"{name}:{model.strip()}" if colon else name


def _base_url(text: str) -> str:
    if not text.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(
            f"expected an http:// or https:// URL, not {text!r} "
            "(mmstream serve prints one for each provider)"
        )
    return text


def _parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The command's parser and its ``complete`` subparser (for usage errors)."""
    parser = argparse.ArgumentParser(
        prog="mmstream",
        description="Stream answers from multi-modal LLMs.",
        epilog="Run 'mmstream COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    complete = commands.add_parser(
        "complete",
        help="answer a prompt about images, streaming the text to stdout",
        description="Answer a prompt about images, streaming the text to stdout as it arrives.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    complete.add_argument("prompt", help="the question or instruction")
    complete.add_argument(
        "--image",
        "-i",
        action="append",
        default=[],
        metavar="PATH_OR_URL",
        help="an image file, an http(s) URL or a data: URL (repeatable)",
    )
    complete.add_argument(
        "--model",
        "-m",
        type=_model_spec,
        default=None,
        metavar="NAME:MODEL",
        help="provider and model, e.g. openai:gpt-4o-mini (default: offline:default)",
    )
    complete.add_argument("--system", default=None, help="a system prompt")
    complete.add_argument(
        "--json", action="store_true", help="print JSON lines: one per chunk, then a summary"
    )
    complete.add_argument(
        "--backend",
        choices=("asyncio", "trio"),
        default="asyncio",
        help="the event loop to run the call on (default: asyncio)",
    )
    calls = complete.add_argument_group("call options")
    calls.add_argument(
        "--max-tokens", type=whole_number(1), default=None, metavar="N", help="limit the answer"
    )
    calls.add_argument(
        "--temperature",
        type=real_number(0.0),
        default=None,
        metavar="T",
        help="sampling temperature",
    )
    calls.add_argument(
        "--top-p",
        type=real_number(0.0, maximum=1.0),
        default=None,
        metavar="P",
        help="nucleus sampling, 0 to 1",
    )
    calls.add_argument(
        "--timeout",
        type=real_number(0.0, exclusive=True),
        default=None,
        metavar="SECONDS",
        help="HTTP timeout",
    )
    remote = complete.add_argument_group("the provider's server and key")
    remote.add_argument(
        "--base-url",
        type=_base_url,
        default=None,
        metavar="URL",
        help="the API root (Azure: the endpoint); default: the provider's variable or its own",
    )
    keys = remote.add_mutually_exclusive_group()
    keys.add_argument(
        "--api-key",
        default=None,
        metavar="KEY",
        help="the API key ('-' reads it from stdin); default: the provider's variable",
    )
    keys.add_argument(
        "--api-key-file", default=None, metavar="PATH", help="read the API key from this file"
    )
    keys.add_argument(
        "--api-key-stdin",
        action="store_true",
        help="read the API key from stdin (asked without echo on a terminal)",
    )
    offline = complete.add_argument_group("the offline provider's answer (no network, no key)")
    offline.add_argument(
        "--chunks", type=whole_number(1), default=None, metavar="N", help="stream N chunks"
    )
    offline.add_argument(
        "--delay",
        type=real_number(0.0),
        default=None,
        metavar="SECONDS",
        help="pause between chunks",
    )
    offline.add_argument(
        "--fail-after",
        type=whole_number(0),
        default=None,
        metavar="N",
        help="fail mid-stream (overloaded) after N chunks",
    )
    try:
        from mmstream.testing._cli import add_serve_parser  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # the test server is optional at runtime
        pass
    else:
        add_serve_parser(commands)
    from mmstream.batch._cli import add_batch_parser

    add_batch_parser(commands)
    return parser, complete


# --- building the call -----------------------------------------------------------------


def _read_key(args: argparse.Namespace, stdin: TextIO) -> Secret | None:
    """The key the command line gives (wrapped at once, so it never shows), or ``None``."""
    from mmstream._secret import Secret

    if args.api_key_file is not None and args.api_key_file != "-":
        source = f"--api-key-file {args.api_key_file}"
        try:
            with open(args.api_key_file, encoding="utf-8") as file:
                text = file.readline()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
            raise _UsageError(f"cannot read {source}: {reason}") from None
    elif args.api_key_stdin or args.api_key == "-" or args.api_key_file == "-":
        source = "stdin"
        if stdin.isatty():
            import getpass

            text = getpass.getpass("API key: ")
        else:
            text = stdin.readline()
    elif args.api_key is not None:
        source, text = "--api-key", args.api_key
    else:
        return None
    key = Secret(text.strip())
    value = key.get_secret_value()
    if not value:
        raise _UsageError(f"the API key from {source} is empty")
    if any(char.isspace() or not char.isprintable() for char in value):
        raise _UsageError(
            f"the API key from {source} contains spaces or control characters; "
            "give the key alone, on one line"
        )
    return key


def _provider(args: argparse.Namespace, stdin: TextIO) -> Provider:
    """The provider the command line names, with its ``--base-url`` and key."""
    from mmstream.providers import from_string

    spec = args.model or "offline:default"
    name = spec.partition(":")[0]
    fields: dict[str, Any] = {}
    knobs = [flag for dest, flag in _OFFLINE_KNOBS.items() if getattr(args, dest) is not None]
    if name == "offline":
        given = ["--base-url"] if args.base_url is not None else []
        if args.api_key is not None or args.api_key_file is not None or args.api_key_stdin:
            given.append("an API key")
        if given:
            raise _UsageError(
                f"{' and '.join(given)}: not for the offline provider, which answers "
                "in-process without a server or a key; add --model NAME:MODEL for a real one"
            )
        fields = {
            dest: value for dest in _OFFLINE_KNOBS if (value := getattr(args, dest)) is not None
        }
    else:
        if knobs:
            raise _UsageError(
                f"{', '.join(knobs)}: only for the offline provider (they shape its answer), "
                f"not for {name}; drop them or use --model offline"
            )
        if args.base_url is not None:
            fields[_BASE_URL_FIELDS.get(name, "base_url")] = args.base_url
        key = _read_key(args, stdin)
        if key is not None:
            fields["api_key"] = key
    try:
        return from_string(spec, **fields)
    except TypeError:  # a field this provider class does not have
        raise _UsageError(f"the {name} provider takes no {', '.join(fields)}") from None


def _check_backend(backend: str) -> None:
    import importlib.util

    if importlib.util.find_spec(backend) is None:
        raise _UsageError(
            f"--backend {backend}: {backend} is not installed (pip install {backend})"
        )


def _check_configuration(provider: Provider) -> None:
    """Raise the provider's ConfigurationError (a missing key or endpoint) before any work.

    Building a request is pure, so describing a one-line text call finds what the
    provider lacks without reading an image or touching the network.
    """
    from mmstream.content import ChatMessage, MessageRole
    from mmstream.errors import ConfigurationError, MMStreamError
    from mmstream.request import ChatRequest

    probe = ChatRequest(messages=[ChatMessage(MessageRole.USER, "ping")], provider=provider)
    try:
        provider.build_request(probe)
    except ConfigurationError:
        raise
    except MMStreamError:  # about the probe itself: the real call reports what applies
        return


def _image(value: str) -> ImageBlock:
    from mmstream.content import ImageBlock

    if value.startswith(("http://", "https://", "data:")):
        return ImageBlock(url=value)
    return ImageBlock(path=value)


def _messages(args: argparse.Namespace) -> list[ChatMessage]:
    from mmstream.content import ChatMessage, MessageRole, TextBlock

    messages = []
    if args.system:
        messages.append(ChatMessage(MessageRole.SYSTEM, args.system))
    blocks = [_image(value) for value in args.image]
    messages.append(ChatMessage(MessageRole.USER, blocks=[*blocks, TextBlock(args.prompt)]))
    return messages


# --- running it ----------------------------------------------------------------------------


class _Output:
    """stdout that remembers whether the last line is unfinished, to end it before a message."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.mid_line = False

    def write(self, text: str) -> None:
        if text:
            # Set first: on trio, Ctrl-C may land anywhere, even between write and flush.
            self.mid_line = not text.endswith("\n")
            self.stream.write(text)
            self.stream.flush()

    def end_line(self) -> None:
        if self.mid_line:
            self.write("\n")


async def _stream(
    provider: Provider,
    messages: list[ChatMessage],
    options: dict[str, Any],
    args: argparse.Namespace,
    out: _Output,
) -> None:
    from mmstream.llm import MultiModalLLM

    start = time.perf_counter()
    first: float | None = None
    last = None
    async with MultiModalLLM(provider) as llm, llm.astream_chat(messages, **options) as stream:
        async for chunk in stream:
            last = chunk
            if not chunk.delta:
                continue
            if first is None:
                first = time.perf_counter() - start
            if args.json:
                out.write(json.dumps({"delta": chunk.delta}, ensure_ascii=False) + "\n")
            else:
                out.write(chunk.delta)
    duration = time.perf_counter() - start
    if not args.json:
        out.write("\n")
        return
    usage = last.usage if last is not None else None
    summary = {
        "done": True,
        "text": last.text if last is not None else "",
        "model": args.model or "offline:default",
        "finish_reason": last.finish_reason if last is not None else None,
        "usage": None
        if usage is None
        else {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "total_tokens": usage.total_tokens,
        },
        "time_to_first_chunk": first,
        "duration": duration,
    }
    out.write(json.dumps(summary, ensure_ascii=False) + "\n")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _failed(
    exc: MMStreamError, message: str, args: argparse.Namespace, out: _Output, err: TextIO
) -> int:
    """End a partial line, print the JSON failure line (with ``--json``) and the error."""
    out.end_line()
    message = _one_line(message)
    if args.json:
        failure = {
            "done": False,
            "error": type(exc).__name__,
            "message": message,
            "text": exc.partial.text if exc.partial is not None else "",
        }
        out.write(json.dumps(failure, ensure_ascii=False) + "\n")
    err.write(f"mmstream: error: {message}\n")
    return EXIT_ERROR


def _call_failed(exc: MMStreamError, args: argparse.Namespace, out: _Output, err: TextIO) -> int:
    message = str(exc)
    if exc.partial is not None:  # the partial answer is on stdout already
        message = message.replace("; see .partial)", ", printed above)")
    return _failed(exc, message, args, out, err)


def _configuration_failed(
    exc: ConfigurationError, args: argparse.Namespace, out: _Output, err: TextIO
) -> int:
    # The class's generic hint gives way to the command line's; a raise site's own stays.
    text = exc.message if exc.hint == type(exc).hint else str(exc)
    return _failed(exc, f"{text.rstrip('.')}. {_CONFIG_HINT}", args, out, err)


def _run_complete(args: argparse.Namespace, usage: Callable[[str], NoReturn]) -> int:
    import anyio

    from mmstream.errors import ConfigurationError, MMStreamError

    out, err = _Output(sys.stdout), sys.stderr
    try:
        try:
            _check_backend(args.backend)
            provider = _provider(args, sys.stdin)
        except _UsageError as exc:
            usage(str(exc))
        try:
            _check_configuration(provider)
        except ConfigurationError as exc:
            return _configuration_failed(exc, args, out, err)
        if args.model is None:
            err.write("mmstream: no --model given; answering with the offline provider\n")
            err.flush()
        options = {
            name: value
            for name in ("max_tokens", "temperature", "top_p", "timeout")
            if (value := getattr(args, name)) is not None
        }
        anyio.run(_stream, provider, _messages(args), options, args, out, backend=args.backend)
    except ConfigurationError as exc:
        return _configuration_failed(exc, args, out, err)
    except MMStreamError as exc:
        return _call_failed(exc, args, out, err)
    except KeyboardInterrupt:
        out.end_line()
        err.write("mmstream: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `mmstream complete ... | head -1`: the reader left
        _silence_stdout()
        return EXIT_ERROR
    return EXIT_OK


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return its exit status (a usage error exits with 2 via argparse)."""
    parser, complete = _parser()
    args = parser.parse_args(argv)
    if args.version:
        from mmstream._version import __version__

        print(f"mmstream {__version__}")
        return EXIT_OK
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if args.command == "serve":
        from mmstream.testing._cli import run_serve

        return int(run_serve(args) or EXIT_OK)
    if args.command == "batch":
        from mmstream.batch._cli import run_batch

        return run_batch(args)
    return _run_complete(args, complete.error)


if __name__ == "__main__":
    sys.exit(main())
