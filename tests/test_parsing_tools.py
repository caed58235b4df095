"""Tool-call parsers: every oracle row of the supported families, in one piece and streamed, plus the contract.

The oracle rows (``../shared/oracles/tool_calls/cases.jsonl``, never copied here) come from vLLM, LLaMA-Factory and
llama.cpp tests. Where their convention differs from lmchat's policy the row is listed below with the reason:
as an explicit content override (``CONTENT_POLICY``), as the result lmchat's "a call is committed at its name"
streaming policy gives instead (``COMMIT_POLICY``), or as a strict xfail (``UNSUPPORTED``).

Normalisations applied to every row:
* content ``None`` and ``""`` are equal (vLLM itself expects ``None`` non-streamed and ``""`` streamed for the
  same answer; lmchat gives ``None`` when an answer has calls and no text);
* ``direction: formatter_output`` rows end with the model's turn-end token; engines stop there, so it is removed.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections import Counter, defaultdict
from typing import Any

import pytest
from conftest import shared_path

from lmchat.errors import ConfigError
from lmchat.parsing import (
    OutputDelta,
    OutputParser,
    ParsedOutput,
    ToolCallDelta,
    collect,
    get_tool_parser,
    register_tool_parser,
    tool_parser_names,
)
from lmchat.parsing.json_stream import BROKEN as JSON_BROKEN
from lmchat.parsing.json_stream import DONE as JSON_DONE
from lmchat.parsing.json_stream import OPEN as JSON_OPEN
from lmchat.parsing.json_stream import JsonStream
from lmchat.parsing.scan import FoundCall, dumps, loads
from lmchat.parsing.tool_parsers import base as tool_base
from lmchat.parsing.tool_parsers import pythonic

ORACLE = shared_path("oracles", "tool_calls", "cases.jsonl")  # missing: these tests fail, never skip

# oracle family -> (reasoning parser, tool parser, starts_in_reasoning)
FAMILIES: dict[str, tuple[str | None, str, bool]] = {
    "hermes-qwen": (None, "hermes", False),
    "llama3-json": (None, "llama3_json", False),
    "pythonic": (None, "pythonic", False),
    "mistral": (None, "mistral", False),
    "glm4": (None, "glm4", False),
    "glm4.5": (None, "glm45", False),
    "deepseek-v3": (None, "deepseek_v3", False),
    "deepseek-v3.1": (None, "deepseek_v3", False),
    "deepseek-r1": ("think", "deepseek_v3", True),  # the R1 template opens <think> in the prompt
    "react": (None, "default", False),  # LLaMA-Factory's "default" tool format
    "qwen3-coder": (None, "qwen3_coder", False),
    "step-3.5": (None, "step3p5", False),
    "step3": (None, "step3", False),
    "phi-4-mini": (None, "phi4_mini_json", False),
    "granite-3": (None, "granite", False),
    "granite-20b-fc": (None, "granite_20b_fc", False),
    "internlm2": (None, "internlm", False),
    "longcat": (None, "longcat", False),
    "jamba": (None, "jamba", False),
    "olmo3": (None, "olmo3", False),
    "xlam": (None, "xlam", False),
    "ernie-4.5": (None, "ernie45", False),
    "lfm2": (None, "lfm2", False),
    "gigachat3": (None, "gigachat3", False),
}
END_TOKENS = ("<|im_end|>\n", "<|eot_id|>", "</s>", "<|im_end|>")

UNSUPPORTED = {
    "vllm_parametrized-0070": "vLLM turns a list entry without a name into a call named ''; lmchat requires a name, "
    "so the entry is not a call and the text stays content",
    "vllm_parametrized-0079": "same text as vllm_parametrized-0070 (streamed): a call needs a name in lmchat",
}
COMMIT_POLICY = {  # row -> (calls as (name, exact arguments), content, why lmchat differs from the source test)
    "curated-0003": (
        [("final_answer", '{"trigger": true}')],
        "",
        "vLLM rejects the call because the call object's closing '}' is missing; lmchat commits a call once its "
        "name and the '{' of its arguments are written (a streamed call cannot be taken back), so the call stands "
        "with its complete arguments and the missing brace is just missing closing markup",
    ),
    "vllm_parametrized-0091": (
        [("bash", '{"command": "print(\\"hello world!\\")\\nre.compile(r\'{}\')"}')],
        "hi{hi",
        "vLLM passes the unterminated arguments through verbatim (not JSON); lmchat commits the call at 'bash{' and "
        "closes the cut string and object, so the arguments are always valid JSON",
    ),
}
CONTENT_POLICY = {
    "curated-0009": (
        "Here is the result: Would you like to know more?",
        "vLLM's non-streamed llama3_json drops all prose once a call is found; lmchat keeps text outside calls",
    ),
    "vllm_parametrized-0065": (
        "\nextra trailing data",
        "vLLM drops text after the calls when not streaming but keeps it when streaming (vllm_parametrized-0102, "
        "same text); lmchat keeps it both ways",
    ),
    "vllm_parametrized-0093": ("Estimating the weather...", "text after the call is kept (see 0065)"),
    "vllm_parametrized-0094": ("Estimating the weather...", "text after the call is kept (see 0065)"),
    "vllm_parametrized-0139": (
        "",
        "vLLM's streamed Jamba test keeps the space before <tool_calls> as content, its non-streamed test of the "
        "same text (vllm_parametrized-0135) gives None; lmchat drops whitespace right before a call both ways",
    ),
    "vllm_parametrized-0141": ("", "the space before <tool_calls> is dropped (see 0139; non-streamed: 0137)"),
}
CHECKED: dict[str, Counter[str]] = defaultdict(Counter)


def _load_rows() -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in ORACLE.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [row for row in rows if row["family"] in FAMILIES]


ROWS = _load_rows()


def _params(strict_xfail: bool) -> list[Any]:
    params = []
    for row in ROWS:
        marks = []
        if strict_xfail and row["id"] in UNSUPPORTED:
            marks = [pytest.mark.xfail(reason=UNSUPPORTED[row["id"]], strict=True)]
        params.append(pytest.param(row, marks=marks, id=row["id"]))
    return params


def _text(row: dict[str, Any]) -> str:
    text = row["raw_text"]
    if row.get("direction") == "formatter_output":
        for token in END_TOKENS:
            text = text.removesuffix(token)
    return text


def _tools(row: dict[str, Any]) -> list[dict[str, Any]] | None:
    schema = row.get("tools_schema")
    if not schema:
        return None
    return [
        {"type": "function", "function": {"name": name, "parameters": {
            "type": "object", "properties": {key: {"type": kind} for key, kind in params.items()}}}}
        for name, params in schema.items()
    ]


def _output_parser(row: dict[str, Any]) -> OutputParser:
    reasoning, tool, starts_in_reasoning = FAMILIES[row["family"]]
    return OutputParser(reasoning, tool, _tools(row), starts_in_reasoning)


def _stream(parser: OutputParser, chunks: list[str]) -> ParsedOutput:
    deltas: list[OutputDelta] = []
    for chunk in chunks:
        deltas += parser.feed(chunk)
    deltas += parser.finish()
    return collect(deltas)


def _comparable(output: ParsedOutput) -> tuple[Any, ...]:
    """Everything but the random call ids."""
    return output.content or "", [(call.name, call.arguments) for call in output.tool_calls], output.reasoning


def _check_calls(calls: list[Any], expected: Any) -> None:
    for call in calls:
        assert re.fullmatch(r"call_[A-Za-z0-9]{24}", call.id), call.id
        assert isinstance(json.loads(call.arguments), dict)
    if expected == "__see_common_tests__":  # vLLM's common suite asserts at least one call parsed
        assert calls and all(call.name for call in calls)
        return
    if expected == "__no_crash__":  # malformed input: any result, as long as it is well formed (checked above)
        return
    assert [call.name for call in calls] == [item["name"] for item in expected]
    for call, item in zip(calls, expected):
        arguments = json.loads(call.arguments)
        mode = item["arguments_check"]
        if mode == "exact_string":
            assert call.arguments == item["arguments_json"]
        elif mode == "json_equal":
            want = item["arguments"] if item["arguments"] is not None else json.loads(item["arguments_json"])
            assert arguments == want
        elif mode == "subset":
            assert {key: arguments.get(key) for key in item["arguments"]} == item["arguments"]
        else:
            assert mode == "name_only", mode


def _check_row(row: dict[str, Any], output: ParsedOutput) -> None:
    if row["id"] in COMMIT_POLICY:  # asserted to give lmchat's result, see COMMIT_POLICY
        calls, content, _ = COMMIT_POLICY[row["id"]]
        assert [(call.name, call.arguments) for call in output.tool_calls] == calls
        assert (output.content or "") == content
        _check_calls(output.tool_calls, [{"name": name, "arguments_check": "name_only"} for name, _ in calls])
        return
    _check_calls(output.tool_calls, row["expected_calls"])
    expected = CONTENT_POLICY.get(row["id"], (row["expected_content"],))[0]
    if row.get("direction") == "formatter_output":
        expected = ""  # the rendered call alone: nothing else may come out as content
    if expected != "__unspecified__":
        assert (output.content or "") == (expected or "")
    if "expected_reasoning" in row:
        assert output.reasoning == row["expected_reasoning"]


@pytest.mark.parametrize("row", _params(strict_xfail=True))
def test_oracle_row_in_one_piece(row: dict[str, Any]) -> None:
    output = _output_parser(row).parse(_text(row))
    _check_row(row, output)
    reasoning, tool, _ = FAMILIES[row["family"]]
    if reasoning is None:  # the parser's own API agrees with the pipeline
        direct = get_tool_parser(tool)().parse(_text(row), _tools(row))
        assert _comparable(direct) == _comparable(output)
    CHECKED[row["family"]]["one piece"] += 1


@pytest.mark.parametrize("row", _params(strict_xfail=False))
def test_oracle_row_streamed_by_character(row: dict[str, Any]) -> None:
    """Streamed == one piece, one character at a time and cut in two at every position (so every marker is split
    at every position). Content only grows, so equality also means no piece of markup ever reached the content."""
    text = _text(row)
    expected = _comparable(_output_parser(row).parse(text))
    assert _comparable(_stream(_output_parser(row), list(text))) == expected
    for cut in range(len(text) + 1):
        assert _comparable(_stream(_output_parser(row), [text[:cut], text[cut:]])) == expected, cut
    CHECKED[row["family"]]["streamed by character"] += 1


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_dir) -> Any:
    """SmolLM2's tokenizer (taken out of the default model's GGUF, see tests/tiny_tokenizer.py)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tiny_tokenizer_dir / "tokenizer.json"))


