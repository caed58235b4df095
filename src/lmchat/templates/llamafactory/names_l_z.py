"""LLaMA-Factory's template names llava to zephyr, as its ``register_template`` calls define them (the other names
are in names_a_k.py). Together: every name of LLaMA-Factory 0.9.3 to 0.9.5 and its main branch, renamed and removed
ones included. Slot markers: see lmchat.templates.slots.
"""

from __future__ import annotations

from lmchat.templates.llamafactory.families import (
    CHATML_ASSISTANT, CHATML_TOOL_RESULT, LLAMA3_TOOL_RESULT, QWEN_TOOL_RESULT, _chatml, _llama3,
)
from lmchat.templates.slots import SlotTemplate

# Qwen2-VL's mm_plugin (also Qwen2.5-VL, Qwen3-VL): each medium as the processor's own unexpanded placeholder
QWEN_VL_MEDIA = (("image", "<|vision_start|><|image_pad|><|vision_end|>"),
                 ("video", "<|vision_start|><|video_pad|><|vision_end|>"))

TEMPLATES: dict[str, SlotTemplate] = {
    "llava": SlotTemplate(
        user="USER: {content} ASSISTANT:",
        default_system=(
            "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
            "helpful, detailed, and polite answers to the user's questions."
        ),
    ),
    "llava_next": SlotTemplate(
        user="USER: {content} ASSISTANT:",
        default_system=(
            "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
            "helpful, detailed, and polite answers to the user's questions."
        ),
    ),
    "llava_next_llama3": _llama3(
        observation=LLAMA3_TOOL_RESULT, function="{content}<|eot_id|>", prefix="{bos}",
        stop_words=("<|eot_id|>", "<|eom_id|>"), tool_format="llama3", replace_eos=True,
    ),
    "llava_next_mistral": SlotTemplate(
        user="[INST] {content}[/INST]", assistant=" {content}{eos}", system="{content}\n\n",
        observation="[TOOL_RESULTS] {\"content\": {content}}[/TOOL_RESULTS]", function="[TOOL_CALLS] {content}{eos}",
        prefix="{bos}", style="fused", tool_format="mistral",
    ),
    "llava_next_qwen": _chatml(
        observation=QWEN_TOOL_RESULT, function=CHATML_ASSISTANT, default_system="You are a helpful assistant.",
        stop_words=("<|im_end|>",), tool_format="qwen", replace_eos=True,
    ),
    "llava_next_video": SlotTemplate(
        user="USER: {content} ASSISTANT:",
        default_system=(
            "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
            "helpful, detailed, and polite answers to the user's questions."
        ),
    ),
    "llava_next_video_mistral": SlotTemplate(
        user="[INST] {content}[/INST]", assistant=" {content}{eos}", system="{content}\n\n",
        observation="[TOOL_RESULTS] {\"content\": {content}}[/TOOL_RESULTS]", function="[TOOL_CALLS] {content}{eos}",
        prefix="{bos}", style="fused", tool_format="mistral",
    ),
    "llava_next_video_yi": _chatml(stop_words=("<|im_end|>",)),
    "llava_next_yi": _chatml(stop_words=("<|im_end|>",)),
    "marco": _chatml(
        observation=CHATML_TOOL_RESULT,
        default_system=(
            "你是一个经过良好训练的AI助手，你的名字是Marco-o1.由阿里国际数字商业集团的AI Business创造.\n## 重要！！！！！\n当你回答问题时，"
            "你的思考应该在<Thought>内完成，<Output>内输出你的结果。\n<Thought>应该尽可能是英文，但是有2个特例，一个是对原文中的引用，"
            "另一个是是数学应该使用markdown格式，<Output>内的输出需要遵循用户输入的语言。\n"
        ),
        stop_words=("<|im_end|>",),
    ),
    "mimo": _chatml(
        observation=QWEN_TOOL_RESULT, function=CHATML_ASSISTANT, default_system="You are a helpful assistant.",
        stop_words=("<|im_end|>",), style="reasoning", tool_format="qwen", replace_eos=True,
    ),
    "mimo_v2": _chatml(
        observation=QWEN_TOOL_RESULT, function=CHATML_ASSISTANT,
        default_system="You are MiMo, a helpful AI assistant engineered by Xiaomi.", stop_words=("<|im_end|>",),
        style="reasoning", thought=("<think>", "</think>"), tool_format="qwen", replace_eos=True,
    ),
    "mimo_vl": _chatml(
        observation=QWEN_TOOL_RESULT, function=CHATML_ASSISTANT,
        default_system="You are MiMo, an AI assistant developed by Xiaomi.", stop_words=("<|im_end|>",),
        style="reasoning", tool_format="qwen", replace_eos=True,
    ),
    "minicpm_o": _chatml(
        default_system="You are a helpful assistant. You can accept audio and text input and output voice and text.",
        stop_words=("<|im_end|>",),
    ),
    "minicpm_v": _chatml(default_system="You are a helpful assistant.", stop_words=("<|im_end|>",)),
    "minicpm_v_4_6": _chatml(default_system="You are a helpful assistant.", stop_words=("<|im_end|>",)),
    "minimax1": SlotTemplate(
        user=(
            "<beginning_of_sentence>user name=user\n{content}<end_of_sentence>\n<beginning_of_sentence>ai "
            "name=assistant\n"
        ),
        assistant="{content}<end_of_sentence>\n",
        system="<beginning_of_sentence>system ai_setting=assistant\n{content}<end_of_sentence>\n",
        observation=(
            "<beginning_of_sentence>tool name=tools\n{content}<end_of_sentence>\n<beginning_of_sentence>ai "
            "name=assistant\n"
        ),
        function="{content}<end_of_sentence>\n", default_system="You are a helpful assistant.",
        stop_words=("<end_of_sentence>",), tool_format="minimax1",
    ),
    "minimax2": SlotTemplate(
        user="]~b]user\n{content}[e~[\n]~b]ai\n", assistant="{content}[e~[\n",
        system="]~!b[]~b]system\n{content}[e~[\n",
        observation="]~b]tool\n<response>{content}</response>[e~[\n]~b]ai\n", function="{content}[e~[\n",
        default_system="You are a helpful assistant. Your name is MiniMax-M2.1 and is built by MiniMax.",
        stop_words=("[e~[",), style="reasoning", tool_format="minimax2",
    ),
    "ministral": SlotTemplate(
        user="[INST]{content}[/INST]", system="{content}\n\n",
        observation="[TOOL_RESULTS]{\"content\": {content}}[/TOOL_RESULTS]", function="[TOOL_CALLS]{content}{eos}",
        prefix="{bos}", style="fused", tool_format="mistral",
    ),
    "ministral3": SlotTemplate(
        user="[INST]{content}[/INST]", system="{content}\n\n",
        observation="[TOOL_RESULTS]{\"content\": {content}}[/TOOL_RESULTS]", function="[TOOL_CALLS]{content}{eos}",
        prefix="{bos}", style="fused", tool_format="mistral",
    ),
    "mistral": SlotTemplate(
        user="[INST] {content}[/INST]", assistant=" {content}{eos}", system="{content}\n\n",
        observation="[TOOL_RESULTS] {\"content\": {content}}[/TOOL_RESULTS]", function="[TOOL_CALLS] {content}{eos}",
        prefix="{bos}", style="fused", tool_format="mistral",
    ),
    "mistral_small": SlotTemplate(
        user="[INST]{content}[/INST]", system="[SYSTEM_PROMPT]{content}[/SYSTEM_PROMPT]",
        observation="[TOOL_RESULTS]{\"content\": {content}}[/TOOL_RESULTS]", function="[TOOL_CALLS]{content}{eos}",
        prefix="{bos}", tool_format="mistral",
    ),
    "mllama": _llama3(
        observation=LLAMA3_TOOL_RESULT, function="{content}<|eot_id|>", prefix="{bos}",
        stop_words=("<|eot_id|>", "<|eom_id|>"), tool_format="llama3", replace_eos=True,
    ),
    "moonlight": SlotTemplate(
        user="<|im_user|>user<|im_middle|>{content}<|im_end|><|im_assistant|>assistant<|im_middle|>",
        assistant="{content}<|im_end|>", system="<|im_system|>system<|im_middle|>{content}<|im_end|>",
        default_system="You are a helpful assistant provided by Moonshot-AI.", stop_words=("<|im_end|>",),
        replace_eos=True,
    ),
    "moss_vl": _chatml(
        observation=QWEN_TOOL_RESULT, function=CHATML_ASSISTANT, stop_words=("<|im_end|>",), style="moss",
        tool_format="qwen", replace_eos=True,
    ),
    "olmo": SlotTemplate(user="<|user|>\n{content}<|assistant|>\n", prefix="{eos}"),
    "openchat": SlotTemplate(user="GPT4 Correct User: {content}{eos}GPT4 Correct Assistant:", prefix="{bos}"),
    "openchat-3.6": SlotTemplate(
        user=(
            "<|start_header_id|>GPT4 Correct User<|end_header_id|>\n\n{content}<|eot_id|><|start_header_id|>GPT4 "
            "Correct Assistant<|end_header_id|>\n\n"
        ),
        prefix="{bos}", stop_words=("<|eot_id|>",),
    ),
    "opencoder": _chatml(
        observation=CHATML_TOOL_RESULT, default_system="You are OpenCoder, created by OpenCoder Team.",
        stop_words=("<|im_end|>",),
    ),
    "orion": SlotTemplate(user="Human: {content}\n\nAssistant: {eos}", prefix="{bos}"),
    "paligemma": SlotTemplate(user="{content}\n", prefix="{bos}", style="fused"),
    "paligemma_chat": SlotTemplate(
        user="<start_of_turn>user\n{content}<end_of_turn>\n<start_of_turn>model\n",
        assistant="{content}<end_of_turn>\n",
        observation="<start_of_turn>tool\n{content}<end_of_turn>\n<start_of_turn>model\n", prefix="{bos}",
        stop_words=("<end_of_turn>",), style="fused", replace_eos=True,
    ),
    "phi": SlotTemplate(
        user="<|user|>\n{content}<|end|>\n<|assistant|>\n", assistant="{content}<|end|>\n",
        system="<|system|>\n{content}<|end|>\n", stop_words=("<|end|>",), replace_eos=True,
    ),
    "phi4": SlotTemplate(
        user="<|im_start|>user<|im_sep|>{content}<|im_end|><|im_start|>assistant<|im_sep|>",
        assistant="{content}<|im_end|>", system="<|im_start|>system<|im_sep|>{content}<|im_end|>",
        stop_words=("<|im_end|>",), replace_eos=True,
    ),
    "phi4_mini": SlotTemplate(
        user="<|user|>{content}<|end|><|assistant|>", assistant="{content}<|end|>",
        system="<|system|>{content}<|end|>", tools_slot="<|tool|>{content}<|/tool|>", stop_words=("<|end|>",),
        replace_eos=True,
    ),
    "phi_small": SlotTemplate(
        user="<|user|>\n{content}<|end|>\n<|assistant|>\n", assistant="{content}<|end|>\n",
        system="<|system|>\n{content}<|end|>\n", stop_words=("<|end|>",), replace_eos=True,
    ),
    "pixtral": SlotTemplate(
        user="[INST]{content}[/INST]", system="{content}\n\n",
        observation="[TOOL_RESULTS]{\"content\": {content}}[/TOOL_RESULTS]", function="[TOOL_CALLS]{content}{eos}",
        prefix="{bos}", style="fused", tool_format="mistral",
    ),
    "qwen": _chatml(
        observation=QWEN_TOOL_RESULT, function=CHATML_ASSISTANT,
        default_system="You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
        stop_words=("<|im_end|>",), tool_format="qwen", replace_eos=True,
    ),
    "qwen2_audio": _chatml(
        default_system="You are a helpful assistant.", stop_words=("<|im_end|>",), replace_eos=True,
        media=(("audio", "<|audio_bos|><|AUDIO|><|audio_eos|>"),),
    ),
    "qwen2_omni": _chatml(
        observation=QWEN_TOOL_RESULT, function=CHATML_ASSISTANT, default_system="You are a helpful assistant.",
        stop_words=("<|im_end|>",), tool_format="qwen", replace_eos=True,
    ),
    "qwen2_vl": _chatml(
        observation=QWEN_TOOL_RESULT, function=CHATML_ASSISTANT, default_system="You are a helpful assistant.",
        stop_words=("<|im_end|>",), tool_format="qwen", replace_eos=True, media=QWEN_VL_MEDIA,
    ),
    "qwen3": _chatml(
        observation=QWEN_TOOL_RESULT, function=CHATML_ASSISTANT, stop_words=("<|im_end|>",), style="reasoning",
        tool_format="qwen", replace_eos=True,
    ),
    "qwen3_5": _chatml(
        observation=QWEN_TOOL_RESULT, function=CHATML_ASSISTANT, stop_words=("<|im_end|>",), style="reasoning",
        tool_format="qwen3_5", replace_eos=True,
    ),
    "qwen3_5_nothink": _chatml(
        observation=QWEN_TOOL_RESULT, function=CHATML_ASSISTANT, stop_words=("<|im_end|>",), tool_format="qwen3_5",
        replace_eos=True,
    ),
    "qwen3_6": _chatml(
        observation=QWEN_TOOL_RESULT, function=CHATML_ASSISTANT, stop_words=("<|im_end|>",), style="reasoning",
        tool_format="qwen3_5", replace_eos=True,
    ),
    "qwen3_nothink": _chatml(
        observation=QWEN_TOOL_RESULT, function=CHATML_ASSISTANT, stop_words=("<|im_end|>",), tool_format="qwen",
        replace_eos=True,
    ),
    "qwen3_omni": _chatml(
        observation=QWEN_TOOL_RESULT, function=CHATML_ASSISTANT, stop_words=("<|im_end|>",), style="reasoning",
        tool_format="qwen", replace_eos=True,
    ),
    "qwen3_omni_nothink": _chatml(
        observation=QWEN_TOOL_RESULT, function=CHATML_ASSISTANT, stop_words=("<|im_end|>",), tool_format="qwen",
        replace_eos=True,
    ),
    "qwen3_vl": _chatml(
        observation=QWEN_TOOL_RESULT, function=CHATML_ASSISTANT, stop_words=("<|im_end|>",), style="reasoning",
        tool_format="qwen", replace_eos=True, media=QWEN_VL_MEDIA,
    ),
    "qwen3_vl_nothink": _chatml(
        observation=QWEN_TOOL_RESULT, function=CHATML_ASSISTANT, stop_words=("<|im_end|>",), tool_format="qwen",
        replace_eos=True, media=QWEN_VL_MEDIA,
    ),
    "sailor": SlotTemplate(
        user="<|im_start|>question\n{content}<|im_end|>\n<|im_start|>answer\n", assistant=CHATML_ASSISTANT,
        system="<|im_start|>system\n{content}<|im_end|>\n",
        default_system=(
            "You are an AI assistant named Sailor created by Sea AI Lab. Your answer should be friendly, "
            "unbiased, faithful, informative and detailed."
        ),
        stop_words=("<|im_end|>",),
    ),
    "seed_coder": SlotTemplate(
        user="{bos}user\n{content}{eos}{bos}assistant\n", system="{bos}system\n{content}{eos}",
        default_system=(
            "You are an AI programming assistant, utilizing the Seed-Coder model, developed by ByteDance "
            "Seed, and you only answer questions related to computer science. For politically sensitive "
            "questions, security and privacy issues, and other non-computer science questions, you will "
            "refuse to answer.\n\n"
        ),
    ),
    "seed_oss": SlotTemplate(
        user="{bos}user\n{content}{eos}{bos}assistant\n", system="{bos}system\n{content}{eos}",
        function="{bos}\n{content}{eos}", style="reasoning", thought=("<seed:think>", "</seed:think>"),
        tool_format="seed_oss",
    ),
    "skywork_o1": _llama3(
        observation=LLAMA3_TOOL_RESULT, function="{content}<|eot_id|>", prefix="{bos}",
        default_system=(
            "You are Skywork-o1, a thinking model developed by Skywork AI, specializing in solving "
            "complex problems involving mathematics, coding, and logical reasoning through deep thought. "
            "When faced with a user's request, you first engage in a lengthy and in-depth thinking "
            "process to explore possible solutions to the problem. After completing your thoughts, you "
            "then provide a detailed explanation of the solution process in your response."
        ),
        stop_words=("<|eot_id|>", "<|eom_id|>"), tool_format="llama3",
    ),
    "smollm": _chatml(stop_words=("<|im_end|>",)),
    "smollm2": _chatml(
        default_system="You are a helpful AI assistant named SmolLM, trained by Hugging Face.",
        stop_words=("<|im_end|>",),
    ),
    "solar": SlotTemplate(
        user="### User:\n{content}\n\n### Assistant:\n", system="### System:\n{content}\n\n", efficient_eos=True,
    ),
    "starchat": SlotTemplate(
        user="<|user|>\n{content}<|end|>\n<|assistant|>", assistant="{content}<|end|>\n",
        system="<|system|>\n{content}<|end|>\n", stop_words=("<|end|>",),
    ),
    "telechat": SlotTemplate(user="<_user>{content}<_bot>", system="<_system>{content}<_end>"),
    "telechat2": SlotTemplate(
        user="<_user>{content}<_bot>", system="<_system>{content}",
        default_system="你是中国电信星辰语义大模型，英文名是TeleChat，你是由中电信人工智能科技有限公司和中国电信人工智能研究院（TeleAI）研发的人工智能助手。",
    ),
    "vicuna": SlotTemplate(
        user="USER: {content} ASSISTANT:",
        default_system=(
            "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
            "helpful, detailed, and polite answers to the user's questions."
        ),
    ),
    "video_llava": SlotTemplate(
        user="USER: {content} ASSISTANT:",
        default_system=(
            "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
            "helpful, detailed, and polite answers to the user's questions."
        ),
    ),
    "xuanyuan": SlotTemplate(
        user="Human: {content} Assistant:",
        default_system=(
            "以下是用户和人工智能助手之间的对话。用户以Human开头，人工智能助手以Assistant开头，会对人类提出的问题给出有帮助、高质量、详细和礼貌的回答，并且总是拒绝参与与不道德、"
            "不安全、有争议、政治敏感等相关的话题、问题和指示。\n"
        ),
    ),
    "xverse": SlotTemplate(user="Human: {content}\n\nAssistant: "),
    "yayi": SlotTemplate(
        user="<|Human|>:\n{content}\n\n<|YaYi|>:", assistant="{content}\n\n", system="<|System|>:\n{content}\n\n",
        default_system=(
            "You are a helpful, respectful and honest assistant named YaYi developed by Beijing Wenge "
            "Technology Co.,Ltd. Always answer as helpfully as possible, while being safe.  Your answers "
            "should not include any harmful, unethical, racist, sexist, toxic, dangerous, or illegal "
            "content. Please ensure that your responses are socially unbiased and positive in nature.\n\n"
            "If a question does not make any sense, or is not factually coherent, explain why instead of "
            "answering something not correct. If you don't know the answer to a question, please don't "
            "share false information."
        ),
        stop_words=("<|End|>",),
    ),
    "yi": _chatml(stop_words=("<|im_end|>",)),
    "yi_vl": SlotTemplate(
        user="### Human: {content}\n### Assistant:", assistant="{content}\n",
        default_system=(
            "This is a chat between an inquisitive human and an AI assistant. Assume the role of the AI "
            "assistant. Read all the images carefully, and respond to the human's questions with "
            "informative, helpful, detailed and polite answers. 这是一个好奇的人类和一个人工智能助手之间的对话。假设你扮演这个AI助手的角色。"
            "仔细阅读所有的图像，并对人类的问题做出信息丰富、有帮助、详细的和礼貌的回答。\n\n"
        ),
        stop_words=("###",), efficient_eos=True,
    ),
    "youtu": SlotTemplate(
        user="<|User|>{content}<|Assistant|>", assistant="{content}<|end_of_text|>", system="{content}",
        observation="<tool_response>\n{content}\n</tool_response><|Assistant|>", function="{content}", prefix="{bos}",
        stop_words=("<|end_of_text|>",), style="reasoning", replace_eos=True,
    ),
    "youtu_vl": SlotTemplate(
        user="<|begin_of_text|>user\n{content}<|end_of_text|>\n<|begin_of_text|>assistant\n",
        assistant="{content}<|end_of_text|>\n", system="<|begin_of_text|>system\n{content}<|end_of_text|>\n",
        default_system="You are a helpful assistant.", stop_words=("<|end_of_text|>",),
    ),
    "yuan": SlotTemplate(user="{content}<sep>", assistant="{content}<eod>\n", stop_words=("<eod>",)),
    "zephyr": SlotTemplate(
        user="<|user|>\n{content}{eos}<|assistant|>\n", system="<|system|>\n{content}{eos}",
        default_system="You are Zephyr, a helpful assistant.",
    ),
    "ziya": SlotTemplate(user="<human>:{content}\n<bot>:", assistant="{content}\n"),
}
