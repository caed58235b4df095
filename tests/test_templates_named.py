"""Named templates render exactly what the official template of their family renders.

The oracles live outside the repo in ``../shared/oracles`` (see its README): the official templates
(``chat_templates/``), what they render for one fixed conversation (``rendered/*.txt``, inputs in
``rendered/manifest.json``) and LLaMA-Factory's expected prompt strings (``rendered/llamafactory_expected.json``).
"""

from __future__ import annotations

import copy
import json
from datetime import datetime
from pathlib import Path

import pytest

from lmchat.errors import ConfigError, TemplateError
from lmchat.templates import jinja_env
from lmchat.templates.registry import resolve_template, template_names, template_spec
from lmchat.templates.render import render_prompt

ORACLES = Path(__file__).resolve().parents[1].parent / "shared" / "oracles"
RENDERED = ORACLES / "rendered"
OFFICIAL = ORACLES / "chat_templates"
MANIFEST = json.loads((RENDERED / "manifest.json").read_text(encoding="utf-8"))
OUTPUTS = MANIFEST["outputs"]

# Each named template (or alias) and the official family template whose renders it must reproduce. Every oracle
# render of that family is checked: plain, `.tools`, `.no_think`, and the `system_error` case.
FAMILY = {
    "chatml": "chatml",
    "qwen": "qwen2.5-instruct",
    "qwen2.5": "qwen2.5-instruct",
    "qwen3-official": "qwen3",
    "llama2-official": "llama-2-chat",
    # "llama3" is Llama-3 (no date header, no tools): it is what LLaMA-Factory's "llama3" strings show too.
    "llama3": "llama-3-instruct",
    "llama3-official": "llama-3-instruct",
    "llama3.1": "llama-3.1-instruct",
    "llama3.2": "llama-3.2-instruct",
    "llama3.3": "llama-3.3-instruct",
    "mistral-official": "mistral-instruct-v0.3",
    "gemma2-official": "gemma-2-it",
    "phi4": "phi-4",
    "phi4-official": "phi-4",
    "phi3": "phi-3.5-mini",
    "deepseek3-official": "deepseek-v3",
    "deepseekr1-official": "deepseek-r1",
    "glm4-official": "glm-4-chat",
    "alpaca-official": "alpaca",
    "vicuna-official": "vicuna",
}
# Further oracles a named template also reproduces (same output for the manifest's conversation).
EXTRA_ORACLES = {"phi3": ["phi-3-mini"]}

# chujiezheng/chat_templates (alpaca, vicuna) documents loading its files with 4-space indents and newlines removed;
# the oracle renders were made that way.
CONDENSED = {"alpaca.jinja", "vicuna.jinja"}


@pytest.fixture(autouse=True)
def _fixed_now(monkeypatch):
    """strftime_now returns the manifest's fixed date (templates are compiled per environment, so clear the cache)."""
    fixed = datetime.fromisoformat(MANIFEST["fixed_now"])
    monkeypatch.setattr(jinja_env, "_strftime_now", lambda fmt: fixed.strftime(fmt))
    jinja_env.compile_template.cache_clear()
    yield
    jinja_env.compile_template.cache_clear()


def _oracle_keys(family: str) -> list[str]:
    return [key for key in OUTPUTS if key == family or key.startswith(family + ".")]


def _inputs(key: str) -> tuple[list[dict], list[dict] | None, dict, dict]:
    out = OUTPUTS[key]
    messages = copy.deepcopy(out.get("messages", MANIFEST["conversation"]))
    if out.get("system_dropped"):
        messages = [m for m in messages if m["role"] != "system"]
    tools = MANIFEST["tools"] if out.get("tools_passed") else None
    return messages, tools, out["special_tokens"], out["extra_kwargs"]


def _expected(key: str) -> str:
    return (RENDERED / OUTPUTS[key]["file"]).read_text(encoding="utf-8")


