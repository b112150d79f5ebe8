"""What every ``mmstream`` subcommand shares: exit statuses and argparse value types.

Kept apart from [`mmstream.cli`][] so that the subcommands living elsewhere
(``serve`` in the testing package, ``batch``) use them without importing the
command itself.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "real_number", "whole_number"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


# --- argument types: each refuses a bad value with a message argparse prints -------------


def whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse ``type`` for a whole number of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    return parse


def real_number(
    minimum: float, *, exclusive: bool = False, maximum: float | None = None
) -> Callable[[str], float]:
    """An argparse ``type`` for a finite number ``>= minimum`` (``>`` when ``exclusive``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, not {text!r}")
        if value < minimum or (exclusive and value == minimum):
            bound = "greater than" if exclusive else "at least"
            raise argparse.ArgumentTypeError(f"must be {bound} {minimum:g}, not {text}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum:g}, not {text}")
        return value

    return parse
