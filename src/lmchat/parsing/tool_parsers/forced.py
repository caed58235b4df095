"""The answers of forced tool calls (``tool_choice`` required or a named function), which lmchat constrains to
plain JSON whatever the model's own call markup (see :mod:`lmchat.structured.tool_choice`):

* ``tool_choice_required``: the answer is a JSON list of calls, ``[{"name": ..., "arguments": {...}}, ...]``;
  each entry is committed at its name and its arguments stream as they are written (canonical JSON);
* ``tool_choice_named``: the answer is the arguments of the one named function (the request's only tool here),
  committed at once and streamed as the model writes them.

Text that is not such JSON (an answer cut before it starts) stays content, as with every parser.
"""

from __future__ import annotations

from lmchat.parsing.tool_parsers.base import NO_START, Match, MatchContext, Open
from lmchat.parsing.tool_parsers.json_lists import JsonListToolParser


class RequiredCallsToolParser(JsonListToolParser):
    name = "tool_choice_required"
    openers: dict = {}
    markers = ()
    list_at_start = True


class NamedCallToolParser(JsonListToolParser):
    name = "tool_choice_named"
    markers = ()

    def match_start(self, text: str, final: bool, ctx: MatchContext) -> Match | Open | None:
        if not text.startswith("{") or len(ctx.tools) != 1:
            return NO_START
        return Open(0, next(iter(ctx.tools)), verbatim=True)