def _official_source(key: str) -> str:
    name = OUTPUTS[key]["template"]
    source = (OFFICIAL / name).read_text(encoding="utf-8")
    return source.replace("    ", "").replace("\n", "") if name in CONDENSED else source


NAMED_CASES = [
    pytest.param(name, key, id=f"{name}-{key}")
    for name, family in FAMILY.items()
    for fam in [family, *EXTRA_ORACLES.get(name, [])]
    for key in _oracle_keys(fam)
]


def test_every_family_has_oracles():
    for name, family in FAMILY.items():
        assert _oracle_keys(family), name
    jinja_file_templates = {name for name in template_names() if template_spec(name).slots is None}
    assert jinja_file_templates - {"default"} <= set(FAMILY)


@pytest.mark.parametrize(("name", "key"), NAMED_CASES)
def test_named_template_matches_oracle(name, key):
    messages, tools, special_tokens, extra = _inputs(key)
    assert render_prompt(messages, name, tools=tools, special_tokens=special_tokens, **extra) == _expected(key)


@pytest.mark.parametrize(
    ("name", "key"),
    [(name, key) for name, key in (p.values for p in NAMED_CASES) if "error_with_system" in OUTPUTS[key]],
)
def test_named_template_rejects_system_like_official(name, key):
    """Gemma has no system role: the official template raises, and so does ours, with the same message."""
    error_file = RENDERED / OUTPUTS[key]["file"].replace(".txt", ".system_error.txt")
    expected = error_file.read_text(encoding="utf-8").rstrip("\n")  # the file ends with a newline
    assert expected == OUTPUTS[key]["error_with_system"]
    with pytest.raises(TemplateError) as info:
        render_prompt(MANIFEST["conversation"], name, special_tokens=OUTPUTS[key]["special_tokens"])
    assert str(info.value) == f"The chat template '{resolve_template(name).name}' rejected the conversation: {expected}"


def _tool_variants(messages: list[dict]) -> list[list[dict]]:
    """The same tool conversation with arguments as a dict and as a JSON string, content '' and None."""
    variants = []
    for as_string in (False, True):
        for content in ("", None):
            variant = copy.deepcopy(messages)
            for message in variant:
                if message.get("tool_calls"):
                    message["content"] = content
                    for call in message["tool_calls"]:
                        arguments = call["function"]["arguments"]
                        if as_string and not isinstance(arguments, str):
                            call["function"]["arguments"] = json.dumps(arguments, ensure_ascii=False)
                        if not as_string and isinstance(arguments, str):
                            call["function"]["arguments"] = json.loads(arguments)
            variants.append(variant)
    return variants


@pytest.mark.parametrize(("name", "key"), [c for c in NAMED_CASES if c.values[1].endswith(".tools")])
def test_named_template_tool_calls_in_any_form(name, key):
    """Tool calls render the same whether arguments come as a dict or a JSON string and content as '' or None.

    The official templates each take one form (DeepSeek: string arguments and None content; the others: dict
    arguments); with the other form they raise or write the arguments as a quoted JSON string. Ours write both forms
    as the oracle shows, since clients (OpenAI API) send string arguments.
    """
    messages, tools, special_tokens, extra = _inputs(key)
    for variant in _tool_variants(messages):
        assert render_prompt(variant, name, tools=tools, special_tokens=special_tokens, **extra) == _expected(key)


def test_glm4_tools_from_argument_or_message():
    """GLM-4's template reads tools from a message's "tools" key; ours also takes them as `tools=`."""
    messages, _, special_tokens, _ = _inputs("glm-4-chat.tools")
    tools = messages[0].pop("tools")
    assert render_prompt(messages, "glm4-official", tools=tools, special_tokens=special_tokens) == (
        _expected("glm-4-chat.tools")
    )


