"""Calls written as XML-style tags, one tag per parameter, values as bare text:

* ``qwen3_coder`` (Qwen3-Coder, Qwen3.5/3.6, and ``step3p5`` for Step-3.5)::

      <tool_call>\\n<function=NAME>\\n<parameter=KEY>\\nVALUE\\n</parameter>\\n</function>\\n</tool_call>

  (one newline after ``<parameter=KEY>`` and one before ``</parameter>`` are layout, not value; a call written
  without ``<tool_call>`` is read too, as vLLM and llama.cpp do);
* ``seed_oss`` (Seed-OSS): the same inside ``<seed:tool_call>...</seed:tool_call>``; also with the name ended by a
  newline instead of ``>`` (``<function=NAME\\n<parameter=...``), as LLaMA-Factory's ``seed_oss`` tool format
  writes it, so a model fine-tuned with it is read too;
* ``minimax_m2`` (MiniMax-M2): ``<minimax:tool_call><invoke name="NAME"><parameter name="KEY">VALUE</parameter>
  </invoke>...</minimax:tool_call>``, several invokes per block; also bare ``<invoke ...>`` calls without the
  block, as LLaMA-Factory's ``minimax2`` tool format writes them;
* ``step3`` (Step-3): ``<｜tool_calls_begin｜><｜tool_call_begin｜>[function<｜tool_sep｜>NAME\\n]<steptml:invoke
  name="NAME"><steptml:parameter name="KEY">VALUE</steptml:parameter></steptml:invoke><｜tool_call_end｜>``, calls
  separated by ``<｜tool_sep｜>``, the block closed by ``<｜tool_calls_end｜>``.

Values are typed by the request's tool schema (``lmchat.parsing.schema.coerce_value``: a string parameter keeps
its text exactly, other types are read as JSON, or as Python literals), and without a schema read as JSON when
they parse, else kept as text. A call is committed at its complete opening tag (its name) and its arguments
stream one complete parameter at a time (``{``, ``"k": v``, ``, "k2": v2``, ``}``); a parameter whose closing tag
is missing ends at the next tag (vLLM's leniency). Markup that does not fit closes the arguments, and the rest of
the block is content. A block whose first call is malformed is content.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from lmchat.parsing.scan import dumps, is_partial, skip_space
from lmchat.parsing.schema import coerce_value
from lmchat.parsing.tool_parsers.base import Match, MatchContext, Open, Rest, ToolParser, plain_until


@dataclass(frozen=True)
class XmlSyntax:
    """One family's tags. ``call_open``/``param_open`` match a complete opening tag, group 1 the name."""

    block_open: str
    block_close: str
    call_prefix: str
    call_open: re.Pattern[str]
    call_close: str
    param_prefix: str
    param_open: re.Pattern[str]
    param_close: str
    trim_newlines: bool = True
    fillers: tuple[str, ...] = ()
    """Tokens skipped before and between the calls of a block."""
    named_filler: str = ""
    """A filler followed by a name and a newline (Step-3's ``function<｜tool_sep｜>NAME\\n``)."""


@dataclass(frozen=True, slots=True)
class _Params:
    name: str
    in_block: bool
    first: bool = True


@dataclass(frozen=True, slots=True)
class _Between:
    in_block: bool


@dataclass(frozen=True, slots=True)
class _Odd:
    """The arguments could not be read further: content up to the end of the block."""


def tag_at(text: str, pos: int, prefix: str, pattern: re.Pattern[str]) -> re.Match[str] | bool | None:
    """The complete opening tag at ``text[pos]``; None while it may still be being written; False when there is
    none (or it is malformed: a ``<`` or newline before its ``>``)."""
    found = pattern.match(text, pos)
    if found is not None:
        return found
    rest = text[pos:]
    if is_partial(rest, prefix):
        return None
    if rest.startswith(prefix) and not re.search(r"[<>\n]", rest[len(prefix) :]):
        return None
    return False