def _token_deltas(tokenizer: Any, text: str) -> list[str]:
    """The text as an engine streams it: one delta per token, held while a character is incomplete."""
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    deltas, sent = [], ""
    for count in range(1, len(ids) + 1):
        decoded = tokenizer.decode(ids[:count], skip_special_tokens=False)
        if decoded.endswith("\ufffd") and count < len(ids):
            continue
        assert decoded.startswith(sent)
        deltas.append(decoded[len(sent) :])
        sent = decoded
    assert sent == text
    return deltas


@pytest.mark.parametrize("row", _params(strict_xfail=False))
def test_oracle_row_streamed_by_token(row: dict[str, Any], tokenizer: Any) -> None:
    text = _text(row)
    deltas = _token_deltas(tokenizer, text)
    expected = _comparable(_output_parser(row).parse(text))
    assert _comparable(_stream(_output_parser(row), deltas)) == expected
    CHECKED[row["family"]]["streamed by token"] += 1


def test_every_supported_family_has_rows() -> None:
    assert {row["family"] for row in ROWS} == set(FAMILIES)
    listed = {*UNSUPPORTED, *CONTENT_POLICY, *COMMIT_POLICY}
    assert not set(UNSUPPORTED) & set(COMMIT_POLICY)
    assert listed <= {row["id"] for row in ROWS}, "a policy entry names a row that is not in the data"


# ---------------------------------------------------------------------------------------------------------------
# The contract, on hand-written answers.

