"""The streaming contract (``tool_parsers/base.py``) on every family added for issue 20: calls in OpenAI's shape,
text malformed before the commit point stays content, a committed call stays a call, answers without calls are
unchanged, and streamed == one piece on random mixes of each family's markup."""

from __future__ import annotations

import json
import random

import pytest
from parsing_support import assert_streams_agree, calls_of, comparable, stream

from lmchat.parsing import OutputParser, ParsedOutput, get_tool_parser, tool_parser_names

K = ("<|tool_calls_section_begin|>", "<|tool_calls_section_end|>", "<|tool_call_begin|>", "<|tool_call_end|>",
     "<|tool_call_argument_begin|>")
S3 = ("<｜tool_calls_begin｜>", "<｜tool_calls_end｜>", "<｜tool_call_begin｜>", "<｜tool_call_end｜>", "<｜tool_sep｜>")
TWO_CALLS = {  # parser -> an answer with text, then calls f(a=1) and g(b="x")
    "qwen3_coder": "Let me see.<tool_call>\n<function=f>\n<parameter=a>\n1\n</parameter>\n</function>\n</tool_call>\n"
                   "<tool_call>\n<function=g>\n<parameter=b>\nx\n</parameter>\n</function>\n</tool_call>",
    "seed_oss": "Let me see.<seed:tool_call>\n<function=f>\n<parameter=a>1</parameter>\n</function>\n</seed:tool_call>"
                "<seed:tool_call>\n<function=g>\n<parameter=b>x</parameter>\n</function>\n</seed:tool_call>",
    "minimax_m2": 'Let me see.<minimax:tool_call>\n<invoke name="f">\n<parameter name="a">1</parameter>\n</invoke>\n'
                  '<invoke name="g">\n<parameter name="b">x</parameter>\n</invoke>\n</minimax:tool_call>',
    "step3": f'Let me see.{S3[0]}{S3[2]}<steptml:invoke name="f"><steptml:parameter name="a">1</steptml:parameter>'
             f'</steptml:invoke>{S3[3]}{S3[4]}{S3[2]}<steptml:invoke name="g"><steptml:parameter name="b">x'
             f"</steptml:parameter></steptml:invoke>{S3[3]}{S3[1]}",
    "kimi_k2": f'Let me see.{K[0]}{K[2]}functions.f:0 {K[4]}{{"a": 1}}{K[3]}{K[2]}functions.g:1 {K[4]}{{"b": "x"}}'
               f"{K[3]}{K[1]}",
    "openai": '<|channel|>commentary<|message|>Let me see.<|end|><|start|>assistant<|channel|>commentary to=functions.f'
              ' <|constrain|>json<|message|>{"a": 1}<|call|><|start|>assistant<|channel|>commentary to=functions.g'
              '<|message|>{"b": "x"}<|call|>',
    "granite": 'Let me see.<|tool_call|>[{"name": "f", "arguments": {"a": 1}}, {"name": "g", "arguments": {"b": "x"}}]',
    "granite_20b_fc": 'Let me see.<function_call> {"name": "f", "arguments": {"a": 1}}\n<function_call> {"name": "g", '
                      '"arguments": {"b": "x"}}',
    "phi4_mini_json": 'Let me see.functools[{"name": "f", "arguments": {"a": 1}}, {"name": "g", "arguments": {"b": "x"}}]',
    "jamba": 'Let me see.<tool_calls>[{"name": "f", "arguments": {"a": 1}}, {"name": "g", "arguments": {"b": "x"}}]'
             "</tool_calls>",
    "hunyuan_a13b": 'Let me see.<tool_calls>[{"name": "f", "arguments": {"a": 1}}, {"name": "g", "arguments": '
                    '{"b": "x"}}]</tool_calls>',
    "xlam": 'Let me see.[TOOL_CALLS][{"name": "f", "arguments": {"a": 1}}, {"name": "g", "arguments": {"b": "x"}}]',
    "internlm": 'Let me see.<|action_start|><|plugin|>{"name": "f", "parameters": {"a": 1}}<|action_end|>'
                '<|action_start|><|plugin|>{"name": "g", "parameters": {"b": "x"}}<|action_end|>',
    "longcat": 'Let me see.<longcat_tool_call>{"name": "f", "arguments": {"a": 1}}</longcat_tool_call>\n'
               '<longcat_tool_call>{"name": "g", "arguments": {"b": "x"}}</longcat_tool_call>',
    "gigachat3": 'Let me see.<|function_call|>{"name": "f", "arguments": {"a": 1}}<|function_call|>{"name": "g", '
                 '"arguments": {"b": "x"}}',
    "lfm2": 'Let me see.<|tool_call_start|>[f(a=1), g(b="x")]<|tool_call_end|>',
    "olmo3": "Let me see.<function_calls>f(a=1)\ng(b='x')</function_calls>",
    "functionary_v3_2": 'all\nLet me see.>>>f\n{"a": 1}>>>g\n{"b": "x"}',
    "functionary_v3_1": 'Let me see.<function=f>{"a": 1}</function><function=g>{"b": "x"}</function>',
}
ONE_ARGUMENT_AT_A_TIME = ("qwen3_coder", "seed_oss", "minimax_m2", "step3", "lfm2", "olmo3")