def test_glm4_tool_calls_use_glm_format():
    """lmchat addition: OpenAI-style calls and results become GLM-4's NAME/JSON assistant turn and <|observation|>."""
    rendered = render_prompt(MANIFEST["tool_conversation_dict_args"], "glm4-official", tools=MANIFEST["tools"])
    assert rendered.endswith(
        "<|user|>\nWhat's the temperature in Paris right now?"
        '<|assistant|>get_current_temperature\n{"location": "Paris, France", "unit": "celsius"}'
        "<|observation|>\n22.0<|assistant|>"
    )


@pytest.mark.parametrize("key", list(OUTPUTS))
def test_official_template_file_matches_oracle(key, tmp_path):
    """The official templates, rendered by lmchat from a .jinja file, give the oracles: our Jinja environment is
    the one transformers uses."""
    messages, tools, special_tokens, extra = _inputs(key)
    path = tmp_path / OUTPUTS[key]["template"]
    path.write_text(_official_source(key), encoding="utf-8")
    assert render_prompt(messages, str(path), tools=tools, special_tokens=special_tokens, **extra) == _expected(key)
    if "error_with_system" in OUTPUTS[key]:
        with pytest.raises(TemplateError, match=OUTPUTS[key]["error_with_system"].replace(".", r"\.")):
            render_prompt(MANIFEST["conversation"], str(path), special_tokens=special_tokens)


# --- Beyond the fixed conversation: named and official templates agree on other conversations too. -------------

_CALL = {"location": "Paris, France", "unit": "celsius"}


def _call(i: int, name: str = "get_current_temperature", arguments: dict | None = None) -> dict:
    return {"id": f"call0000{i}", "type": "function", "function": {"name": name, "arguments": arguments or _CALL}}


MORE_CONVERSATIONS = {
    "no_system": [
        {"role": "user", "content": "  Hi there \n"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "你好"},
        {"role": "assistant", "content": "很高兴认识你！"},
        {"role": "user", "content": "multi\nline"},
    ],
    "ends_with_assistant": [
        {"role": "system", "content": " Be brief. "},
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "A"},
    ],
    "reasoning": [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "<think>\nfirst\n</think>\n\nA1"},
        {"role": "user", "content": "Q2"},
        {"role": "assistant", "content": "A2", "reasoning_content": "second"},
    ],
    "one_call": [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "tool_calls": [_call(1)]},
        {"role": "tool", "tool_call_id": "call00001", "name": "get_current_temperature", "content": "22.0"},
        {"role": "assistant", "content": "It is 22 degrees."},
        {"role": "user", "content": "Thanks"},
    ],
    "two_calls": [
        {"role": "user", "content": "Weather in two places?"},
        {"role": "assistant", "content": "", "tool_calls": [_call(1), _call(2, arguments={"location": "Rome"})]},
        {"role": "tool", "tool_call_id": "call00001", "name": "get_current_temperature", "content": "22.0"},
        {"role": "tool", "tool_call_id": "call00002", "name": "get_current_temperature", "content": "25.0"},
        {"role": "user", "content": "And now?"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [_call(3)]},
        {"role": "tool", "tool_call_id": "call00003", "name": "get_current_temperature", "content": "{\"t\": 21}"},
    ],
}
# Keyword arguments the official templates read, tried as well as the defaults.
MORE_KWARGS = {
    "qwen3-official": [{"enable_thinking": False}, {"enable_thinking": True}],
    "llama3.1": [{"tools_in_user_message": False}, {"date_string": "01 Jan 2025"}, {"builtin_tools": ["brave_search"]}],
    "llama3.2": [{"tools_in_user_message": False}, {"date_string": "01 Jan 2025"}],
}
TOOL_FAMILIES = {"qwen", "qwen3-official", "llama3.1", "llama3.2", "mistral-official", "deepseek3-official",
                 "deepseekr1-official", "glm4-official"}