CANONICAL = ("hermes", "llama3_json", "pythonic", "mistral", "glm4", "glm45", "deepseek_v3", "default")
DS = {
    "calls": "<｜tool▁calls▁begin｜>",
    "end": "<｜tool▁calls▁end｜>",
    "call": "<｜tool▁call▁begin｜>",
    "call_end": "<｜tool▁call▁end｜>",
    "sep": "<｜tool▁sep｜>",
}
TWO_CALLS = {  # parser -> an answer with text, then calls f(a=1) and g(b="x")
    "hermes": 'Let me see.\n<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>\n'
    '<tool_call>\n{"name": "g", "arguments": {"b": "x"}}\n</tool_call>',
    "llama3_json": 'Let me see. <|python_tag|>{"name": "f", "parameters": {"a": 1}}; '
    '{"name": "g", "parameters": {"b": "x"}}',
    "pythonic": '<|python_start|>[f(a=1), g(b="x")]<|python_end|>',
    "mistral": 'Let me see.[TOOL_CALLS]f[ARGS]{"a": 1}[TOOL_CALLS]g[ARGS]{"b": "x"}',
    "glm45": "Let me see.<tool_call>f\n<arg_key>a</arg_key>\n<arg_value>1</arg_value>\n</tool_call>"
    "<tool_call>g\n<arg_key>b</arg_key>\n<arg_value>x</arg_value>\n</tool_call>",
    "deepseek_v3": f"Let me see.{DS['calls']}{DS['call']}function{DS['sep']}f\n```json\n{{\"a\": 1}}\n```"
    f"{DS['call_end']}\n{DS['call']}function{DS['sep']}g\n```json\n{{\"b\": \"x\"}}\n```{DS['call_end']}{DS['end']}",
    "default": 'Let me see.\nAction: f\nAction Input: {"a": 1}\nAction: g\nAction Input: {"b": "x"}',
}
MALFORMED = {  # parser -> a call malformed before its commit point (name and arguments' "{"): content, unchanged
    "hermes": '<tool_call>\n{"name": f, "arguments": {"a": 1}}\n</tool_call>',
    "llama3_json": '{"name": "f", "parameters" {"a": 1}}',
    "pythonic": "[f(1, 2)]",
    "mistral": '[TOOL_CALLS]f("a": 1)',
    "glm4": 'f {"a": 1}',
    "glm45": "<tool_call>f g\n<arg_key>a</arg_key>\n<arg_value>1</arg_value>\n</tool_call>",
    "deepseek_v3": f"{DS['calls']}{DS['call']}function{DS['sep']}f\n```json\n[1]\n```{DS['call_end']}{DS['end']}",
    "default": "Action: f\nAction Input: not json",
}
BROKEN_AFTER_COMMIT = [  # (parser, answer, arguments, content): calls that break after their commit point stay calls
    ("hermes", '<tool_call>\n{"name": "f", "arguments": {"a": 1}\n</tool_call>', {"a": 1}, ""),  # no outer "}"
    ("hermes", '<tool_call>\n{"name": "f", "arguments": {"a": 1, oops}}\n</tool_call>', {"a": 1}, ", oops}}"),
    ("hermes", '<tool_call>{"name": "f", "arguments": {"a": 1}} and text</tool_call> after', {"a": 1},
     " and text after"),
    ("llama3_json", '{"name": "f", "parameters": {"a": [1, 2}}', {"a": [1, 2]}, "}}"),
    ("mistral", '[TOOL_CALLS]f{"a": "x", "b" 2} and more', {"a": "x"}, ', "b" 2} and more'),
    ("mistral", '[TOOL_CALLS] [{"name": "f", "arguments": {"a": 1}}, {"name": "g", "arguments": {"b": 2]', {"a": 1},
     "]"),  # the second call is committed too (checked below)
    ("glm4", 'f\n{"a": 01}', {}, '"a": 01}'),
    ("glm45", "<tool_call>f\n<arg_key>a</arg_key>\n<arg_value>1</arg_value>\n<arg_key>b</arg_key>\n</tool_call>",
     {"a": 1}, "<arg_key>b</arg_key>"),
    ("deepseek_v3", f"{DS['calls']}{DS['call']}function{DS['sep']}f\n```json\n{{\"a\": \n```{DS['call_end']}"
     f"{DS['end']}", {}, '"a": \n```'),
    ("default", 'Action: f\nAction Input: {"a": [1, 2\nObservation: none', {"a": [1, 2]}, "\nObservation: none"),
    ("pythonic", "[f(a=1, b=y)]", {"a": 1}, ", b=y)]"),  # not a literal
    ("pythonic", "[f(x=y)] and more", {}, "x=y)] and more"),
    ("pythonic", "[f(a=1, 2)]", {"a": 1}, ", 2)]"),  # a positional argument
    ("pythonic", "<|python_start|>[f(a=1, **kw)]<|python_end|> done", {"a": 1}, ", **kw)] done"),
    ("pythonic", "[f(a=1)(b=2)]", {"a": 1}, "(b=2)]"),  # junk after the call
    ("pythonic", "[f(a=1), g(1)]", {"a": 1}, ", g(1)]"),  # the next entry is not a call
    ("pythonic", "<|python_start|>[f(a=1)] [g()]<|python_end|> ok", {"a": 1}, "[g()] ok"),
]
PLAIN = (  # answers without calls that look a little like markup; they must come out unchanged
    "Plain answer.\n",
    "  Indented, with a trailing space ",
    'Some JSON: {"a": [1, 2]} and a list [1, 2] and code { x; }',
    "[link](https://example.com) <b>bold</b> [TOOL] Action item: none",
    "Ends with a marker's start: <tool_",
    "word\nnext line",
    "",
)


def test_registry_names_and_aliases() -> None:
    names = tool_parser_names()
    for name in (*CANONICAL, "qwen", "llama3", "llama4_pythonic", "glm4_moe", "deepseek_v31", "react"):
        assert name in names
        assert issubclass(get_tool_parser(name), tool_base.ToolParser)
    assert get_tool_parser("Llama3-JSON") is get_tool_parser("llama3_json")


def test_unknown_parser_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="did you mean 'hermes'"):
        get_tool_parser("hermse")
    with pytest.raises(ConfigError, match="tool parser"):
        OutputParser(tool_parser="nope")


def test_register_tool_parser_as_decorator() -> None:
    @register_tool_parser("test_only_marker")
    class Only(tool_base.ToolParser):
        markers = ("<call>",)

        def match_marker(self, text: str, final: bool, ctx: tool_base.MatchContext) -> tool_base.Match | None:
            return tool_base.Match(len("<call>"), (FoundCall("f", "{}"),))

    assert get_tool_parser("test_only_marker") is Only
    assert [call.name for call in Only().parse("hi <call>").tool_calls] == ["f"]


@pytest.mark.parametrize("name", sorted(TWO_CALLS))
def test_parallel_calls_after_text(name: str) -> None:
    output = get_tool_parser(name)().parse(TWO_CALLS[name])
    calls = [(call.name, json.loads(call.arguments)) for call in output.tool_calls]
    assert calls == [("f", {"a": 1}), ("g", {"b": "x"})]
    assert output.content in (None, "Let me see.")
    assert len({call.id for call in output.tool_calls}) == 2


@pytest.mark.parametrize("name", sorted(TWO_CALLS))
def test_streamed_calls_in_openai_shape(name: str) -> None:
    """Each call's first piece carries index, id and name; later pieces only argument fragments. Fed one character
    at a time, ``g``'s string argument visibly streams (but in the families that send one complete argument at a
    time: ``{``, then ``"b": "x"`` and ``}``)."""
    stream = get_tool_parser(name)().start_stream()
    deltas = [delta for char in TWO_CALLS[name] for delta in stream.feed(char)] + stream.finish()
    pieces = [piece for delta in deltas for piece in delta.tool_calls]
    firsts = [piece for piece in pieces if piece.id is not None]
    assert [(piece.index, piece.name) for piece in firsts] == [(0, "f"), (1, "g")]
    for index, arguments in enumerate(['{"a": 1}', '{"b": "x"}']):
        mine = [piece for piece in pieces if piece.index == index]
        assert mine[0].id and mine[0].name and all(piece.id is None and piece.name is None for piece in mine[1:])
        assert all(isinstance(piece, ToolCallDelta) and (piece.arguments or piece is mine[0]) for piece in mine)
        assert "".join(piece.arguments for piece in mine) == arguments
        assert len(mine) >= (2 if name == "pythonic" else 2 + index)


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_call_malformed_before_its_commit_point_falls_back_to_content(name: str) -> None:
    text = MALFORMED[name]
    output = get_tool_parser(name)().parse(text)
    assert output.tool_calls == []
    assert output.content == text
    stream = get_tool_parser(name)().start_stream()
    assert collect([delta for char in text for delta in stream.feed(char)] + stream.finish()) == output


