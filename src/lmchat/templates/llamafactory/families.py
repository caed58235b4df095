"""Slots that many LLaMA-Factory templates share (ChatML, GLM, Gemma, Llama 3), as SlotTemplate factories."""

from __future__ import annotations

from functools import partial

from lmchat.templates.slots import SlotTemplate

CHATML_ASSISTANT = "{content}<|im_end|>\n"
CHATML_TOOL_RESULT = "<|im_start|>tool\n{content}<|im_end|>\n<|im_start|>assistant\n"
QWEN_TOOL_RESULT = (
    "<|im_start|>user\n<tool_response>\n{content}\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
)
LLAMA3_TOOL_RESULT = (
    "<|start_header_id|>ipython<|end_header_id|>\n\n{content}<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
    "\n\n"
)

_chatml = partial(
    SlotTemplate, user="<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n", assistant=CHATML_ASSISTANT,
    system="<|im_start|>system\n{content}<|im_end|>\n",
)
_glm = partial(
    SlotTemplate, user="<|user|>\n{content}<|assistant|>", assistant="\n{content}", system="<|system|>\n{content}",
    observation="<|observation|>\n{content}<|assistant|>",
)
_gemma = partial(
    SlotTemplate, user="<start_of_turn>user\n{content}<end_of_turn>\n<start_of_turn>model\n",
    assistant="{content}<end_of_turn>\n", system="{content}\n\n",
    observation="<start_of_turn>tool\n{content}<end_of_turn>\n<start_of_turn>model\n",
)
_llama3 = partial(
    SlotTemplate,
    user=(
        "<|start_header_id|>user<|end_header_id|>\n\n{content}<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
        "\n\n"
    ),
    assistant="{content}<|eot_id|>", system="<|start_header_id|>system<|end_header_id|>\n\n{content}<|eot_id|>",
)
