"""Which tool-call and reasoning parsers a model's own chat template calls for, told from the markers it writes.

Each rule lists markers that must all appear in the template source; the first rule that matches names the
parsers. Rules are ordered from the most specific markers to the most common ones (Qwen3-Coder's template also
contains ``<tool_call>``, Hunyuan's also ``<tool_calls>``), and only markers that one family's template writes are
used: where a marker is shared and nothing else tells the families apart, no parser is guessed. The table of
families, and the template each rule was checked on, is in ``docs/tool-calling.md``.
"""

from __future__ import annotations

from typing import NamedTuple


class Rule(NamedTuple):
    markers: tuple[str, ...]
    tool_parser: str | None
    reasoning_parser: str | None = None


RULES: tuple[Rule, ...] = (
    Rule(("<|channel|>", "<|message|>", "<|start|>"), "openai", "gpt_oss"),  # gpt-oss (harmony)
    Rule(("<|tool_calls_section_begin|>",), "kimi_k2"),  # Kimi-K2 (-Thinking: <think>, below)
    Rule(("<minimax:tool_call>",), "minimax_m2", "think"),  # always thinks; its prompt opens <think>
    Rule(("<seed:tool_call>",), "seed_oss", "seed_oss"),
    Rule(("<steptml:invoke",), "step3"),
    Rule(("<function=", "<parameter="), "qwen3_coder"),  # Qwen3-Coder, Qwen3.5/3.6, Step-3.5, Nemotron 3
    Rule(("<arg_key>", "<arg_value>"), "glm45"),
    Rule(("tool▁calls▁begin",), "deepseek_v3"),
    Rule(("<tool_calls>", "<beginning_of_sentence>"), "minimax", "think"),  # MiniMax-M1, MiniMax-Text-01
    Rule(("<tool_calls>", "<|startoftext|>"), "hunyuan_a13b", "hunyuan_a13b"),
    Rule(("<tool_calls>",), "jamba"),
    Rule(("functools",), "phi4_mini_json"),
    Rule(("<|tool_call|>",), "granite"),
    Rule(("<function_call>",), "granite_20b_fc"),
    Rule(("<|plugin|>", "<|action_start|>"), "internlm"),
    Rule(("<longcat_tool_call>",), "longcat"),
    Rule(("<|tool_call_start|>",), "lfm2"),
    Rule(("<function_calls>",), "olmo3"),
    Rule(("function call", "<|role_sep|>"), "gigachat3"),
    Rule((">>>all",), "functionary_v3_2"),
    Rule(("<function=", "</function>", "<|python_tag|>"), "functionary_v3_1"),
    Rule(('[{"name": "tool_call_name"',), "xlam"),
    Rule(("<|python_start|>",), "pythonic"),  # Llama 4
    Rule(("[func_name1(",), "pythonic"),  # vLLM's Llama 3.2 / 4 pythonic example templates
    Rule(("<tool_call>",), "hermes"),  # Hermes, Qwen2.5/3, ERNIE-4.5, Granite 4
    Rule(("[TOOL_CALLS]",), "mistral"),
    Rule(("<|python_tag|>",), "llama3_json"),
)

GRANITE_REASONING = ("thought process", "<response>")
"""Granite 3.2 asks for "Here is my thought process:", Granite 3.3 for ``<think>``/``<response>``."""


def detect_tool_parser(source: str) -> str | None:
    """The tool-call parser the template's markers call for; None when they are ambiguous or absent."""
    rule = _first_rule(source)
    return rule.tool_parser if rule else None


def detect_reasoning_parser(source: str) -> str | None:
    """The reasoning parser the template calls for: the family's own, Granite's phrases, or ``think`` for a
    template that writes ``</think>``."""
    rule = _first_rule(source)
    if rule is not None and rule.reasoning_parser:
        return rule.reasoning_parser
    if any(marker in source for marker in GRANITE_REASONING) and "<|start_of_role|>" in source:
        return "granite"
    return "think" if "</think>" in source else None


def _first_rule(source: str) -> Rule | None:
    return next((rule for rule in RULES if all(marker in source for marker in rule.markers)), None)
