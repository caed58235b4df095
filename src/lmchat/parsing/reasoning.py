"""Reasoning parsers: split ``<think>...</think>`` off the visible answer, in one piece or streamed.

Rules of the ``think`` parser:

* ``<think>`` opens reasoning only at the very start of the answer (after whitespace); elsewhere it is content.
* ``starts_in_reasoning=True`` is for templates whose generation prompt already opened ``<think>`` (DeepSeek-R1,
  Qwen3 thinking): the answer starts inside the reasoning (a repeated ``<think>`` at its start is dropped).
* ``</think>`` closes the reasoning; whitespace around the reasoning and at the start of the content is dropped.
* **No closing tag by the end of the answer: everything after the opening is reasoning** and there is no content
  (what vLLM does; the answer was cut off while thinking, e.g. by ``max_tokens``).
* A partial tag split across deltas is held back until decided, so no tag piece reaches either stream.
"""

from __future__ import annotations

import importlib
from typing import ClassVar

from lmchat.errors import ConfigError, unknown_name_message
from lmchat.parsing.scan import is_partial
from lmchat.parsing.stream import TextStream
from lmchat.parsing.types import OutputDelta, ParsedOutput, collect


class ThinkReasoningParser:
    """``<think>reasoning</think>content`` (DeepSeek-R1, Qwen3, QwQ, and most open reasoning models)."""

    name: ClassVar[str] = "think"
    start_tag: ClassVar[str] = "<think>"
    end_tag: ClassVar[str] = "</think>"

    def parse(self, text: str, *, starts_in_reasoning: bool = False) -> ParsedOutput:
        stream = self.start_stream(starts_in_reasoning=starts_in_reasoning)
        return collect([*stream.feed(text), *stream.finish()])

    def start_stream(self, *, starts_in_reasoning: bool = False) -> ReasoningStream:
        return ReasoningStream(self.start_tag, self.end_tag, starts_in_reasoning)


class ReasoningStream(TextStream):
    """Incremental reasoning split of one answer. States: opening -> reasoning -> content."""

    def __init__(self, start_tag: str, end_tag: str, starts_in_reasoning: bool) -> None:
        self._start_tag = start_tag
        self._end_tag = end_tag
        self._state = "reasoning" if starts_in_reasoning else "opening"
        self._may_reopen = starts_in_reasoning  # a redundant <think> at the start is dropped
        self._reasoning_started = False  # leading whitespace of the reasoning is dropped
        super().__init__()
        self._pending_space = ""

    def finish(self) -> list[OutputDelta]:
        if not self._finished:
            self._finished = True
            self._drain(final=True)
            if self._state == "reasoning":
                self._reasoning(self._buffer)  # no closing tag: all reasoning
            elif self._buffer:
                self._out.append(OutputDelta(content=self._buffer))
            self._buffer = ""
        return self._flush()

    def _drain(self, final: bool) -> None:
        progressed = True
        while self._buffer and progressed:
            handler = {"opening": self._opening, "reasoning": self._in_reasoning, "after": self._after}
            if self._state == "content":
                self._out.append(OutputDelta(content=self._buffer))
                self._buffer = ""
                return
            progressed = handler[self._state](final)

    def _opening(self, final: bool) -> bool:
        """Before anything else: is the answer opening with the start tag?"""
        stripped = self._buffer.lstrip()
        if stripped.startswith(self._start_tag):
            self._buffer = stripped[len(self._start_tag) :]
            self._state = "reasoning"
            return True
        if (not stripped or is_partial(stripped, self._start_tag)) and not final:
            return False
        self._state = "content"
        return True

    def _in_reasoning(self, final: bool) -> bool:
        if self._may_reopen:
            stripped = self._buffer.lstrip()
            if (not stripped or is_partial(stripped, self._start_tag)) and not final:
                return False
            self._may_reopen = False
            if stripped.startswith(self._start_tag):
                self._buffer = stripped[len(self._start_tag) :]
        closing = self._buffer.find(self._end_tag)
        if closing != -1:
            self._reasoning(self._buffer[:closing])
            self._buffer = self._buffer[closing + len(self._end_tag) :]
            self._pending_space = ""
            self._state = "after"
            return True
        keep = _partial_tail(self._buffer, self._end_tag)
        self._reasoning(self._buffer[: len(self._buffer) - keep])
        self._buffer = self._buffer[len(self._buffer) - keep :]
        return False

    def _after(self, final: bool) -> bool:
        """Right after the closing tag: drop the whitespace that separates reasoning and content."""
        self._buffer = self._buffer.lstrip()
        if self._buffer:
            self._state = "content"
        return bool(self._buffer)

    def _reasoning(self, text: str) -> None:
        if not self._reasoning_started:
            text = text.lstrip()
            self._reasoning_started = bool(text)
        body = text.rstrip()
        if not body:
            self._pending_space += text
            return
        self._out.append(OutputDelta(reasoning=self._pending_space + body))
        self._pending_space = text[len(body) :]


def _partial_tail(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that is a proper prefix of ``tag``."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


# name -> "module:Class"; every built-in lives in this module, third parties add theirs with register_...
_BUILTINS: dict[str, str] = {"think": f"{__name__}:ThinkReasoningParser"}
_ALIASES: dict[str, str] = {"deepseek_r1": "think", "qwen3": "think"}
_registered: dict[str, type | str] = {}


def register_reasoning_parser(name: str, parser: type | str) -> None:
    """Register a reasoning parser class (or a lazy ``module:Class`` path) as ``name``."""
    _registered[_normalise(name)] = parser


def reasoning_parser_names() -> list[str]:
    return sorted({*_BUILTINS, *_ALIASES, *_registered})


def get_reasoning_parser(name: str) -> type[ThinkReasoningParser]:
    """The reasoning parser class registered as ``name``."""
    key = _normalise(name)
    target = _registered.get(key) or _BUILTINS.get(_ALIASES.get(key, key))
    if target is None:
        raise ConfigError(
            unknown_name_message("reasoning parser", name, reasoning_parser_names()), param="reasoning_parser"
        )
    if not isinstance(target, str):
        return target
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_")