def _official_shape(name: str, messages: list[dict], tools: list[dict] | None) -> tuple[list[dict], list | None]:
    """The conversation in the form the official template expects (see test_named_template_tool_calls_in_any_form)."""
    messages = copy.deepcopy(messages)
    if name.startswith("deepseek"):
        for message in messages:
            if message.get("tool_calls"):
                message["content"] = message["content"] or None
                for call in message["tool_calls"]:
                    call["function"]["arguments"] = json.dumps(call["function"]["arguments"])
    if name == "glm4-official":  # GLM-4's template knows neither tool calls nor tool results, and reads tools from a message
        messages = [m for m in messages if m["role"] != "tool" and not m.get("tool_calls")]
        if tools:
            messages[0]["tools"] = tools
        tools = None
    return messages, tools


def _render_or_error(messages, template, **kwargs) -> str:
    try:
        return render_prompt(messages, template, **kwargs)
    except TemplateError as exc:
        return "ERROR: " + str(exc).split("rejected the conversation: ", 1)[1]


MORE_CASES = [
    pytest.param(name, conversation, kwargs, id=f"{name}-{conversation}-{i}")
    for name in FAMILY
    # aliases, and LLaMA-Factory's slot templates (they always open the answer after a user turn; their own tests
    # are in test_templates_llamafactory.py)
    if name not in {"qwen2.5", "llama3.3"} and template_spec(name).slots is None
    for conversation in MORE_CONVERSATIONS
    for i, kwargs in enumerate([{}, *MORE_KWARGS.get(name, [])])
]


@pytest.mark.parametrize(("name", "conversation", "kwargs"), MORE_CASES)
def test_named_template_matches_official_on_more_conversations(name, conversation, kwargs):
    key = FAMILY[name]
    special_tokens = OUTPUTS[key]["special_tokens"]
    tools = MANIFEST["tools"] if name in TOOL_FAMILIES and "call" in conversation else None
    messages, official_tools = _official_shape(name, MORE_CONVERSATIONS[conversation], tools)
    if name == "glm4-official":
        tools = official_tools
    for add_generation_prompt in (True, False):
        ours = _render_or_error(
            messages, name, tools=tools, special_tokens=special_tokens, add_generation_prompt=add_generation_prompt,
            **kwargs,
        )
        theirs = _render_or_error(
            messages, _official_source(key), tools=official_tools, special_tokens=special_tokens,
            add_generation_prompt=add_generation_prompt, **kwargs,
        )
        assert ours == theirs


# --- LLaMA-Factory's expected strings: each of its templates renders them under its own name. ---------------------

LF = json.loads((RENDERED / "llamafactory_expected.json").read_text(encoding="utf-8"))
LF_CHECK_TEMPLATE = [
    pytest.param(r, id=f"{r['test']}-{r['llamafactory_template']}-{i}")
    for i, r in enumerate(LF["records"])
    if r["kind"] == "_check_template"
]


@pytest.mark.parametrize("record", LF_CHECK_TEMPLATE)
def test_llamafactory_template_strings(record):
    """LLaMA-Factory asserts the model's official template renders `full` (and `prompt_str` + `answer_str`)."""
    name = record["llamafactory_template"]
    messages = record["messages"]
    assert render_prompt(messages, name, add_generation_prompt=False) == record["full"]
    assert render_prompt(messages[:-1], name, add_generation_prompt=True) == record["prompt_str"]
    assert record["prompt_str"] + record["answer_str"] == record["full"]


def _lf_tokenization_cases():
    for record in LF["records"]:
        if record["kind"] != "_check_tokenization":
            continue
        params = record["params"]
        if not params:  # LLaMA-Factory's own encoder with its "llama3" template on a Llama-3 tokenizer
            yield record, "llama3", LF["MESSAGES"], {}
            continue
        with_thought = params.get("cot_messages", True)  # the discarding_history_cot tests use thought messages
        kwargs = {} if params.get("enable_thinking") is None else {"enable_thinking": params["enable_thinking"]}
        yield record, "qwen3", LF["MESSAGES_WITH_THOUGHT" if with_thought else "MESSAGES"], kwargs


