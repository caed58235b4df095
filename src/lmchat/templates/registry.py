"""Named chat templates: lmchat's own Jinja files in ``named/`` and LLaMA-Factory's templates, each with its stop
words and parsers.

A Jinja-file template renders exactly what the official template of its family renders (tests compare against the
official templates' output). To add one: write ``named/NAME.jinja`` and add a :class:`TemplateSpec` below. Every
name LLaMA-Factory registers resolves too (``templates/llamafactory/``): as a :class:`SlotTemplate` rendering what
LLaMA-Factory renders, or, where one of the Jinja files renders the same, as that file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from lmchat.errors import ConfigError, unknown_name_message
from lmchat.templates.slots import REASONING_STYLES, SlotTemplate, slot_template_source
from lmchat.templates.tool_formats import TOOL_PARSERS

TEMPLATES_HELP = "Every template name: lmchat --help-config."


@dataclass(frozen=True)
class TemplateSpec:
    """A named template's metadata: what ends a turn, and how to parse tool calls and reasoning."""

    name: str
    stop_words: tuple[str, ...] = ()
    tool_parser: str | None = None
    reasoning_parser: str | None = None
    special_tokens: dict[str, str] = field(default_factory=dict)
    slots: SlotTemplate | None = None  # a LLaMA-Factory template: rendered from its slots, not from a Jinja file
    note: str = ""  # what the name stands for, where that is not obvious
    file: str | None = None  # named/FILE.jinja (default: the name)


@dataclass(frozen=True)
class ChatTemplate:
    """A resolved template: Jinja source plus what the engine and parsers need to know of it."""

    name: str
    source: str
    stop_words: tuple[str, ...] = ()
    tool_parser: str | None = None
    reasoning_parser: str | None = None
    special_tokens: dict[str, str] = field(default_factory=dict)
    named: bool = False
    """A registered named template: its spec decides the parsers (None: none), never markers in its source (a
    LLaMA-Factory template's source holds every tool format's markup)."""


_SPECS: dict[str, TemplateSpec] = {}
_ALIASES: dict[str, str] = {}
_SLOT_TWINS: dict[str, TemplateSpec] = {}
"""LLaMA-Factory names served by a Jinja file that renders the same: their slots, used for a ``tool_format``."""


def register_template(spec: TemplateSpec) -> None:
    """Make ``named/{spec.name}.jinja`` available by name."""
    _SPECS[spec.name] = spec


def register_alias(alias: str, name: str) -> None:
    """Make ``alias`` another name for the registered template ``name`` (e.g. ``llama3.3`` for ``llama3.1``)."""
    _ALIASES[alias] = name


def template_names() -> list[str]:
    return sorted({*_SPECS, *_ALIASES})


def _named_source(name: str) -> str:
    return resources.files("lmchat.templates").joinpath("named", f"{name}.jinja").read_text(encoding="utf-8")


def template_spec(name: str) -> TemplateSpec | None:
    """The registered template ``name`` (an alias resolved), or None."""
    return _SPECS.get(_ALIASES.get(name, name))


def resolve_template(value: str, *, tool_format: str | None = None, preserve_thinking: bool = False) -> ChatTemplate:
    """A template from a known name, a ``.jinja`` file path, or Jinja source text.

    ``tool_format`` and ``preserve_thinking`` are LLaMA-Factory's settings of its templates' tool prompt and of the
    reasoning kept from earlier answers; lmchat's Jinja-file templates render tools and reasoning as the official
    templates do.
    """
    spec = template_spec(value)
    if spec is not None and tool_format and spec.slots is None:
        spec = _SLOT_TWINS.get(spec.name, spec)  # a Jinja file renders no tool_format: LLaMA-Factory's slots do
    if spec is not None:
        source = (_named_source(spec.file or spec.name) if spec.slots is None
                  else slot_template_source(spec.slots, tool_format, preserve_thinking))
        return ChatTemplate(
            name=spec.name,
            source=source,
            stop_words=spec.stop_words,
            tool_parser=TOOL_PARSERS[tool_format] if tool_format and spec.slots else spec.tool_parser,
            reasoning_parser=spec.reasoning_parser,
            special_tokens=dict(spec.special_tokens),
            named=True,
        )
    check_template(value)
    if value.endswith((".jinja", ".j2", ".jinja2")):
        return ChatTemplate(name=Path(value).stem, source=Path(value).expanduser().read_text(encoding="utf-8"))
    return ChatTemplate(name="custom", source=value)


def check_template(value: str) -> None:
    """Raise ConfigError unless ``value`` is a known name, an existing ``.jinja`` file or Jinja source."""
    if template_spec(value) is not None or "{{" in value or "{%" in value:
        return
    if value.endswith((".jinja", ".j2", ".jinja2")):
        if not Path(value).expanduser().is_file():
            raise ConfigError(f"Chat template file not found: {Path(value).expanduser()}", param="template")
        return
    raise ConfigError(unknown_name_message("template", value, template_names(), TEMPLATES_HELP), param="template")


