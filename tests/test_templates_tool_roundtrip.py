"""Every LLaMA-Factory tool format lmchat renders round-trips through the parser it is mapped to.

A model fine-tuned with LLaMA-Factory writes its tool calls the way LLaMA-Factory's template renders them. So for
every template name with a tool format, and for every format set with ``tool_format``: the assistant turn that
calls tools is rendered (``[user, assistant-with-tool_calls]`` minus the ``[user]`` generation prompt), made into
what an engine streams (the bos token, a special token, dropped; the turn's end, where the engine stops, cut), and
parsed by the parsers the facade chooses for the request (``plan_parsing``): the same calls come back, names and
arguments, with no markup left in the content; in one piece and streamed token by token with SmolLM2's tokenizer.
The template renders were checked against LLaMA-Factory's own encoder (its ``template.py``, see
tests/test_templates_llamafactory.py).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from parsing_support import comparable, smollm2_tokenizer, token_deltas

from lmchat.chat.output import plan_parsing
from lmchat.parsing import OutputParser, ParsedOutput, collect, get_reasoning_parser, get_tool_parser
from lmchat.templates.llamafactory import LLAMAFACTORY_TEMPLATES
from lmchat.templates.registry import resolve_template, template_names, template_spec
from lmchat.templates.render import render_prompt
from lmchat.templates.slots import REASONING_STYLES, SlotTemplate
from lmchat.templates.tool_formats import NOT_YET, TOOL_PARSERS

__all__ = ["smollm2_tokenizer"]

BOS, EOS = "<s>", "</s>"
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city", "parameters": {
        "type": "object", "required": ["city"], "properties": {
            "city": {"type": "string"}, "days": {"type": "integer"},
            "units": {"type": "array", "items": {"type": "string"}},
            "alerts": {"type": "boolean"}}}}},
    {"type": "function", "function": {"name": "get_time", "description": "Time in a zone", "parameters": {
        "type": "object", "properties": {"zone": {"type": "string"}}}}},
]
CALL_SETS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "one call": [("get_weather", {"city": "São Paulo", "days": 3, "units": ["C", "F"], "alerts": True})],
    "two calls": [("get_weather", {"city": "Paris", "days": 1}), ("get_time", {"zone": "UTC"})],
    "no arguments": [("get_time", {})],
}
SINGLE_CALL_FORMATS = {"glm4"}  # "GLM-4 does not support parallel functions" (LLaMA-Factory raises too)


def _slots(name: str) -> SlotTemplate:
    return LLAMAFACTORY_TEMPLATES[name]


def _cases() -> list[tuple[str, str | None, bool]]:
    """(template, tool_format or None, enable_thinking) for every LLaMA-Factory template rendering tools, and every
    format set with tool_format on a plain and a reasoning template (and on the Jinja-file twins qwen/default)."""
    cases = []
    for name in sorted(LLAMAFACTORY_TEMPLATES):
        spec = template_spec(name)
        if spec.slots is None or _slots(name).tool_format in NOT_YET:
            continue  # the Jinja files (qwen, default) render the official templates: test_templates_named.py
        thinking = (True, False) if _slots(name).style in REASONING_STYLES else (True,)
        cases += [(name, None, think) for think in thinking]
    for tool_format in TOOL_PARSERS:
        cases += [("yi", tool_format, True), ("qwen3", tool_format, True), ("qwen3", tool_format, False),
                  ("qwen", tool_format, True), ("default", tool_format, True)]
    return cases


CASES = _cases()


def test_every_tool_format_and_template_is_covered():
    formats = {_slots(name).tool_format for name, fmt, _ in CASES if fmt is None}
    assert formats | {fmt for _, fmt, _ in CASES if fmt} == set(TOOL_PARSERS)
    assert formats == set(TOOL_PARSERS)  # every format is some template's own, too
    assert len({name for name, _, _ in CASES}) >= 135


def _render(name: str, tool_format: str | None, thinking: bool, calls: list[tuple[str, dict]]) -> tuple[str, str]:
    template = resolve_template(name, tool_format=tool_format)
    user = [{"role": "user", "content": "What should I pack?"}]
    message = {"role": "assistant", "content": "",
               "tool_calls": [{"type": "function", "function": {"name": n, "arguments": a}} for n, a in calls]}
    tokens = {"bos_token": BOS, "eos_token": EOS}
    prompt = render_prompt(user, template, tools=TOOLS, special_tokens=tokens, enable_thinking=thinking)
    full = render_prompt([*user, message], template, tools=TOOLS, add_generation_prompt=False,
                         special_tokens=tokens, enable_thinking=thinking)
    assert full.startswith(prompt), "the answer must go on from the generation prompt"
    return prompt, full[len(prompt):]


def _frame(name: str, tool_format: str | None) -> tuple[str, str]:
    """The text the template's function slot writes before and after the calls: the turn's own framing (an
    assistant header, the end-of-turn token), with the bos token dropped as an engine drops special tokens."""
    values = _slots(name).variables(tool_format)
    eos = values["eos"] or EOS
    head, tail = str(values["function"]).split("{content}")
    return head.replace("{bos}", ""), tail.replace("{eos}", eos).replace("{bos}", "")


def engine_text(name: str, tool_format: str | None, rest: str) -> str:
    """What an engine streams of the rendered turn: bos dropped, the turn's end (where it stops) cut off, and the
    assistant header some LLaMA-Factory slots write ahead of the calls (not tool markup) taken out."""
    head, tail = _frame(name, tool_format)
    text = rest.replace(BOS, "")
    assert text.endswith(tail), (text, tail)
    text = text.removesuffix(tail) if tail else text
    stops = [word for word in (*template_spec(name).stop_words, EOS) if word]
    assert not any(word in text for word in stops), "a stop word inside the calls would end the answer early"
    if head.strip():
        assert head in text
        text = text.replace(head, "", 1)
    return text


def _expected(calls: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    return [(name, arguments) for name, arguments in calls]


def _check(output: ParsedOutput, calls: list[tuple[str, dict]], text: str) -> None:
    got = [(call.name, json.loads(call.arguments)) for call in output.tool_calls]
    assert got == _expected(calls), text
    assert not (output.content or "").strip(), f"markup left in the content: {output.content!r}"
    assert not (output.reasoning or "").strip()


@pytest.mark.parametrize("calls_name", CALL_SETS)
@pytest.mark.parametrize(("name", "tool_format", "thinking"), CASES,
                         ids=[f"{n}-{f or 'own'}-{'think' if t else 'nothink'}" for n, f, t in CASES])
def test_tool_calls_round_trip(name, tool_format, thinking, calls_name, smollm2_tokenizer):
    effective = tool_format or _slots(name).tool_format
    calls = CALL_SETS[calls_name][:1] if effective in SINGLE_CALL_FORMATS else CALL_SETS[calls_name]
    prompt, rest = _render(name, tool_format, thinking, calls)
    text = engine_text(name, tool_format, rest)
    template = resolve_template(name, tool_format=tool_format)
    plan = plan_parsing(template, TOOL_PARSERS[tool_format] if tool_format else None, TOOLS, prompt)
    assert plan.tool_parser is not None and get_tool_parser(plan.tool_parser) is get_tool_parser(
        TOOL_PARSERS[effective])
    whole = plan.new_parser().parse(text)
    _check(whole, calls, text)
    parser = plan.new_parser()
    streamed = collect([d for piece in token_deltas(smollm2_tokenizer, text) for d in parser.feed(piece)]
                       + parser.finish())
    assert comparable(streamed) == comparable(whole)
    if not (thinking and _slots(name).style in REASONING_STYLES):
        # no (empty) thought ahead of the calls: the mapped tool parser alone reads them
        _check(get_tool_parser(TOOL_PARSERS[effective])().parse(text, TOOLS), calls, text)


def test_every_named_template_names_registered_parsers():
    """Each named template's spec (and each tool format) names parsers that exist, so no request fails late."""
    for name in template_names():
        spec = template_spec(name)
        if spec.tool_parser is not None:
            assert get_tool_parser(spec.tool_parser).name, name
        if spec.reasoning_parser is not None:
            assert get_reasoning_parser(spec.reasoning_parser).name, name
        if spec.slots is not None and spec.slots.tool_format not in NOT_YET:
            assert spec.tool_parser == TOOL_PARSERS[spec.slots.tool_format], name
    for parser in TOOL_PARSERS.values():
        assert get_tool_parser(parser).name == parser