def _lf_id(record) -> str:
    return record["test"] + "".join(f"-{k}={v}" for k, v in record["params"].items())


# LLaMA-Factory's _check_tokenization strings are its own encoder's prompt/answer segments. Our "qwen3" is
# LLaMA-Factory's template as its inference prompt renders it (encode_oneturn: earlier answers lose their thoughts), so
# it agrees with every one-turn case. The multi-turn cases are training encodings (encode_multiturn): there every assistant turn is a
# training target and keeps its thought (or gets an empty <think></think>), which an inference prompt never does.
LF_DISAGREE = {
    *(
        f"test_reasoning_encode_multiturn-enable_thinking={t}-cot_messages={c}"
        for t in (True, False, None)
        for c in (True, False)
    ),
    *(
        f"test_reasoning_encode_multiturn_discarding_history_cot-discarding_history_cot=False-enable_thinking={t}"
        for t in (True, False, None)
    ),
}
LF_TOKENIZATION = [pytest.param(*case, id=_lf_id(case[0])) for case in _lf_tokenization_cases()]


@pytest.mark.parametrize(("record", "name", "messages", "kwargs"), LF_TOKENIZATION)
def test_llamafactory_encoded_conversation(record, name, messages, kwargs):
    rendered = render_prompt(messages, name, add_generation_prompt=False, **kwargs)
    if _lf_id(record) in LF_DISAGREE:
        assert rendered != "".join(record["texts"])
    else:
        assert rendered == "".join(record["texts"])


def test_llamafactory_disagreements_are_the_documented_ones():
    assert LF_DISAGREE <= {p.id for p in LF_TOKENIZATION}


# --- "default": LLaMA-Factory's default template (no official render in the oracles). ----------------------------
# Expected strings written from LLaMA-Factory's template.py (register_template "default": user "Human: {{content}}"
# eos "\nAssistant:", assistant "{{content}}" eos "\n", system "System: {{content}}" eos "\n") and tool_utils.py
# (DefaultToolUtils: the tool description appended to the system text, calls as "Action:"/"Action Input:", results
# formatted as user turns), at the commit named in llamafactory_expected.json.

DEFAULT_PLAIN = (
    "System: You are a helpful assistant.</s>\n"
    "Human: Hello, how are you?</s>\nAssistant:I'm doing great. How can I help you today?</s>\n"
    "Human: I'd like to show off how chat templating works!</s>\nAssistant:"
)
DEFAULT_TOOLS = (
    "System: You are a helpful assistant.You have access to the following tools:\n"
    "> Tool Name: get_current_temperature\n"
    "Tool Description: Get the current temperature at a location.\n"
    "Tool Args:\n"
    '  - location (string, required): The location, in the format "City, Country"\n'
    "  - unit (string, required): The unit to return., should be one of [celsius, fahrenheit]\n"
    "\n"
    "Use the following format if using a tool:\n"
    "```\n"
    "Action: tool name (one of [get_current_temperature])\n"
    "Action Input: the input to the tool, in a JSON format representing the kwargs "
    '(e.g. ```{"input": "hello world", "num_beams": 5}```)\n'
    "```\n"
    "</s>\n"
    "Human: What's the temperature in Paris right now?</s>\nAssistant:"
    'Action: get_current_temperature\nAction Input: {"location": "Paris, France", "unit": "celsius"}</s>\n'
    "Human: 22.0</s>\nAssistant:"
)


