"""LLaMA-Factory's tool formats (``tool_format``): how a template lists the tools and writes tool calls.

LLaMA-Factory-style templates render each format in ``named/_slots.jinja``; the answer's calls are read back by
the lmchat tool parser named here.
"""

from __future__ import annotations

from lmchat.errors import ConfigError, unknown_name_message

TOOL_PARSERS: dict[str, str] = {
    "default": "default", "qwen": "hermes", "ling": "hermes", "glm4": "glm4", "llama3": "llama3_json",
    "mistral": "mistral", "glm4_moe": "glm45", "lfm2": "lfm2", "minimax1": "minimax", "minimax2": "minimax_m2",
    "qwen3_5": "qwen3_coder", "seed_oss": "seed_oss",
}
"""Every format's parser reads what LLaMA-Factory's formatter writes (``tests/test_templates_tool_roundtrip.py``);
where that differs from the model's own format, both are read (``docs/tool-calling.md``)."""
NOT_YET = {"gemma4": "Gemma 4's tool format"}
"""Formats LLaMA-Factory has that lmchat cannot render yet."""


def check_tool_format(name: str) -> None:
    """Raise ConfigError unless lmchat can render the tool format ``name``."""
    if name in TOOL_PARSERS:
        return
    if name in NOT_YET:
        raise ConfigError(
            f"tool_format '{name}' ({NOT_YET[name]}) is not available in lmchat yet; leave tool_format out to use "
            f"the template's own format, or choose one of: {', '.join(TOOL_PARSERS)}.",
            param="tool_format",
        )
    raise ConfigError(unknown_name_message("tool_format", name, TOOL_PARSERS), param="tool_format")