@pytest.mark.parametrize("name", sorted(TWO_CALLS))
def test_parallel_calls_stream_in_openai_shape(name: str) -> None:
    """Each call's first piece carries index, id and name; later pieces only argument fragments (more than one:
    the arguments stream), and joined they are the one-piece arguments."""
    text = TWO_CALLS[name]
    output = assert_streams_agree(lambda: OutputParser(tool_parser=name), text)
    assert calls_of(output) == [("f", {"a": 1}), ("g", {"b": "x"})]
    assert output.content == "Let me see." and len({call.id for call in output.tool_calls}) == 2
    _, deltas = stream(OutputParser(tool_parser=name), list(text))
    pieces = [piece for delta in deltas for piece in delta.tool_calls]
    for index, call in enumerate(output.tool_calls):
        first, *later = [piece for piece in pieces if piece.index == index]
        assert (first.name, bool(first.id)) == (call.name, True)
        assert all(piece.id is None and piece.name is None and piece.arguments for piece in later)
        assert first.arguments + "".join(piece.arguments for piece in later) == call.arguments
        assert len(later) >= (1 if name in ONE_ARGUMENT_AT_A_TIME or index == 0 else 2)  # "x" streams


MALFORMED = {  # parser -> calls malformed before their commit point: content, unchanged
    "qwen3_coder": ["<tool_call>\n<function=f g\n<parameter=a>1</parameter>\n</function>\n</tool_call>",
                    "<tool_call>\nnot a call\n</tool_call>"],
    "minimax_m2": ['<minimax:tool_call><invoke nam="f"></invoke></minimax:tool_call>'],
    "step3": [f"{S3[0]}{S3[2]}<steptml:call>x</steptml:call>{S3[3]}{S3[1]}"],
    "kimi_k2": [f'{K[2]}f {K[4]}{{"a": 1}}{K[3]}', f"{K[2]}functions.f:0 {K[4]}[1]{K[3]}"],
    "openai": ["<|channel|>final, but no message follows"],
    "granite": ['<|tool_call|>[{"name": f}]', "<|tool_call|> is my marker"],
    "granite_20b_fc": ['<function_call> {"name": 123}', "<function_call> none"],
    "phi4_mini_json": ["functools[ This is just text ]", 'functools{"name": "func"}', "Python's functools module"],
    "jamba": ['<tool_calls>[{"name": "f", "arguments": {invalid json}}]</tool_calls>'],
    "xlam": ['```json\n{"a": 1}\n```', "[1, 2, 3]"],
    "internlm": ["<|action_start|><|plugin|>not json<|action_end|>"],
    "longcat": ["Some text with <longcat_tool_call>invalid json"],
    "lfm2": ["<|tool_call_start|>[f(1, 2)]<|tool_call_end|>"],
    "olmo3": ["<function_calls>print('hi') + 1</function_calls>"],
    "gigachat3": ["<|message_sep|>\n\nuser<|role_sep|>\nhello"],
    "functionary_v3_2": ["alliance\n[]", ">>>\nnothing"],
    "functionary_v3_1": ["Use <function=f> tags like <function=g>(1)</function>"],
    "llama3_json": ['{"name": "invalidTool", "parameters": {invalid json}'],  # vLLM's test: the text is content
    "hermes": ['<tool_call>\n{"name": "f", "arguments": {oops}}\n</tool_call>'],
}


