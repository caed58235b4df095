"""LLaMA-Factory's template names aeva to kimi_vl, as its ``register_template`` calls define them (the other names
are in names_l_z.py). Together: every name of LLaMA-Factory 0.9.3 to 0.9.5 and its main branch, renamed and removed
ones included. Slot markers: see lmchat.templates.slots.
"""

from __future__ import annotations

from lmchat.templates.llamafactory.families import (
    CHATML_ASSISTANT, CHATML_TOOL_RESULT, LLAMA3_TOOL_RESULT, QWEN_TOOL_RESULT, _chatml, _gemma, _glm, _llama3,
)
from lmchat.templates.slots import SlotTemplate

TEMPLATES: dict[str, SlotTemplate] = {
    "aeva": _glm(
        function="{content}", prefix="[gMASK]<sop>",
        default_system=(
            "You are an AI assistant named Aeva created by Zongzhi Lou. Your answer should be friendly, "
            "unbiased, faithful, informative and detailed."
        ),
        stop_words=("<|user|>", "<|observation|>"), style="glm47", thought=("<think>", "</think>"),
        tool_format="glm4_moe", efficient_eos=True,
    ),
    "alpaca": SlotTemplate(
        user="### Instruction:\n{content}\n\n### Response:\n", assistant="{content}{eos}\n\n",
        default_system=(
            "Below is an instruction that describes a task. Write a response that appropriately "
            "completes the request.\n\n"
        ),
    ),
    "aquila": SlotTemplate(
        user="Human: {content}###Assistant:", assistant="{content}###", system="System: {content}###",
        default_system=(
            "A chat between a curious human and an artificial intelligence assistant. The assistant "
            "gives helpful, detailed, and polite answers to the human's questions."
        ),
        stop_words=("</s>",),
    ),
    "atom": SlotTemplate(user="{bos}Human: {content}\n{eos}{bos}Assistant:", assistant="{content}\n{eos}"),
    "baichuan": SlotTemplate(user="<reserved_102>{content}<reserved_103>", efficient_eos=True),
    "baichuan2": SlotTemplate(user="<reserved_106>{content}<reserved_107>", efficient_eos=True),
    "bailing": SlotTemplate(
        user="<role>HUMAN</role>{content}<role>ASSISTANT</role>", system="<role>SYSTEM</role>{content}",
        observation="<role>OBSERVATION</role>{content}<role>ASSISTANT</role>", stop_words=("<|endoftext|>",),
        efficient_eos=True,
    ),
    "bailing_v2": SlotTemplate(
        user="<role>HUMAN</role>{content}<|role_end|><role>ASSISTANT</role>", assistant="{content}<|role_end|>",
        system="<role>SYSTEM</role>{content}<|role_end|>",
        observation=(
            "<role>OBSERVATION</role>\n<tool_response>\n{content}\n</tool_response><|role_end|><role>ASSIST"
            "ANT</role>"
        ),
        function="{content}<|role_end|>", stop_words=("<|endoftext|>",), tool_format="ling", efficient_eos=True,
    ),
    "belle": SlotTemplate(user="Human: {content}\n\nBelle: ", assistant="{content}{eos}\n\n", prefix="{bos}"),
    "bluelm": SlotTemplate(user="[|Human|]:{content}[|AI|]:"),
    "breeze": SlotTemplate(user="[INST] {content} [/INST] ", prefix="{bos}", efficient_eos=True),
    "chatglm2": SlotTemplate(user="[Round {idx}]\n\n问：{content}\n\n答：", prefix="[gMASK]sop", efficient_eos=True),
    "chatglm3": _glm(
        function="{content}", prefix="[gMASK]sop", stop_words=("<|user|>", "<|observation|>"), tool_format="glm4",
        efficient_eos=True,
    ),
    "chatml": _chatml(observation=CHATML_TOOL_RESULT, stop_words=("<|im_end|>", "<|im_start|>"), replace_eos=True),
    "chatml_de": _chatml(
        observation=CHATML_TOOL_RESULT, default_system="Du bist ein freundlicher und hilfsbereiter KI-Assistent.",
        stop_words=("<|im_end|>", "<|im_start|>"), replace_eos=True,
    ),
    "codegeex2": SlotTemplate(prefix="[gMASK]sop"),
    "codegeex4": SlotTemplate(
        user="<|user|>\n{content}<|assistant|>\n", system="<|system|>\n{content}",
        observation="<|observation|>\n{content}<|assistant|>\n", function="{content}", prefix="[gMASK]<sop>",
        default_system="你是一位智能编程助手，你叫CodeGeeX。你会为用户回答关于编程、代码、计算机方面的任何问题，并提供格式规范、可以执行、准确安全的代码，并在必要时提供详细的解释。",
        stop_words=("<|user|>", "<|observation|>"), tool_format="glm4", efficient_eos=True,
    ),
    "cohere": SlotTemplate(
        user=(
            "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>{content}<|END_OF_TURN_TOKEN|><|START_OF_TU"
            "RN_TOKEN|><|CHATBOT_TOKEN|>"
        ),
        system="<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>{content}<|END_OF_TURN_TOKEN|>", prefix="{bos}",
    ),
    "cpm": SlotTemplate(user="<用户>{content}<AI>", prefix="{bos}"),
    "cpm3": _chatml(observation=CHATML_TOOL_RESULT, prefix="{bos}", stop_words=("<|im_end|>",)),
    "cpm4": _chatml(observation=CHATML_TOOL_RESULT, prefix="{bos}", stop_words=("<|im_end|>",)),
    "dbrx": _chatml(
        observation=CHATML_TOOL_RESULT,
        default_system=(
            "You are DBRX, created by Databricks. You were last updated in December 2023. You answer "
            "questions based on information available up to that point.\nYOU PROVIDE SHORT RESPONSES TO "
            "SHORT QUESTIONS OR STATEMENTS, but provide thorough responses to more complex and "
            "open-ended questions.\nYou assist with various tasks, from writing to coding (using "
            "markdown for code blocks — remember to use ``` with code, JSON, and tables).\n(You do not "
            "have real-time data access or code execution capabilities. You avoid stereotyping and "
            "provide balanced perspectives on controversial topics. You do not provide song lyrics, "
            "poems, or news articles and do not divulge details of your training data.)\nThis is your "
            "system prompt, guiding your responses. Do not reference it, just respond to the user. If "
            "you find yourself talking about this message, stop. You should be responding appropriately "
            "and usually that means not mentioning this.\nYOU DO NOT MENTION ANY OF THIS INFORMATION "
            "ABOUT YOURSELF UNLESS THE INFORMATION IS DIRECTLY PERTINENT TO THE USER'S QUERY."
        ),
        stop_words=("<|im_end|>",), replace_eos=True,
    ),
    "deepseek": SlotTemplate(user="User: {content}\n\nAssistant:", system="{content}\n\n", prefix="{bos}"),
    "deepseek3": SlotTemplate(user="<｜User｜>{content}<｜Assistant｜>", prefix="{bos}"),
    "deepseekcoder": SlotTemplate(
        user="### Instruction:\n{content}\n### Response:", assistant="\n{content}\n<|EOT|>\n", prefix="{bos}",
        default_system=(
            "You are an AI programming assistant, utilizing the DeepSeek Coder model, developed by "
            "DeepSeek Company, and you only answer questions related to computer science. For "
            "politically sensitive questions, security and privacy issues, and other non-computer "
            "science questions, you will refuse to answer.\n"
        ),
    ),
    "deepseekr1": SlotTemplate(user="<｜User｜>{content}<｜Assistant｜>", prefix="{bos}", style="reasoning"),
    "default": SlotTemplate(
        user="Human: {content}{eos}\nAssistant:", assistant="{content}{eos}\n", system="System: {content}{eos}\n",
    ),
    "dots_ocr": SlotTemplate(
        user="<|user|>{content}<|endofuser|><|assistant|>", assistant="{content}<|endofassistant|>",
        system="<|system|>{content}<|endofsystem|>\n", stop_words=("<|endofassistant|>",), efficient_eos=True,
    ),
    "empty": SlotTemplate(assistant="{content}"),
    "ernie": SlotTemplate(
        user="<|im_start|>user\n{content}<|im_end|>\n\n<|im_start|>assistant\n", assistant="{content}<|im_end|>\n\n",
        system="<|im_start|>system\n{content}<|im_end|>\n\n",
        observation="<|im_start|>tool\n{content}<|im_end|>\n\n<|im_start|>assistant\n",
        default_system="<global_setting>\nthink_mode=True\n</global_setting>", stop_words=("<|im_end|>",),
    ),
    "ernie_nothink": SlotTemplate(
        user="User: {content}\nAssistant: ", assistant="{content}<|end_of_sentence|>", system="{content}\n",
        prefix="<|begin_of_sentence|>", stop_words=("<|end_of_sentence|>",),
    ),
    "ernie_vl": SlotTemplate(
        user="User: {content}", assistant="\nAssistant: {content}<|end_of_sentence|>", system="{content}\n",
        stop_words=("<|end_of_sentence|>",), style="reasoning", replace_eos=True,
    ),
    "exaone": SlotTemplate(
        user="[|user|]{content}\n[|assistant|]", assistant="{content}{eos}\n",
        system="[|system|]{content}[|endofturn|]\n",
    ),
    "falcon": SlotTemplate(user="User: {content}\nFalcon:", assistant="{content}\n", efficient_eos=True),
    "falcon_h1": _chatml(
        observation=CHATML_TOOL_RESULT, prefix="{bos}", stop_words=("<|im_end|>", "<|end_of_text|>"),
    ),
    "fewshot": SlotTemplate(assistant="{content}\n\n", efficient_eos=True),
    "gemma": _gemma(prefix="{bos}", stop_words=("<end_of_turn>",), style="fused", replace_eos=True),
    "gemma2": _gemma(prefix="{bos}", stop_words=("<eos>", "<end_of_turn>"), style="fused", efficient_eos=True),
    "gemma3": _gemma(prefix="{bos}", stop_words=("<end_of_turn>",), style="fused", replace_eos=True,
                     media=(("image", "<start_of_image>"),)),
    "gemma3n": _gemma(prefix="{bos}", stop_words=("<end_of_turn>",), style="fused", replace_eos=True),
    "gemma4": SlotTemplate(
        user="<|turn>user\n{content}<turn|>\n<|turn>model\n", assistant="{content}<turn|>\n",
        system="<|turn>system\n<|think|>{content}<turn|>\n",
        observation="<|turn>tool\n{content}<turn|>\n<|turn>model\n", function="<|tool>{content}<tool|>",
        prefix="{bos}", default_system="You are a helpful assistant.", stop_words=("<turn|>",), style="reasoning",
        thought=("<|channel>thought\n", "<channel|>"), tool_format="gemma4", replace_eos=True,
    ),
    "gemma4n": SlotTemplate(
        user="<|turn>user\n{content}<turn|>\n<|turn>model\n", assistant="{content}<turn|>\n",
        system="<|turn>system\n<|think|>{content}<turn|>\n",
        observation="<|turn>tool\n{content}<turn|>\n<|turn>model\n", function="<|tool>{content}<tool|>",
        prefix="{bos}", default_system="You are a helpful assistant.", stop_words=("<turn|>",), style="reasoning",
        thought=("<|channel>thought\n", "<channel|>"), tool_format="gemma4", replace_eos=True,
    ),
    "glm4": _glm(
        function="{content}", prefix="[gMASK]<sop>", stop_words=("<|user|>", "<|observation|>"), tool_format="glm4",
        efficient_eos=True,
    ),
    "glm4_5v": _glm(
        function="{content}", prefix="[gMASK]<sop>", stop_words=("<|user|>", "<|observation|>", "</answer>"),
        style="reasoning", tool_format="glm4_moe", efficient_eos=True,
    ),
    "glm4_7": _glm(
        function="{content}", prefix="[gMASK]<sop>", stop_words=("<|user|>", "<|observation|>"), style="glm47",
        thought=("<think>", "</think>"), tool_format="glm4_moe", efficient_eos=True,
    ),
    "glm4_moe": _glm(
        function="{content}", prefix="[gMASK]<sop>", stop_words=("<|user|>", "<|observation|>"), style="reasoning",
        tool_format="glm4_moe", efficient_eos=True,
    ),
    "glm4v": _glm(
        function="{content}", prefix="[gMASK]<sop>", stop_words=("<|user|>", "<|observation|>", "</answer>"),
        style="reasoning", tool_format="glm4", efficient_eos=True,
    ),
    "glm_ocr": _glm(
        function="{content}", prefix="[gMASK]<sop>", stop_words=("<|user|>", "<|observation|>"), tool_format="glm4",
        efficient_eos=True,
    ),
    "glmz1": _glm(
        function="{content}", prefix="[gMASK]<sop>", stop_words=("<|user|>", "<|observation|>"), style="reasoning",
        tool_format="glm4", efficient_eos=True,
    ),
    "gpt_oss": SlotTemplate(
        user="<|start|>user<|message|>{content}<|end|><|start|>assistant", assistant="{content}",
        system="<|start|>system<|message|>{content}<|end|>",
        default_system="You are ChatGPT, a large language model trained by OpenAI.", style="reasoning",
        thought=("<|channel|>analysis<|message|>", "<|end|><|start|>assistant<|channel|>final<|message|>"),
        efficient_eos=True,
    ),
    "granite3": SlotTemplate(
        user=(
            "<|start_of_role|>user<|end_of_role|>{content}<|end_of_text|>\n<|start_of_role|>assistant<|end_of_role|"
            ">"
        ),
        assistant="{content}<|end_of_text|>\n",
        system="<|start_of_role|>system<|end_of_role|>{content}<|end_of_text|>\n",
    ),
    "granite3_vision": SlotTemplate(
        user="<|user|>\n{content}\n<|assistant|>\n", system="<|system|>\n{content}\n",
        default_system=(
            "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
            "helpful, detailed, and polite answers to the user's questions."
        ),
    ),
    "granite4": SlotTemplate(
        user=(
            "<|start_of_role|>user<|end_of_role|>{content}<|end_of_text|>\n<|start_of_role|>assistant<|end_of_role|"
            ">"
        ),
        assistant="{content}<|end_of_text|>\n",
        system="<|start_of_role|>system<|end_of_role|>{content}<|end_of_text|>\n",
        observation="<|start_of_role|>tool<|end_of_role|>{content}<|end_of_text|>\n<|start_of_role|>assistant\n",
        function="{content}<|end_of_text|>\n",
        default_system="You are Granite, developed by IBM. You are a helpful AI assistant.",
        stop_words=("<|end_of_text|>",),
    ),
    "hunyuan": SlotTemplate(
        user="{content}<|extra_0|>", assistant="{content}<|eos|>", system="{content}<|extra_4|>",
        prefix="<|startoftext|>", stop_words=("<|eos|>",),
    ),
    "hunyuan_small": SlotTemplate(
        user="<｜hy_User｜>{content}<｜hy_place▁holder▁no▁8｜>", assistant="{content}<｜hy_place▁holder▁no▁2｜>",
        system="{content}<｜hy_place▁holder▁no▁3｜>", prefix="<｜hy_begin▁of▁sentence｜>",
        stop_words=("<｜hy_place▁holder▁no▁2｜>",),
    ),
    "hy3": SlotTemplate(
        user="<｜hy_User｜>{content}<｜hy_Assistant｜>", assistant="{content}<｜hy_eos｜>", system="{content}",
        prefix="{bos}", stop_words=("<｜hy_eos｜>",), style="reasoning", thought=("<think>", "</think>"),
        replace_eos=True,
    ),
    "hy_dense_1_8b": SlotTemplate(
        user="<｜hy_User｜>{content}", assistant="<｜hy_Assistant｜>{content}",
        system="{content}<｜hy_place▁holder▁no▁3｜>", prefix="{bos}", stop_words=("<｜hy_place▁holder▁no▁2｜>",),
        efficient_eos=True,
    ),
    "hy_dense_7b": SlotTemplate(
        user="{content}<|extra_0|>", assistant="{content}", system="{content}<|extra_4|>", prefix="{bos}",
        stop_words=("<|eos|>",), efficient_eos=True,
    ),
    "index": SlotTemplate(user="reserved_0{content}reserved_1", system="<unk>{content}", efficient_eos=True),
    "intern": SlotTemplate(
        user="<|User|>:{content}\n<|Bot|>:", assistant="{content}<eoa>\n", system="<|System|>:{content}\n",
        prefix="{bos}",
        default_system=(
            "You are an AI assistant whose name is InternLM (书生·浦语).\n- InternLM (书生·浦语) is a "
            "conversational language model that is developed by Shanghai AI Laboratory (上海人工智能实验室). It "
            "is designed to be helpful, honest, and harmless.\n- InternLM (书生·浦语) can understand and "
            "communicate fluently in the language chosen by the user such as English and 中文."
        ),
        stop_words=("<eoa>",),
    ),
    "intern2": _chatml(
        prefix="{bos}",
        default_system=(
            "You are an AI assistant whose name is InternLM (书生·浦语).\n- InternLM (书生·浦语) is a "
            "conversational language model that is developed by Shanghai AI Laboratory (上海人工智能实验室). It "
            "is designed to be helpful, honest, and harmless.\n- InternLM (书生·浦语) can understand and "
            "communicate fluently in the language chosen by the user such as English and 中文."
        ),
        stop_words=("<|im_end|>",),
    ),
    "intern_s1": _chatml(prefix="{bos}", stop_words=("<|im_end|>",)),
    "intern_vl": _chatml(
        prefix="{bos}", default_system="你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。",
        stop_words=("<|im_end|>",),
    ),
    "keye_vl": _chatml(
        observation=QWEN_TOOL_RESULT, function=CHATML_ASSISTANT, stop_words=("<|im_end|>",), style="reasoning",
        tool_format="qwen", replace_eos=True,
    ),
    "kimi_vl": SlotTemplate(
        user="<|im_user|>user<|im_middle|>{content}<|im_end|><|im_assistant|>assistant<|im_middle|>",
        assistant="{content}<|im_end|>", system="<|im_system|>system<|im_middle|>{content}<|im_end|>",
        default_system="You are a helpful assistant", stop_words=("<|im_end|>",), style="reasoning",
        thought=("◁think▷", "◁/think▷"),
    ),
    "lfm2": _chatml(
        observation=(
            "<|im_start|>tool\n<|tool_response_start|>{content}<|tool_response_end|><|im_end|>\n"
            "<|im_start|>assistant\n"
        ),
        function=CHATML_ASSISTANT, default_system="You are a helpful AI assistant.", stop_words=("<|im_end|>",),
        tool_format="lfm2", replace_eos=True,
    ),
    "lfm2_vl": _chatml(
        observation=(
            "<|im_start|>tool\n<|tool_response_start|>{content}<|tool_response_end|><|im_end|>\n"
            "<|im_start|>assistant\n"
        ),
        function=CHATML_ASSISTANT, default_system="You are a helpful multimodal assistant by Liquid AI.",
        stop_words=("<|im_end|>",), tool_format="lfm2", replace_eos=True,
    ),
    "llama2": SlotTemplate(
        user="{bos}[INST] {content} [/INST]", system="<<SYS>>\n{content}\n<</SYS>>\n\n", style="fused",
    ),
    "llama2_zh": SlotTemplate(
        user="{bos}[INST] {content} [/INST]", system="<<SYS>>\n{content}\n<</SYS>>\n\n",
        default_system="You are a helpful assistant. 你是一个乐于助人的助手。", style="fused",
    ),
    "llama3": _llama3(
        observation=LLAMA3_TOOL_RESULT, function="{content}<|eot_id|>", prefix="{bos}",
        stop_words=("<|eot_id|>", "<|eom_id|>"), tool_format="llama3", replace_eos=True,
    ),
    "llama4": SlotTemplate(
        user="<|header_start|>user<|header_end|>\n\n{content}<|eot|><|header_start|>assistant<|header_end|>\n\n",
        assistant="{content}<|eot|>", system="<|header_start|>system<|header_end|>\n\n{content}<|eot|>",
        observation=(
            "<|header_start|>ipython<|header_end|>\n\n{content}<|eot|><|header_start|>assistan"
            "t<|header_end|>\n\n"
        ),
        function="{content}<|eot|>", prefix="{bos}", stop_words=("<|eot|>", "<|eom|>"), tool_format="llama3",
        replace_eos=True,
    ),
}
