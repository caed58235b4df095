"""How the chat writes: Markdown with rich on a terminal, plain text otherwise.

Answers go to stdout. Notices (``History has been removed.``) go to stdout in an interactive chat and to stderr
when stdin is piped, so a script's stdout holds only the answers, one per input line. Errors always go to stderr.
Reasoning (a thinking model's thoughts) is shown apart: dimmed above the answer on a terminal, after a
``Thinking:`` label in plain interactive mode, and on stderr when stdin is piped.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any, Protocol, TextIO


class AnswerView(Protocol):
    """One answer being shown; used as a context manager around the stream."""

    def add(self, reasoning: str, content: str) -> None: ...

    def __enter__(self) -> AnswerView: ...

    def __exit__(self, *exc_info: object) -> None: ...


class Output(Protocol):
    def answer(self) -> AnswerView: ...

    def notice(self, text: str) -> None: ...

    def error(self, text: str) -> None: ...

    def loading(self, text: str) -> contextlib.AbstractContextManager[Any]: ...


# --- plain text -----------------------------------------------------------------------------------------
class PlainAnswer:
    """Streams the answer as it comes: ``Assistant: ...`` when interactive, the bare answer line when piped."""

    def __init__(self, out: TextIO, thoughts: TextIO, labels: bool) -> None:
        self._out, self._thoughts, self._labels = out, thoughts, labels
        self._thinking = False
        self._started = False

    def add(self, reasoning: str, content: str) -> None:
        if reasoning:
            if not self._thinking:
                self._thinking = True
                self._write(self._thoughts, "Thinking: " if self._labels else "")
            self._write(self._thoughts, reasoning)
        if content:
            self._end_thoughts()
            self._start()
            self._write(self._out, content)

    def _start(self) -> None:
        if not self._started:
            self._started = True
            self._write(self._out, "Assistant: " if self._labels else "")

    def _end_thoughts(self) -> None:
        if self._thinking:
            self._thinking = False
            self._write(self._thoughts, "\n")

    @staticmethod
    def _write(stream: TextIO, text: str) -> None:
        stream.write(text)
        stream.flush()

    def __enter__(self) -> PlainAnswer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._end_thoughts()
        self._start()
        self._write(self._out, "\n")


class PlainOutput:
    def __init__(self, interactive: bool, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.interactive = interactive
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    def answer(self) -> PlainAnswer:
        return PlainAnswer(self.out, self.out if self.interactive else self.err, labels=self.interactive)

    def notice(self, text: str) -> None:
        print(text, file=self.out if self.interactive else self.err, flush=True)

    def error(self, text: str) -> None:
        self.out.flush()
        print(text, file=self.err, flush=True)

    @contextlib.contextmanager
    def loading(self, text: str) -> Iterator[None]:
        if self.interactive:
            self.notice(text)
        yield


# --- rich -------------------------------------------------------------------------------------------------
class _LiveAnswer:
    """The renderable of a streaming answer; while streaming, only its last screenful is drawn."""

    def __init__(self) -> None:
        self.reasoning = ""
        self.content = ""
        self.final = False

    def __rich_console__(self, console: Any, options: Any) -> Iterator[Any]:
        from rich.console import Group
        from rich.markdown import Markdown
        from rich.segment import Segment
        from rich.text import Text

        parts: list[Any] = [Text("Assistant:", style="bold green")]
        if self.reasoning:
            parts.append(Text(self.reasoning.strip(), style="dim italic"))
        parts.append(Markdown(self.content, code_theme="monokai"))
        if self.final:
            yield Group(*parts)
            return
        lines = console.render_lines(Group(*parts), options, pad=False)
        tail = lines[-max(1, console.size.height - 1):]
        for number, line in enumerate(tail):
            yield from line
            if number < len(tail) - 1:
                yield Segment.line()


class RichAnswer:
    def __init__(self, console: Any) -> None:
        from rich.live import Live

        self._answer = _LiveAnswer()
        self._live = Live(self._answer, console=console, refresh_per_second=10, transient=False,
                          redirect_stdout=False, redirect_stderr=False)

    def add(self, reasoning: str, content: str) -> None:
        self._answer.reasoning += reasoning
        self._answer.content += content

    def __enter__(self) -> RichAnswer:
        self._live.start(refresh=True)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._answer.final = True
        self._live.stop()


class RichOutput:
    def __init__(self, console: Any, err_console: Any) -> None:
        self.console = console
        self.err_console = err_console

    def answer(self) -> RichAnswer:
        return RichAnswer(self.console)

    def notice(self, text: str) -> None:
        self.console.print(text, style="cyan", markup=False, highlight=False)

    def error(self, text: str) -> None:
        self.err_console.print(text, style="bold red", markup=False, highlight=False)

    def loading(self, text: str) -> contextlib.AbstractContextManager[Any]:
        return self.console.status(text)


def make_output(plain: bool, interactive: bool) -> Output:
    """Rich on a capable terminal (not ``TERM=dumb``, not ``--plain``); plain text everywhere else."""
    if plain or not sys.stdout.isatty():
        return PlainOutput(interactive)
    try:
        from rich.console import Console
    except ImportError:
        print("(Plain output: install 'lmchat[cli]' for Markdown answers.)", file=sys.stderr)
        return PlainOutput(interactive)
    console = Console(highlight=False)
    if not console.is_interactive:
        return PlainOutput(interactive)
    return RichOutput(console, Console(stderr=True, highlight=False))
