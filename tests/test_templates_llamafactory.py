"""Every template name LLaMA-Factory registers resolves and renders what LLaMA-Factory renders.

LLAMAFACTORY_NAMES is our copy of the names its ``data/template.py`` registers (0.9.3 to 0.9.5 and the main branch,
renamed and removed names included). The expected strings below were written from its ``register_template`` slots
(and ``tool_utils.py`` for the tool prompts) at the commit named in ``llamafactory_expected.json``, and checked
against LLaMA-Factory's own encoder (``Template.encode_oneturn``) rendering the same conversations; its published
test strings are asserted in test_templates_named.py.
"""

from __future__ import annotations

import pytest

from lmchat import ChatModel
from lmchat.config import ModelConfig
from lmchat.errors import ConfigError, TemplateError
from lmchat.templates.registry import resolve_template, template_names, template_spec
from lmchat.templates.render import render_prompt

LLAMAFACTORY_NAMES = """
    aeva alpaca aquila atom baichuan baichuan2 bailing bailing_v2 belle bluelm breeze chatglm2 chatglm3 chatml chatml_de
    codegeex2 codegeex4 cohere cpm cpm3 cpm4 dbrx deepseek deepseek3 deepseekcoder deepseekr1 default dots_ocr empty
    ernie ernie_nothink ernie_vl exaone falcon falcon_h1 fewshot gemma gemma2 gemma3 gemma3n gemma4 gemma4n glm4 glm4_5v
    glm4_7 glm4_moe glm4v glm_ocr glmz1 gpt_oss granite3 granite3_vision granite4 hunyuan hunyuan_small hy3
    hy_dense_1_8b hy_dense_7b index intern intern2 intern_s1 intern_vl keye_vl kimi_vl lfm2 lfm2_vl llama2 llama2_zh
    llama3 llama4 llava llava_next llava_next_llama3 llava_next_mistral llava_next_qwen llava_next_video
    llava_next_video_mistral llava_next_video_yi llava_next_yi marco mimo mimo_v2 mimo_vl minicpm_o minicpm_v
    minicpm_v_4_6 minimax1 minimax2 ministral ministral3 mistral mistral_small mllama moonlight moss_vl olmo openchat
    openchat-3.6 opencoder orion paligemma paligemma_chat phi phi4 phi4_mini phi_small pixtral qwen qwen2_audio
    qwen2_omni qwen2_vl qwen3 qwen3_5 qwen3_5_nothink qwen3_6 qwen3_nothink qwen3_omni qwen3_omni_nothink qwen3_vl
    qwen3_vl_nothink sailor seed_coder seed_oss skywork_o1 smollm smollm2 solar starchat telechat telechat2 vicuna
    video_llava xuanyuan xverse yayi yi yi_vl youtu youtu_vl yuan zephyr ziya
""".split()
TOKENS = {"bos_token": "<s>", "eos_token": "</s>"}
CHAT = [{"role": "system", "content": "S"}, {"role": "user", "content": "How are you"},
        {"role": "assistant", "content": "I am fine!"}, {"role": "user", "content": "你好"}]
IM = "<|im_start|>{role}\n{text}<|im_end|>\n"


def test_every_llamafactory_name_is_registered():
    assert len(LLAMAFACTORY_NAMES) == 143
    assert set(LLAMAFACTORY_NAMES) <= set(template_names())


@pytest.mark.parametrize("name", LLAMAFACTORY_NAMES)
def test_every_llamafactory_name_renders_a_conversation(name):
    prompt = render_prompt(CHAT, name, special_tokens=TOKENS)
    assert all(text in prompt for text in ("How are you", "I am fine!", "你好"))
    spec = template_spec(name)
    # LLaMA-Factory's slots, except where lmchat's Jinja file renders the very same text (tools too)
    assert spec.slots is not None or name in ("default", "qwen")


