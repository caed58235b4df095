"""Structured output: the request forms, the checks, the forced tool calls, the reasoning gate, and constrained
decoding in the transformers engine's continuous batch on a tiny random-weight model (junk without a constraint,
so every match below is the constraint's doing)."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from lmchat import ChatModel
from lmchat.errors import InvalidRequestError, UnsupportedError
from lmchat.parsing import OutputParser, collect
from lmchat.structured import Constraint
from lmchat.structured.backend import check
from lmchat.structured.gate import HARMONY_FINAL, reasoning_gate
from lmchat.structured.requests import pop_constraint
from lmchat.structured.tool_choice import resolve_tool_choice

jsonschema = pytest.importorskip("jsonschema")
pytest.importorskip("llguidance")

ASK = [{"role": "user", "content": "Answer."}]
PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 150}},
          "required": ["name", "age"], "additionalProperties": False}
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 10},
                                     "unit": {"enum": ["C", "F"]}}, "required": ["city", "unit"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"type": "string", "pattern": "^[A-Z]{3}$"}}, "required": ["zone"]}}}


# --- request forms ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("options", "kind", "param"), [
    ({"response_format": {"type": "text"}}, None, None),
    ({"response_format": {"type": "json_object"}}, "json_object", "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON, "strict": True}}},
     "json_schema", "response_format"),
    ({"response_format": {"type": "json_object", "schema": PERSON}}, "json_schema", "response_format"),  # llama.cpp
    ({"structured_outputs": {"json": PERSON}}, "json_schema", "structured_outputs"),
    ({"structured_outputs": {"regex": "[a-z]+"}}, "regex", "structured_outputs"),
    ({"structured_outputs": {"choice": ["yes", "no"]}}, "choice", "structured_outputs"),
    ({"structured_outputs": {"grammar": 'root ::= "a"'}}, "grammar", "structured_outputs"),
    ({"structured_outputs": {"json_object": True}}, "json_object", "structured_outputs"),
    ({"guided_json": json.dumps(PERSON), "guided_decoding_backend": "xgrammar"}, "json_schema", "guided_json"),
    ({"guided_regex": "[0-9]+"}, "regex", "guided_regex"),
    ({"guided_choice": ["a", "b"]}, "choice", "guided_choice"),
    ({"guided_grammar": 'start: "x"+'}, "grammar", "guided_grammar"),
    ({"grammar": 'root ::= [0-9]+'}, "grammar", "grammar"),  # llama.cpp
    ({"json_schema": PERSON}, "json_schema", "json_schema"),  # llama.cpp
])
def test_every_request_form_becomes_one_constraint(options, kind, param):
    options = dict(options, temperature=0.5)
    constraint = pop_constraint(options)
    assert options == {"temperature": 0.5}  # the structured fields are taken, the rest is left
    assert (constraint.kind, constraint.param) == (kind, param) if kind else constraint is None
    if constraint is not None:
        check(constraint)


def test_grammar_syntax_and_options_are_read():
    assert pop_constraint({"grammar": 'root ::= "a"'}).grammar_syntax == "gbnf"
    assert pop_constraint({"guided_grammar": 'start: "a"'}).grammar_syntax == "lark"
    compact = pop_constraint({"structured_outputs": {"json": PERSON, "disable_any_whitespace": True,
                                                     "disable_additional_properties": True}})
    assert (compact.whitespace_flexible, compact.additional_properties) == (False, False)
    assert pop_constraint({"guided_json": PERSON, "guided_whitespace_pattern": " ?"}).whitespace_pattern == " ?"


@pytest.mark.parametrize(("options", "param", "message"), [
    ({"response_format": {"type": "json_object"}, "guided_regex": "a"}, "guided_regex", "two output constraints"),
    ({"response_format": {"type": "xml"}}, "response_format.type", "not one of"),
    ({"response_format": "json"}, "response_format", "must be an object"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema", "needs a json_schema"),
    ({"structured_outputs": {"regex": "a", "choice": ["a"]}}, "structured_outputs", "exactly one"),
    ({"structured_outputs": {"jsn": {}}}, "structured_outputs.jsn", "unknown field"),
    ({"structured_outputs": {"json_object": False}}, "structured_outputs.json_object", "must be true"),
    ({"guided_choice": []}, "guided_choice", "non-empty list"),
    ({"guided_json": "{not json"}, "guided_json", "not valid JSON"),
    ({"guided_regex": "a", "guided_decoding_backend": "outlines"}, "guided_decoding_backend", "outlines"),
])
def test_malformed_forms_are_errors_that_name_the_field(options, param, message):
    with pytest.raises(InvalidRequestError, match=message) as caught:
        pop_constraint(dict(options))
    assert caught.value.param == param


@pytest.mark.parametrize(("schema", "part"), [
    ({"type": "object", "not": {"required": ["a"]}}, '"not"'),
    ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, "uniqueItems"),
    ({"oneOf": [{"type": "integer"}, {"type": "number"}]}, "oneOf whose alternatives may overlap"),
    ({"$ref": "https://example.com/schema.json"}, "https://example.com/schema.json"),
    ({"type": "string", "pattern": "(?<=a)b"}, "look-around"),
])
def test_what_the_library_cannot_enforce_is_named(schema, part):
    with pytest.raises(InvalidRequestError, match=re.escape(part)) as caught:
        check(Constraint.from_schema(schema, param="response_format"))
    assert caught.value.param == "response_format" and "cannot be enforced" in caught.value.message


def test_enforceable_schemas_pass_and_unknown_formats_are_annotations():
    check(Constraint.from_schema({"oneOf": [{"type": "integer"}, {"type": "string"}]}))  # provably disjoint
    check(Constraint.from_schema({"type": "string", "format": "css-color"}))  # ignored, as validators ignore it
    with pytest.raises(InvalidRequestError, match="malformed"):
        check(Constraint(kind="grammar", grammar="root ::= undefined_rule", param="grammar"))


# --- tool_choice -----------------------------------------------------------------------------------------
def test_tool_choice_required_constrains_to_a_list_of_calls():
    choice = resolve_tool_choice([WEATHER, TIME], "required")
    schema = choice.constraint.schema
    valid = [{"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}},
             {"name": "get_time", "arguments": {"zone": "CET"}}]
    jsonschema.validate(valid, schema)
    for invalid in ([], [{"name": "other", "arguments": {}}], [{"name": "get_time", "arguments": {"zone": "x"}}]):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(invalid, schema)
    assert (choice.parser, choice.prompt_tools) == ("tool_choice_required", [WEATHER, TIME])
    single = resolve_tool_choice([WEATHER, TIME], "required", parallel_tool_calls=False).constraint.schema
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(valid, single)


def test_tool_choice_named_constrains_to_its_arguments_and_lifts_definitions():
    choice = resolve_tool_choice([WEATHER, TIME], {"type": "function", "function": {"name": "get_time"}})
    assert choice.constraint.schema == TIME["function"]["parameters"]
    assert (choice.parser, choice.parser_tools) == ("tool_choice_named", (TIME,))
    with pytest.raises(InvalidRequestError, match="not among the tools") as caught:
        resolve_tool_choice([WEATHER], {"type": "function", "function": {"name": "get_time"}})
    assert caught.value.param == "tool_choice"
    with pytest.raises(InvalidRequestError, match="no tools"):
        resolve_tool_choice(None, "required")
    ref = {"type": "function", "function": {"name": "r", "parameters": {
        "type": "object", "properties": {"p": {"$ref": "#/$defs/P"}}, "$defs": {"P": {"type": "integer"}}}}}
    schema = resolve_tool_choice([ref], "required").constraint.schema
    assert schema["$defs"] == {"P": {"type": "integer"}}
    jsonschema.validate([{"name": "r", "arguments": {"p": 3}}], schema)
    other = json.loads(json.dumps(ref).replace('"integer"', '"string"').replace('"r"', '"s"'))
    with pytest.raises(InvalidRequestError, match="define"):
        resolve_tool_choice([ref, other], "required")


@pytest.mark.parametrize(("parser", "tools", "text"), [
    ("tool_choice_required", [WEATHER, TIME],
     '[{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "C"}}, {"name": "get_time", "arguments": {}}]'),
    ("tool_choice_named", [TIME], '\n {"zone":  "CET"}'),
])
def test_forced_calls_parse_the_same_streamed_and_in_one_piece(parser, tools, text):
    whole = OutputParser(None, parser, tools).parse(text)
    stream, deltas = OutputParser(None, parser, tools), []
    for char in text:
        deltas += stream.feed(char)
    streamed = collect(deltas + stream.finish())
    assert [(c.name, json.loads(c.arguments)) for c in whole.tool_calls] == \
           [(c.name, json.loads(c.arguments)) for c in streamed.tool_calls]
    assert whole.content is None and whole.tool_calls


# --- where the constraint starts ---------------------------------------------------------------------------
def test_the_gate_follows_the_reasoning_parser_and_the_prompt():
    assert reasoning_gate(None, "x", False) is None
    opened = reasoning_gate("think", "<|im_start|>assistant\n<think>\n", True)
    assert (opened.in_reasoning, opened.end_markers) == (True, ("</think>",))
    optional = reasoning_gate("qwen3", "<|im_start|>assistant\n", False)
    assert (optional.in_reasoning, optional.start_markers) == (False, ("<think>",))
    assert reasoning_gate("qwen3", "<|im_start|>assistant\n<think>\n\n</think>\n\n", False) is None  # no thinking
    assert reasoning_gate("gpt_oss", "<|start|>assistant", False).end_markers == (HARMONY_FINAL,)


# --- the facade --------------------------------------------------------------------------------------------
def test_an_engine_without_constraints_refuses_them_before_any_work(fake_script):
    with ChatModel({"infer_backend": "fake", "model_name_or_path": fake_script(replies=["x"])}) as model:
        with pytest.raises(UnsupportedError, match="fake engine cannot constrain") as caught:
            model.prepare(ASK, response_format={"type": "json_object"})
        assert caught.value.param == "response_format"
        with pytest.raises(InvalidRequestError, match="not among the tools"):  # malformed first, engine after
            model.prepare(ASK, tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}})
        plain = model.prepare(ASK, response_format={"type": "text"})
        assert plain.params.constraint is None


# --- vLLM's form of a constraint (the engine itself: tests/test_vllm.py) -----------------------------------
@pytest.mark.parametrize(("options", "expected"), [
    ({"guided_json": PERSON}, {"json": PERSON}),
    ({"response_format": {"type": "json_object"}}, {"json_object": True}),
    ({"guided_regex": "[a-z]+"}, {"regex": "[a-z]+"}),
    ({"guided_choice": ["yes", "no"]}, {"choice": ["yes", "no"]}),
    ({"grammar": 'root ::= "a"'}, {"grammar": 'root ::= "a"'}),
])
def test_a_constraint_maps_to_vllms_structured_outputs(options, expected):
    from lmchat.engines.vllm.sampling import to_vllm_structured_outputs_kwargs

    assert to_vllm_structured_outputs_kwargs(pop_constraint(dict(options))) == expected


@pytest.mark.parametrize("option", [{"disable_any_whitespace": True}, {"disable_additional_properties": True},
                                    {"whitespace_pattern": " ?"}])
def test_what_vllm_reads_only_per_engine_is_refused_not_dropped(option):
    from lmchat.engines.vllm.sampling import to_vllm_structured_outputs_kwargs

    constraint = pop_constraint({"structured_outputs": {"json": PERSON, **option}})
    with pytest.raises(UnsupportedError, match=f"sets {next(iter(option))}, which vLLM does not apply per request"):
        to_vllm_structured_outputs_kwargs(constraint)


# --- the transformers engine (tiny random-weight model) ----------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    with ChatModel({"model_name_or_path": str(tiny_model_dir), "infer_backend": "huggingface",
                    "max_new_tokens": 48}) as model:
        yield model


def test_stop_strings_are_refused_with_a_constraint(tiny):
    with pytest.raises(InvalidRequestError, match="stop strings") as caught:
        tiny.prepare(ASK, guided_regex="[a-z]+", stop=["x"])
    assert caught.value.param == "stop"
    assert tiny.prepare(ASK, guided_regex="[a-z]+").params.stop == ()  # the template's end is a token


KINDS = [  # (a random model never closes an unbounded string: json_object is tested on the real model below)
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}},
     lambda t: jsonschema.validate(json.loads(t), PERSON) is None),
    ({"guided_regex": r"[0-9]{3}-[a-z]{2,4}"}, lambda t: re.fullmatch(r"[0-9]{3}-[a-z]{2,4}", t)),
    ({"guided_choice": ["yes", "no", "don't know"]}, lambda t: t in ("yes", "no", "don't know")),
    ({"grammar": 'root ::= "(" [a-c]{1,3} ")" ("," " "? "(" [a-c]{1,3} ")"){0,3}'},
     lambda t: re.fullmatch(r"\([a-c]{1,3}\)(, ?\([a-c]{1,3}\)){0,3}", t)),
    ({"guided_grammar": 'start: "n=" NUM\nNUM: /[1-9][0-9]{0,2}/'}, lambda t: re.fullmatch(r"n=[1-9][0-9]{0,2}", t)),
    ({"structured_outputs": {"json": {"type": "array", "items": {"type": "boolean"}, "minItems": 1, "maxItems": 3},
                             "disable_any_whitespace": True}},
     lambda t: " " not in t and jsonschema.validate(json.loads(t), {"type": "array", "maxItems": 3}) is None),
]


@pytest.mark.parametrize(("options", "matches"), KINDS)
@pytest.mark.parametrize("sampling", [{"do_sample": False}, {"temperature": 1.0, "seed": 7}])
def test_each_kind_is_matched_greedy_and_sampled(tiny, options, matches, sampling):
    [unconstrained] = tiny.chat(ASK, **sampling)
    [answer] = tiny.chat(ASK, **options, **sampling, max_new_tokens=96)
    assert answer.finish_reason == "stop", answer.response_text
    assert matches(answer.response_text), answer.response_text
    assert not matches_quietly(matches, unconstrained.response_text)  # junk without the constraint


def matches_quietly(matches, text: str) -> bool:
    try:
        return bool(matches(text))
    except (ValueError, jsonschema.ValidationError):
        return False


@pytest.mark.slow
def test_the_real_model_answers_in_sensible_json(default_model_dir):
    # (a prompt with a short answer: asked to "describe" the cat, SmolLM2 nests "habits" in itself until the
    # budget ends, constrained or not)
    ask = [{"role": "user",
            "content": "Return a JSON object with two keys, name and age, for a cat named Tom who is 3."}]
    with ChatModel({"model_name_or_path": str(default_model_dir), "infer_backend": "huggingface",
                    "do_sample": False, "max_new_tokens": 64}) as model:
        [loose] = model.chat(ask, response_format={"type": "json_object"})
        [person] = model.chat(ask, response_format={"type": "json_schema", "json_schema": {"name": "p",
                                                                                           "schema": PERSON}})
    assert loose.finish_reason == "stop", loose.response_text
    assert isinstance(json.loads(loose.response_text), dict) and json.loads(loose.response_text), loose.response_text
    assert person.finish_reason == "stop", person.response_text
    jsonschema.validate(json.loads(person.response_text), PERSON)


def test_streamed_equals_one_piece_and_n_answers_each_match(tiny):
    options = {"guided_json": PERSON, "temperature": 1.0, "seed": 3, "n": 3}
    answers = tiny.chat(ASK, **options)
    prepared = tiny.prepare(ASK, **options)
    streamed = ["", "", ""]
    for chunk in tiny.stream_chunks(prepared):
        streamed[chunk.index] += chunk.text
    assert streamed == [a.response_text for a in answers]
    for answer in answers:
        assert answer.finish_reason == "stop"
        jsonschema.validate(json.loads(answer.response_text), PERSON)


def test_constrained_and_plain_rows_share_the_batch_and_match_their_solo_answers(tiny):
    requests = [{"guided_json": PERSON}, {}, {"guided_choice": ["left", "right"]}, {"max_new_tokens": 20},
                {"guided_regex": "[a-f]{4,8}"}, {"temperature": 1.0, "seed": 5}, {"json_schema": PERSON}]
    requests = [dict(r, do_sample=r.get("do_sample", "temperature" in r)) for r in requests]
    solo = [tiny.chat(ASK, **r)[0].response_text for r in requests]
    worker = tiny.engine.worker
    worker.batch_sizes.clear()

    async def together():
        return await asyncio.gather(*(tiny.achat(ASK, **r) for r in requests))

    batched = [answers[0].response_text for answers in tiny.run_sync(together())]
    assert max(worker.batch_sizes) >= 4  # constrained and plain rows decoded in the same steps
    assert batched == solo


def test_tool_choice_required_and_named_give_tool_calls(tiny):
    # (the random model fills every gap between JSON tokens with whitespace, up to the bound, so without a nudge
    # to close strings, objects and lists a list of calls outgrows any budget; see test_structured_schemas.py)
    bias = {tiny.engine.tokenize(text)[0]: weight for text, weight in (('"', 10.0), ("}", 4.0), ("]", 4.0))}
    [required] = tiny.chat(ASK, tools=[WEATHER, TIME], tool_choice="required", temperature=1.0, seed=2,
                           max_new_tokens=160, logit_bias=bias)
    assert required.finish_reason == "tool_calls" and required.tool_calls and required.content in (None, ""), \
        required.response_text
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, TIME)}
    for call in required.tool_calls:
        jsonschema.validate(json.loads(call.arguments), schemas[call.name])
    [single] = tiny.chat(ASK, tools=[WEATHER, TIME], tool_choice="required", parallel_tool_calls=False,
                         do_sample=False, max_new_tokens=160, logit_bias=bias)
    assert single.finish_reason == "tool_calls" and len(single.tool_calls) == 1, single.response_text
    [named] = tiny.chat(ASK, tools=[WEATHER, TIME], tool_choice={"type": "function", "function": {"name": "get_time"}},
                        do_sample=False)
    [call] = named.tool_calls
    assert call.name == "get_time" and re.fullmatch("[A-Z]{3}", json.loads(call.arguments)["zone"])
    # (the tools go to the template as with "auto"; SmolLM2's template does not render them, so check what it gets)
    shown = tiny.prepare(ASK, tools=[WEATHER, TIME], tool_choice="required").tools
    assert [tool["function"]["name"] for tool in shown] == ["get_weather", "get_time"]
    assert tiny.prepare(ASK, tools=[WEATHER, TIME], tool_choice="none").tools is None


def test_raw_completions_take_constraints_too(tiny):
    prepared = tiny.prepare_completion("The code is", guided_regex=r"[A-Z]{2}[0-9]{2}", do_sample=False)
    [answer] = tiny.run_sync(tiny.agenerate(prepared))
    assert re.fullmatch(r"[A-Z]{2}[0-9]{2}", answer.response_text) and answer.finish_reason == "stop"


def test_compiled_grammars_are_cached_by_constraint(tiny):
    grammars = tiny.engine._grammars
    tiny.chat(ASK, guided_regex="[x-z]{2}", do_sample=False)
    size = grammars.cache_size
    tiny.chat(ASK, guided_regex="[x-z]{2}", temperature=1.0, seed=1)
    assert grammars.cache_size == size  # the same constraint: compiled once
    tiny.chat(ASK, guided_regex="[x-z]{3}", do_sample=False)
    assert grammars.cache_size == size + 1


# --- one request's guide, on the real SmolLM2 tokenizer -----------------------------------------------------
@pytest.fixture(scope="module")
def vocab(default_model_dir):
    from transformers import AutoTokenizer

    from lmchat.structured.backend import from_hf_tokenizer

    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    return tokenizer, from_hf_tokenizer(tokenizer, len(tokenizer))


def _mask(guide, grammars):
    import numpy as np
    import torch

    bitmask = torch.zeros(1, (grammars.vocab_size + 31) // 32, dtype=torch.int32)
    if guide.uses_grammar:
        grammars.fill([(guide.matcher, 0)], bitmask)
    words = bitmask.numpy().view(np.uint32)[0]
    guide.finish_mask(words)
    return lambda token: bool((int(words[token >> 5]) >> (token & 31)) & 1)


def test_the_reasoning_is_free_and_the_grammar_starts_exactly_after_its_end(vocab):
    from lmchat.structured import ReasoningGate
    from lmchat.structured.guide import Guide

    tokenizer, grammars = vocab
    ids = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    gate = ReasoningGate(end_markers=("</think>",), in_reasoning=True)
    guide = Guide(grammars, Constraint(kind="regex", regex="[0-9]+", reasoning=gate), stop_ids={2})
    for token in ids("Let me think it over, </think"):
        assert not guide.accept(token)
    assert guide.phase == "reasoning" and guide.needs_mask()  # "</think" ends the text: ">" may end the marker...
    allowed = _mask(guide, grammars)
    [close] = ids(">")
    overshoot = [i for i, b in enumerate(grammars.token_bytes) if b.startswith(b">") and len(b) > 1]
    assert allowed(close) and overshoot and not any(allowed(i) for i in overshoot)  # ...but not ">\n" and the like
    assert not guide.accept(close) and guide.phase == "grammar"
    allowed = _mask(guide, grammars)
    assert allowed(ids("7")[0]) and not allowed(ids("a")[0]) and not allowed(2)  # digits only, no end yet
    assert not guide.accept(ids("7")[0])
    assert _mask(guide, grammars)(2)  # the grammar accepts: the end token is allowed


def test_an_answer_may_open_its_reasoning_or_start_the_grammar(vocab):
    from lmchat.structured import ReasoningGate
    from lmchat.structured.guide import Guide

    tokenizer, grammars = vocab
    ids = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    gate = ReasoningGate(end_markers=("</think>",), start_markers=("<think>",))
    constraint = Constraint(kind="json_object", reasoning=gate)
    direct = Guide(grammars, constraint, stop_ids={2})
    allowed = _mask(direct, grammars)
    first, *rest = ids("<think>")
    assert allowed(ids("{")[0]) and allowed(first) and not allowed(ids("Hello")[0])
    assert not direct.accept(ids("{")[0]) and direct.phase == "grammar"  # no reasoning: JSON from the start
    thinking = Guide(grammars, constraint, stop_ids={2})
    _mask(thinking, grammars)
    thinking.accept(first)
    for token in rest:  # the rest of the start marker is written for it
        allowed = _mask(thinking, grammars)
        assert allowed(token) and not allowed(ids("{")[0])
        thinking.accept(token)
    assert thinking.phase == "reasoning" and not thinking.needs_mask()
    for token in ids("hmm </think>"):
        thinking.accept(token)
    assert thinking.phase == "grammar" and not _mask(thinking, grammars)(ids("Hello")[0])
