"""LLaMA-Factory-style templates: the text around each turn ("slots"), compiled into one Jinja template.

LLaMA-Factory describes most chat formats by the text each turn is wrapped in: ``user="<|im_start|>user\\n{content}
<|im_end|>\\n<|im_start|>assistant\\n"``, an assistant slot, a system slot, a prefix, a default system prompt and stop
words, plus a few rules (the system prompt joined to the first user turn; reasoning turns whose earlier thoughts are
dropped). :class:`SlotTemplate` holds that description; :func:`slot_template_source` turns it into a self-contained
Jinja template (the slots as Jinja literals ahead of ``named/_slots.jinja``) that renders what LLaMA-Factory's own
encoder renders, so it also works wherever a transformers chat template does.

Slot markers: ``{content}`` (the turn's text), ``{bos}``/``{eos}`` (the tokenizer's tokens), ``{idx}`` (the turn
number).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

STYLES = ("plain", "fused", "reasoning", "glm47", "moss")
"""plain: LLaMA-Factory's ``Template``; fused: ``Llama2Template`` (the system slot opens the first user turn);
reasoning: ``ReasoningTemplate``; glm47: GLM-4.7's reasoning (an empty thought is only the closing word); moss:
MOSS-VL's (a tool prompt without a system prompt loses its leading newlines)."""

REASONING_STYLES = frozenset({"reasoning", "glm47"})


@dataclass(frozen=True)
class SlotTemplate:
    """One LLaMA-Factory template, in its own terms (``register_template``'s arguments)."""

    user: str = "{content}"
    assistant: str | None = None  # default: "{content}{eos}", or "{content}" with efficient_eos
    system: str = "{content}"
    observation: str | None = None  # default: the user slot
    function: str | None = None  # default: the assistant slot
    prefix: str = ""
    default_system: str = ""
    stop_words: tuple[str, ...] = ()
    style: str = "plain"
    thought: tuple[str, str] = ("<think>\n", "\n</think>\n\n")
    tool_format: str = "default"
    tools_slot: str | None = None  # the tool list as JSON in this slot, instead of tool_format's prompt
    efficient_eos: bool = False
    replace_eos: bool = False  # the first stop word is the end-of-sequence token ({eos} renders it)
    media: tuple[tuple[str, str], ...] = ()  # (kind, text): its mm_plugin's placeholder before the processor expands it

    @property
    def media_placeholders(self) -> dict[str, str]:
        """The text a media part of a turn renders as: LLaMA-Factory's ``<image>``/``<video>``/``<audio>`` unless the
        template's ``mm_plugin`` writes the model's own placeholder (Qwen2-VL's ``<|vision_start|><|image_pad|>...``),
        which the model's processor then expands."""
        return {"image": "<image>", "video": "<video>", "audio": "<audio>", **dict(self.media)}

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise ValueError(f"unknown slot template style {self.style!r}")

    @property
    def assistant_slot(self) -> str:
        return self.assistant if self.assistant is not None else "{content}" + ("" if self.efficient_eos else "{eos}")

    def variables(self, tool_format: str | None = None, preserve_thinking: bool = False) -> dict[str, str | bool]:
        """The slot values the Jinja body reads (``tool_format`` overrides the template's, as in LLaMA-Factory)."""
        function = self.function if self.function is not None else self.assistant_slot
        if tool_format:  # LLaMA-Factory then writes calls with the plain assistant slot
            function = "{content}" + ("" if self.efficient_eos else "{eos}")
        return {
            "prefix": self.prefix, "system": self.system, "user": self.user, "assistant": self.assistant_slot,
            "observation": self.observation if self.observation is not None else self.user, "function": function,
            "default_system": self.default_system, "style": self.style, "thought_open": self.thought[0],
            "thought_close": self.thought[1], "tools": tool_format or self.tool_format,
            "tools_slot": "" if tool_format else self.tools_slot or "",
            "eos": self.stop_words[0] if self.replace_eos and self.stop_words else "", "preserve": preserve_thinking,
            "media": self.media_placeholders,
        }


def slot_template_source(template: SlotTemplate, tool_format: str | None = None,
                         preserve_thinking: bool = False) -> str:
    """A self-contained Jinja chat template rendering ``template``."""
    values = json.dumps(template.variables(tool_format, preserve_thinking), ensure_ascii=False)
    # only reasoning templates read enable_thinking (front ends offer the switch where a template mentions it)
    thinking = ("enable_thinking if enable_thinking is defined and enable_thinking is not none else true"
                if template.style in REASONING_STYLES else "true")
    return "{%- set lf = " + values + " -%}\n{%- set thinking = " + thinking + " -%}\n" + _body()


@lru_cache(maxsize=1)
def _body() -> str:
    return resources.files("lmchat.templates").joinpath("named", "_slots.jinja").read_text(encoding="utf-8")
