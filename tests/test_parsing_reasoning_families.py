"""Reasoning parsers of the families added for issue 20 (gpt-oss channels, Granite, Hunyuan, Seed-OSS, and the
``think`` families Kimi-K2 and MiniMax-M2), alone and with their tool parsers: one piece, streamed by character,
cut everywhere and by SmolLM2 token, all agreeing."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import pytest
from parsing_support import assert_streams_agree, comparable, smollm2_tokenizer, stream, token_deltas

from lmchat.parsing import OutputParser, reasoning_parser_names

__all__ = ["smollm2_tokenizer"]


class Case(NamedTuple):
    reasoning: str
    tool: str | None
    text: str
    reasoning_text: str | None
    content: str | None
    calls: list[tuple[str, dict[str, Any]]] = []
    starts_in_reasoning: bool = False


KIMI_CALL = ('<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>'
             '{"city": "Paris"}<|tool_call_end|><|tool_calls_section_end|>')
CASES: dict[str, Case] = {
    # llama.cpp tests/test-chat.cpp (gpt-oss): analysis is reasoning, final is content
    "gpt-oss-final": Case("gpt_oss", None, "<|channel|>analysis<|message|>I'm\nthinking<|end|><|start|>assistant"
                          "<|channel|>final<|message|>Hello, world!\nWhat's up?", "I'm\nthinking",
                          "Hello, world!\nWhat's up?"),
    "gpt-oss-call": Case("gpt_oss", "openai", "<|channel|>analysis<|message|>I'm\nthinking<|end|><|start|>assistant"
                         "<|channel|>commentary to=functions.special_function <|constrain|>json<|message|>"
                         '{"arg1": 1}<|call|>', "I'm\nthinking", None, [("special_function", {"arg1": 1})]),
    "gpt-oss-preamble": Case("gpt_oss", "openai", "<|channel|>analysis<|message|>Plan.<|end|><|start|>assistant"
                             "<|channel|>commentary<|message|>Checking the weather.<|end|><|start|>assistant to="
                             'functions.get_weather<|channel|>commentary json<|message|>{"city": "Paris"}<|call|>',
                             "Plan.", "Checking the weather.", [("get_weather", {"city": "Paris"})]),
    "gpt-oss-cut-while-thinking": Case("gpt_oss", None, "<|channel|>analysis<|message|>Still thin", "Still thin", None),
    "gpt-oss-no-headers": Case("gpt_oss", None, "A model that writes no channels.", None,
                               "A model that writes no channels."),
    # vLLM vllm/reasoning/granite_reasoning_parser.py (Granite 3.2) and Granite 3.3's <think>/<response>
    "granite-3.2": Case("granite", None, "Here is my thought process: It is simple. Here is my response: Paris.",
                        "It is simple.", "Paris."),
    "granite-3.2-heres": Case("granite", None, "Here's my thought process:\nHmm.\nHere's my response:\nParis.",
                              "Hmm.", "Paris."),
    "granite-3.3": Case("granite", "granite", '<think>Need weather.</think><response>Checking.</response>'
                        '<|tool_call|>[{"name": "get_weather", "arguments": {"city": "Paris"}}]', "Need weather.",
                        "Checking.", [("get_weather", {"city": "Paris"})]),
    "granite-plain": Case("granite", None, "Paris is the capital.", None, "Paris is the capital."),
    # vLLM vllm/reasoning/hunyuan_a13b_reasoning_parser.py: <think> then <answer>
    "hunyuan": Case("hunyuan_a13b", None, "<think>\nThe capital.\n</think>\n<answer>\nParis.\n</answer>",
                    "The capital.", "Paris."),
    "hunyuan-call": Case("hunyuan_a13b", "hunyuan_a13b", '<think>\nNeed a tool.\n</think>\n<answer>\n<tool_calls>'
                         '[{"name": "get_weather", "arguments": {"city": "Paris"}}]</tool_calls>\n</answer>',
                         "Need a tool.", None, [("get_weather", {"city": "Paris"})]),
    # ByteDance-Seed-OSS chat template: <seed:think>, budget reflections inside
    "seed-oss": Case("seed_oss", "seed_oss", "<seed:think>Weather.<seed:cot_budget_reflect>12 used</seed:cot_budget_"
                     "reflect></seed:think>\n<seed:tool_call>\n<function=get_weather>\n<parameter=city>Paris"
                     "</parameter>\n</function>\n</seed:tool_call>",
                     "Weather.<seed:cot_budget_reflect>12 used</seed:cot_budget_reflect>", None,
                     [("get_weather", {"city": "Paris"})]),
    # Kimi-K2-Thinking (vLLM vllm/reasoning/kimi_k2_reasoning_parser.py: the tool section also ends reasoning)
    "kimi-k2-thinking": Case("kimi_k2", "kimi_k2", "<think>Need weather.</think>Checking." + KIMI_CALL, "Need weather.",
                             "Checking.", [("get_weather", {"city": "Paris"})]),
    "kimi-k2-thinking-unclosed": Case("kimi_k2", "kimi_k2", "Need weather." + KIMI_CALL, "Need weather.", None,
                                      [("get_weather", {"city": "Paris"})], starts_in_reasoning=True),
    # MiniMax-M2: the generation prompt opens <think> (vLLM's minimax_m2 reasoning parser)
    "minimax-m2": Case("minimax_m2", "minimax_m2", 'Think.\n</think>\n\n<minimax:tool_call>\n<invoke name="get_weather">'
                       '\n<parameter name="city">Paris</parameter>\n</invoke>\n</minimax:tool_call>', "Think.", None,
                       [("get_weather", {"city": "Paris"})], starts_in_reasoning=True),
    # DeepSeek-R1: a call straight from the thoughts the prompt opened (no </think>) is still a call
    "deepseek-r1-unclosed": Case("deepseek_r1", "deepseek_v3", "I need the time.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>"
                                 "function<｜tool▁sep｜>get_time\n```json\n{\"city\": \"Tokyo\"}```<｜tool▁call▁end｜>"
                                 "<｜tool▁calls▁end｜>", "I need the time.", None, [("get_time", {"city": "Tokyo"})],
                                 starts_in_reasoning=True),
    # ...but markup inside reasoning a tag opened stays reasoning (llama.cpp's "fake tool call in reasoning" test)
    "think-markup-in-reasoning": Case("think", "kimi_k2", "<think>maybe " + KIMI_CALL + "?</think>No call.",
                                      "maybe " + KIMI_CALL + "?", "No call."),
}


def _parser(case: Case) -> Any:
    return lambda: OutputParser(case.reasoning, case.tool, starts_in_reasoning=case.starts_in_reasoning)


def _check(case: Case, output: Any) -> None:
    assert (output.reasoning, output.content) == (case.reasoning_text, case.content)
    assert [(call.name, json.loads(call.arguments)) for call in output.tool_calls] == case.calls


@pytest.mark.parametrize("key", sorted(CASES))
def test_reasoning_case(key: str) -> None:
    case = CASES[key]
    _check(case, _parser(case)().parse(case.text))
    _check(case, assert_streams_agree(_parser(case), case.text))


@pytest.mark.parametrize("key", sorted(CASES))
def test_reasoning_case_streamed_by_token(key: str, smollm2_tokenizer: Any) -> None:
    case = CASES[key]
    output, deltas = stream(_parser(case)(), token_deltas(smollm2_tokenizer, case.text))
    _check(case, output)
    markers = ("<|", "|>", "<think", "</", "<seed:", "<answer", "<response", "Here is my", "Here's my")
    assert not any(marker in delta.content for delta in deltas for marker in markers if case.content)
    assert comparable(output) == comparable(_parser(case)().parse(case.text))


def test_reasoning_registry_names() -> None:
    names = reasoning_parser_names()
    for name in ("think", "gpt_oss", "openai", "granite", "hunyuan_a13b", "seed_oss", "kimi_k2", "minimax_m2",
                 "ernie45", "olmo3", "step3", "glm45", "deepseek_r1", "qwen3"):
        assert name in names
