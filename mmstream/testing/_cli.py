"""`mmstream serve` and `python -m mmstream.testing`: run the test server from the shell.

Once it listens it prints, for each provider, exactly the value that provider's
`base_url` (its `--base-url`, its environment variable) takes, and a command to
try; then it serves until interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from mmstream._cli_args import EXIT_ERROR, EXIT_OK, real_number, whole_number

__all__ = ["PROVIDER_BASE_URLS", "add_serve_parser", "main", "run_serve"]

#: For each provider: the path its base URL adds to the server's root, and its variable.
PROVIDER_BASE_URLS: tuple[tuple[str, str, str], ...] = (
    ("openai", "/v1", "OPENAI_BASE_URL"),
    ("openai-compatible", "/v1", "OPENAI_COMPATIBLE_BASE_URL"),
    ("azure", "", "AZURE_OPENAI_ENDPOINT"),
    ("anthropic", "", "ANTHROPIC_BASE_URL"),
    ("gemini", "", "GEMINI_BASE_URL"),
    ("ollama", "", "OLLAMA_HOST"),
)

_DESCRIPTION = """\
Run the loopback test server that speaks every provider's streaming wire format
(OpenAI, Azure OpenAI, Anthropic, Gemini, Ollama). Once it listens it prints each
provider's base URL and a command to try, then serves until Ctrl+C. Point
mmstream, an official SDK or curl at it; it answers by echoing the prompt.
"""

_EPILOG = """\
example:
  mmstream serve --port 8000 --chunks 20 --pause 0.05
  OPENAI_BASE_URL=http://127.0.0.1:8000/v1 OPENAI_API_KEY=sk-test \\
      mmstream complete "hi" --model openai:gpt-4o-mini
"""


def _port(text: str) -> int:
    port = whole_number(0)(text)
    if port > 65535:
        raise argparse.ArgumentTypeError(f"must be at most 65535, not {port}")
    return port


def _configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback)")
    parser.add_argument(
        "--port", "-p", type=_port, default=0, metavar="N", help="port (default: a free one)"
    )
    parser.add_argument(
        "--api-key", default=None, help="the only key accepted (default: any non-empty key)"
    )
    parser.add_argument(
        "--no-auth", action="store_true", help="skip the providers' key and header checks"
    )
    parser.add_argument("--text", default=None, help="answer with this text instead of the echo")
    parser.add_argument(
        "--chunks",
        type=whole_number(1),
        default=None,
        metavar="N",
        help="content events per answer",
    )
    parser.add_argument(
        "--chunk-size", type=whole_number(1), default=None, metavar="N", help="characters per event"
    )
    parser.add_argument(
        "--pause",
        type=real_number(0.0),
        default=0.0,
        metavar="SECONDS",
        help="pause between content events",
    )
    parser.add_argument(
        "--backend", choices=("asyncio", "trio"), default="asyncio", help="event loop to run on"
    )
    # The web demo (mmstream.web, extra mmstream[web]) instead of the test server.
    parser.add_argument("--ui", action="store_true", help="serve the web demo page instead")
    parser.add_argument("--model", "-m", default=None, help="with --ui: provider:model to ask")
    return parser


def add_serve_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `serve` subcommand to an `argparse` subparsers object."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="run the loopback test server that speaks every provider's wire format",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return _configure(parser)


def _announce(base: str, api_key: str | None, out: TextIO) -> None:
    """Print where the server listens, each provider's base URL, and a command to try."""
    out.write(f"mmstream test server listening on {base}\n")
    out.write("Base URLs (pass one as --base-url, or set the variable next to it):\n")
    width = max(len(f"{base}{path}") for _, path, _ in PROVIDER_BASE_URLS)
    for name, path, variable in PROVIDER_BASE_URLS:
        out.write(f"  {name:<18} {base + path:<{width}}  {variable}\n")
    key = "YOUR_SERVE_KEY" if api_key else "sk-test"
    accepted = "only the key given to --api-key" if api_key else "any non-empty key"
    out.write(f"It accepts {accepted}. Try:\n")
    out.write(
        f'  mmstream complete "What is in this picture?" --image docs/assets/sample.png '
        f"--model openai:gpt-4o-mini --base-url {base}/v1 --api-key {key}\n"
    )
    out.write("Press Ctrl+C to stop.\n")
    out.flush()


def run_serve(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Serve until interrupted; returns the exit status (0, or 1 when it cannot listen)."""
    if getattr(args, "ui", False):
        try:
            from mmstream.web._demo import run_demo
        except ImportError as exc:  # mmstream[web] is not installed; the message says so
            sys.stderr.write(f"mmstream: error: {exc}\n")
            return 1
        return run_demo(args, out)
    import anyio

    from mmstream.testing._script import Script
    from mmstream.testing._server import TestServer

    stream = out or sys.stdout
    script = Script(
        text=args.text, chunks=args.chunks, chunk_size=args.chunk_size, pause=args.pause
    )
    server = TestServer(
        script=script,
        api_key=args.api_key,
        require_auth=not args.no_auth,
        host=args.host,
        port=args.port,
    )
    try:
        anyio.run(
            server.serve_forever,
            lambda s: _announce(s.base_url, args.api_key, stream),
            backend=args.backend,
        )
    except KeyboardInterrupt:
        stream.write("stopped\n")
    except OSError as exc:  # the port is taken, the address is not local, ...
        reason = exc.strerror or str(exc)
        sys.stderr.write(
            f"mmstream: error: cannot listen on {args.host}:{args.port}: {reason}. "
            "Pick another --port (0 picks a free one).\n"
        )
        return EXIT_ERROR
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m mmstream.testing [--port N] ...`."""
    parser = _configure(
        argparse.ArgumentParser(
            prog="python -m mmstream.testing",
            description=_DESCRIPTION,
            epilog=_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    return run_serve(parser.parse_args(argv))