class XmlToolParser(ToolParser):
    """Base: subclasses give ``syntax``."""

    syntax: ClassVar[XmlSyntax]

    def match_marker(self, text: str, final: bool, ctx: MatchContext) -> Match | Open | None:
        syntax = self.syntax
        in_block = bool(syntax.block_open) and text.startswith(syntax.block_open)
        pos = self._skip_fillers(text, len(syntax.block_open) if in_block else 0, final)
        if pos is None:
            return None
        found = tag_at(text, pos, syntax.call_prefix, syntax.call_open)
        if found:
            return Open(found.end(), found.group(1).strip(), state=_Params(found.group(1).strip(), in_block),
                        arguments="{")
        if found is None and not final:
            return None
        if not in_block:
            return Match(len(syntax.call_prefix) if text.startswith(syntax.call_prefix) else 1)
        if text.startswith(syntax.block_close, pos):  # an empty block: markup
            return Match(pos + len(syntax.block_close), markup=True)
        rest = plain_until(text[len(syntax.block_open) :], final, (syntax.block_close, syntax.block_open))
        if rest is None or (rest[1] is None and not final):
            return None
        end = len(syntax.block_open) + rest[0] + (len(syntax.block_close) if rest[1] == syntax.block_close else 0)
        return Match(end)  # a malformed block is content

    def match_rest(self, text: str, final: bool, ctx: MatchContext, state: Any, broken: bool) -> Rest | Open | None:
        if isinstance(state, _Odd):
            return self._odd(text, final)
        if isinstance(state, _Between):
            return self._between(text, final, state)
        return self._parameter(text, final, ctx, state)

    # --- inside a call ------------------------------------------------------------------------------------
    def _parameter(self, text: str, final: bool, ctx: MatchContext, state: _Params) -> Rest | None:
        syntax = self.syntax
        pos = skip_space(text, 0)
        if pos == len(text):
            return None if not final else Rest(pos, arguments="}")
        found = tag_at(text, pos, syntax.param_prefix, syntax.param_open)
        if found is None:
            return None if not final else Rest(len(text), content=len(text), arguments="}")
        if found:
            return self._value(text, final, ctx, state, found)
        if text.startswith(syntax.call_close, pos):
            return Rest(pos + len(syntax.call_close), arguments="}", more=_Between(state.in_block))
        if state.in_block and text.startswith(syntax.block_close, pos):  # the call's closing tag is missing
            return Rest(pos + len(syntax.block_close), arguments="}")
        if not final and any(is_partial(text[pos:], tag) for tag in (syntax.call_close, syntax.block_close)):
            return None
        return Rest(pos, arguments="}", more=_Odd() if state.in_block else None)

    def _value(self, text: str, final: bool, ctx: MatchContext, state: _Params, tag: re.Match[str]) -> Rest | None:
        syntax = self.syntax
        start = tag.end()
        needles = tuple(filter(None, (syntax.param_close, syntax.param_prefix, syntax.call_close,
                                      syntax.block_close if state.in_block else "")))
        stop = ctx.scanner.find_first(text, needles, start)
        if stop == -1 and not final:
            return None
        end = len(text) if stop == -1 else stop
        raw = text[start:end]
        if stop != -1 and text.startswith(syntax.param_close, stop):
            end = stop + len(syntax.param_close)
        if syntax.trim_newlines:
            raw = raw.removeprefix("\n").removesuffix("\n")
        key = tag.group(1).strip()
        value = coerce_value(raw, ctx.tools.get(state.name, {}).get(key))
        piece = ("" if state.first else ", ") + dumps(key) + ": " + dumps(value)
        if stop == -1:  # the answer ends inside the value: it is taken as written, and the arguments closed
            return Rest(end, arguments=piece + "}")
        return Rest(end, arguments=piece, more=_Params(state.name, state.in_block, first=False))

    # --- between calls ------------------------------------------------------------------------------------
    def _between(self, text: str, final: bool, state: _Between) -> Rest | Open | None:
        syntax = self.syntax
        pos = self._skip_fillers(text, 0, final)
        if pos is None:
            return None
        if pos == len(text):
            return None if not final else Rest(pos)
        if text.startswith(syntax.block_close, pos):  # (after a call without its block: a stray closing tag)
            return Rest(pos + len(syntax.block_close))
        found = tag_at(text, pos, syntax.call_prefix, syntax.call_open)
        if found:
            name = found.group(1).strip()
            return Open(found.end(), name, state=_Params(name, state.in_block), arguments="{")
        undecided = found is None or is_partial(text[pos:], syntax.block_close)
        if undecided and not final:
            return None
        if state.in_block and not text.startswith(syntax.block_open, pos):
            return Rest(pos, more=_Odd())
        return Rest(pos)

    def _odd(self, text: str, final: bool) -> Rest | None:
        """Content up to the block's closing tag (dropped), the next block, or the end of the answer."""
        syntax = self.syntax
        found = plain_until(text, final, (syntax.block_close, syntax.block_open))
        if found is None:
            return None
        index, closer = found
        if closer == syntax.block_close:
            return Rest(index + len(closer), content=index)
        if closer is not None or final:
            return Rest(index, content=index)
        return Rest(index, content=index, more=_Odd())

    def _skip_fillers(self, text: str, pos: int, final: bool) -> int | None:
        """Past whitespace and the family's filler tokens from ``pos``; None while one may be cut by the end."""
        syntax = self.syntax
        while True:
            pos = skip_space(text, pos)
            rest = text[pos:]
            token = next((token for token in syntax.fillers if rest.startswith(token)), None)
            if token is not None:
                pos += len(token)
                continue
            if syntax.named_filler and rest.startswith(syntax.named_filler):
                newline = text.find("\n", pos + len(syntax.named_filler))
                if newline == -1:
                    return None if not final else pos
                pos = newline + 1
                continue
            cut = [*syntax.fillers, syntax.named_filler] if rest else []
            if not final and any(is_partial(rest, token) for token in cut if token):
                return None
            return pos


