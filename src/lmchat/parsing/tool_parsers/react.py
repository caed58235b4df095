"""LLaMA-Factory's default tool format (ReAct style), one or more of::

    Action: tool_name
    Action Input: {"arg": "value"}

Text before the first ``Action:`` (a "Thought", say) is content. A call is committed once its ``Action Input:``
opens its JSON object; its region ends with that object.
"""

from __future__ import annotations

import re

from lmchat.parsing.scan import is_partial, skip_space
from lmchat.parsing.tool_parsers.base import Match, MatchContext, Open, ToolParser, arguments_open

ACTION = "Action:"
INPUT = "Action Input:"
_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


class ReactToolParser(ToolParser):
    name = "default"
    markers = (ACTION,)

    def match_marker(self, text: str, final: bool, ctx: MatchContext) -> Match | Open | None:
        reject = Match(len(ACTION))
        name_start = skip_space(text, len(ACTION))
        if name_start == len(text):
            return None if not final else reject
        name = _NAME.match(text, name_start)
        if name is None:
            return reject
        if name.end() == len(text):
            return None if not final else reject
        label = skip_space(text, name.end())
        if label == len(text) or is_partial(text[label:], INPUT):
            return None if not final else reject
        if not text.startswith(INPUT, label):
            return reject
        brace = skip_space(text, label + len(INPUT))
        if brace == len(text):
            return None if not final else reject
        if text[brace] != "{":
            return reject
        opens = arguments_open(text, brace, final)
        if not opens:
            return None if opens is None else reject
        return Open(brace, name.group())