# The built-in named templates (their Jinja files live in named/). Each renders what the official template of its
# family renders; tests/test_templates_named.py compares them with those templates' output. Where LLaMA-Factory
# renders a name differently, its name belongs to LLaMA-Factory's template and the official one is NAME-official.
_LLAMA3 = {"bos_token": "<|begin_of_text|>"}
_SENTENCE = {"bos_token": "<s>", "eos_token": "</s>"}
_DEEPSEEK = {"bos_token": "<｜begin▁of▁sentence｜>"}
_DEEPSEEK_STOP = ("<｜end▁of▁sentence｜>",)
_LLAMA31_STOP = ("<|eot_id|>", "<|eom_id|>")
_QWEN_STOP = ("<|im_end|>", "<|endoftext|>")
for _spec in (
    TemplateSpec("default", tool_parser="default", note="LLaMA-Factory's default (Human:/Assistant:), tools too"),
    TemplateSpec("alpaca-official", stop_words=("</s>",), special_tokens=_SENTENCE, file="alpaca"),
    TemplateSpec("deepseek3-official", stop_words=_DEEPSEEK_STOP, tool_parser="deepseek_v3", special_tokens=_DEEPSEEK,
                 file="deepseek3"),
    TemplateSpec("deepseekr1-official", stop_words=_DEEPSEEK_STOP, tool_parser="deepseek_v3", reasoning_parser="think",
                 special_tokens=_DEEPSEEK, file="deepseekr1"),
    TemplateSpec("gemma2-official", stop_words=("<end_of_turn>", "<eos>"), special_tokens={"bos_token": "<bos>"},
                 file="gemma"),
    TemplateSpec("glm4-official", stop_words=("<|endoftext|>", "<|user|>", "<|observation|>"), tool_parser="glm4",
                 file="glm4"),
    TemplateSpec("llama2-official", stop_words=("</s>",), special_tokens=_SENTENCE, file="llama2"),
    TemplateSpec("llama3-official", stop_words=("<|eot_id|>",), special_tokens=_LLAMA3, file="llama3",
                 note="Llama-3's official template: no tools, no date header"),
    TemplateSpec("llama3.1", stop_words=_LLAMA31_STOP, tool_parser="llama3_json", special_tokens=_LLAMA3),
    TemplateSpec("llama3.2", stop_words=_LLAMA31_STOP, tool_parser="llama3_json", special_tokens=_LLAMA3),
    TemplateSpec("mistral-official", stop_words=("</s>",), tool_parser="mistral", special_tokens=_SENTENCE,
                 file="mistral", note="Mistral v0.3"),
    TemplateSpec("phi4-official", stop_words=("<|im_end|>",), file="phi"),
    TemplateSpec("phi3", stop_words=("<|end|>", "<|endoftext|>"), special_tokens={"eos_token": "<|endoftext|>"}),
    TemplateSpec("qwen", stop_words=_QWEN_STOP, tool_parser="hermes",
                 note="Qwen2.5; LLaMA-Factory's qwen renders the same, tools too"),
    TemplateSpec("qwen3-official", stop_words=_QWEN_STOP, tool_parser="hermes", reasoning_parser="think", file="qwen3"),
    TemplateSpec("vicuna-official", stop_words=("</s>",), special_tokens=_SENTENCE, file="vicuna"),
):
    register_template(_spec)

for _alias, _name in (("llama3.3", "llama3.1"), ("qwen2.5", "qwen")):
    register_alias(_alias, _name)


# LLaMA-Factory's names. Its tool formats map to lmchat's tool parsers (templates/tool_formats.py).
# Special tokens of well-known families, so that a template renders them without a tokenizer (an engine's win).
_FAMILY_TOKENS = {"llama3": _LLAMA3, "llama4": _LLAMA3, "mllama": _LLAMA3, "llava_next_llama3": _LLAMA3,
                  "llama2": _SENTENCE, "llama2_zh": _SENTENCE, "mistral": _SENTENCE, "deepseek3": _DEEPSEEK,
                  "deepseekr1": _DEEPSEEK, "deepseek": _DEEPSEEK, "deepseekcoder": _DEEPSEEK,
                  **{name: {"bos_token": "<bos>"} for name in ("gemma", "gemma2", "gemma3", "gemma3n", "paligemma")}}


# The reasoning parser of a reasoning-style LLaMA-Factory template, by its thought words (its opening word).
_THOUGHT_PARSERS = {"<think>": "think", "<seed:think>": "seed_oss", "<|channel|>analysis<|message|>": "gpt_oss",
                    "◁think▷": "kimi_vl"}
# Plain LLaMA-Factory templates of models that always reason: MiniMax-M1 writes <think>...</think> first.
_ALWAYS_REASONING = {"minimax1": "think"}


def _slot_spec(name: str, slots: SlotTemplate) -> TemplateSpec:
    reasoning = (_THOUGHT_PARSERS.get(slots.thought[0].strip()) if slots.style in REASONING_STYLES
                 else _ALWAYS_REASONING.get(name))
    return TemplateSpec(name, stop_words=slots.stop_words, tool_parser=TOOL_PARSERS.get(slots.tool_format),
                        reasoning_parser=reasoning, special_tokens=_FAMILY_TOKENS.get(name, {}), slots=slots)


def _register_llamafactory() -> None:
    from lmchat.templates.llamafactory import LLAMAFACTORY_TEMPLATES

    for name, slots in LLAMAFACTORY_TEMPLATES.items():
        if name not in _SPECS and name not in _ALIASES:
            register_template(_slot_spec(name, slots))
        elif name in _SPECS:
            _SLOT_TWINS[name] = _slot_spec(name, slots)


_register_llamafactory()
