"""gpt-oss's harmony format: an answer is a sequence of messages, each a header naming its channel (and, for a
tool call, its recipient) and a body::

    <|channel|>analysis<|message|>Thinking...<|end|><|start|>assistant<|channel|>final<|message|>Answer.<|return|>
    <|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}<|call|>

(the generation prompt ends with ``<|start|>assistant``, so the first header starts the answer). The
``analysis`` channel is reasoning; ``final`` and ``commentary`` bodies (a preamble shown to the user) are content,
their headers and end tokens dropped. A message with a recipient is a tool call: it is passed on as content in one
canonical form, ``<|channel|>commentary to=functions.NAME<|message|>BODY<|call|>``, for the ``openai`` tool parser
to read. Text that is not in a message (a model that writes no headers) is content. These tokens are special
tokens: the parser declares them (``special_tokens``), so the facade has the engine keep them in the text.
"""

from __future__ import annotations

import re
from typing import ClassVar

from lmchat.parsing.scan import earliest_marker, is_partial
from lmchat.parsing.stream import TextStream
from lmchat.parsing.types import OutputDelta, ParsedOutput, collect

START, CHANNEL, MESSAGE, CONSTRAIN = "<|start|>", "<|channel|>", "<|message|>", "<|constrain|>"
END, CALL, RETURN = "<|end|>", "<|call|>", "<|return|>"
HEADER_OPENINGS = (START, CHANNEL, CONSTRAIN, " to=", "to=")
MESSAGE_ENDS = (END, CALL, RETURN)
HARMONY_TOKENS = (START, CHANNEL, MESSAGE, CONSTRAIN, END, CALL, RETURN)
"""Every harmony token the parsers read: special tokens of gpt-oss's tokenizer (o200k_harmony)."""
_RECIPIENT = re.compile(r"(?:^|\s|>)to=([^\s<]+)")
_CHANNEL = re.compile(r"<\|channel\|>\s*([\w.\-]+)")
_LONGEST_HEADER = 400
"""A header longer than this without its ``<|message|>`` is not a header: the text is content."""


def parse_header(header: str) -> tuple[str | None, str | None]:
    """The channel and recipient a header names (None when it names none)."""
    channel = _CHANNEL.search(header)
    recipient = _RECIPIENT.search(header)
    return (channel.group(1) if channel else None), (recipient.group(1) if recipient else None)


def tool_header(channel: str | None, recipient: str) -> str:
    """The one form a tool-call message's header is passed on in."""
    return f"{CHANNEL}{channel or 'commentary'} to={recipient}{MESSAGE}"


class HarmonyReasoningParser:
    """gpt-oss: the analysis channel is reasoning, final and commentary are content, tool calls pass on."""

    name: ClassVar[str] = "gpt_oss"
    special_tokens: ClassVar[tuple[str, ...]] = HARMONY_TOKENS

    @classmethod
    def opens_in(cls, prompt: str) -> bool:
        return False  # the answer always starts with a header, which says the channel

    def parse(self, text: str, *, starts_in_reasoning: bool = False, ends: tuple[str, ...] = ()) -> ParsedOutput:
        stream = self.start_stream()
        return collect([*stream.feed(text), *stream.finish()])

    def start_stream(self, *, starts_in_reasoning: bool = False, ends: tuple[str, ...] = ()) -> HarmonyStream:
        return HarmonyStream()


class HarmonyStream(TextStream):
    """States: header (reading one up to ``<|message|>``), body (of ``_kind``), between (after an end token),
    plain (text outside any message)."""

    def __init__(self) -> None:
        super().__init__()
        self._state = "start"
        self._kind = "content"  # of the current body: "reasoning", "content" or "tool"

    def finish(self) -> list[OutputDelta]:
        if not self._finished:
            self._finished = True
            self._drain(final=True)
            if self._buffer:
                self._emit("reasoning" if self._state == "body" and self._kind == "reasoning" else "content",
                           self._buffer)
                self._buffer = ""
        return self._flush()

    def _drain(self, final: bool) -> None:
        handlers = {"start": self._start, "header": self._header, "body": self._body,
                    "between": self._between, "plain": self._plain}
        while self._buffer and handlers[self._state](final):
            pass

    def _start(self, final: bool) -> bool:
        """At the answer's start (or after an end token): a header, or plain text."""
        stripped = self._buffer.lstrip("\n")
        if stripped.startswith(HEADER_OPENINGS):
            self._buffer, self._state = stripped, "header"
            return True
        if not final and (not stripped or any(is_partial(stripped, opening) for opening in HEADER_OPENINGS)):
            return False
        self._state = "plain"
        return True

    def _header(self, final: bool) -> bool:
        end = self._buffer.find(MESSAGE)
        stops = [index for index in (self._buffer.find(token, 1) for token in (START, *MESSAGE_ENDS)) if index != -1]
        broken = bool(stops) and (end == -1 or min(stops) < end)
        if end == -1 and not broken:
            if not final and len(self._buffer) <= _LONGEST_HEADER:
                return False
            broken = True
        if broken:  # not a header after all: its text is content
            self._state = "plain"
            return self._plain(final, skip_opening=True)
        channel, recipient = parse_header(self._buffer[:end])
        self._buffer = self._buffer[end + len(MESSAGE) :]
        self._state = "body"
        if recipient is not None:
            self._kind = "tool"
            self._emit("content", tool_header(channel, recipient))
        else:
            self._kind = "reasoning" if channel == "analysis" else "content"
        return True

    def _body(self, final: bool) -> bool:
        index = earliest_marker(self._buffer, (*MESSAGE_ENDS, START, CHANNEL))
        if index == -1 or not self._buffer.startswith((*MESSAGE_ENDS, START, CHANNEL), index):
            keep = 0 if index == -1 or final else len(self._buffer) - index
            self._emit_body(self._buffer[: len(self._buffer) - keep])
            self._buffer = self._buffer[len(self._buffer) - keep :]
            return False
        self._emit_body(self._buffer[:index])
        self._buffer = self._buffer[index:]
        if self._buffer.startswith(MESSAGE_ENDS):
            token = next(token for token in MESSAGE_ENDS if self._buffer.startswith(token))
            if self._kind == "tool":
                self._emit("content", CALL)
            self._buffer = self._buffer[len(token) :]
            self._state = "between"
        else:  # a new header without the end of this message
            if self._kind == "tool":
                self._emit("content", CALL)
            self._state = "header"
        return True

    def _between(self, final: bool) -> bool:
        self._state = "start"
        return True

    def _plain(self, final: bool, skip_opening: bool = False) -> bool:
        """Content up to the next header."""
        first = 1 if skip_opening else 0
        index = earliest_marker(self._buffer[first:], (START, CHANNEL))
        index = -1 if index == -1 else index + first
        if index == -1 or (not final and not self._buffer.startswith((START, CHANNEL), index)):
            cut = len(self._buffer) if index == -1 or final else index
            self._emit("content", self._buffer[:cut])
            self._buffer = self._buffer[cut:]
            return False
        self._emit("content", self._buffer[:index])
        self._buffer = self._buffer[index:]
        self._state = "header"
        return True

    def _emit_body(self, text: str) -> None:
        self._emit("content" if self._kind == "tool" else self._kind, text)

    def _emit(self, kind: str, text: str) -> None:
        if text:
            self._out.append(OutputDelta(reasoning=text) if kind == "reasoning" else OutputDelta(content=text))