@pytest.mark.parametrize(("name", "text", "arguments", "content"), BROKEN_AFTER_COMMIT)
def test_call_broken_after_its_commit_point_stays_a_call(name: str, text: str, arguments: dict, content: str) -> None:
    """Arguments are closed into valid JSON, and the text that could not be read is kept as content."""
    output = get_tool_parser(name)().parse(text)
    assert output.tool_calls[0].name == "f" and json.loads(output.tool_calls[0].arguments) == arguments
    assert (output.content or "") == content
    stream = get_tool_parser(name)().start_stream()
    streamed = collect([delta for char in text for delta in stream.feed(char)] + stream.finish())
    assert _comparable(streamed) == _comparable(output)
    if "{\"b\": 2]" in text:  # the list's second call was committed too: its arguments are closed
        assert [(call.name, call.arguments) for call in output.tool_calls[1:]] == [("g", '{"b": 2}')]


CALL_OPENING = {  # parser -> a call named f written up to its arguments
    "hermes": '<tool_call>\n{"name": "f", "arguments": ',
    "llama3_json": '{"name": "f", "parameters": ',
    "mistral": "[TOOL_CALLS]f[ARGS]",
    "glm4": "f\n",
    "deepseek_v3": f"{DS['calls']}{DS['call']}function{DS['sep']}f\n```json\n",
    "default": "Action: f\nAction Input: ",
}
CUT_ARGUMENTS = [  # arguments the end of the answer cuts (max_tokens) -> (arguments, content)
    pytest.param('{"city": "Par', {"city": "Par"}, "", id="mid-string"),
    pytest.param('{"city": "Paris", "n": 12', {"city": "Paris", "n": 12}, "", id="number-complete-as-written"),
    pytest.param('{"city": "Paris", "n": 1.', {"city": "Paris"}, ', "n": 1.', id="mid-number"),
    pytest.param('{"city": "Paris", "ok": tr', {"city": "Paris"}, ', "ok": tr', id="mid-literal"),
    pytest.param('{"city": "Paris", "n": ', {"city": "Paris"}, ', "n":', id="after-a-key"),
    pytest.param('{"city": "Paris", "when"', {"city": "Paris"}, ', "when"', id="in-a-key"),
    pytest.param('{"list": [1, {"a": "x\\u00', {"list": [1, {"a": "x"}]}, "\\u00", id="mid-escape"),
    pytest.param('{"city": "Paris"', {"city": "Paris"}, "", id="closing-brace"),
    pytest.param("{", {}, "", id="just-opened"),
]


@pytest.mark.parametrize("name", sorted(CALL_OPENING))
@pytest.mark.parametrize(("cut", "arguments", "content"), CUT_ARGUMENTS)
def test_call_cut_inside_its_arguments(name: str, cut: str, arguments: dict, content: str) -> None:
    text = CALL_OPENING[name] + cut
    output = get_tool_parser(name)().parse(text)
    assert [call.name for call in output.tool_calls] == ["f"]
    assert json.loads(output.tool_calls[0].arguments) == arguments
    assert output.tool_calls[0].arguments == json.dumps(arguments, ensure_ascii=False)
    assert (output.content or "") == content
    stream = get_tool_parser(name)().start_stream()
    streamed = collect([delta for char in text for delta in stream.feed(char)] + stream.finish())
    assert _comparable(streamed) == _comparable(output)


LONG_BODY = (
    "Hi team, the quarterly report is attached; please review the numbers (especially Q3: +12.5% vs. plan) and "
    "reply by Friday. Thanks, and have a good week!"
)
LONG_ARGUMENTS = json.dumps({"to": "team@example.com", "subject": "Report", "body": LONG_BODY}, ensure_ascii=False)
_RAW_ARGUMENTS = ' { "to" : "team@example.com",\n  "subject": "Report", "body": "' + LONG_BODY + '" }'
LONG_CALLS = [  # (id, parser, answer): a call to send_email with a long string argument, in each streamed family
    ("hermes", "hermes", f'<tool_call>\n{{"name": "send_email", "arguments":{_RAW_ARGUMENTS}}}\n</tool_call>'),
    ("llama3_json", "llama3_json", f'<|python_tag|>{{"name": "send_email", "parameters":{_RAW_ARGUMENTS}}}'),
    ("llama3_json-list", "llama3_json", f'[{{"name": "send_email", "parameters":{_RAW_ARGUMENTS}}}]'),
    ("mistral-named", "mistral", f"[TOOL_CALLS]send_email[ARGS]{_RAW_ARGUMENTS}"),
    ("mistral-list", "mistral", f'[TOOL_CALLS] [{{"name": "send_email", "arguments":{_RAW_ARGUMENTS}}}]'),
    ("glm4", "glm4", f"send_email\n{_RAW_ARGUMENTS}"),
    ("deepseek-v3", "deepseek_v3", f"{DS['calls']}{DS['call']}function{DS['sep']}send_email\n```json\n"
     f"{_RAW_ARGUMENTS}\n```{DS['call_end']}{DS['end']}"),
    ("deepseek-v3.1", "deepseek_v3", f"{DS['calls']}{DS['call']}send_email{DS['sep']}{_RAW_ARGUMENTS}{DS['call_end']}"
     f"{DS['end']}"),
    ("react", "default", f"Action: send_email\nAction Input:{_RAW_ARGUMENTS}"),
    ("glm45", "glm45", "<tool_call>send_email\n<arg_key>to</arg_key>\n<arg_value>team@example.com</arg_value>\n"
     f"<arg_key>subject</arg_key>\n<arg_value>Report</arg_value>\n<arg_key>body</arg_key>\n<arg_value>{LONG_BODY}"
     "</arg_value>\n</tool_call>"),
    ("pythonic", "pythonic", f"[send_email(to='team@example.com',\n  subject = \"Report\", body=\"{LONG_BODY}\")]"),
    ("pythonic-tagged", "pythonic", "<|python_start|>[send_email(to=\"team@example.com\", subject='Report', "
     f"body='''{LONG_BODY}''')]<|python_end|>"),
]
ONE_ARGUMENT_AT_A_TIME = ("glm45", "pythonic")
VERBATIM = ("mistral-named", "deepseek-v3", "deepseek-v3.1")  # arguments written as their own JSON text: kept as is


def _check_streamed_call(parser: str, text: str, chunks: list[str], key: str) -> None:
    stream = get_tool_parser(parser)().start_stream()
    deltas = [delta for chunk in chunks for delta in stream.feed(chunk)] + stream.finish()
    assert not any(delta.content for delta in deltas)  # no piece of markup ever reached the content
    first, *later = [piece for delta in deltas for piece in delta.tool_calls]
    assert (first.index, first.name) == (0, "send_email") and re.fullmatch(r"call_[A-Za-z0-9]{24}", first.id)
    assert later and all((piece.index, piece.id, piece.name) == (0, None, None) for piece in later)
    fragments = [piece.arguments for piece in (first, *later) if piece.arguments]
    assert len(fragments) >= 3, fragments
    [whole] = get_tool_parser(parser)().parse(text).tool_calls
    assert "".join(fragments) == whole.arguments == (_RAW_ARGUMENTS.strip() if key in VERBATIM else LONG_ARGUMENTS)


