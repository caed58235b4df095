"""``lmchat --help-config``: every setting, the LLaMA-Factory keys accepted without use, every template name and
engine, generated from the config and the registries (``docs/configuration.md`` is its Markdown form)."""

from __future__ import annotations

import textwrap
from typing import Any

from lmchat.cli.options import SECTIONS, _kind, _show
from lmchat.config.llamafactory import IGNORED_KEYS
from lmchat.config.model_config import public_fields

INTRO = (
    "Settings are ChatModel's keys: YAML keys, --flags (either spelling) or key=value arguments of every lmchat "
    "command. Every key of LLaMA-Factory's inference arguments is accepted: those below as settings, the rest "
    "kept and reported once in the log as ignored."
)
ENVIRONMENT = {
    "API_HOST, API_PORT": "lmchat serve: --host and --port defaults (LLaMA-Factory's api).",
    "API_KEY, LMCHAT_API_KEY": "lmchat serve: the API key clients must send (--api-key wins).",
    "API_MODEL_NAME": "lmchat serve: the model name /v1/models lists (--served-model-name wins).",
    "any API_* above": "lmchat serve: accept any model name in requests, as LLaMA-Factory does "
                       "(--no-accept-any-model turns it off).",
    "GRADIO_SERVER_NAME, GRADIO_SERVER_PORT, GRADIO_SHARE": "lmchat webui: --host, --port and --share defaults.",
}


def settings_reference(markdown: bool = False) -> str:
    """The whole reference, as aligned text or as Markdown."""
    sections = _sections()
    lines = ["# lmchat configuration" if markdown else "lmchat configuration", "", INTRO, ""]
    for heading, rows in sections:
        lines += _table(heading, ["setting", "values", "default", "meaning"], rows, markdown)
    ignored: dict[str, list[str]] = {}
    for name, reason in IGNORED_KEYS.items():
        ignored.setdefault(reason, []).append(name)
    lines += _paragraphs("Accepted and ignored (they cannot change an answer)",
                         [f"They {reason}: {', '.join(names)}." for reason, names in ignored.items()], markdown)
    lines += _paragraphs("Template names (template: NAME)", [_templates()], markdown)
    lines += _paragraphs("Engines (infer_backend: NAME)", [_engines()], markdown)
    lines += _table("Environment variables", ["variable", "meaning"], list(ENVIRONMENT.items()), markdown)
    return "\n".join(lines).rstrip("\n") + "\n"


def _sections() -> list[tuple[str, list[tuple[str, ...]]]]:
    rows: dict[str, list[tuple[str, ...]]] = {"model options": []}
    for heading in SECTIONS:
        rows[heading] = []
    for name, field in public_fields().items():
        heading = next((heading for heading, names in SECTIONS.items() if name in names), "model options")
        kind, choices = _kind(field.annotation)
        values = "|".join(choices) if choices else kind
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if extra.get("nargs"):  # several values (--lora-modules a=PATH b=PATH)
            values = f"{extra.get('metavar', kind)} ..."
        rows[heading].append((name, values, _show(field.get_default(call_default_factory=True)),
                              field.description or ""))
    return list(rows.items())


def _table(heading: str, columns: list[str], rows: list[tuple[Any, ...]], markdown: bool) -> list[str]:
    if markdown:
        out = [f"## {heading[:1].upper()}{heading[1:]}", "", "| " + " | ".join(columns) + " |",
               "|" + "---|" * len(columns)]
        out += ["| " + " | ".join(f"`{row[0]}`" if i == 0 else str(cell).replace("|", "\\|")
                                  for i, cell in enumerate(row)) + " |" for row in rows]
        return [*out, ""]
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(columns) - 1)]
    out = [f"{heading[:1].upper()}{heading[1:]}:"]
    for row in rows:
        head = "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths))
        out.append(f"  {head}  {row[-1]}")
    return [*out, ""]


def _paragraphs(heading: str, texts: list[str], markdown: bool) -> list[str]:
    if markdown:
        return [f"## {heading}", "", *[f"{text}\n" for text in texts]]
    wrapped = [textwrap.fill(text, 116, initial_indent="  ", subsequent_indent="    ") for text in texts]
    return [f"{heading}:", *wrapped, ""]


def _templates() -> str:
    from lmchat.templates.registry import template_names

    return ", ".join(template_names()) + (
        ". LLaMA-Factory's names render what LLaMA-Factory renders; NAME-official renders the official template of "
        "that family. A .jinja file or Jinja text works too; no template: the model's own."
    )


def _engines() -> str:
    from lmchat.engines.registry import engine_names

    return ", ".join(engine_names()) + " (aliases: hf, llama.cpp, kt)."