@pytest.mark.parametrize(("name", "text"), [(name, text) for name, texts in MALFORMED.items() for text in texts])
def test_call_malformed_before_its_commit_point_is_content(name: str, text: str) -> None:
    output = assert_streams_agree(lambda: OutputParser(tool_parser=name), text)
    assert output == ParsedOutput(text, [], None)


BROKEN_AFTER_COMMIT = [  # (parser, answer, arguments, content): committed calls stay calls, repaired
    ("qwen3_coder", "<tool_call>\n<function=f>\n<parameter=a>\n1\n</parameter>\n<oops/>\n</function>\n</tool_call>",
     {"a": 1}, "<oops/>\n</function>"),
    ("qwen3_coder", "<tool_call>\n<function=f>\n<parameter=a>\nstill writi", {"a": "still writi"}, ""),  # cut
    ("minimax_m2", '<minimax:tool_call><invoke name="f"><parameter name="a">1</parameter>junk</invoke>'
     "</minimax:tool_call> after", {"a": 1}, "junk</invoke> after"),
    ("kimi_k2", f'{K[0]}{K[2]}functions.f:0 {K[4]}{{"a": 1, oops}}{K[3]}{K[1]}', {"a": 1}, ", oops}"),
    ("openai", '<|channel|>commentary to=functions.f<|message|>{"a": "cut by max_tok', {"a": "cut by max_tok"}, ""),
    ("jamba", '<tool_calls>[{"name": "f", "arguments": {"a": 1, "b": tru}}]</tool_calls>', {"a": 1}, ', "b": tru}}]'),
    ("openai", "<|channel|>commentary to=functions.f<|message|>{oops}<|call|>", None, "{oops}"),  # no call at all
    ("functionary_v3_1", '<function=f>{"a": [1, 2}</function>', {"a": [1, 2]}, "}</function>"),
    ("lfm2", "<|tool_call_start|>[f(a=1, b=y)]<|tool_call_end|>", {"a": 1}, ", b=y)]"),
]


@pytest.mark.parametrize(("name", "text", "arguments", "content"), BROKEN_AFTER_COMMIT)
def test_call_broken_after_its_commit_point_stays_a_call(name: str, text: str, arguments: dict, content: str) -> None:
    output = assert_streams_agree(lambda: OutputParser(tool_parser=name), text)
    assert calls_of(output) == ([("f", arguments)] if arguments is not None else [])  # (None: the header is
    assert (output.content or "") == content  # markup, dropped; the body is not JSON arguments: content)


PLAIN = ("Plain answer.\n", "  Indented, with a trailing space ", 'Some JSON: {"a": [1, 2]} and a list [1, 2]',
         "[link](https://example.com) <b>bold</b> <tool <function <|chan", "Python's functools module >>> all", "")


@pytest.mark.parametrize("name", tool_parser_names())
@pytest.mark.parametrize("text", PLAIN)
def test_every_parser_leaves_an_answer_without_calls_unchanged(name: str, text: str) -> None:
    if name in ("glm4", "functionary_v3_2", "functionary"):  # a bare "name\n{" opening the answer is a call
        text = text.lstrip()
    output = assert_streams_agree(lambda: OutputParser(tool_parser=name), text)
    assert output == ParsedOutput(text, [], None)