EXPECTED = {
    # the names, as LLaMA-Factory renders CHAT
    "yi": IM.format(role="system", text="S") + IM.format(role="user", text="How are you")
          + "<|im_start|>assistant\nI am fine!<|im_end|>\n" + IM.format(role="user", text="你好")
          + "<|im_start|>assistant\n",
    "qwen2_vl": IM.format(role="system", text="S") + IM.format(role="user", text="How are you")
                + "<|im_start|>assistant\nI am fine!<|im_end|>\n" + IM.format(role="user", text="你好")
                + "<|im_start|>assistant\n",
    "chatglm3": "[gMASK]sop<|system|>\nS<|user|>\nHow are you<|assistant|>\nI am fine!<|user|>\n你好<|assistant|>",
    "cohere": "<s><|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>S<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|USER_TOKEN|>"
              "How are you<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>I am fine!</s>"
              "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>你好<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>",
    "deepseek": "<s>S\n\nUser: How are you\n\nAssistant:I am fine!</s>User: 你好\n\nAssistant:",
    "gemma3": "<s><start_of_turn>user\nS\n\nHow are you<end_of_turn>\n<start_of_turn>model\nI am fine!<end_of_turn>\n"
              "<start_of_turn>user\n你好<end_of_turn>\n<start_of_turn>model\n",
    "baichuan2": "S<reserved_106>How are you<reserved_107>I am fine!<reserved_106>你好<reserved_107>",
    "llava": "SUSER: How are you ASSISTANT:I am fine!</s>USER: 你好 ASSISTANT:",
    "llama4": "<s><|header_start|>system<|header_end|>\n\nS<|eot|><|header_start|>user<|header_end|>\n\nHow are you<|eot|>"
              "<|header_start|>assistant<|header_end|>\n\nI am fine!<|eot|><|header_start|>user<|header_end|>\n\n你好"
              "<|eot|><|header_start|>assistant<|header_end|>\n\n",
    "llama2": "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nHow are you [/INST]I am fine!</s><s>[INST] 你好 [/INST]",
    "mistral": "<s>[INST] S\n\nHow are you[/INST] I am fine!</s>[INST] 你好[/INST]",
    "phi": "<|system|>\nS<|end|>\n<|user|>\nHow are you<|end|>\n<|assistant|>\nI am fine!<|end|>\n<|user|>\n你好<|end|>\n"
           "<|assistant|>\n",
    "alpaca": "S### Instruction:\nHow are you\n\n### Response:\nI am fine!</s>\n\n### Instruction:\n你好\n\n### Response:\n",
}


@pytest.mark.parametrize("name", EXPECTED)
def test_llamafactory_templates_render_what_its_encoder_renders(name):
    assert render_prompt(CHAT, name, special_tokens=TOKENS) == EXPECTED[name]


def test_default_system_prompts_and_the_turn_number():
    no_system = CHAT[1:2]
    assert render_prompt(no_system, "qwen2_vl") == (IM.format(role="system", text="You are a helpful assistant.")
                                                    + IM.format(role="user", text="How are you")
                                                    + "<|im_start|>assistant\n")
    assert render_prompt(no_system, "intern2", special_tokens=TOKENS).startswith(
        "<s><|im_start|>system\nYou are an AI assistant whose name is InternLM (书生·浦语).")
    assert render_prompt(no_system, "vicuna") == (
        "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the user's questions.USER: How are you ASSISTANT:"
    )
    assert render_prompt(CHAT, "chatglm2") == "[gMASK]sopS[Round 0]\n\n问：How are you\n\n答：I am fine![Round 1]\n\n问：你好\n\n答："


THOUGHTS = [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "<think>\nhmm\n</think>\n\nA1"},
            {"role": "user", "content": "Q2"}]


