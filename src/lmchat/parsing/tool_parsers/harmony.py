"""gpt-oss (harmony) tool calls: a message whose header names a ``functions.NAME`` recipient, its body the JSON
arguments::

    <|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}<|call|>

(the recipient may also stand before the channel: ``<|start|>assistant to=functions.f<|channel|>...``). The
``gpt_oss`` reasoning parser passes such messages on in that form and strips every other header; used alone, this
parser drops the other headers and end tokens itself, and their bodies are content. A call is committed at its
arguments' ``{"`` and ends at ``<|call|>`` (or ``<|end|>``, or the end of the answer); its arguments are
re-serialised, as vLLM's ``openai`` parser does. A recipient that is not a function (``python``, ``browser.*``)
makes no call: the body is content.
"""

from __future__ import annotations

from typing import Any

from lmchat.parsing.reasoning.harmony import (
    CALL,
    CHANNEL,
    CONSTRAIN,
    END,
    HARMONY_TOKENS,
    MESSAGE,
    RETURN,
    START,
    parse_header,
)
from lmchat.parsing.scan import is_partial, skip_space
from lmchat.parsing.tool_parsers.base import NO_START, Match, MatchContext, Open, Rest, ToolParser, arguments_open

FUNCTIONS = "functions."
_LONGEST_HEADER = 400
_CALL_END = "call end"  # state after a call's arguments


class OpenAIToolParser(ToolParser):
    name = "openai"
    markers = (START, CHANNEL, END, CALL, RETURN)
    special_tokens = HARMONY_TOKENS

    def match_start(self, text: str, final: bool, ctx: MatchContext) -> Match | Open | None:
        if text.startswith(("to=", CONSTRAIN)):
            return self._header(text, final)
        if not final and (is_partial(text, "to=") or is_partial(text, CONSTRAIN)):
            return None
        return NO_START

    def match_marker(self, text: str, final: bool, ctx: MatchContext) -> Match | Open | None:
        token = next((token for token in (END, CALL, RETURN) if text.startswith(token)), None)
        if token is not None:
            return Match(len(token), markup=True)
        return self._header(text, final)

    def _header(self, text: str, final: bool) -> Match | Open | None:
        """The message header ``text`` starts with, up to ``<|message|>``."""
        end = text.find(MESSAGE)
        stops = [index for index in (text.find(token, 1) for token in (START, END, CALL, RETURN)) if index != -1]
        if (stops and (end == -1 or min(stops) < end)) or (end == -1 and (final or len(text) > _LONGEST_HEADER)):
            opening = next((token for token in (START, CHANNEL, CONSTRAIN) if text.startswith(token)), text[:1])
            return Match(len(opening))  # not a header: content
        if end == -1:
            return None
        _, recipient = parse_header(text[:end])
        body = end + len(MESSAGE)
        if recipient is None or not recipient.startswith(FUNCTIONS) or len(recipient) == len(FUNCTIONS):
            return Match(body, markup=True)
        brace = skip_space(text, body)
        if brace == len(text):
            return None if not final else Match(body, markup=True)
        opens = arguments_open(text, brace, final) if text[brace] == "{" else False
        if opens is None:
            return None
        if not opens:
            return Match(body, markup=True)  # not JSON arguments: the body is content
        return Open(brace, recipient[len(FUNCTIONS) :], state=_CALL_END)

    def match_rest(self, text: str, final: bool, ctx: MatchContext, state: Any, broken: bool) -> Rest | None:
        if broken:
            return Rest(0)
        pos = skip_space(text, 0)
        token = next((token for token in (CALL, END) if text.startswith(token, pos)), None)
        if token is not None:
            return Rest(pos + len(token))
        if not final and (pos == len(text) or is_partial(text[pos:], CALL) or is_partial(text[pos:], END)):
            return None
        return Rest(0)
