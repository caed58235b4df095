"""``lmchat chat``: the terminal chat, a read-answer loop over :meth:`ChatModel.stream_chunks`.

``clear`` forgets the history and ``exit`` quits, as in LLaMA-Factory; slash commands are in
:mod:`lmchat.cli.commands`. Ctrl-C while an answer streams stops it: leaving the stream aborts the request in the
engine. What was already generated is kept in the conversation (``/regen`` retries it, ``/undo`` drops it); if
nothing was generated yet, the question is dropped too, as if it had not been asked. With piped input, Ctrl-C
stops the answer and then the program (exit code 130).
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

from lmchat.cli.commands import BARE_COMMANDS, run_command
from lmchat.cli.failure import EXIT_FAILURE, EXIT_OK, error_line
from lmchat.cli.reader import Reader, make_reader, read_message
from lmchat.cli.render import Output, make_output
from lmchat.cli.session import Conversation, validate_options
from lmchat.cli.stats import AnswerRecorder, AnswerStats
from lmchat.errors import LmchatError

STOPPED = "[answer stopped]"
CUT = "[answer cut at the token limit]"


class ChatRepl:
    """One chat session: reads messages, runs commands (it is their :class:`~lmchat.cli.commands.Session`), streams
    answers into ``output``."""

    def __init__(self, model: Any, reader: Reader, output: Output, interactive: bool) -> None:
        self.model = model
        self.reader = reader
        self.output = output
        self.interactive = interactive
        self.conversation = Conversation()
        self.options: dict[str, Any] = {}
        self.last_stats: AnswerStats | None = None
        self.failures = 0

    def run(self) -> int:
        """Chat until ``exit``, Ctrl-D or the end of the input; non-zero when piped input met errors."""
        if self.interactive:
            self.output.notice(self.banner())
        while True:
            try:
                text = read_message(self.reader)
            except (EOFError, KeyboardInterrupt):
                break
            except UnicodeDecodeError:
                self.output.error("Error: the input is not valid UTF-8; set the terminal's encoding to UTF-8.")
                continue
            if not self.handle(text):
                break
        return EXIT_FAILURE if self.failures and not self.interactive else EXIT_OK

    def banner(self) -> str:
        info = self.model.engine.info
        return (f"lmchat: chatting with {info.name} ({self.model.engine.name} engine). "
                "Type /help for commands, clear to forget the history, exit to quit.")

    def handle(self, text: str) -> bool:
        """Act on one message; False means quit."""
        command = text.strip()
        if not command:
            return True
        if command in BARE_COMMANDS or (command.startswith("/") and not command.startswith("//")):
            try:
                return run_command(self, command)
            except (LmchatError, OSError) as exc:
                self.fail(exc)
                return True
        self.ask(command[1:] if command.startswith("//") else command)
        return True

    # --- what the commands use ----------------------------------------------------------------------
    def notice(self, text: str) -> None:
        self.output.notice(text)

    def set_options(self, options: dict[str, Any]) -> None:
        validate_options(self.model, options)
        self.options = options

    def check_media(self, kind: str) -> None:
        engine = self.model.engine
        engine.capabilities.check_media(engine.label or engine.name, **{f"{kind}s": [kind]})

    def ask(self, text: str) -> None:
        self.conversation.add_user(text)
        if not self.answer():
            self.conversation.drop_last_user()

    def answer(self) -> bool:
        """Answer the conversation's last user message; True when an answer (maybe partial) was added."""
        try:
            prepared = self.model.prepare(self.conversation.messages, system=self.conversation.system,
                                          **self.options)
        except LmchatError as exc:
            self.fail(exc)
            return False
        recorder = AnswerRecorder(prepared.prompt_tokens)
        stopped = False
        try:
            with self.output.answer() as view, contextlib.closing(self.model.stream_chunks(prepared)) as chunks:
                for chunk in chunks:
                    recorder.add(chunk)
                    view.add(chunk.reasoning, chunk.content)
        except KeyboardInterrupt:
            stopped = True
        except LmchatError as exc:
            self.fail(exc)
        recorder.done()
        self.last_stats = recorder.stats(self.model.engine.count_tokens)
        kept = self._keep(recorder, stopped)
        if stopped and not self.interactive:
            raise KeyboardInterrupt  # a script interrupted: stop there (exit code 130), the answer already aborted
        return kept

    def _keep(self, recorder: AnswerRecorder, stopped: bool) -> bool:
        if stopped or recorder.finish_reason == "abort":
            self.output.notice(STOPPED)
        elif recorder.finish_reason == "length":
            self.output.notice(CUT)
        if recorder.content or recorder.finish_reason is not None:
            self.conversation.add_answer(recorder.content)
            return True
        return False

    def fail(self, exc: BaseException) -> None:
        self.failures += 1
        self.output.error(error_line(exc))


def run_chat(model_args: dict[str, Any], plain: bool = False) -> int:
    """Load the model, then chat on the terminal (or answer each piped line)."""
    from lmchat.chat.chat_model import ChatModel
    from lmchat.engines.choice import choose_chat_engine

    interactive = sys.stdin.isatty()
    output = make_output(plain, interactive)
    reader = make_reader(plain, interactive)
    choice = choose_chat_engine(model_args)
    if choice.reason:
        output.notice(choice.reason)
    with output.loading("Loading the model..."):
        model = ChatModel(choice.model_args)
    with model:
        return ChatRepl(model, reader, output, interactive).run()
