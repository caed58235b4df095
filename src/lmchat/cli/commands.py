"""The chat's slash commands (and LLaMA-Factory's bare ``clear`` and ``exit``). Each takes the session and the text
after its name. A command raises :class:`~lmchat.errors.LmchatError` (or ``OSError``) for a problem; the REPL
prints it as one line and the chat goes on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from lmchat.cli.session import Conversation, merge_options, parse_assignments
from lmchat.cli.stats import AnswerStats
from lmchat.errors import InvalidRequestError, unknown_name_message

BARE_COMMANDS = ("clear", "exit")  # typed without the slash, as in LLaMA-Factory's chat


class Session(Protocol):
    """What the commands act on; :class:`lmchat.cli.chat.ChatRepl` is one."""

    conversation: Conversation
    options: dict[str, Any]
    last_stats: AnswerStats | None

    def notice(self, text: str) -> None: ...

    def set_options(self, options: dict[str, Any]) -> None:
        """Check ``options`` like a chat call's, then use them for the next answers."""

    def answer(self) -> bool:
        """Answer the conversation's last user message; True when an answer was added."""

    def check_media(self, kind: str) -> None:
        """Raise when the model cannot take ``kind`` (image, video, audio) media."""


KEYS_HELP = """\
Keys: Alt-Enter (or Esc then Enter) starts a new line; a message between two lines of \"\"\" may span lines.
Ctrl-C stops an answer (the part already shown is kept; /regen retries it). Ctrl-C on an empty line or Ctrl-D
quits. Up/Down recall earlier messages, also from earlier sessions. Start a message with // to send a leading /."""


@dataclass(frozen=True)
class Command:
    usage: str
    summary: str
    run: Callable[[Session, str], bool | None]  # False: quit the chat


COMMANDS: dict[str, Command] = {}


def command(name: str, usage: str, summary: str) -> Callable[[Callable], Callable]:
    def register(function: Callable[[Session, str], bool | None]) -> Callable:
        COMMANDS[name] = Command(usage, summary, function)
        return function

    return register


def run_command(session: Session, line: str) -> bool:
    """Run ``/name args`` (or a bare command); False means quit."""
    name, _, argument = line.removeprefix("/").partition(" ")
    found = COMMANDS.get(name)
    if found is None:
        raise InvalidRequestError(unknown_name_message("command", f"/{name}", [f"/{n}" for n in COMMANDS]))
    return found.run(session, argument.strip()) is not False


@command("help", "/help", "show this help")
def _help(session: Session, argument: str) -> None:
    width = max(len(c.usage) for c in COMMANDS.values())
    lines = [f"  {c.usage.ljust(width)}  {c.summary}" for c in COMMANDS.values()]
    session.notice("Commands:\n" + "\n".join(lines) + "\n" + KEYS_HELP)


@command("system", "/system [TEXT]", "set the system prompt (without TEXT: remove it); the history stays")
def _system(session: Session, argument: str) -> None:
    session.conversation.system = argument or None
    session.notice("System prompt set." if argument else "System prompt removed.")


@command("set", "/set [key=value ...]", "set generation options: temperature, top_p, top_k, max_new_tokens, seed, "
                                        "stop, ... (key= resets one; no argument lists them)")
def _set(session: Session, argument: str) -> None:
    if not argument:
        shown = " ".join(f"{key}={value!r}" for key, value in session.options.items())
        session.notice(f"Options: {shown}." if shown else "No options set: the model's defaults apply.")
        return
    assignments = parse_assignments(argument)
    options = merge_options(session.options, assignments)
    session.set_options(options)
    done = [f"{key}={options[key]!r}" if key in options else f"{key} reset" for key in assignments]
    session.notice(f"Set {', '.join(done)}.")


@command("regen", "/regen", "answer the last message again")
def _regen(session: Session, argument: str) -> None:
    previous = session.conversation.pop_answer()
    if not session.conversation.ends_with_user():
        session.notice("Nothing to regenerate.")
        return
    if not session.answer() and previous is not None:
        session.conversation.add_answer(previous)


@command("undo", "/undo", "drop the last exchange (your last message and its answer)")
def _undo(session: Session, argument: str) -> None:
    dropped = session.conversation.undo()
    session.notice("Dropped the last exchange." if dropped else "Nothing to undo.")


@command("save", "/save FILE", "save the conversation as JSON (OpenAI messages)")
def _save(session: Session, argument: str) -> None:
    count = session.conversation.save(_path(argument, "save"))
    session.notice(f"Saved {count} messages to {argument}.")


@command("load", "/load FILE", "replace the conversation with one saved by /save (OpenAI messages)")
def _load(session: Session, argument: str) -> None:
    session.conversation = Conversation.load(_path(argument, "load"))
    count = len(session.conversation.to_openai())
    session.notice(f"Loaded {count} messages from {argument}.")


@command("stats", "/stats", "tokens, time to first token and speed of the last answer")
def _stats(session: Session, argument: str) -> None:
    session.notice(session.last_stats.describe() if session.last_stats else "No answer yet.")


def _attach(kind: str) -> Callable[[Session, str], None]:
    def attach(session: Session, argument: str) -> None:
        if not argument:
            raise InvalidRequestError(f"Give a file or URL: /{kind} PATH (it goes with your next message).")
        session.check_media(kind)
        source = argument
        if not argument.startswith(("http://", "https://", "data:", "file://")):
            path = Path(argument).expanduser().resolve()
            if not path.is_file():
                raise InvalidRequestError(f"No such {kind} file: {argument}.")
            source = str(path)
        session.conversation.attach(kind, source)
        count = len(session.conversation.attachments)
        session.notice(f"Attached {kind} {argument}; {'it goes' if count == 1 else f'{count} media go'} with your "
                       "next message.")

    return attach


for _kind, _summary in (("image", "attach an image (a file or a URL) to your next message"),
                        ("video", "attach a video to your next message"),
                        ("audio", "attach an audio clip to your next message")):
    command(_kind, f"/{_kind} PATH|URL", _summary)(_attach(_kind))


@command("clear", "clear", "forget the history (/clear works too)")
def _clear(session: Session, argument: str) -> None:
    session.conversation.clear()
    session.notice("History has been removed.")


@command("exit", "exit", "quit (/exit and Ctrl-D work too)")
def _exit(session: Session, argument: str) -> bool:
    return False


def _path(argument: str, verb: str) -> str:
    if not argument:
        raise InvalidRequestError(f"Give a file: /{verb} FILE.")
    return argument
