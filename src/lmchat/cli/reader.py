"""Where the chat's input comes from: prompt_toolkit on a terminal, plain lines otherwise.

Both raise EOFError for Ctrl-D (or the end of piped input) and KeyboardInterrupt for Ctrl-C. On a terminal,
prompt_toolkit gives an editable line, Alt-Enter / Esc-Enter for a new line inside a message, and a history kept
across sessions in ``$LMCHAT_CACHE/chat_history`` (default ``~/.cache/lmchat``). Any reader also accepts a
message written between two lines of three double quotes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Protocol, TextIO

PROMPT = "User: "
CONTINUATION = "... "
BLOCK = '"""'


class Reader(Protocol):
    def read(self, prompt: str) -> str: ...


class LineReader:
    """One line at a time from a stream; the prompt is written only when a person is typing."""

    def __init__(self, stream: TextIO, prompt_to: TextIO | None) -> None:
        self._stream = stream
        self._prompt_to = prompt_to

    def read(self, prompt: str) -> str:
        if self._prompt_to is not None:
            self._prompt_to.write(prompt)
            self._prompt_to.flush()
        try:
            line = self._stream.readline()
        except KeyboardInterrupt:
            self._end_prompt_line()
            raise
        if not line:
            self._end_prompt_line()
            raise EOFError
        return line.rstrip("\r\n")

    def _end_prompt_line(self) -> None:
        if self._prompt_to is not None:
            self._prompt_to.write("\n")
            self._prompt_to.flush()


class ToolkitReader:
    """prompt_toolkit: an editable line with persistent history; Ctrl-C clears a line, or exits at an empty one."""

    def __init__(self, history_file: Path | None) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory, InMemoryHistory

        history: Any = InMemoryHistory()
        if history_file is not None:
            try:
                history_file.parent.mkdir(parents=True, exist_ok=True)
                history = FileHistory(str(history_file))
            except OSError:
                pass
        self._session: Any = PromptSession(history=history, key_bindings=_key_bindings(),
                                           prompt_continuation=_continuation)

    def read(self, prompt: str) -> str:
        return self._session.prompt(prompt)


def _key_bindings() -> Any:
    from prompt_toolkit.key_binding import KeyBindings

    bindings = KeyBindings()

    @bindings.add("escape", "enter")  # Alt-Enter (sent as Esc-Enter by terminals): a new line in the message
    def _new_line(event: Any) -> None:
        event.current_buffer.insert_text("\n")

    @bindings.add("c-c")
    def _interrupt(event: Any) -> None:
        buffer = event.current_buffer
        if buffer.text:
            buffer.reset()
        else:
            event.app.exit(exception=KeyboardInterrupt, style="class:aborting")

    return bindings


def _continuation(width: int, line_number: int, is_soft_wrap: bool) -> str:
    return CONTINUATION.rjust(width)


def make_reader(plain: bool, interactive: bool) -> Reader:
    """prompt_toolkit when a person types at a terminal (stdin and stdout), plain lines otherwise."""
    if interactive and not plain and sys.stdout.isatty():
        try:
            from lmchat.models.cache import cache_root

            return ToolkitReader(cache_root() / "chat_history")
        except ImportError:
            print("(Plain input: install 'lmchat[cli]' for line editing and history.)", file=sys.stderr)
    prompt_to = (sys.stdout if sys.stdout.isatty() else sys.stderr) if interactive else None
    return LineReader(sys.stdin, prompt_to)


def read_message(reader: Reader) -> str:
    """One message: a line, or the lines between two lines of three double quotes (joined with newlines)."""
    first = reader.read(PROMPT)
    if not first.strip().startswith(BLOCK):
        return first
    body = first.strip()[len(BLOCK):]
    if body.endswith(BLOCK):
        return body[: -len(BLOCK)]
    lines = [body] if body else []
    while True:
        line = reader.read(CONTINUATION)
        if line.rstrip().endswith(BLOCK):
            lines.append(line.rstrip()[: -len(BLOCK)])
            return "\n".join(lines).strip("\n")
        lines.append(line)