@pytest.mark.parametrize(("key", "parser", "text"), [pytest.param(*case, id=case[0]) for case in LONG_CALLS])
def test_long_argument_streams_token_by_token(key: str, parser: str, text: str, tokenizer: Any) -> None:
    """With SmolLM2's tokenizer the markers are split over several tokens: a call still comes out as an id and
    name first, then argument fragments (one per complete argument for GLM-4.5 and pythonic calls)."""
    _check_streamed_call(parser, text, _token_deltas(tokenizer, text), key)


@pytest.mark.parametrize(("key", "parser", "text"), [pytest.param(*case, id=case[0]) for case in LONG_CALLS])
def test_long_argument_streams_character_by_character(key: str, parser: str, text: str) -> None:
    _check_streamed_call(parser, text, list(text), key)
    if parser not in ONE_ARGUMENT_AT_A_TIME:  # the long string streams as it is written, not once it is complete
        stream = get_tool_parser(parser)().start_stream()
        cut = text.index("quarterly report")
        sent = collect(stream.feed(text[:cut]))
        assert sent.tool_calls and sent.tool_calls[0].arguments.endswith('"body": "Hi team, the ')


WHOLE_CALLS = [  # calls that cannot be committed at their name: sent whole, as one piece, once complete
    ("mistral", '[TOOL_CALLS] [{"arguments": {"a": 1}, "name": "add"}]'),
    ("hermes", '<tool_call>{"name": "add", "arguments": "{\\"a\\": 1}"}</tool_call>'),
    ("llama3_json", '{"type": "function", "name": "add", "parameters": "{\\"a\\": 1}"}'),
    ("pythonic", "[add(  # a comment first: the list is read whole\n  a=1)]"),
    ("glm45", '<tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call>'),
]


@pytest.mark.parametrize(("name", "text"), WHOLE_CALLS)
def test_calls_decided_whole_arrive_in_one_piece(name: str, text: str) -> None:
    stream = get_tool_parser(name)().start_stream()
    deltas = [delta for char in text for delta in stream.feed(char)] + stream.finish()
    [piece] = [piece for delta in deltas for piece in delta.tool_calls]
    assert (piece.index, piece.name, piece.arguments) == (0, "add", '{"a": 1}') and piece.id


# ---------------------------------------------------------------------------------------------------------------
# Pythonic calls: committed at ``name(`` followed by ``)`` or ``key=``, then one complete argument at a time.

PYTHONIC_OPENINGS = [  # (the opening of a call named f, up to its arguments; what ends the answer after the cut)
    pytest.param("[f(", "", id="start"),
    pytest.param("<|python_start|>[f(", "", id="tagged"),
    pytest.param("\n<|python_start|>[f(", "<|python_end|>", id="tag-closed"),
]
PYTHONIC_CUTS = [  # arguments the end of the answer (or of the tag) cuts -> (arguments, content)
    pytest.param('city="Par', {}, 'city="Par', id="mid-string"),
    pytest.param('city="Paris", n=12', {"city": "Paris", "n": 12}, "", id="value-complete-as-written"),
    pytest.param('city="Paris", n=1e', {"city": "Paris"}, ", n=1e", id="mid-number"),
    pytest.param('city="Paris", ok=Tr', {"city": "Paris"}, ", ok=Tr", id="mid-literal"),
    pytest.param('city="Paris", n=', {"city": "Paris"}, ", n=", id="after-a-key"),
    pytest.param('city="Paris", when', {"city": "Paris"}, ", when", id="in-a-key"),
    pytest.param("city='Paris', l=[1, {'a': 'x", {"city": "Paris"}, ", l=[1, {'a': 'x", id="mid-nested"),
    pytest.param("city='Paris', t=(1, 2", {"city": "Paris"}, ", t=(1, 2", id="open-tuple"),
    pytest.param("city='''Par''", {}, "city='''Par''", id="mid-triple-quoted"),
    pytest.param('city="Paris",', {"city": "Paris"}, "", id="after-a-comma"),
    pytest.param('city="Paris")', {"city": "Paris"}, "", id="closing-parenthesis"),
    pytest.param('city="Paris"), ', {"city": "Paris"}, "", id="between-calls"),
    pytest.param("city=(", {}, "city=(", id="just-committed"),  # (committed once "=" is not "==")
]


@pytest.mark.parametrize(("opening", "closing"), PYTHONIC_OPENINGS)
@pytest.mark.parametrize(("cut", "arguments", "content"), PYTHONIC_CUTS)
def test_pythonic_call_cut_inside_its_arguments(
    opening: str, closing: str, cut: str, arguments: dict, content: str
) -> None:
    """The arguments sent are closed into valid JSON (an argument that is not complete is dropped), and the text
    that could not be read is content."""
    text = opening + cut + closing
    output = get_tool_parser("pythonic")().parse(text)
    assert [call.name for call in output.tool_calls] == ["f"]
    assert output.tool_calls[0].arguments == json.dumps(arguments, ensure_ascii=False)
    assert (output.content or "") == content
    for chunks in [list(text), *([text[:cut_at], text[cut_at:]] for cut_at in range(len(text) + 1))]:
        stream = get_tool_parser("pythonic")().start_stream()
        streamed = collect([delta for chunk in chunks for delta in stream.feed(chunk)] + stream.finish())
        assert _comparable(streamed) == _comparable(output), chunks


@pytest.mark.parametrize(
    "text",
    ["[f(", "[f(x)]", "[f(a==1)]", "[f(**kw)]", "[f(if=1)]", "[f..g(a=1)]", "[1, 2] is a list", "[f (1)]",
     "<|python_start|>[f(<|python_end|>", "<|python_start|>print('hi')<|python_end|>"],
)
def test_pythonic_call_malformed_before_its_commit_point_is_content(text: str) -> None:
    parser = get_tool_parser("pythonic")()
    assert parser.parse(text) == ParsedOutput(text, [], None)
    stream = parser.start_stream()
    assert collect([delta for char in text for delta in stream.feed(char)] + stream.finish()) == parser.parse(text)


def test_pythonic_parallel_calls_stream_as_separate_indices() -> None:
    text = "<|python_start|>[get_weather(city='LA', metric='C'), add(a=1, b=2), noop()]<|python_end|>"
    want = [("get_weather", '{"city": "LA", "metric": "C"}'), ("add", '{"a": 1, "b": 2}'), ("noop", "{}")]
    stream = get_tool_parser("pythonic")().start_stream()
    deltas = [delta for char in text for delta in stream.feed(char)] + stream.finish()
    pieces = [piece for delta in deltas for piece in delta.tool_calls]
    assert [(piece.index, piece.name) for piece in pieces if piece.id] == [(0, "get_weather"), (1, "add"), (2, "noop")]
    assert [piece.index for piece in pieces] == sorted(piece.index for piece in pieces)  # each ends before the next
    for index, (name, arguments) in enumerate(want):
        first, *later = [piece for piece in pieces if piece.index == index]
        # announced at the commit point with the arguments opened (closed at once for noop(), committed at its ")")
        assert (first.name, first.arguments) == (name, "{}" if name == "noop" else "{")
        assert all(piece.id is None and piece.name is None and piece.arguments for piece in later)
        assert first.arguments + "".join(piece.arguments for piece in later) == arguments
    assert [piece.arguments for piece in pieces if piece.index == 1] == ["{", '"a": 1', ', "b": 2}']  # at "(", ",", ")"
    output = get_tool_parser("pythonic")().parse(text)
    assert [(call.name, call.arguments) for call in output.tool_calls] == want and output.content is None
    assert len({call.id for call in output.tool_calls}) == 3
    stream = get_tool_parser("pythonic")().start_stream()  # a complete argument is sent before the list ends
    early = collect(stream.feed(text[: text.index(" b=2")]))
    assert [(call.name, call.arguments) for call in early.tool_calls] == [want[0], ("add", '{"a": 1')]