FUZZ_PIECES = {
    "qwen3_coder": ["<tool_call>", "</tool_call>", "<function=f>", "</function>", "<parameter=a>", "</parameter>",
                    "\n", "1", "<function=", "<", ">", " x"],
    "minimax_m2": ["<minimax:tool_call>", "</minimax:tool_call>", '<invoke name="f">', "</invoke>",
                   '<parameter name="a">', "</parameter>", "1", "\n", "<", '"'],
    "step3": [*S3, '<steptml:invoke name="f">', "</steptml:invoke>", '<steptml:parameter name="a">',
              "</steptml:parameter>", "function", "1", "\n"],
    "kimi_k2": [*K, "functions.f:0", "f", ":1", '{"a": 1}', " ", "{", "x"],
    "openai": ["<|start|>assistant", "<|channel|>", "analysis", "final", "commentary", " to=functions.f",
               "<|constrain|>json", "<|message|>", '{"a": 1}', "<|end|>", "<|call|>", "text", "{"],
    "granite": ["<|tool_call|>", "<tool_call>", "[", "]", '{"name": "f", "arguments": {"a": 1}}', ", ", "{", "x"],
    "xlam": ["[TOOL_CALLS]", "```json", "```", "</think>", "<tool_call>", "</tool_call>", "[",
             '{"name": "f", "arguments": {"a": 1}}', "]", "\n", "x"],
    "gigachat3": ["<|function_call|>", "<|message_sep|>", "\n\nfunction call<|role_sep|>\n",
                  '{"name": "f", "arguments": {"a": 1}}', "</s>", "x", "{"],
    "olmo3": ["<function_calls>", "</function_calls>", "f(a=1)", "\n", "g()", "(", ")", "x"],
    "functionary_v3_2": [">>>", "all\n", "f\n", '{"a": 1}', "python\n", "print(1)", "x", "\n"],
    "functionary_v3_1": ["<function=f>", "</function>", '{"a": 1}', "<|python_tag|>", "<|eom_id|>", "x", "<function="],
}


@pytest.mark.parametrize("name", sorted(FUZZ_PIECES))
def test_streamed_equals_one_piece_on_random_markup(name: str) -> None:
    rng = random.Random(name)
    for _ in range(200):
        text = "".join(rng.choice(FUZZ_PIECES[name]) for _ in range(rng.randint(1, 10)))
        expected = OutputParser(tool_parser=name).parse(text)
        for call in expected.tool_calls:
            json.loads(call.arguments)
        cuts = sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, 4)))
        for chunks in ([text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])], list(text)):
            assert comparable(stream(OutputParser(tool_parser=name), chunks)[0]) == comparable(expected), (text, chunks)


def test_registry_resolves_every_documented_name() -> None:
    names = tool_parser_names()
    for name in ("qwen3_coder", "qwen3coder", "step3p5", "seed_oss", "minimax_m2", "step3", "kimi_k2", "openai",
                 "gpt_oss", "granite", "granite4", "granite_20b_fc", "phi4_mini_json", "jamba", "hunyuan_a13b", "xlam",
                 "internlm", "internlm2", "longcat", "lfm2", "olmo3", "ernie45", "gigachat3", "hermes_2_pro",
                 "functionary_v3_2", "functionary_v3_1", "llama4_pythonic"):
        assert name in names
        get_tool_parser(name)
    assert get_tool_parser("Granite-20B-FC") is get_tool_parser("granite_20b_fc")


@pytest.mark.parametrize(("reasoning", "tool", "head", "tail"), [
    (None, "qwen3_coder", "<tool_call>\n<function=write>\n<parameter=text>\n", "\n</parameter>\n</function>\n</tool_call>"),
    (None, "minimax_m2", '<minimax:tool_call><invoke name="write"><parameter name="text">',
     "</parameter></invoke></minimax:tool_call>"),
    ("gpt_oss", "openai", "<|channel|>analysis<|message|>", "<|end|><|start|>assistant<|channel|>final<|message|>ok"),
])
def test_long_values_stream_in_linear_time(reasoning: str | None, tool: str, head: str, tail: str) -> None:
    """A 240 000-character value fed 4 characters at a time: the text waiting for its end is searched once, never
    read again from its start (quadratic work would take minutes)."""
    import time

    body = "line of text, with <angle> and </tags\n" * 6_000
    text = head + body + tail
    parser = OutputParser(reasoning, tool)
    started = time.process_time()
    output, _ = stream(parser, [text[start : start + 4] for start in range(0, len(text), 4)])
    assert time.process_time() - started < 15
    if reasoning:
        assert (output.reasoning, output.content) == (body, "ok")
    else:
        assert calls_of(output) == [("write", {"text": body})]  # (one newline each side is layout in Qwen3-Coder)
