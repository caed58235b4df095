"""Tool-call parsers: every oracle row of the supported families, in one piece and streamed, plus the contract.

The oracle rows (``../shared/oracles/tool_calls/cases.jsonl``, never copied here) come from vLLM, LLaMA-Factory and
llama.cpp tests. Where their convention differs from lmchat's policy the row is listed below with the reason:
either as an explicit content override (``CONTENT_POLICY``) or as a strict xfail (``UNSUPPORTED``).

Normalisations applied to every row:
* content ``None`` and ``""`` are equal (vLLM itself expects ``None`` non-streamed and ``""`` streamed for the
  same answer; lmchat gives ``None`` when an answer has calls and no text);
* ``direction: formatter_output`` rows end with the model's turn-end token; engines stop there, so it is removed.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

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
from lmchat.parsing.scan import FoundCall
from lmchat.parsing.tool_parsers import base as tool_base

ORACLE = Path(__file__).resolve().parents[1].parent / "shared" / "oracles" / "tool_calls" / "cases.jsonl"

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
}
END_TOKENS = ("<|im_end|>\n", "<|eot_id|>", "</s>", "<|im_end|>")

UNSUPPORTED = {
    "vllm_parametrized-0070": "vLLM turns a list entry without a name into a call named ''; lmchat requires a name, "
    "so the entry is not a call and the text stays content",
    "vllm_parametrized-0079": "same text as vllm_parametrized-0070 (streamed): a call needs a name in lmchat",
    "vllm_parametrized-0091": "vLLM passes unterminated JSON arguments through verbatim; lmchat's arguments are "
    "always valid JSON, so the malformed call falls back to content",
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
}
CHECKED: dict[str, Counter[str]] = defaultdict(Counter)


def _load_rows() -> list[dict[str, Any]]:
    if not ORACLE.is_file():
        return []
    rows = [json.loads(line) for line in ORACLE.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [row for row in rows if row["family"] in FAMILIES]


ROWS = _load_rows()
NO_ORACLE = pytest.param(None, marks=pytest.mark.skip(reason=f"oracle file not found: {ORACLE}"), id="no-oracle")


def _params(strict_xfail: bool) -> list[Any]:
    if not ROWS:
        return [NO_ORACLE]
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


def _tokenizer_path() -> Path | None:
    configured = os.environ.get("LMCHAT_TEST_TOKENIZER")
    if configured:
        path = Path(configured)
        return path / "tokenizer.json" if path.is_dir() else path
    found = sorted((Path.home() / ".cache" / "lmchat" / "models").glob("*/tokenizer.json"))
    return found[0] if found else None


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    path = _tokenizer_path()
    if path is None or not path.is_file():
        pytest.skip(
            "no SmolLM2 tokenizer.json found (looked in ~/.cache/lmchat/models/*/ and $LMCHAT_TEST_TOKENIZER); "
            "token-by-token streaming is checked once the fixture model is there"
        )
    tokenizers = pytest.importorskip("tokenizers")
    return tokenizers.Tokenizer.from_file(str(path))


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
    if not ROWS:
        pytest.skip(f"oracle file not found: {ORACLE}")
    assert {row["family"] for row in ROWS} == set(FAMILIES)
    listed = {*UNSUPPORTED, *CONTENT_POLICY}
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
MALFORMED = {  # parser -> a broken call, which must come out unchanged as content
    "hermes": '<tool_call>\n{"name": "f", "arguments": {"a": 1}\n</tool_call>',
    "llama3_json": '{"name": "f", "parameters": {"a": 1}',
    "pythonic": "[f(1, 2)]",
    "mistral": '[TOOL_CALLS]f{"a": 1',
    "glm4": 'f\n{"a": 1',
    "glm45": "<tool_call>f\n<arg_key>a</arg_key>\n</tool_call>",
    "deepseek_v3": f"{DS['calls']}{DS['call']}function{DS['sep']}f\n```json\n{{\"a\": \n```"
    f"{DS['call_end']}{DS['end']}",
    "default": "Action: f\nAction Input: not json",
}
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
def test_streamed_calls_arrive_whole_in_openai_shape(name: str) -> None:
    stream = get_tool_parser(name)().start_stream()
    deltas = [delta for char in TWO_CALLS[name] for delta in stream.feed(char)] + stream.finish()
    pieces = [piece for delta in deltas for piece in delta.tool_calls]
    assert [(piece.index, piece.name) for piece in pieces] == [(0, "f"), (1, "g")]
    assert all(isinstance(piece, ToolCallDelta) and piece.id and piece.arguments for piece in pieces)


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_call_falls_back_to_content(name: str) -> None:
    text = MALFORMED[name]
    output = get_tool_parser(name)().parse(text)
    assert output.tool_calls == []
    assert output.content == text


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
    "pythonic": ["[", "]", "f(a=1)", ", ", 'g(b="x]")', "<|python_start|>", "<|python_end|>", " ", "'", "("],
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


def test_zz_rows_checked_per_family(capsys: pytest.CaptureFixture[str]) -> None:
    """Runs last: prints how many oracle rows of each family were checked, and how."""
    if not ROWS:
        pytest.skip(f"oracle file not found: {ORACLE}")
    in_data = Counter(row["family"] for row in ROWS)
    xfailed = Counter(row["family"] for row in ROWS if row["id"] in UNSUPPORTED)
    lines = [f"{'family':<14} rows  one-piece  by-char  by-token  xfail"]
    for family in sorted(in_data):
        done = CHECKED[family]
        lines.append(
            f"{family:<14} {in_data[family]:>4}  {done['one piece']:>9}  {done['streamed by character']:>7}  "
            f"{done['streamed by token']:>8}  {xfailed[family]:>5}"
        )
    with capsys.disabled():
        print("\noracle rows checked per family (one-piece counts exclude strict xfails):\n" + "\n".join(lines))