PYTHONIC_VALUES = [  # (a Python literal as a model writes it, its JSON value)
    ("[1, [2, 3], {'k': (4, 5)}]", [1, [2, 3], {"k": [4, 5]}]),
    ("{'a': {'b': [None, True, False]}, 'c': ()}", {"a": {"b": [None, True, False]}, "c": []}),
    ("'a, b) c] d} e('", "a, b) c] d} e("),
    ('"it\'s \\"quoted\\", (really)"', 'it\'s "quoted", (really)'),
    ("'''one 'two', \"three\")]\n'''", "one 'two', \"three\")]\n"),
    ('"""a "" b"""', 'a "" b'),
    ("r'C:\\path\\n'", "C:\\path\\n"),
    ("True", True),
    ("False", False),
    ("None", None),
    ("-1.5e3", -1500.0),
    ("(1,)", [1]),
    ("{1: 'one'}", {"1": "one"}),
    ("'caf\\u00e9 \\N{GRINNING FACE}'", "café 😀"),
    ("'ab' \"cd\"", "abcd"),  # implicit concatenation
    ("[\n  1,\n  2,\n]", [1, 2]),
]


@pytest.mark.parametrize(("source", "value"), PYTHONIC_VALUES)
def test_pythonic_argument_values(source: str, value: Any) -> None:
    """Values are read with ``ast.literal_eval``: joined, the streamed arguments are exactly what reading the whole
    list with ``ast`` gives; brackets, commas and quotes inside strings never end a value."""
    text = f"[f(first={source}, then=1), g(last={source})]"
    output = get_tool_parser("pythonic")().parse(text)
    calls = [(call.name, json.loads(call.arguments)) for call in output.tool_calls]
    assert calls == [("f", {"first": value, "then": 1}), ("g", {"last": value})]
    assert output.content is None
    whole = pythonic.parse_call_list(text)
    assert whole is not None and [call.arguments for call in output.tool_calls] == [call.arguments for call in whole]
    for cut in range(len(text) + 1):
        stream = get_tool_parser("pythonic")().start_stream()
        streamed = collect(stream.feed(text[:cut]) + stream.feed(text[cut:]) + stream.finish())
        assert _comparable(streamed) == _comparable(output), cut


def test_long_pythonic_argument_streams_in_linear_time() -> None:
    """A 240 000-character string value fed 4 characters at a time: its end is found by a resumable scan, never by
    reading the growing text again."""
    body = "word, (x) ] " * 20_000
    text = f"<|python_start|>[f(text='{body}', n=1)]<|python_end|>"
    stream = get_tool_parser("pythonic")().start_stream()
    started = time.process_time()
    deltas = [delta for start in range(0, len(text), 4) for delta in stream.feed(text[start : start + 4])]
    deltas += stream.finish()
    assert time.process_time() - started < 10  # about 1 s; scanning the value again on each piece takes over 20 s
    output = collect(deltas)
    assert [(call.name, call.arguments) for call in output.tool_calls] == [("f", json.dumps({"text": body, "n": 1}))]
    assert output.content is None


def test_call_id_written_after_the_arguments_is_not_used() -> None:
    """The call was announced, with an id, at its name; a model-written id after the arguments comes too late and
    is dropped (in one piece too, so both agree)."""
    text = '<tool_call>{"name": "f", "arguments": {"a": 1}, "id": "late_id"}</tool_call>'
    output = get_tool_parser("hermes")().parse(text)
    [call] = output.tool_calls
    assert call.id != "late_id" and call.id.startswith("call_") and output.content is None
    before = '<tool_call>{"name": "f", "id": "early_id", "arguments": {"a": 1}}</tool_call>'
    stream = get_tool_parser("hermes")().start_stream()
    assert not [piece for delta in stream.feed(before[:-20]) for piece in delta.tool_calls]  # up to "{": not yet
    first = [piece for delta in stream.feed(before[-20]) for piece in delta.tool_calls][0]  # '{"': committed
    assert (first.id, first.name) == ("early_id", "f")


@pytest.mark.parametrize(
    ("text", "names", "content"),
    [
        ('{"name": "f", "parameters": {}}; {"name": "g", "parameters": {}}', ["f", "g"], None),
        ('{"name": "f", "parameters": {}} ;\n{"name": "g", "parameters": {}} done', ["f", "g"], " done"),
        ('{"name": "f", "parameters": {}};', ["f"], ";"),
        ('{"name": "f", "parameters": {}} ; then text', ["f"], " ; then text"),
        ('{"name": "f", "parameters": {}}; ; {"name": "g", "parameters": {}}', ["f", "g"], "; ;"),
    ],
)
def test_llama3_separator_is_dropped_only_between_calls(text: str, names: list[str], content: str | None) -> None:
    parser = get_tool_parser("llama3_json")()
    output = parser.parse(text)
    assert [call.name for call in output.tool_calls] == names and output.content == content
    stream = parser.start_stream()
    assert _comparable(collect([d for char in text for d in stream.feed(char)] + stream.finish())) == _comparable(
        output
    )


def test_deepseek_block_goes_on_after_a_malformed_call() -> None:
    text = (
        f"{DS['calls']}{DS['call']}function{DS['sep']}f\n```json\n{{\"a\": 1}}\n```{DS['call_end']}\n"
        f"{DS['call']}function{DS['sep']}g\nnot json{DS['call_end']}{DS['call']}h{DS['sep']}{{\"c\": 3}}"
        f"{DS['call_end']}{DS['end']}"
    )
    output = get_tool_parser("deepseek_v3")().parse(text)
    assert [(call.name, call.arguments) for call in output.tool_calls] == [("f", '{"a": 1}'), ("h", '{"c": 3}')]
    assert output.content == f"\n{DS['call']}function{DS['sep']}g\nnot json{DS['call_end']}"


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("hermes", '<tool_call>{"name": "f", "arguments": {"a": 1}}\nI called f, and this text goes on and on'),
        ("hermes", '<tool_call>{"name": "f", "arguments": {"a": 1, bad JSON, and this text goes on and on'),
        ("deepseek_v3", f"{DS['calls']}{DS['call']}f{DS['sep']}{{\"a\": 1}}{DS['call_end']}and this text goes on and on"),
        ("glm45", "<tool_call>f<arg_key>a</arg_key><arg_value>1</arg_value>oops, and this text goes on and on"),
        ("mistral", '[TOOL_CALLS]f{"a": 1} and this text goes on and on'),
        ("pythonic", "[f(a=1)]\nI called f, and this text goes on and on"),
        ("pythonic", "[f(a=1, b=y), and this text goes on and on"),
        ("pythonic", "<|python_start|>[f(a=1)] oops, and this text goes on and on"),
    ],
)
def test_text_after_a_committed_call_streams_before_the_answer_ends(name: str, text: str) -> None:
    """Text that follows a call (or that a committed call could not read) is not held back until the end."""
    stream = get_tool_parser(name)().start_stream()
    early = collect([delta for char in text[:-6] for delta in stream.feed(char)])
    assert [call.name for call in early.tool_calls] == ["f"]
    assert early.content is not None and early.content.endswith("this text goes on")
    rest = stream.feed(text[-6:]) + stream.finish()
    assert early.content + "".join(delta.content for delta in rest) == get_tool_parser(name)().parse(text).content


