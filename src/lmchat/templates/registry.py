"""Named chat templates: lmchat's own Jinja files in ``named/``, each with the family's stop words and parsers.

A named template renders exactly what the official template of its family renders (tests compare against the
official templates' output). To add one: write ``named/NAME.jinja`` and add a :class:`TemplateSpec` below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from lmchat.errors import ConfigError, unknown_name_message


@dataclass(frozen=True)
class TemplateSpec:
    """A named template's metadata: what ends a turn, and how to parse tool calls and reasoning."""

    name: str
    stop_words: tuple[str, ...] = ()
    tool_parser: str | None = None
    reasoning_parser: str | None = None
    special_tokens: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ChatTemplate:
    """A resolved template: Jinja source plus what the engine and parsers need to know of it."""

    name: str
    source: str
    stop_words: tuple[str, ...] = ()
    tool_parser: str | None = None
    reasoning_parser: str | None = None
    special_tokens: dict[str, str] = field(default_factory=dict)


_SPECS: dict[str, TemplateSpec] = {}
_ALIASES: dict[str, str] = {}


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


def resolve_template(value: str) -> ChatTemplate:
    """A template from a known name, a ``.jinja`` file path, or Jinja source text."""
    if _ALIASES.get(value, value) in _SPECS:
        spec = _SPECS[_ALIASES.get(value, value)]
        return ChatTemplate(
            name=spec.name,
            source=_named_source(spec.name),
            stop_words=spec.stop_words,
            tool_parser=spec.tool_parser,
            reasoning_parser=spec.reasoning_parser,
            special_tokens=dict(spec.special_tokens),
        )
    if value.endswith((".jinja", ".j2", ".jinja2")):
        path = Path(value).expanduser()
        if not path.is_file():
            raise ConfigError(f"Chat template file not found: {path}", param="template")
        return ChatTemplate(name=path.stem, source=path.read_text(encoding="utf-8"))
    if "{{" in value or "{%" in value:
        return ChatTemplate(name="custom", source=value)
    raise ConfigError(unknown_name_message("template", value, template_names()), param="template")


# The built-in named templates (their Jinja files live in named/). Each renders what the official template of its
# family renders; tests/test_templates_named.py compares them with those templates' output.
_LLAMA3 = {"bos_token": "<|begin_of_text|>"}
_SENTENCE = {"bos_token": "<s>", "eos_token": "</s>"}
_DEEPSEEK = {"bos_token": "<｜begin▁of▁sentence｜>"}
_DEEPSEEK_STOP = ("<｜end▁of▁sentence｜>",)
_LLAMA31_STOP = ("<|eot_id|>", "<|eom_id|>")
for _spec in (
    TemplateSpec("default", tool_parser="default"),  # LLaMA-Factory's "default" (Human:/Assistant:)
    TemplateSpec("empty"),
    TemplateSpec("alpaca", stop_words=("</s>",), special_tokens=_SENTENCE),
    TemplateSpec("chatml", stop_words=("<|im_end|>",)),
    TemplateSpec("deepseek3", stop_words=_DEEPSEEK_STOP, tool_parser="deepseek_v3", special_tokens=_DEEPSEEK),
    TemplateSpec(
        "deepseekr1",
        stop_words=_DEEPSEEK_STOP,
        tool_parser="deepseek_v3",
        reasoning_parser="think",
        special_tokens=_DEEPSEEK,
    ),
    TemplateSpec("gemma", stop_words=("<end_of_turn>", "<eos>"), special_tokens={"bos_token": "<bos>"}),  # Gemma-2
    TemplateSpec("glm4", stop_words=("<|endoftext|>", "<|user|>", "<|observation|>"), tool_parser="glm4"),
    TemplateSpec("llama2", stop_words=("</s>",), special_tokens=_SENTENCE),
    TemplateSpec("llama3", stop_words=("<|eot_id|>",), special_tokens=_LLAMA3),  # Llama-3: no tools, no date header
    TemplateSpec("llama3.1", stop_words=_LLAMA31_STOP, tool_parser="llama3_json", special_tokens=_LLAMA3),
    TemplateSpec("llama3.2", stop_words=_LLAMA31_STOP, tool_parser="llama3_json", special_tokens=_LLAMA3),
    TemplateSpec("mistral", stop_words=("</s>",), tool_parser="mistral", special_tokens=_SENTENCE),  # v0.3
    TemplateSpec("phi", stop_words=("<|im_end|>",)),  # Phi-4
    TemplateSpec("phi3", stop_words=("<|end|>", "<|endoftext|>"), special_tokens={"eos_token": "<|endoftext|>"}),
    TemplateSpec("qwen", stop_words=("<|im_end|>", "<|endoftext|>"), tool_parser="hermes"),  # Qwen2.5
    TemplateSpec("qwen3", stop_words=("<|im_end|>", "<|endoftext|>"), tool_parser="hermes", reasoning_parser="think"),
    TemplateSpec("vicuna", stop_words=("</s>",), special_tokens=_SENTENCE),
):
    register_template(_spec)

for _alias, _name in (("gemma2", "gemma"), ("llama3.3", "llama3.1"), ("phi4", "phi"), ("qwen2.5", "qwen")):
    register_alias(_alias, _name)
