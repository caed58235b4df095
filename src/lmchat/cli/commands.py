"""The chat's slash commands. Each takes the session and the text after its name; an error is one line and the
chat goes on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lmchat.cli.session import Conversation, merge_options, parse_assignments, validate_options
from lmchat.errors import InvalidRequestError, LmchatError, unknown_name_message

if TYPE_CHECKING:
    from lmchat.cli.chat import ChatRepl

KEYS_HELP = """\
Keys: Alt-Enter (or Esc then Enter) starts a new line; a message between two lines of \"\"\" may span lines.
Ctrl-C stops an answer (the part already shown is kept; /regen retries it). Ctrl-C on an empty line or Ctrl-D
quits. Up/Down recall earlier messages, also from earlier sessions. Start a message with // to send a leading /."""


@dataclass(frozen=True)
class Command:
    usage: str
    summary: str
    run: Callable[[ChatRepl, str], bool | None]  # False: quit the chat


COMMANDS: dict[str, Command] = {}


def command(name: str, usage: str, summary: str) -> Callable[[Callable], Callable]:
    def register(function: Callable[[ChatRepl, str], bool | None]) -> Callable:
        COMMANDS[name] = Command(usage, summary, function)
        return function

    return register


def run_command(repl: ChatRepl, line: str) -> bool:
    """Run ``/name args``; False means quit."""
    name, _, argument = line[1:].partition(" ")
    found = COMMANDS.get(name)
    if found is None:
        repl.fail(InvalidRequestError(unknown_name_message("command", f"/{name}", [f"/{n}" for n in COMMANDS])))
        return True
    try:
        return found.run(repl, argument.strip()) is not False
    except (LmchatError, OSError) as exc:
        repl.fail(exc)
        return True


@command("help", "/help", "show this help")
def _help(repl: ChatRepl, argument: str) -> None:
    width = max(len(c.usage) for c in COMMANDS.values())
    lines = [f"  {c.usage.ljust(width)}  {c.summary}" for c in COMMANDS.values()]
    repl.output.notice("Commands:\n" + "\n".join(lines) + "\n" + KEYS_HELP)


@command("system", "/system [TEXT]", "set the system prompt (without TEXT: remove it); the history stays")
def _system(repl: ChatRepl, argument: str) -> None:
    repl.conversation.system = argument or None
    repl.output.notice("System prompt set." if argument else "System prompt removed.")


@command("set", "/set [key=value ...]", "set generation options: temperature, top_p, top_k, max_new_tokens, seed, "
                                        "stop, ... (key= resets one; no argument lists them)")
def _set(repl: ChatRepl, argument: str) -> None:
    if not argument:
        shown = " ".join(f"{key}={value!r}" for key, value in repl.options.items())
        repl.output.notice(f"Options: {shown}." if shown else "No options set: the model's defaults apply.")
        return
    assignments = parse_assignments(argument)
    options = merge_options(repl.options, assignments)
    validate_options(repl.model, options)
    repl.options = options
    done = [f"{key}={options[key]!r}" if key in options else f"{key} reset" for key in assignments]
    repl.output.notice(f"Set {', '.join(done)}.")


@command("regen", "/regen", "answer the last message again")
def _regen(repl: ChatRepl, argument: str) -> None:
    previous = repl.conversation.pop_answer()
    if not repl.conversation.ends_with_user():
        repl.output.notice("Nothing to regenerate.")
        return
    if not repl.answer() and previous is not None:
        repl.conversation.add_answer(previous)


@command("undo", "/undo", "drop the last exchange (your last message and its answer)")
def _undo(repl: ChatRepl, argument: str) -> None:
    dropped = repl.conversation.undo()
    repl.output.notice("Dropped the last exchange." if dropped else "Nothing to undo.")


@command("save", "/save FILE", "save the conversation as JSON (OpenAI messages)")
def _save(repl: ChatRepl, argument: str) -> None:
    count = repl.conversation.save(_path(argument, "save"))
    repl.output.notice(f"Saved {count} messages to {argument}.")


@command("load", "/load FILE", "replace the conversation with one saved by /save (OpenAI messages)")
def _load(repl: ChatRepl, argument: str) -> None:
    repl.conversation = Conversation.load(_path(argument, "load"))
    count = len(repl.conversation.to_openai())
    repl.output.notice(f"Loaded {count} messages from {argument}.")


@command("stats", "/stats", "tokens, time to first token and speed of the last answer")
def _stats(repl: ChatRepl, argument: str) -> None:
    repl.output.notice(repl.last_stats.describe() if repl.last_stats else "No answer yet.")


@command("clear", "clear", "forget the history (/clear works too)")
def _clear(repl: ChatRepl, argument: str) -> None:
    repl.handle("clear")


@command("exit", "exit", "quit (/exit and Ctrl-D work too)")
def _exit(repl: ChatRepl, argument: str) -> bool:
    return False


def _path(argument: str, verb: str) -> str:
    if not argument:
        raise InvalidRequestError(f"Give a file: /{verb} FILE.")
    return argument
