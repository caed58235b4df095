"""Reasoning parser (``think``) and the OutputParser pipeline: one piece, streamed, and their agreement."""

from __future__ import annotations

import json
import random

import pytest

from lmchat.errors import ConfigError
from lmchat.parsing import (
    OutputDelta,
    OutputParser,
    ParsedOutput,
    collect,
    get_reasoning_parser,
    reasoning_parser_names,
    register_reasoning_parser,
)
from lmchat.parsing.reasoning import ThinkReasoningParser


def think(text: str, starts_in_reasoning: bool = False) -> ParsedOutput:
    return ThinkReasoningParser().parse(text, starts_in_reasoning=starts_in_reasoning)


def streamed(parser: OutputParser, chunks: list[str]) -> tuple[ParsedOutput, list[OutputDelta]]:
    deltas = [delta for chunk in chunks for delta in parser.feed(chunk)] + parser.finish()
    return collect(deltas), deltas


@pytest.mark.parametrize(
    ("text", "starts_in_reasoning", "expected"),
    [
        ("<think>\nLet me think.\n</think>\n\nThe answer.", False, ParsedOutput("The answer.", [], "Let me think.")),
        ("  <think>a</think>b", False, ParsedOutput("b", [], "a")),
        ("No reasoning here.", False, ParsedOutput("No reasoning here.", [], None)),
        ("Says <think> later</think>", False, ParsedOutput("Says <think> later</think>", [], None)),
        ("<think></think>Only content", False, ParsedOutput("Only content", [], None)),
        # the generation prompt opened <think> (DeepSeek-R1, Qwen3 thinking templates)
        ("I'm\nthinking</think>Hello, world!\nWhat's up?", True,
         ParsedOutput("Hello, world!\nWhat's up?", [], "I'm\nthinking")),
        ("<think>\nagain</think>done", True, ParsedOutput("done", [], "again")),
        ("</think>direct", True, ParsedOutput("direct", [], None)),
        # no closing tag by the end of the answer: all of it is reasoning (vLLM's policy)
        ("<think>cut off while thinking", False, ParsedOutput(None, [], "cut off while thinking")),
        ("cut off while thinking </thi", True, ParsedOutput(None, [], "cut off while thinking </thi")),
        ("", True, ParsedOutput("", [], None)),
        ("<thin", False, ParsedOutput("<thin", [], None)),
    ],
)
def test_think_parser(text: str, starts_in_reasoning: bool, expected: ParsedOutput) -> None:
    assert think(text, starts_in_reasoning) == expected
    parser = OutputParser("think", starts_in_reasoning=starts_in_reasoning)
    assert parser.parse(text) == expected
    assert streamed(parser, list(text))[0] == expected


def test_tags_split_at_every_position_never_leak() -> None:
    text = "<think>\nstep one\nstep two\n</think>\n\nFinal answer."
    for cut in range(len(text) + 1):
        output, deltas = streamed(OutputParser("think"), [text[:cut], text[cut:]])
        assert output == ParsedOutput("Final answer.", [], "step one\nstep two")
        assert not any("<" in delta.content or "<" in delta.reasoning for delta in deltas)


def test_reasoning_streams_as_it_comes() -> None:
    parser = OutputParser("think", starts_in_reasoning=True)
    assert collect(parser.feed("First idea")).reasoning == "First idea"
    assert parser.feed(" and </thi") == [OutputDelta(reasoning=" and")]  # the tag's start is held back
    assert collect(parser.feed("nk>Answer")).content == "Answer"


def test_random_text_streamed_equals_one_piece() -> None:
    rng = random.Random(7)
    pieces = ["<think>", "</think>", "<th", "</th", " ", "\n", "a", "b<", ">"]
    for starts_in_reasoning in (False, True):
        for _ in range(500):
            text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 10)))
            expected = OutputParser("think", starts_in_reasoning=starts_in_reasoning).parse(text)
            parser = OutputParser("think", starts_in_reasoning=starts_in_reasoning)
            assert streamed(parser, list(text))[0] == expected, text


def test_reasoning_then_tool_calls() -> None:
    text = (
        '<think>\nThe user wants the weather.\n</think>\n\nLet me check.\n<tool_call>\n'
        '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    )
    expected = ("Let me check.", "The user wants the weather.", [("get_weather", {"city": "Paris"})])
    for chunks in ([text], list(text)):
        output, _ = streamed(OutputParser("think", "hermes"), chunks)
        calls = [(call.name, json.loads(call.arguments)) for call in output.tool_calls]
        assert (output.content, output.reasoning, calls) == expected


def test_tool_markup_inside_reasoning_is_reasoning() -> None:
    text = '<think>maybe <tool_call>{"name": "f", "arguments": {}}</tool_call>?</think>No call.'
    output = OutputParser("think", "hermes").parse(text)
    assert output.tool_calls == [] and output.content == "No call."
    assert output.reasoning is not None and "<tool_call>" in output.reasoning


def test_no_parsers_passes_text_through() -> None:
    parser = OutputParser()
    assert parser.parse("<think>x</think>") == ParsedOutput("<think>x</think>", [], None)
    assert streamed(parser, ["a", "b"])[0] == ParsedOutput("ab", [], None)


def test_registry() -> None:
    assert {"think", "deepseek_r1", "qwen3"} <= set(reasoning_parser_names())
    assert get_reasoning_parser("DeepSeek-R1") is ThinkReasoningParser
    with pytest.raises(ConfigError, match="did you mean 'think'"):
        get_reasoning_parser("thinl")

    class Kimi(ThinkReasoningParser):
        start_tag, end_tag = "◁think▷", "◁/think▷"

    register_reasoning_parser("test_only_kimi", Kimi)
    assert OutputParser("test_only_kimi").parse("◁think▷hm◁/think▷ok") == ParsedOutput("ok", [], "hm")


def test_starts_in_reasoning_needs_a_reasoning_parser() -> None:
    with pytest.raises(ConfigError, match="reasoning parser"):
        OutputParser(tool_parser="hermes", starts_in_reasoning=True)