def _tag(prefix: str, quoted: bool, newline_ends: bool = False) -> re.Pattern[str]:
    """An opening tag ``PREFIX NAME>`` (``PREFIX"NAME">`` when ``quoted``); with ``newline_ends`` a newline may end
    the name instead of ``>`` (the newline is not part of the tag)."""
    name = r'"([^"<>\n]+)"\s*>' if quoted else r"([^<>\n]+)(?:>|(?=\n))" if newline_ends else r"([^<>\n]+)>"
    return re.compile(re.escape(prefix) + name)


QWEN3_CODER = XmlSyntax(
    "<tool_call>", "</tool_call>", "<function=", _tag("<function=", False), "</function>",
    "<parameter=", _tag("<parameter=", False), "</parameter>",
)


class Qwen3CoderToolParser(XmlToolParser):
    name = "qwen3_coder"
    syntax = QWEN3_CODER
    markers = ("<tool_call>", "<function=")
    ends_reasoning = ("<tool_call>",)


class Step3p5ToolParser(Qwen3CoderToolParser):
    name = "step3p5"


class SeedOssToolParser(XmlToolParser):
    name = "seed_oss"
    syntax = XmlSyntax(
        "<seed:tool_call>", "</seed:tool_call>", "<function=", _tag("<function=", False, newline_ends=True),
        "</function>",
        "<parameter=", _tag("<parameter=", False), "</parameter>",
    )
    markers = ("<seed:tool_call>",)
    ends_reasoning = ("<seed:tool_call>",)


class MiniMaxM2ToolParser(XmlToolParser):
    name = "minimax_m2"
    syntax = XmlSyntax(
        "<minimax:tool_call>", "</minimax:tool_call>", "<invoke name=", _tag("<invoke name=", True), "</invoke>",
        "<parameter name=", _tag("<parameter name=", True), "</parameter>", trim_newlines=False,
    )
    markers = ("<minimax:tool_call>", "<invoke name=")
    ends_reasoning = ("<minimax:tool_call>",)


class Step3ToolParser(XmlToolParser):
    name = "step3"
    syntax = XmlSyntax(
        "<｜tool_calls_begin｜>", "<｜tool_calls_end｜>", "<steptml:invoke name=", _tag("<steptml:invoke name=", True),
        "</steptml:invoke>", "<steptml:parameter name=", _tag("<steptml:parameter name=", True),
        "</steptml:parameter>", trim_newlines=False,
        fillers=("<｜tool_call_begin｜>", "<｜tool_call_end｜>", "<｜tool_sep｜>"), named_filler="function<｜tool_sep｜>",
    )
    markers = ("<｜tool_calls_begin｜>",)
    ends_reasoning = ("<｜tool_calls_begin｜>",)
