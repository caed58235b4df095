"""Reasoning written between tags: ``<think>reasoning</think>content`` and the families' variants of it.

Rules (:class:`ThinkReasoningParser`; subclasses change only the tags):

* A start tag opens reasoning only at the very start of the answer (after whitespace); elsewhere it is content.
  An end tag alone at the very start is an empty thought (GLM-4.7 writes one so) and is dropped.
* ``starts_in_reasoning=True`` is for templates whose generation prompt already opened the reasoning
  (:meth:`ThinkReasoningParser.opens_in` tells from the prompt): the answer starts inside it (a repeated start
  tag at its start is dropped). Such a block also ends at a marker of the request's tool parser that only a call
  can write (``ends``: DeepSeek's ``<｜tool▁calls▁begin｜>``, Kimi's ``<|tool_calls_section_begin|>``...), for
  models that call a tool straight from their thoughts; the marker stays in the text, for the tool parser.
* An end tag closes the reasoning; whitespace around the reasoning and at the start of the content is dropped,
  as are the content's own wrapper tags where a family writes them (Hunyuan's ``<answer>``, Granite's
  ``<response>``).
* **No closing tag by the end of the answer: everything after the opening is reasoning** and there is no content
  (what vLLM does; the answer was cut off while thinking, e.g. by ``max_tokens``).
* A partial tag split across deltas is held back until decided, so no tag piece reaches either stream.
"""

from __future__ import annotations

from typing import ClassVar

from lmchat.parsing.scan import earliest_marker, is_partial
from lmchat.parsing.stream import TextStream
from lmchat.parsing.types import OutputDelta, ParsedOutput, collect


class ThinkReasoningParser:
    """``<think>reasoning</think>content`` (DeepSeek-R1, Qwen3, QwQ, Kimi-K2, MiniMax-M2 and most open models)."""

    name: ClassVar[str] = "think"
    start_tag: ClassVar[str] = "<think>"
    end_tag: ClassVar[str] = "</think>"
    other_start_tags: ClassVar[tuple[str, ...]] = ()
    other_end_tags: ClassVar[tuple[str, ...]] = ()
    content_open: ClassVar[tuple[str, ...]] = ()
    """Tags that open the content right after the reasoning (dropped)."""
    content_close: ClassVar[tuple[str, ...]] = ()
    """Tags that close the content (dropped, with the whitespace before them)."""
    prompt_suffixes: ClassVar[tuple[str, ...]] = ()
    """Text a template may write after the start tag that opens the reasoning in the prompt."""
    special_tokens: ClassVar[tuple[str, ...]] = ()
    """Special tokens of the tags that the engine must keep in the text (as :attr:`ToolParser.special_tokens`)."""

    @classmethod
    def start_tags(cls) -> tuple[str, ...]:
        return (cls.start_tag, *cls.other_start_tags)

    @classmethod
    def end_tags(cls) -> tuple[str, ...]:
        return (cls.end_tag, *cls.other_end_tags)

    @classmethod
    def opens_in(cls, prompt: str) -> bool:
        """True when the prompt ends inside an open reasoning block (the generation prompt opened it)."""
        tail = prompt.rstrip()
        for suffix in cls.prompt_suffixes:
            tail = tail.removesuffix(suffix).rstrip()
        return tail.endswith(cls.start_tags())

    def parse(self, text: str, *, starts_in_reasoning: bool = False, ends: tuple[str, ...] = ()) -> ParsedOutput:
        stream = self.start_stream(starts_in_reasoning=starts_in_reasoning, ends=ends)
        return collect([*stream.feed(text), *stream.finish()])

    def start_stream(self, *, starts_in_reasoning: bool = False, ends: tuple[str, ...] = ()) -> ReasoningStream:
        return ReasoningStream(type(self), starts_in_reasoning, ends)


