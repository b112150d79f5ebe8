"""The ``mmstream`` command: stream an answer about images from the terminal.

``mmstream complete PROMPT [--image PATH_OR_URL ...] [--model provider:model]
[--system TEXT] [--json]`` prints the answer as it arrives (JSON lines with
``--json``, closed by a summary line with usage and timing). Without
``--model`` it uses the offline provider and says so on stderr. ``mmstream
serve`` runs the loopback test server that speaks every provider's format.
Errors end the command with one line on stderr and a non-zero status.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

__all__ = ["main"]

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmstream", description="Stream answers from multi-modal LLMs."
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    complete = commands.add_parser(
        "complete", help="answer a prompt about images, streaming the text to stdout"
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
        default=None,
        help="provider:model, e.g. openai:gpt-4o-mini (default: offline:default)",
    )
    complete.add_argument("--system", default=None, help="a system prompt")
    complete.add_argument(
        "--json", action="store_true", help="print JSON lines: one per chunk, then a summary"
    )
    complete.add_argument("--max-tokens", type=int, default=None, help="limit the answer")
    complete.add_argument("--temperature", type=float, default=None, help="sampling temperature")
    complete.add_argument("--timeout", type=float, default=None, help="HTTP timeout in seconds")
    try:
        from mmstream.testing._cli import add_serve_parser  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # the test server is optional at runtime
        pass
    else:
        add_serve_parser(commands)
    from mmstream.batch._cli import add_batch_parser

    add_batch_parser(commands)
    return parser


def _image(value: str) -> Any:
    from mmstream.content import ImageBlock

    if value.startswith(("http://", "https://", "data:")):
        return ImageBlock(url=value)
    return ImageBlock(path=value)


async def _complete(args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
    from mmstream.content import ChatMessage, MessageRole, TextBlock
    from mmstream.llm import MultiModalLLM

    model = args.model
    if model is None:
        model = "offline:default"
        err.write("mmstream: no --model given; answering with the offline provider\n")
    messages = []
    if args.system:
        messages.append(ChatMessage(MessageRole.SYSTEM, args.system))
    blocks = [_image(value) for value in args.image]
    messages.append(ChatMessage(MessageRole.USER, blocks=[*blocks, TextBlock(args.prompt)]))
    options = {
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "timeout": args.timeout,
    }
    options = {k: v for k, v in options.items() if v is not None}
    start = time.perf_counter()
    first: float | None = None
    last = None
    async with MultiModalLLM(model) as llm, llm.astream_chat(messages, **options) as stream:
        async for chunk in stream:
            last = chunk
            if first is None and chunk.delta:
                first = time.perf_counter() - start
            if args.json:
                if chunk.delta:
                    out.write(json.dumps({"delta": chunk.delta}, ensure_ascii=False) + "\n")
            else:
                out.write(chunk.delta or "")
            out.flush()
    duration = time.perf_counter() - start
    if args.json:
        usage = last.usage if last is not None else None
        summary = {
            "done": True,
            "text": last.text if last is not None else "",
            "model": model,
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
    else:
        out.write("\n")
    out.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return its exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.version:
        from mmstream._version import __version__

        print(f"mmstream {__version__}")
        return 0
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if args.command == "serve":
        from mmstream.testing._cli import run_serve

        return int(run_serve(args) or 0)
    if args.command == "batch":
        from mmstream.batch._cli import run_batch

        return run_batch(args)
    import anyio

    from mmstream.errors import MMStreamError

    try:
        anyio.run(_complete, args, sys.stdout, sys.stderr)
    except MMStreamError as exc:
        sys.stdout.flush()
        message = " ".join(str(exc).split())
        sys.stderr.write(f"mmstream: error: {message}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        sys.stderr.write("mmstream: interrupted\n")
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
