"""Command-line spellings: every flag as ``--dashed-name`` or ``--underscored_name``, and LLaMA-Factory's
``key=value`` arguments (``lmchat serve llama3.yaml infer_backend=vllm``) as ``--key=value``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence

from lmchat.config.sources import ASSIGNMENT as _ASSIGNMENT


def normalise_argv(argv: Sequence[str], parser: argparse.ArgumentParser, extra_names: Iterable[str] = ()) -> list[str]:
    """``argv`` with each flag in the spelling ``parser`` knows and each ``key=value`` as ``--key=value``.

    ``extra_names`` are further ``--names`` accepted later (model settings read by another parser). A ``key=value``
    right after a flag that takes a value is that flag's value, not an assignment.
    """
    extra = {f"--{name}" for name in extra_names}
    known = {*parser._option_string_actions, *extra}
    out: list[str] = []
    many = False  # inside the values of a flag that takes several (nargs '+'), like --lora-modules a=PATH b=PATH
    for token in argv:
        if _ASSIGNMENT.match(token) and not _takes_value(parser, extra, out[-1] if out else None):
            if not (many and _known_spelling("--" + token, known).partition("=")[0] not in known):
                token = "--" + token
        if token.startswith("--") and token != "--":
            token = _known_spelling(token, known)
            action = parser._option_string_actions.get(token.partition("=")[0])
            many = action is not None and action.nargs in ("+", "*") and "=" not in token
        out.append(token)
    return out


def _known_spelling(token: str, known: set[str]) -> str:
    name, sep, value = token[2:].partition("=")
    for spelling in (name, name.replace("-", "_"), name.replace("_", "-")):
        if f"--{spelling}" in known:
            return f"--{spelling}{sep}{value}"
    return token


def _takes_value(parser: argparse.ArgumentParser, extra: set[str], previous: str | None) -> bool:
    if previous is None or not previous.startswith("-") or "=" in previous:
        return False
    action = parser._option_string_actions.get(previous)
    if action is None:
        return previous in extra  # a setting read later takes a value
    return action.nargs not in (0, "?")


def standalone_argv(argv: Sequence[str] | None, parser: argparse.ArgumentParser) -> list[str]:
    """The command line of a ``python -m lmchat.X`` entry point: its own flags (``parser``) and the model settings
    (read later by :func:`~lmchat.config.sources.parse_flags`), each in either spelling, ``key=value`` included."""
    from lmchat.config.model_config import setting_names

    return normalise_argv(sys.argv[1:] if argv is None else argv, parser, setting_names())