def test_default_template():
    eos = {"eos_token": "</s>"}
    assert render_prompt(MANIFEST["conversation"], "default", special_tokens=eos) == DEFAULT_PLAIN
    # LLaMA-Factory's user turn already opens the answer: there is no separate generation prompt.
    assert render_prompt(MANIFEST["conversation"], "default", special_tokens=eos, add_generation_prompt=False) == (
        DEFAULT_PLAIN
    )
    assert render_prompt(MANIFEST["conversation"][1:], "default", special_tokens=eos) == DEFAULT_PLAIN.split("\n", 1)[1]
    # Without an end-of-sequence token (no tokenizer), turns just end.
    assert render_prompt(MANIFEST["conversation"], "default") == DEFAULT_PLAIN.replace("</s>", "")


def test_default_template_tools():
    for variant in _tool_variants(MANIFEST["tool_conversation_dict_args"]):
        rendered = render_prompt(variant, "default", tools=MANIFEST["tools"], special_tokens={"eos_token": "</s>"})
        assert rendered == DEFAULT_TOOLS
    two_calls = [
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "", "tool_calls": [_call(1), _call(2, "search", {"query": "x"})]},
    ]
    assert render_prompt(two_calls, "default", add_generation_prompt=False) == (
        "Human: Q\nAssistant:"
        'Action: get_current_temperature\nAction Input: {"location": "Paris, France", "unit": "celsius"}\n'
        'Action: search\nAction Input: {"query": "x"}\n'
    )


# --- Registry behaviour. ---------------------------------------------------------------------------------------


def test_empty_template():
    assert render_prompt(MANIFEST["conversation"], "empty") == "".join(m["content"] for m in MANIFEST["conversation"])


def test_unknown_template_name_is_one_line_with_close_names_and_where_the_list_is():
    with pytest.raises(ConfigError) as info:
        resolve_template("no-such-template-xyz")
    assert str(info.value) == "Unknown template 'no-such-template-xyz'. Every template name: lmchat --help-config."
    with pytest.raises(ConfigError) as info:
        resolve_template("qwen3_nothnk")
    assert str(info.value) == (
        "Unknown template 'qwen3_nothnk'; did you mean 'qwen3_nothink'? Every template name: lmchat --help-config."
    )


def test_unknown_template_file():
    with pytest.raises(ConfigError, match="not found"):
        resolve_template(str(ORACLES / "chat_templates" / "missing.jinja"))


def test_template_from_jinja_path(tmp_path):
    path = tmp_path / "mine.jinja"
    path.write_text("{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}", encoding="utf-8")
    assert resolve_template(str(path)).name == "mine"
    assert render_prompt([{"role": "user", "content": "hi"}], str(path)) == "[user]hi"


def test_aliases_resolve_to_their_template():
    for alias, name in {"qwen2.5": "qwen", "llama3.3": "llama3.1"}.items():
        assert resolve_template(alias) == resolve_template(name)


@pytest.mark.parametrize("name", template_names())
def test_template_specs(name):
    template = resolve_template(name)
    assert template.source
    parsers = {None, "hermes", "llama3_json", "pythonic", "mistral", "glm4", "glm45", "deepseek_v3", "default",
               "lfm2", "minimax", "minimax_m2", "qwen3_coder", "seed_oss"}  # the last five: LLaMA-Factory formats
    assert template.tool_parser in parsers
    # LLaMA-Factory's reasoning templates by their thought words: <think>, <seed:think>, harmony's analysis, ◁think▷
    assert template.reasoning_parser in {None, "think", "seed_oss", "gpt_oss", "kimi_vl"}
    for word in template.stop_words:
        assert word


def test_named_special_tokens_are_defaults_the_caller_overrides():
    messages = [{"role": "user", "content": "hi"}]
    assert render_prompt(messages, "llama3").startswith("<|begin_of_text|><|start_header_id|>user")
    overridden = render_prompt(messages, "llama3", special_tokens={"bos_token": "<BOS>"})
    assert overridden.startswith("<BOS><|start_header_id|>")
    assert resolve_template("qwen3").reasoning_parser == "think"
    assert resolve_template("qwen3").stop_words[0] == "<|im_end|>"