def test_long_arguments_stream_in_linear_time() -> None:
    """A 400 000-character argument fed 4 characters at a time: every piece is read once (quadratic work would
    take minutes)."""
    body = "word " * 80_000
    text = f'<tool_call>{{"name": "f", "arguments": {{"text": "{body}", "n": 1}}}}</tool_call>'
    stream = get_tool_parser("hermes")().start_stream()
    started = time.process_time()
    deltas = [delta for start in range(0, len(text), 4) for delta in stream.feed(text[start : start + 4])]
    deltas += stream.finish()
    assert time.process_time() - started < 20
    [call] = collect(deltas).tool_calls
    assert call.arguments == json.dumps({"text": body, "n": 1})
    assert sum(len(delta.tool_calls) for delta in deltas) > 90_000


@pytest.mark.parametrize("name", CANONICAL)
@pytest.mark.parametrize("text", PLAIN)
def test_answer_without_calls_is_unchanged(name: str, text: str) -> None:
    parser = get_tool_parser(name)()
    assert parser.parse(text) == ParsedOutput(text, [], None)
    stream = parser.start_stream()
    streamed = [delta for char in text for delta in stream.feed(char)] + stream.finish()
    assert collect(streamed) == ParsedOutput(text, [], None)


def test_plain_text_is_not_held_back_longer_than_needed() -> None:
    stream = get_tool_parser("hermes")().start_stream()
    assert collect(stream.feed("Hello <tool")).content == "Hello"
    assert collect(stream.feed("kit> ok")).content == " <toolkit> ok"
    stream = get_tool_parser("llama3_json")().start_stream()
    assert collect(stream.feed('Code: { x; } and {"na')).content == "Code: { x; } and"


def test_model_written_call_id_is_kept() -> None:
    output = get_tool_parser("mistral")().parse('[TOOL_CALLS]add[CALL_ID]a1b2c3d4e[ARGS]{"a": 1}')
    assert [(call.id, call.name) for call in output.tool_calls] == [("a1b2c3d4e", "add")]


def test_glm45_values_follow_the_tool_schema() -> None:
    text = (
        "<tool_call>f\n<arg_key>code</arg_key><arg_value>42</arg_value>\n"
        "<arg_key>n</arg_key><arg_value>42</arg_value></tool_call>"
    )
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
        "code": {"type": "string"}, "n": {"type": "integer"}}}}}]
    assert json.loads(get_tool_parser("glm45")().parse(text, tools).tool_calls[0].arguments) == {"code": "42", "n": 42}
    assert json.loads(get_tool_parser("glm45")().parse(text).tool_calls[0].arguments) == {"code": 42, "n": 42}


def test_glm4_call_is_only_read_at_the_start() -> None:
    parser = get_tool_parser("glm4")()
    assert [call.name for call in parser.parse('get_weather\n{"city": "Paris"}').tool_calls] == ["get_weather"]
    text = 'Sure.\nget_weather\n{"city": "Paris"}'
    assert parser.parse(text) == ParsedOutput(text, [], None)


FUZZ_PIECES = {
    "hermes": ["<tool_call>", "</tool_call>", '{"name": "f", "arguments": {"a": 1}}', "\n", " ", "x", "<tool", "{"],
    "llama3_json": ["<|python_tag|>", '{"name": "f", "parameters": {"a": 1}}', "; ", "{", "}", '"name"', " ", "["],
    "pythonic": ["[", "]", "f(a=1)", ", ", 'g(b="x]")', "<|python_start|>", "<|python_end|>", " ", "'", "(", "a=", ")",
                 "'x, )'", "[1, (", "None", "h.i(", "**k", "\n"],
    "mistral": ["[TOOL_CALLS]", "[ARGS]", "[CALL_ID]", "abc123def", "add", '{"a": 1}', "[", "{", '"', " "],
    "glm4": ["f", "\n", '{"a": 1}', " ", "x", "{", "}"],
    "glm45": ["<tool_call>", "</tool_call>", "f", "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>", "1", "\n"],
    "deepseek_v3": [*DS.values(), "function", "f", "\n```json\n", '{"a": 1}', "\n```", "x", " "],
    "default": ["Action:", " f", "\n", "Action Input:", ' {"a": 1}', "x", "Action", "{", "}"],
}


@pytest.mark.parametrize("name", sorted(FUZZ_PIECES))
def test_streamed_equals_one_piece_on_random_markup(name: str) -> None:
    """Random mixes of marker pieces, cut at random places: the stream always agrees with the one-piece parse."""
    rng = random.Random(name)
    parser = get_tool_parser(name)()
    for _ in range(300):
        text = "".join(rng.choice(FUZZ_PIECES[name]) for _ in range(rng.randint(1, 10)))
        expected = _comparable(parser.parse(text))
        cuts = sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, 4)))
        for chunks in ([text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])], list(text)):
            stream = parser.start_stream()
            deltas = [delta for chunk in chunks for delta in stream.feed(chunk)] + stream.finish()
            assert _comparable(collect(deltas)) == expected, (text, chunks)


def test_feed_after_finish_is_refused() -> None:
    stream = get_tool_parser("hermes")().start_stream()
    stream.finish()
    with pytest.raises(RuntimeError):
        stream.feed("more")


# ---------------------------------------------------------------------------------------------------------------
# The incremental JSON re-serialiser behind streamed arguments.

JSON_DOCUMENTS = [
    "{}",
    '{"a": 1}',
    ' { "a" : [ 1 , 2.50 , { "b" : null } ] ,\n\t"c" : "x" } ',
    '{"s": "caf\\u00e9 \\ud83d\\ude00 \\"q\\" \\\\ \\/ \\b\\f\\n\\r\\t", "raw": "tab\there, é 😀 \u0001"}',
    '{"n": [0, -0, 1.0, 1.50, 1E5, -1e-3, 2E+2, 12345678901234567890, 0.1], "l": [true, false, null]}',
    '{"x": NaN, "y": -Infinity, "z": Infinity}',
    '{"lone": "\\ud800x", "low": "\\udc00", "high_then_other": "\\ud83d\\u0041", "end": "\\ud800"}',
    '{"deep": {"a": [[], {}, [{"b": [1, [2, [3]]]}]]}, "e": ""}',
    '{"k\\u00e9y": 1, "": "", "\\"q\\"": [""]}',
]


