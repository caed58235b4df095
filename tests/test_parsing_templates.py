"""Parsers chosen from the model's own chat template, and the template options that steer reasoning
(``enable_thinking``, ``reasoning_effort``), through ChatModel and through the server with the official client.

Detection is checked on the real templates in ``../shared/oracles/chat_templates`` and, for families whose
template is not there, on the lines of their official template that carry the markers (source named)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ORACLES
from test_server_support import ThreadServer, engine_log, write_script

from lmchat import ChatModel
from lmchat.errors import InvalidRequestError
from lmchat.parsing import get_reasoning_parser, reasoning_opens_in
from lmchat.templates.detect import detect_reasoning_parser, detect_tool_parser

TEMPLATES = ORACLES / "chat_templates"
SHARED_TEMPLATES = {  # file -> (tool parser, reasoning parser)
    "qwen3.jinja": ("hermes", "think"),
    "qwen2.5-instruct.jinja": ("hermes", None),
    "hermes-3-llama-3.1-tool_use.jinja": ("hermes", None),
    "deepseek-r1-distill-qwen.jinja": ("deepseek_v3", "think"),
    "llama-3.1-instruct.jinja": ("llama3_json", None),
    "mistral-nemo-instruct-2407.jinja": ("mistral", None),
    "vllm_examples/tool_chat_template_qwen3coder.jinja": ("qwen3_coder", None),
    "vllm_examples/tool_chat_template_glm4.jinja": ("glm45", None),
    "vllm_examples/tool_chat_template_granite.jinja": ("granite", None),
    "vllm_examples/tool_chat_template_granite_20b_fc.jinja": ("granite_20b_fc", None),
    "vllm_examples/tool_chat_template_hunyuan_a13b.jinja": ("hunyuan_a13b", "hunyuan_a13b"),
    "vllm_examples/tool_chat_template_internlm2_tool.jinja": ("internlm", None),
    "vllm_examples/tool_chat_template_phi4_mini.jinja": ("phi4_mini_json", None),
    "vllm_examples/tool_chat_template_xlam_llama.jinja": ("xlam", None),
    "vllm_examples/tool_chat_template_xlam_qwen.jinja": ("xlam", None),
    "vllm_examples/tool_chat_template_llama4_pythonic.jinja": ("pythonic", None),
    "vllm_examples/tool_chat_template_deepseekv31.jinja": ("deepseek_v3", "think"),
    "vllm_examples/tool_chat_template_hermes.jinja": ("hermes", None),
    "chatml.jinja": (None, None),
    "gemma-2-it.jinja": (None, None),
}
EXCERPTS = {  # family -> (lines of its official template that carry the markers, tool parser, reasoning parser)
    # llama.cpp models/templates/moonshotai-Kimi-K2-Thinking.jinja
    "kimi-k2-thinking": ("<|tool_calls_section_begin|>{%- for tool_call in message['tool_calls'] -%}<|tool_call_begin|>"
                         "{{ formatted_id }}<|tool_call_argument_begin|>... <think>{{rc}}</think>", "kimi_k2", "think"),
    # llama.cpp models/templates/unsloth-MiniMax-M2.jinja
    "minimax-m2": ("{%- set toolcall_begin_token = '<minimax:tool_call>' -%} ... {{- '<think>' ~ '\\n' ~ "
                   "reasoning_content ~ '\\n' ~ '</think>' ~ '\\n\\n' }}", "minimax_m2", "think"),
    # llama.cpp models/templates/ByteDance-Seed-OSS.jinja
    "seed-oss": ("{%- set toolcall_begin_token = '<seed:tool_call>' -%}{%- set think_begin_token = '<seed:think>' -%}",
                 "seed_oss", "seed_oss"),
    # the gpt-oss template (openai/gpt-oss-20b chat_template.jinja)
    "gpt-oss": ("{{- '<|start|>assistant<|channel|>analysis<|message|>' + message.thinking + '<|end|>' }} "
                "Reasoning: {{ reasoning_effort }}", "openai", "gpt_oss"),
    # llama.cpp models/templates/llama-cpp-lfm2.jinja
    "lfm2": ("List of tools: <|tool_list_start|>[...]<|tool_list_end|> <|tool_call_start|>", "lfm2", None),
    # allenai/Olmo-3-7B-Instruct chat_template.jinja
    "olmo3": ("<functions>...</functions> ... <function_calls>{{ call }}</function_calls>", "olmo3", None),
    # meetkai/functionary-medium-v3.2 and -v3.1 chat templates
    "functionary-v3.2": ("{{ '>>>all\\n' + message['content'] }}", "functionary_v3_2", None),
    "functionary-v3.1": ("<function=example_function_name>{\"example_name\": \"example_value\"}</function> "
                         "<|python_tag|>", "functionary_v3_1", None),
    # stepfun-ai/step3 chat_template.jinja
    "step3": ("<｜tool_calls_begin｜><｜tool_call_begin｜>function<｜tool_sep｜><steptml:invoke name=", "step3", None),
    # meituan-longcat/LongCat-Flash-Chat chat_template.jinja
    "longcat": ("<longcat_tool_call>{\"name\": <function-name>, \"arguments\": <args-dict>}</longcat_tool_call>",
                "longcat", None),
    # llama.cpp models/templates/GigaChat3-10B-A1.8B.jinja
    "gigachat3": ("{{ '<|message_sep|>\\n\\nfunction call<|role_sep|>\\n' }}", "gigachat3", None),
    # ibm-granite/granite-3.3-8b-instruct chat_template.jinja (thinking)
    "granite-3.3": ("<|start_of_role|>system<|end_of_role|> Write your thoughts between <think></think> and write "
                    "your response between <response></response> <|tool_call|>", "granite", "granite"),
}


@pytest.mark.parametrize("name", sorted(SHARED_TEMPLATES))
def test_detection_on_real_templates(name: str) -> None:
    source = (TEMPLATES / name).read_text(encoding="utf-8")
    assert (detect_tool_parser(source), detect_reasoning_parser(source)) == SHARED_TEMPLATES[name]


@pytest.mark.parametrize("family", sorted(EXCERPTS))
def test_detection_on_official_template_markers(family: str) -> None:
    source, tool, reasoning = EXCERPTS[family]
    assert (detect_tool_parser(source), detect_reasoning_parser(source)) == (tool, reasoning)


@pytest.mark.parametrize(("parser", "prompt", "opens"), [
    ("think", "<|im_start|>assistant\n<think>\n", True),  # DeepSeek-R1, Qwen3 thinking
    ("think", "<|im_start|>assistant\n<think>\n\n</think>\n\n", False),  # Qwen3 with enable_thinking=False
    ("think", "]~b]ai\n<think>\n", True),  # MiniMax-M2's generation prompt
    ("seed_oss", "<seed:bos>assistant\n<seed:think><seed:cot_budget_reflect>", True),  # thinking_budget=0
    ("seed_oss", "<seed:bos>assistant\n", False),
    ("gpt_oss", "<|start|>assistant", False),  # the first header says the channel
    (None, "<think>", False),
])
def test_reasoning_opened_by_the_prompt(parser: str | None, prompt: str, opens: bool) -> None:
    assert reasoning_opens_in(parser, prompt) is opens
    if parser:
        assert get_reasoning_parser(parser).opens_in(prompt) is opens


# --- through ChatModel ------------------------------------------------------------------------------------
HARMONY_TEMPLATE = (  # a small template in gpt-oss's shape (the real one is long); it reads reasoning_effort
    # and, as the real one, lists the tools (in a developer turn)
    "{%- if tools -%}<|start|>developer<|message|># Tools\n{{ tools | tojson }}<|end|>{%- endif -%}"
    "{%- for m in messages -%}{%- if m.role == 'assistant' -%}<|start|>assistant<|channel|>final<|message|>"
    "{{ m.content }}<|end|>{%- else -%}<|start|>{{ m.role }}<|message|>{{ m.content }}<|end|>{%- endif -%}"
    "{%- endfor -%}<|start|>system<|message|>Reasoning: {{ reasoning_effort | default('medium') }}<|end|>"
    "<|start|>assistant"
)
HARMONY_ANSWER = ("<|channel|>analysis<|message|>Weather needs a tool.<|end|><|start|>assistant<|channel|>commentary "
                  'to=functions.weather <|constrain|>json<|message|>{"city":"Paris"}<|call|>')
TOOLS = [{"type": "function", "function": {"name": "weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}]
ASK = [{"role": "user", "content": "Weather in Paris?"}]


def _model(fake_script, template: str, reply: str) -> ChatModel:
    return ChatModel({"infer_backend": "fake", "model_name_or_path": fake_script(replies=[reply]), "template": template})


def test_harmony_answer_through_the_facade_with_reasoning_effort(fake_script) -> None:
    with _model(fake_script, HARMONY_TEMPLATE, HARMONY_ANSWER) as model:
        prepared = model.prepare(ASK, tools=TOOLS, reasoning_effort="low")
        assert "Reasoning: low" in prepared.prompt and "Reasoning: medium" in model.prepare(ASK).prompt
        assert (prepared.parsing.tool_parser, prepared.parsing.reasoning_parser) == ("openai", "gpt_oss")
        [response] = model.chat(ASK, tools=TOOLS, reasoning_effort="high")
        chunks = list(model.stream_chunks(prepared))
        with pytest.raises(InvalidRequestError, match="reasoning_effort must be one of"):
            model.prepare(ASK, reasoning_effort="extreme")
    assert response.response_text == HARMONY_ANSWER and response.finish_reason == "tool_calls"
    assert (response.content, response.reasoning_text) == (None, "Weather needs a tool.")
    assert [(call.name, call.arguments) for call in response.tool_calls] == [("weather", '{"city": "Paris"}')]
    assert "".join(chunk.reasoning for chunk in chunks) == "Weather needs a tool."
    assert not any(chunk.content for chunk in chunks)


MINIMAX_TEMPLATE = (  # MiniMax-M2's markers and generation prompt (llama.cpp models/templates/unsloth-MiniMax-M2.jinja)
    "{%- for m in messages -%}]~b]{{ m.role }}\n{{ m.content }}[e~[\n{%- endfor -%}"
    "{%- if tools -%}Call tools as <minimax:tool_call><invoke name=...>...</invoke></minimax:tool_call>{%- endif -%}"
    "]~b]ai\n<think>\n"
)


def test_prompt_opened_reasoning_and_a_call_without_its_closing_tag(fake_script) -> None:
    """The generation prompt opens <think>; a model that calls a tool straight from its thoughts still calls it."""
    answers = {
        "closed": 'The user wants weather.\n</think>\n\nChecking.<minimax:tool_call><invoke name="weather">'
                  '<parameter name="city">Paris</parameter></invoke></minimax:tool_call>',
        "unclosed": 'The user wants weather.<minimax:tool_call><invoke name="weather"><parameter name="city">Paris'
                    "</parameter></invoke></minimax:tool_call>",
    }
    for kind, answer in answers.items():
        with _model(fake_script, MINIMAX_TEMPLATE, answer) as model:
            prepared = model.prepare(ASK, tools=TOOLS)
            assert prepared.parsing.starts_in_reasoning and prepared.parsing.tool_parser == "minimax_m2"
            [response] = model.chat(ASK, tools=TOOLS)
        assert response.reasoning_text == "The user wants weather.", kind
        assert [(call.name, json.loads(call.arguments)) for call in response.tool_calls] == [("weather",
                                                                                              {"city": "Paris"})]
        assert response.content == ("Checking." if kind == "closed" else None)


# --- through the server, with the official openai client ----------------------------------------------------
@pytest.fixture(scope="module")
def harmony_server(tmp_path_factory):
    script = write_script(tmp_path_factory.mktemp("harmony"), name="fake-model", replies=[HARMONY_ANSWER])
    with ThreadServer({"infer_backend": "fake", "model_name_or_path": script, "template": HARMONY_TEMPLATE}) as live:
        live.script = script
        yield live


def test_openai_client_reasoning_effort_and_harmony_calls(harmony_server) -> None:
    client = harmony_server.openai()
    completion = client.chat.completions.create(model="fake-model", messages=ASK, tools=TOOLS, reasoning_effort="low")
    assert "Reasoning: low" in engine_log(harmony_server.script)[-2]["prompt"]
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "tool_calls" and message.content is None
    assert message.model_extra["reasoning_content"] == "Weather needs a tool."
    [call] = message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == ("weather", {"city": "Paris"})
    stream = client.chat.completions.create(model="fake-model", messages=ASK, tools=TOOLS, stream=True)
    deltas = [chunk.choices[0].delta for chunk in stream if chunk.choices]
    pieces = [piece for delta in deltas for piece in (delta.tool_calls or [])]
    assert pieces[0].function.name == "weather" and pieces[0].id
    assert json.loads("".join(piece.function.arguments or "" for piece in pieces)) == {"city": "Paris"}
    assert "".join(delta.model_extra.get("reasoning_content") or "" for delta in deltas) == "Weather needs a tool."


def test_templates_directory_is_there() -> None:
    assert Path(TEMPLATES, "qwen3.jinja").is_file(), f"shared templates missing under {TEMPLATES}"


KIMI_TOKENS = ("<|tool_calls_section_begin|>", "<|tool_calls_section_end|>", "<|tool_call_begin|>",
               "<|tool_call_argument_begin|>", "<|tool_call_end|>")
HARMONY = "<|start|>{{ m.role }}<|channel|>final<|message|>{{ m.content }}<|end|>"


@pytest.mark.parametrize(("source", "tools", "kept"), [
    ("{{ '<|tool_calls_section_begin|>' }}", [{"type": "function"}], KIMI_TOKENS),
    ("{{ '<|tool_calls_section_begin|>' }}", None, ()),  # no tools: no tool parser, nothing kept
    (HARMONY, None, ("<|start|>", "<|channel|>", "<|message|>", "<|constrain|>", "<|end|>", "<|call|>",
                     "<|return|>")),  # gpt-oss's reasoning channels are special tokens too
    ("{{ '<tool_call>' }}</think>", [{"type": "function"}], ("<tool_call>", "</tool_call>")),
    ("{{ '<longcat_tool_call>' }}", [{"type": "function"}], ()),  # plain text in LongCat's tokenizer
])
def test_the_plan_keeps_the_special_tokens_its_parsers_read(source, tools, kept, caplog) -> None:
    from lmchat.chat.output import plan_parsing
    from lmchat.templates.registry import ChatTemplate

    template = ChatTemplate(name="own", source=source)
    assert plan_parsing(template, None, tools, "").keep_special_tokens == kept
    assert plan_parsing(template, None, tools, "", skip_special_tokens=False).keep_special_tokens == ()  # all kept
    with caplog.at_level("WARNING", logger="lmchat.chat"):
        assert plan_parsing(template, None, tools, "", skip_special_tokens=True).keep_special_tokens == ()
    assert ("skip_special_tokens is set to true" in caplog.text) == bool(kept)
