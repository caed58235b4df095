"""The CLI's one error boundary: every failure becomes one readable line on stderr and an exit code."""

from __future__ import annotations

import sys
import traceback
from typing import TextIO

from lmchat.errors import ConfigError, LmchatError

EXIT_OK = 0
EXIT_FAILURE = 1  # the command ran and failed (model not found, engine error, ...)
EXIT_USAGE = 2  # the command line or config is wrong
EXIT_INTERRUPTED = 130  # Ctrl-C outside a chat answer (the shell's convention: 128 + SIGINT)


class UsageError(ConfigError):
    """The command line itself is wrong (argparse's complaints, stray arguments)."""


def error_line(exc: BaseException) -> str:
    """One line that tells the user what went wrong, without a traceback."""
    if isinstance(exc, LmchatError):
        return f"Error: {_one_line(exc.message)}"
    if isinstance(exc, KeyboardInterrupt):
        return "Interrupted."
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return (
            f"Error: the Python package '{exc.name.split('.')[0]}' is not installed; install it "
            f"(pip install {exc.name.split('.')[0]}) or the lmchat extra that provides it."
        )
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"Error: {exc.strerror}{where}"
    detail = _one_line(str(exc)) or "no details"
    return f"Error: unexpected {type(exc).__name__}: {detail} (run again with --debug to see the traceback)"


def exit_code(exc: BaseException) -> int:
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, ConfigError):
        return EXIT_USAGE
    return EXIT_FAILURE


def report(exc: BaseException, *, debug: bool = False, stream: TextIO | None = None) -> int:
    """Write ``exc`` as one line (plus the traceback with ``--debug``) and return the exit code."""
    stream = stream or sys.stderr
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=stream)
    print(error_line(exc), file=stream, flush=True)
    return exit_code(exc)


def _one_line(text: str) -> str:
    return " ".join(text.split())