def _reserialize(chunks: list[str]) -> tuple[str, str, str]:
    """Feed ``chunks`` to a JsonStream: (text sent, final state, input not in the text sent)."""
    stream, sent, rest = JsonStream(), [], ""
    for chunk in chunks:
        if stream.state != JSON_OPEN:
            rest += chunk
            continue
        fragment, used = stream.feed(chunk)
        sent.append(fragment)
        if stream.state == JSON_DONE:
            rest = chunk[used:]
        elif stream.state == JSON_BROKEN:
            rest = stream.unread
            assert used == len(chunk)
    state = stream.state
    if state == JSON_OPEN:
        sent.append(stream.close())
        rest = stream.unread
    return "".join(sent), state, rest


@pytest.mark.parametrize("document", JSON_DOCUMENTS)
def test_json_stream_gives_canonical_text_however_the_input_is_split(document: str) -> None:
    """Cut in two at every position (so every escape, surrogate pair, number and literal is split at every
    position) and one character at a time: always exactly ``dumps(loads(document))``."""
    want = dumps(loads(document))
    after = document[len(document.rstrip()) :]  # what follows the value is not read
    for cut in range(len(document) + 1):
        assert _reserialize([document[:cut], document[cut:]]) == (want, JSON_DONE, after), cut
    assert _reserialize(list(document)) == (want, JSON_DONE, after)
    rng = random.Random(document)
    for _ in range(50):
        cuts = sorted(rng.sample(range(len(document) + 1), min(len(document) + 1, 6)))
        chunks = [document[a:b] for a, b in zip([0, *cuts], [*cuts, len(document)])]
        assert _reserialize(chunks)[:2] == (want, JSON_DONE), chunks


def test_json_stream_sends_what_each_piece_completes() -> None:
    stream = JsonStream()
    assert stream.feed('{"text": "Hel') == ('{"text": "Hel', 13)  # string contents as they decode
    assert stream.feed("lo \\u00") == ("lo ", 7)  # a cut escape waits for the rest
    assert stream.feed('e9!", "n": 1') == ('é!"', 12)  # a key waits for its value, a number for its end
    assert stream.feed("2.50, ") == (', "n": 12.5', 6)
    assert stream.feed('"ok": true') == ("", 10)
    assert stream.feed("} trailing") == (', "ok": true}', 1)  # the value ends: the rest is not read
    assert stream.state == JSON_DONE and stream.feed("more") == ("", 0)
    stream = JsonStream()
    assert stream.feed('{"e": "\\ud83d') == ('{"e": "', 13)  # a high surrogate waits for its low half
    assert stream.feed('\\ude00"}') == ('😀"}', 8)


def test_json_stream_passes_a_repeated_key_on_as_written() -> None:
    assert _reserialize(['{"dup": 1, "dup": 2}']) == ('{"dup": 1, "dup": 2}', JSON_DONE, "")


@pytest.mark.parametrize(
    ("text", "sent", "unread"),
    [
        ('{"a": 1, oops}', '{"a": 1}', ", oops}"),
        ('{"a": 01}', "{}", '"a": 01}'),
        ('{"a": 1.}', "{}", '"a": 1.}'),
        ('{"a": [1, 2,]}', '{"a": [1, 2]}', ",]}"),
        ('{"a": 1,}', '{"a": 1}', ",}"),
        ('{"a" 1}', "{}", '"a" 1}'),
        ("{'a': 1}", "{}", "'a': 1}"),
        ('{"a": "x\\q"}', '{"a": "x"}', '\\q"}'),
        ('{"a": "x\\u12G4"}', '{"a": "x"}', '\\u12G4"}'),
        ('{"a": tru}', "{}", '"a": tru}'),
        ('{"a": 1]', '{"a": 1}', "]"),
        ("{a: 1}", "{}", "a: 1}"),
        ('{"a": {"b": [1, {"c": 2}}}', '{"a": {"b": [1, {"c": 2}]}}', "}}"),
    ],
)
def test_json_stream_closes_invalid_json(text: str, sent: str, unread: str) -> None:
    """Invalid JSON ends the value where it turns invalid: what was sent is closed into valid JSON, and the input
    from the item that could not be completed on is handed back."""
    for chunks in ([text], list(text), [text[: len(text) // 2], text[len(text) // 2 :]]):
        got, state, rest = _reserialize(chunks)
        assert (got, state, rest) == (sent, JSON_BROKEN, unread), chunks
        json.loads(got)


@pytest.mark.parametrize(
    ("text", "sent", "unread"),
    [
        ('{"a": "x', '{"a": "x"}', ""),
        ('{"a": 12', '{"a": 12}', ""),
        ('{"a": 1e', "{}", '"a": 1e'),
        ('{"a": -', "{}", '"a": -'),
        ('{"a": 1, "b": ', '{"a": 1}', ', "b": '),
        ('{"a": 1, "b', '{"a": 1}', ', "b'),
        ('{"a": "x\\u00', '{"a": "x"}', "\\u00"),
        ('{"a": "x\\ud83d', '{"a": "x"}', "\\ud83d"),
        ('{"a": "x\\', '{"a": "x"}', "\\"),
        ('{"a": [1, [2, {"b": fals', '{"a": [1, [2, {}]]}', '"b": fals'),
        ('{"a": [1, [2, {"b": false', '{"a": [1, [2, {"b": false}]]}', ""),
        ("{", "{}", ""),
    ],
)
def test_json_stream_closes_a_value_the_end_cuts(text: str, sent: str, unread: str) -> None:
    for chunks in ([text], list(text)):
        assert _reserialize(chunks) == (sent, JSON_OPEN, unread), chunks
        json.loads(sent)


def test_json_stream_reads_the_rest_of_an_object() -> None:
    stream = JsonStream(object_rest=True)
    stream.feed(', "id": "x", "k": [1, "}"] } after')
    assert stream.state == JSON_DONE
    assert JsonStream(object_rest=True).feed(" } x")[1] == 2


def test_every_family_has_rows_checked_in_one_piece() -> None:
    """Strict xfails aside, each family keeps rows the one-piece test checks (every row is also streamed)."""
    checked = Counter(row["family"] for row in ROWS if row["id"] not in UNSUPPORTED)
    assert set(checked) == set(FAMILIES) and min(checked.values()) >= 1


def checked_table() -> str:
    """How many oracle rows of each family the tests of this run checked, and how (the run's terminal summary)."""
    in_data = Counter(row["family"] for row in ROWS)
    xfailed = Counter(row["family"] for row in ROWS if row["id"] in UNSUPPORTED)
    policy = Counter(row["family"] for row in ROWS if row["id"] in {*CONTENT_POLICY, *COMMIT_POLICY})
    lines = [f"{'family':<14} rows  one-piece  by-char  by-token  xfail  policy"]
    for family in sorted(in_data):
        done = CHECKED[family]
        lines.append(
            f"{family:<14} {in_data[family]:>4}  {done['one piece']:>9}  {done['streamed by character']:>7}  "
            f"{done['streamed by token']:>8}  {xfailed[family]:>5}  {policy[family]:>6}"
        )
    return "oracle rows checked per family (one-piece counts exclude strict xfails):\n" + "\n".join(lines)