def test_reasoning_templates_drop_earlier_thoughts_and_think_unless_told_not_to():
    history = IM.format(role="user", text="Q1") + "<|im_start|>assistant\nA1<|im_end|>\n" + IM.format(role="user",
                                                                                                       text="Q2")
    assert render_prompt(THOUGHTS, "qwen3") == history + "<|im_start|>assistant\n"
    assert render_prompt(THOUGHTS, "qwen3", enable_thinking=False) == (
        history + "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    kept = resolve_template("qwen3", preserve_thinking=True)
    assert "<think>\nhmm\n</think>\n\nA1<|im_end|>" in render_prompt(THOUGHTS, kept)
    # the reasoning may come as reasoning_content (OpenAI clients); kept only with preserve_thinking
    separate = [THOUGHTS[0], {"role": "assistant", "content": "A1", "reasoning_content": "hmm"}, THOUGHTS[2]]
    assert render_prompt(separate, "qwen3") == history + "<|im_start|>assistant\n"
    assert render_prompt(separate, kept) == render_prompt(THOUGHTS, kept)
    # a non-thinking variant never adds thoughts; GLM-4.7's empty thought is its closing word only
    assert render_prompt(THOUGHTS, "qwen3_nothink", enable_thinking=False).endswith("<|im_start|>assistant\n")
    assert render_prompt(THOUGHTS[:1], "glm4_7", enable_thinking=False).endswith("<|assistant|></think>")
    assert resolve_template("qwen3").reasoning_parser == "think" and resolve_template("yi").reasoning_parser is None


def test_a_final_answer_gets_an_empty_thought_as_in_llamafactory():
    answered = [*THOUGHTS[:1], {"role": "assistant", "content": "A1"}]
    assert render_prompt(answered, "deepseekr1", special_tokens=TOKENS) == (
        "<s><｜User｜>Q1<｜Assistant｜><think>\n\n</think>\n\nA1</s>"
    )


TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "The city"}},
                   "required": ["city"]},
}}]
TOOL_TURNS = [
    {"role": "user", "content": "Weather?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "content": '{"t": 21}'},
]
QWEN_TOOL_PROMPT = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function "
    "signatures within <tools></tools> XML tags:\n<tools>\n" + '{"type": "function", "function": {"name": '
    '"get_weather", "description": "Weather of a city", "parameters": {"type": "object", "properties": {"city": '
    '{"type": "string", "description": "The city"}}, "required": ["city"]}}}' + "\n</tools>\n\nFor each function "
    "call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n"
    '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)


def test_tool_prompts_calls_and_results_in_the_templates_format():
    assert render_prompt(TOOL_TURNS, "qwen2_vl", tools=TOOLS) == (
        "<|im_start|>system\nYou are a helpful assistant." + QWEN_TOOL_PROMPT + "<|im_end|>\n"
        + IM.format(role="user", text="Weather?")
        + '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
        + "<|im_end|>\n<|im_start|>user\n<tool_response>\n{\"t\": 21}\n</tool_response><|im_end|>\n"
        + "<|im_start|>assistant\n"
    )
    assert resolve_template("qwen2_vl").tool_parser == "hermes"
    assert render_prompt(TOOL_TURNS, "yi", tools=TOOLS).startswith(
        "<|im_start|>system\nYou have access to the following tools:\n> Tool Name: get_weather\n"
        "Tool Description: Weather of a city\nTool Args:\n  - city (string, required): The city\n\n"
    )
    assert 'Action: get_weather\nAction Input: {"city": "Paris"}<|im_end|>' in render_prompt(TOOL_TURNS, "yi",
                                                                                          tools=TOOLS)


def test_tool_format_switches_the_tool_prompt_and_the_parser():
    template = resolve_template("yi", tool_format="qwen")
    rendered = render_prompt(TOOL_TURNS, template, tools=TOOLS)
    assert rendered.startswith("<|im_start|>system\n" + QWEN_TOOL_PROMPT)
    # LLaMA-Factory then writes calls with the plain assistant slot ("{content}" plus the end-of-sequence token);
    # yi has no observation slot, so results are user turns
    assert '{"city": "Paris"}}\n</tool_call></s><|im_start|>user\n{"t": 21}<|im_end|>' in render_prompt(
        TOOL_TURNS, template, tools=TOOLS, special_tokens=TOKENS)
    assert ModelConfig.from_dict({"template": "yi", "tool_format": "qwen"}).tool_parser == "hermes"
    assert ModelConfig.from_dict({"tool_format": "glm4_moe", "tool_parser": "hermes"}).tool_parser == "hermes"
    with pytest.raises(ConfigError, match="tool_format 'gemma4' .* is not available in lmchat yet"):
        ModelConfig.from_dict({"tool_format": "gemma4"})
    with pytest.raises(TemplateError, match="cannot write the 'gemma4' tool format"):
        render_prompt(TOOL_TURNS, "gemma4", tools=TOOLS)


def test_one_system_message_at_the_start_only():
    with pytest.raises(TemplateError, match="one system message, at the start"):
        render_prompt([*CHAT, {"role": "system", "content": "late"}], "yi")


def test_named_templates_resolve_in_a_chat_model_and_stop_on_their_words(tiny_model_dir):
    with ChatModel({"model_name_or_path": str(tiny_model_dir), "template": "qwen3_nothink", "do_sample": False,
                    "max_new_tokens": 2}) as model:
        prepared = model.prepare([{"role": "user", "content": "Hi"}])
        im_end = model.engine.tokenize("<|im_end|>")
        [response] = model.chat([{"role": "user", "content": "Hi"}])
    assert model.template.name == "qwen3_nothink" and model.template.stop_words == ("<|im_end|>",)
    assert len(im_end) == 1 and im_end[0] in prepared.params.stop_token_ids
    assert prepared.prompt == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert response.prompt_length == len(prepared.prompt_token_ids)


@pytest.mark.parametrize(("name", "expected"), [
    ("qwen2_vl", "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What?"
                 "<|vision_start|><|video_pad|><|vision_end|><audio><|im_end|>\n"),
    ("qwen2_audio", "<|im_start|>user\n<image>What?<video><|audio_bos|><|AUDIO|><|audio_eos|><|im_end|>\n"),
    ("chatml", "<|im_start|>user\n<image>What?<video><audio><|im_end|>\n"),
])
def test_media_parts_render_as_the_templates_mm_plugin_writes_them(name, expected):
    """A media placeholder part (what the facade leaves of an image) renders as the template's mm_plugin text,
    LLaMA-Factory's <image>/<video>/<audio> where the template has none."""
    content = [{"type": "image"}, {"type": "text", "text": "What?"}, {"type": "video"}, {"type": "audio"}]
    prompt = render_prompt([{"role": "user", "content": content}], name)
    assert expected in prompt


def test_a_part_a_slot_template_cannot_render_is_named():
    with pytest.raises(TemplateError, match="not input_file"):
        render_prompt([{"role": "user", "content": [{"type": "input_file", "file": "x"}]}], "qwen2_vl")
