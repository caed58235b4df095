"""``lmchat``: one command line with subcommands ``chat``, ``serve``, ``webui``, ``infer`` and ``score``.

Every subcommand takes the same model options (generated from ModelConfig) and an optional YAML file. Errors
are turned into one line on stderr here, at the one boundary (see :mod:`lmchat.cli.failure`).
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from lmchat import __version__
from lmchat.cli.failure import EXIT_OK, UsageError, report
from lmchat.cli.frontends import add_frontend_arguments, run_frontend
from lmchat.cli.options import add_model_options, check_extras, model_args, normalise_flags
from lmchat.errors import unknown_name_message

COMMANDS = {
    "chat": "Chat with a model in the terminal.",
    "serve": "Serve the model over an OpenAI-compatible HTTP API (alias: api).",
    "webui": "Chat with the model in a web browser (alias: webchat).",
    "infer": "Answer every row of a dataset or file of conversations (batch inference).",
    "score": "Print a reward model's score of each text (one per line, or JSONL with a 'text' field).",
}
ALIASES = {"api": "serve", "webchat": "webui"}  # llamafactory-cli's names

EPILOG = """\
Run 'lmchat COMMAND --help' for a command's options. Examples:
  lmchat chat                                    # the embedded default model
  lmchat chat llama3_lora_sft.yaml --temperature 0.3  # a LLaMA-Factory inference YAML, one value overridden
  echo "Hi" | lmchat chat --do_sample false      # answer each input line, then exit
  lmchat serve llama3_lora_sft.yaml infer_backend=vllm  # LLaMA-Factory's key=value overrides work too
  lmchat score --model_name_or_path my-reward-model --input texts.jsonl
Every flag takes both spellings (--dataset-dir, --dataset_dir). 'lmchat --help-config' lists every setting and template.
"""

CHAT_EPILOG = """\
In the chat: 'clear' forgets the history, 'exit' (or Ctrl-D) quits, /help lists the commands
(/system, /set key=value, /regen, /undo, /save FILE, /load FILE, /stats).
Alt-Enter or Esc-Enter inserts a new line; a message can also be written between two lines of \"\"\".
Ctrl-C stops an answer while it streams. With stdin not a terminal, each input line is answered in turn.
"""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help text wrapped at spaces only (never inside ``LLaMA-Factory`` or ``tool-call``)."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


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
                          epilog=EPILOG, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"lmchat {__version__}")
    parser.add_argument("--debug", action="store_true", help="Show the traceback of an error.")
    parser.add_argument("--help-config", "--help_config", action=ConfigHelpAction,
                        help="List every setting (LLaMA-Factory's keys included), template name and engine; exit.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="Show the traceback of an error, not just one line.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=LmchatParser)
    for name, summary in COMMANDS.items():
        sub = subparsers.add_parser(name, help=summary, description=summary, parents=[common],
                                    usage=f"lmchat {name} [CONFIG.yaml] [--option VALUE ...]",
                                    formatter_class=HelpFormatter)
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


class ConfigHelpAction(argparse.Action):
    """``lmchat --help-config``: the settings reference (``--help-config markdown`` writes it as Markdown)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs="?", const="text", choices=("text", "markdown"), **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        from lmchat.cli.settings_help import settings_reference

        print(settings_reference(markdown=values == "markdown"), end="")
        parser.exit()


def command_of(argv: Sequence[str]) -> str | None:
    """The subcommand (the first word that is not a flag); an unknown one names the closest command."""
    for token in argv:
        if not token.startswith("-"):
            token = ALIASES.get(token, token)
            if token not in COMMANDS:
                raise UsageError(unknown_name_message("command", token, [*COMMANDS, *ALIASES]))
            return token
        if token in ("--help-config", "--help_config"):
            return None
    return None


def _with_command(argv: Sequence[str], command: str) -> list[str]:
    """``argv`` with an alias (``api``) replaced by its command (``serve``)."""
    argv = list(argv)
    index = next(i for i, token in enumerate(argv) if not token.startswith("-"))
    argv[index] = command
    return argv


def dispatch(argv: Sequence[str]) -> int:
    command = command_of(argv)
    parser = build_parser(command)
    if command is None:
        parser.parse_args(argv)  # --help, --help-config and --version exit here
        parser.print_help()
        return EXIT_OK
    argv = normalise_flags(_with_command(argv, command), parser.subcommands[command])
    args, extras = parser.parse_known_args(argv)
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