class ReasoningStream(TextStream):
    """Incremental reasoning split of one answer. States: opening -> reasoning -> after -> wrapper -> content."""

    def __init__(self, tags: type[ThinkReasoningParser], starts_in_reasoning: bool, ends: tuple[str, ...] = ()) -> None:
        self._starts = tags.start_tags()
        self._ends = tags.end_tags()
        self._end_tag = tags.end_tag
        self._implicit_ends = tuple(ends) if starts_in_reasoning else ()
        self._content_open = tags.content_open
        self._content_close = tags.content_close
        self._state = "reasoning" if starts_in_reasoning else "opening"
        self._may_reopen = starts_in_reasoning  # a redundant start tag at the start is dropped
        self._reasoning_started = False  # leading whitespace of the reasoning is dropped
        super().__init__()
        self._pending_space = ""
        self._content_space = ""  # trailing content whitespace held while a closing wrapper may follow

    def finish(self) -> list[OutputDelta]:
        if not self._finished:
            self._finished = True
            self._drain(final=True)
            if self._state == "reasoning":
                self._reasoning(self._buffer)  # no closing tag: all reasoning
            elif self._buffer or self._content_space:
                self._out.append(OutputDelta(content=self._content_space + self._buffer))
            self._buffer = self._content_space = ""
        return self._flush()

    def _drain(self, final: bool) -> None:
        handlers = {"opening": self._opening, "reasoning": self._in_reasoning, "after": self._after,
                    "wrapper": self._wrapper, "content": self._content}
        while self._buffer and handlers[self._state](final):
            pass

    def _opening(self, final: bool) -> bool:
        """Before anything else: is the answer opening with a start tag (or with the end tag alone: an empty
        thought written as its closing tag, as GLM-4.7 and LLaMA-Factory's glm4_7 template write it)?"""
        stripped = self._buffer.lstrip()
        tag = next((tag for tag in self._starts if stripped.startswith(tag)), None)
        if tag is not None:
            self._buffer = stripped[len(tag) :]
            self._state = "reasoning"
            return True
        if stripped.startswith(self._end_tag):
            self._buffer = stripped[len(self._end_tag) :]
            self._state = "after"
            return True
        openings = (*self._starts, self._end_tag)
        if (not stripped or any(is_partial(stripped, tag) for tag in openings)) and not final:
            return False
        self._state = "wrapper"
        return True

    def _in_reasoning(self, final: bool) -> bool:
        if self._may_reopen:
            stripped = self._buffer.lstrip()
            if (not stripped or any(is_partial(stripped, tag) for tag in self._starts)) and not final:
                return False
            self._may_reopen = False
            tag = next((tag for tag in self._starts if stripped.startswith(tag)), None)
            if tag is not None:
                self._buffer = stripped[len(tag) :]
        stops = (*self._ends, *self._implicit_ends)
        index = earliest_marker(self._buffer, stops)
        found = next((stop for stop in stops if index != -1 and self._buffer.startswith(stop, index)), None)
        if found is None:  # none (or one cut by the end of the text, held back)
            keep = len(self._buffer) - index if index != -1 else 0
            self._reasoning(self._buffer[: len(self._buffer) - keep])
            self._buffer = self._buffer[len(self._buffer) - keep :]
            return False
        self._reasoning(self._buffer[:index])
        self._pending_space = ""
        if found in self._ends:
            self._buffer = self._buffer[index + len(found) :]
            self._state = "after"
        else:  # a tool call ends the reasoning: the marker is the content's (the tool parser's) to read
            self._buffer = self._buffer[index:]
            self._state = "content"
        return True

    def _after(self, final: bool) -> bool:
        """Right after the closing tag: drop the whitespace that separates reasoning and content."""
        self._buffer = self._buffer.lstrip()
        if self._buffer:
            self._state = "wrapper"
        return bool(self._buffer)

    def _wrapper(self, final: bool) -> bool:
        """At the content's start: drop the family's opening wrapper tag, if it writes one."""
        if self._content_open:
            stripped = self._buffer.lstrip()
            tag = next((tag for tag in self._content_open if stripped.startswith(tag)), None)
            if tag is None and not final and (not stripped or any(is_partial(stripped, t) for t in self._content_open)):
                return False
            if tag is not None:
                self._buffer = stripped[len(tag) :].lstrip()
                if not self._buffer and not final:
                    self._state = "after"  # the whitespace after the tag may go on
                    return False
        self._state = "content"
        return True

    def _content(self, final: bool) -> bool:
        if not self._content_close:
            self._out.append(OutputDelta(content=self._buffer))
            self._buffer = ""
            return False
        index = earliest_marker(self._buffer, self._content_close)
        tag = next((tag for tag in self._content_close if index != -1 and self._buffer.startswith(tag, index)), None)
        if tag is not None:  # the content's closing wrapper: dropped with the whitespace before it
            self._emit_content(self._buffer[:index].rstrip(), hold=False)
            self._content_space = ""
            self._buffer = self._buffer[index + len(tag) :].lstrip()
            return bool(self._buffer)
        cut = len(self._buffer) if index == -1 else index
        self._emit_content(self._buffer[:cut], hold=True)
        self._buffer = self._buffer[cut:]
        return False

    def _emit_content(self, text: str, hold: bool) -> None:
        body = text.rstrip() if hold else text
        if body:
            self._out.append(OutputDelta(content=self._content_space + body))
            self._content_space = ""
        self._content_space += text[len(body) :]

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


class GraniteReasoningParser(ThinkReasoningParser):
    """IBM Granite: ``<think>...</think><response>...</response>`` (3.3 and later) or "Here is my thought
    process: ... Here is my response: ..." (3.2; "Here's" too, as quantised checkpoints write it)."""

    name = "granite"
    other_start_tags = ("Here is my thought process:", "Here's my thought process:")
    other_end_tags = ("Here is my response:", "Here's my response:")
    content_open = ("<response>",)
    content_close = ("</response>",)


class HunyuanReasoningParser(ThinkReasoningParser):
    """Hunyuan-A13B: ``<think>\\n...\\n</think>\\n<answer>\\n...\\n</answer>``."""

    name = "hunyuan_a13b"
    content_open = ("<answer>",)
    content_close = ("</answer>",)


class SeedOssReasoningParser(ThinkReasoningParser):
    """ByteDance Seed-OSS: ``<seed:think>...</seed:think>`` (budget reflections stay in the reasoning)."""

    name = "seed_oss"
    start_tag = "<seed:think>"
    end_tag = "</seed:think>"
    prompt_suffixes = ("<seed:cot_budget_reflect>",)


class KimiVlReasoningParser(ThinkReasoningParser):
    """Kimi-VL-Thinking: ``◁think▷...◁/think▷`` (SGLang's ``kimi`` reasoning parser)."""

    name = "kimi_vl"
    start_tag = "◁think▷"
    end_tag = "◁/think▷"