def test_the_model_writes_llamafactorys_format_where_it_differs_from_the_official_one():
    """LLaMA-Factory's renders that differ from the models' own formats, and the official formats, are both read."""
    forms = {
        # seed_oss: LLaMA-Factory writes the function name without its closing '>' (Seed-OSS: <function=NAME>)
        "seed_oss": ["<seed:tool_call>\n<function=get_time\n<parameter=zone>UTC</parameter>\n</function>\n"
                     "</seed:tool_call>",
                     "<seed:tool_call>\n<function=get_time>\n<parameter=zone>UTC</parameter>\n</function>\n"
                     "</seed:tool_call>"],
        # minimax2: LLaMA-Factory writes the invokes without MiniMax-M2's <minimax:tool_call> block
        "minimax_m2": ['<invoke name="get_time">\n<parameter name="zone">UTC</parameter>\n</invoke>',
                       '<minimax:tool_call>\n<invoke name="get_time">\n<parameter name="zone">UTC</parameter>\n'
                       '</invoke>\n</minimax:tool_call>'],
        # glm4_moe: LLaMA-Factory writes no </tool_call> (GLM-4.5 closes each call)
        "glm45": ["\n<tool_call>get_time\n<arg_key>zone</arg_key>\n<arg_value>UTC</arg_value>",
                  "<tool_call>get_time\n<arg_key>zone</arg_key>\n<arg_value>UTC</arg_value>\n</tool_call>"],
        "minimax": ['<tool_calls>\n{"name": "get_time", "arguments": {"zone": "UTC"}}\n</tool_calls>'],
    }
    for parser, texts in forms.items():
        for text in texts:
            output = get_tool_parser(parser)().parse(text, TOOLS)
            assert [(c.name, json.loads(c.arguments)) for c in output.tool_calls] == [("get_time", {"zone": "UTC"})]
            assert not (output.content or "").strip(), (parser, text)
