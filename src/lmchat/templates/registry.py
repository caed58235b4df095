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


def register_template(spec: TemplateSpec) -> None:
    """Make ``named/{spec.name}.jinja`` available by name."""
    _SPECS[spec.name] = spec


def template_names() -> list[str]:
    return sorted(_SPECS)


def _named_source(name: str) -> str:
    return resources.files("lmchat.templates").joinpath("named", f"{name}.jinja").read_text(encoding="utf-8")


def resolve_template(value: str) -> ChatTemplate:
    """A template from a known name, a ``.jinja`` file path, or Jinja source text."""
    if value in _SPECS:
        spec = _SPECS[value]
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
    raise ConfigError(unknown_name_message("template", value, _SPECS), param="template")


# The built-in named templates (their Jinja files live in named/).
for _spec in (
    TemplateSpec("empty"),
):
    register_template(_spec)
