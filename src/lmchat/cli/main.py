"""``lmchat``: one command line with subcommands ``chat``, ``serve``, ``webui``, ``infer`` and ``score``.

Every subcommand takes the same model options (generated from ModelConfig) and an optional YAML file. Errors
are turned into one line on stderr here, at the one boundary (see :mod:`lmchat.cli.failure`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from lmchat import __version__
from lmchat.cli.failure import EXIT_OK, UsageError, report
from lmchat.cli.frontends import add_frontend_arguments, run_frontend
from lmchat.cli.options import add_model_options, check_extras, model_args, normalise_flags
from lmchat.errors import unknown_name_message

COMMANDS = {
    "chat": "Chat with a model in the terminal.",
    "serve": "Serve the model over an OpenAI-compatible HTTP API.",
    "webui": "Chat with the model in a web browser.",
    "infer": "Answer every row of a dataset or file of conversations (batch inference).",
    "score": "Print a reward model's score of each text (one per line, or JSONL with a 'text' field).",
}

EPILOG = """\
Run 'lmchat COMMAND --help' for a command's options. Examples:
  lmchat chat                                    # the embedded default model
  lmchat chat llama3_lora_sft.yaml --temperature 0.3  # a LLaMA-Factory inference YAML, one value overridden
  echo "Hi" | lmchat chat --do_sample false      # answer each input line, then exit
  lmchat score --model_name_or_path my-reward-model --input texts.jsonl
"""

CHAT_EPILOG = """\
In the chat: 'clear' forgets the history, 'exit' (or Ctrl-D) quits, /help lists the commands
(/system, /set key=value, /regen, /undo, /save FILE, /load FILE, /stats).
Alt-Enter or Esc-Enter inserts a new line; a message can also be written between two lines of \"\"\".
Ctrl-C stops an answer while it streams. With stdin not a terminal, each input line is answered in turn.
"""


class LmchatParser(argparse.ArgumentParser):
    """argparse, but a usage problem raises UsageError (one line at the boundary) instead of exiting."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.subcommands: dict[str, LmchatParser] = {}

    def error(self, message: str) -> NoReturn:
        raise UsageError(message[:1].upper() + message[1:] + ".")


def build_parser(command: str | None = None) -> LmchatParser:
    """The whole command line; only the chosen ``command``'s plugged-in front end is imported for its flags."""
    parser = LmchatParser(prog="lmchat", description="Talk to large language models through one interface.",
                          epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"lmchat {__version__}")
    parser.add_argument("--debug", action="store_true", help="Show the traceback of an error.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="Show the traceback of an error, not just one line.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=LmchatParser)
    for name, summary in COMMANDS.items():
        sub = subparsers.add_parser(name, help=summary, description=summary, parents=[common],
                                    usage=f"lmchat {name} [CONFIG.yaml] [--option VALUE ...]",
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.subcommands[name] = sub
        _COMMAND_OPTIONS[name](sub, name, name == command)
        add_model_options(sub)
    return parser


def _chat_options(parser: LmchatParser, command: str, chosen: bool) -> None:
    parser.epilog = CHAT_EPILOG
    parser.add_argument("--plain", action="store_true", default=os.environ.get("LMCHAT_PLAIN", "") not in ("", "0"),
                        help="Plain text in and out: no Markdown rendering, no line editor (env LMCHAT_PLAIN=1).")


def _score_options(parser: LmchatParser, command: str, chosen: bool) -> None:
    parser.add_argument("--input", "-i", metavar="FILE", default="-",
                        help="Texts to score, one per line or JSONL with a 'text' field (default: -, stdin).")


def _frontend_options(parser: LmchatParser, command: str, chosen: bool) -> None:
    if chosen:
        add_frontend_arguments(command, parser)


_COMMAND_OPTIONS: dict[str, Callable[[LmchatParser, str, bool], None]] = {
    "chat": _chat_options, "score": _score_options,
    "serve": _frontend_options, "webui": _frontend_options, "infer": _frontend_options,
}


def command_of(argv: Sequence[str]) -> str | None:
    """The subcommand (the first word that is not a flag); an unknown one names the closest command."""
    for token in argv:
        if not token.startswith("-"):
            if token not in COMMANDS:
                raise UsageError(unknown_name_message("command", token, COMMANDS))
            return token
    return None


def dispatch(argv: Sequence[str]) -> int:
    command = command_of(argv)
    parser = build_parser(command)
    if command is None:
        parser.parse_args(argv)  # --help and --version exit here
        parser.print_help()
        return EXIT_OK
    args, extras = parser.parse_known_args(normalise_flags(argv))
    check_extras(parser.subcommands[command], extras)
    settings = model_args(args)
    if command == "chat":
        from lmchat.cli.chat import run_chat

        return run_chat(settings, plain=args.plain)
    if command == "score":
        from lmchat.cli.score import run_score

        return run_score(settings, args.input)
    return run_frontend(command, args, settings)


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: run the command line, map any failure to one line and an exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        return dispatch(argv)
    except BrokenPipeError:
        _silence_stdout()  # `lmchat score ... | head`: the reader left; not an error
        return EXIT_OK
    except (Exception, KeyboardInterrupt) as exc:
        return report(exc, debug=debug)


def _silence_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
