"""``mmstream serve`` and ``python -m mmstream.testing``: run the test server from the shell.

It prints the base URL (and each provider's base URL) on stdout once it
listens, then serves until interrupted. Point any SDK or ``curl`` at it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, TextIO

__all__ = ["add_serve_parser", "main", "run_serve"]


def _configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback)")
    parser.add_argument("--port", "-p", type=int, default=0, help="port (default: a free one)")
    parser.add_argument(
        "--api-key", default=None, help="the only key accepted (default: any non-empty key)"
    )
    parser.add_argument(
        "--no-auth", action="store_true", help="skip the providers' key and header checks"
    )
    parser.add_argument("--text", default=None, help="answer with this text instead of the echo")
    parser.add_argument("--chunks", type=int, default=None, help="content events per answer")
    parser.add_argument("--chunk-size", type=int, default=None, help="characters per event")
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between content events")
    parser.add_argument(
        "--backend", choices=("asyncio", "trio"), default="asyncio", help="event loop to run on"
    )
    # The web demo (mmstream.web, extra mmstream[web]) instead of the test server.
    parser.add_argument("--ui", action="store_true", help="serve the web demo page instead")
    parser.add_argument("--model", "-m", default=None, help="with --ui: provider:model to ask")
    return parser


def add_serve_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``serve`` subcommand to an ``argparse`` subparsers object."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="run the loopback test server that speaks every provider's wire format",
        description=__doc__,
    )
    return _configure(parser)


def _announce(server: Any, out: TextIO) -> None:
    base = server.base_url
    out.write(f"mmstream test server listening on {base}\n")
    out.write(f"  openai     {base}/v1\n")
    out.write(f"  azure      {base}  (deployments/<name>/chat/completions?api-version=...)\n")
    out.write(f"  anthropic  {base}\n")
    out.write(f"  gemini     {base}/v1beta\n")
    out.write(f"  ollama     {base}\n")
    out.write("Press Ctrl+C to stop.\n")
    out.flush()


def run_serve(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Serve until interrupted; returns the exit status (0)."""
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
        anyio.run(server.serve_forever, lambda s: _announce(s, stream), backend=args.backend)
    except KeyboardInterrupt:
        stream.write("stopped\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mmstream.testing [--port N] ...``."""
    parser = _configure(
        argparse.ArgumentParser(prog="python -m mmstream.testing", description=__doc__)
    )
    return run_serve(parser.parse_args(argv))
