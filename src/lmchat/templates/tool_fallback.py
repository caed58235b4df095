"""Tools for chat templates that ignore them: LLaMA-Factory's default tool prompt, so tools are never dropped.

A chat template without a tools section (SmolLM2's own, for one) renders the same prompt with and without
``tools``. lmchat then does what LLaMA-Factory does with such a template (``parse_template`` with the ``default``
tool format): the tools are described in the system message by LLaMA-Factory's default tool prompt (appended to
the conversation's system prompt, else to the template's own default system prompt), earlier tool calls become
``Action: NAME`` / ``Action Input: JSON`` lines of the assistant's turn, and tool results become user turns. The
answer is read by the ``default`` (ReAct) tool parser, which reads exactly that format.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import meta

from lmchat.errors import UnsupportedError
from lmchat.templates.jinja_env import make_environment
from lmchat.templates.registry import ChatTemplate
from lmchat.templates.render import render_prompt

FALLBACK_TOOL_PARSER = "default"
# LLaMA-Factory's DEFAULT_TOOL_PROMPT (src/llamafactory/data/tool_utils.py), the same text as named/default.jinja.
_TOOL_PROMPT = (
    "You have access to the following tools:\n{tool_text}"
    "Use the following format if using a tool:\n```\n"
    "Action: tool name (one of [{tool_names}])\n"
    "Action Input: the input to the tool, in a JSON format representing the kwargs "
    '(e.g. ```{{"input": "hello world", "num_beams": 5}}```)\n```\n'
)
_MARK_SYSTEM, _MARK_USER = "\x00lmchat-system\x00", "\x00lmchat-user\x00"


@dataclass(frozen=True)
class RenderedChat:
    """A rendered prompt; ``tool_fallback``: the tools were described by the default tool prompt."""

    prompt: str
    tool_fallback: bool = False


def render_chat(conversation: Sequence[Mapping[str, Any]], template: ChatTemplate, *,
                tools: Sequence[Mapping[str, Any]] | None, special_tokens: Mapping[str, str],
                add_generation_prompt: bool = True, documents: Sequence[Mapping[str, Any]] | None = None,
                **template_kwargs: Any) -> RenderedChat:
    """The prompt of ``conversation``; tools the template ignores are described by the default tool prompt.
    ``documents`` that the template ignores are refused (no fallback: a RAG prompt format is the model's own)."""
    def render(messages: Sequence[Mapping[str, Any]], with_tools: Sequence[Mapping[str, Any]] | None,
               with_documents: Sequence[Mapping[str, Any]] | None = documents) -> str:
        return render_prompt(messages, template, tools=with_tools, add_generation_prompt=add_generation_prompt,
                             special_tokens=special_tokens, documents=with_documents, **template_kwargs)

    prompt = render(conversation, tools)
    if documents and prompt == render(conversation, tools, None):
        raise UnsupportedError(
            f"The chat template '{template.name}' ignores documents, so they would be dropped: choose a template "
            "that renders documents (a RAG template such as Command R's or Granite's, or chat_template with a "
            "documents section), or put the documents into a message.", param="documents",
        )
    if not tools or (reads_tools(template.source) and prompt != render(conversation, None)):
        return RenderedChat(prompt)
    default_system = template_default_system(template, tuple(sorted(special_tokens.items())))
    return RenderedChat(render(with_tool_prompt(conversation, tools, default_system), None), tool_fallback=True)


@lru_cache(maxsize=64)
def reads_tools(source: str) -> bool:
    """Whether a template refers to ``tools`` at all (one that does may still ignore them: render_chat compares)."""
    try:
        return "tools" in meta.find_undeclared_variables(make_environment().parse(source))
    except jinja2.TemplateSyntaxError:
        return True  # rendering will report the error


def with_tool_prompt(conversation: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]],
                     default_system: str = "") -> list[dict[str, Any]]:
    """The conversation as LLaMA-Factory renders it with the default tool format (a new list; the messages are
    copied, never changed)."""
    messages = [dict(message) for message in conversation]
    tool_text = default_tool_prompt(tools)
    if messages and messages[0]["role"] in ("system", "developer"):
        messages[0]["content"] = f"{messages[0].get('content') or ''}{tool_text}"
    else:
        messages.insert(0, {"role": "system", "content": default_system + tool_text})
    for message in messages:
        if message["role"] == "assistant" and message.get("tool_calls"):
            calls = function_text(message.pop("tool_calls"))
            message["content"] = f"{message['content']}\n{calls}" if message.get("content") else calls
        elif message["role"] == "tool":
            message["role"] = "user"
            message.pop("tool_call_id", None)
    return messages


def default_tool_prompt(tools: Sequence[Mapping[str, Any]]) -> str:
    """LLaMA-Factory's ``DefaultToolUtils.tool_formatter``: each tool's name, description and arguments."""
    tool_text, names = "", []
    for tool in tools:
        function = tool.get("function", {}) if tool.get("type", "function") == "function" else tool
        parameters = function.get("parameters") or {}
        required = parameters.get("required") or []
        args = ""
        for name, spec in (parameters.get("properties") or {}).items():
            spec = spec if isinstance(spec, Mapping) else {}
            enum = ", should be one of [{}]".format(", ".join(map(str, spec["enum"]))) if spec.get("enum") else ""
            items = spec.get("items")
            item_text = f", where each item should be {items.get('type', '')}" if isinstance(items, Mapping) else ""
            args += (f"  - {name} ({spec.get('type', '')}{', required' if name in required else ''}): "
                     f"{spec.get('description', '')}{enum}{item_text}\n")
        tool_text += (f"> Tool Name: {function['name']}\nTool Description: {function.get('description') or ''}\n"
                      f"Tool Args:\n{args}\n")
        names.append(function["name"])
    return _TOOL_PROMPT.format(tool_text=tool_text, tool_names=", ".join(names))


def function_text(tool_calls: Sequence[Mapping[str, Any]]) -> str:
    """LLaMA-Factory's ``DefaultToolUtils.function_formatter``: ``Action: NAME\\nAction Input: JSON`` lines."""
    lines = []
    for call in tool_calls:
        function = call.get("function", call)
        arguments = function.get("arguments", {})
        text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
        lines.append(f"Action: {function.get('name')}\nAction Input: {text}")
    return "\n".join(lines)


_DEFAULT_SYSTEMS: dict[tuple[str, str, tuple[tuple[str, str], ...]], str] = {}


def template_default_system(template: ChatTemplate, special_tokens: tuple[tuple[str, str], ...]) -> str:
    """:func:`find_default_system`, once per template and tokens."""
    key = (template.name, template.source, special_tokens)
    if key not in _DEFAULT_SYSTEMS:
        _DEFAULT_SYSTEMS[key] = find_default_system(template, dict(special_tokens))
    return _DEFAULT_SYSTEMS[key]


def find_default_system(template: ChatTemplate, special_tokens: Mapping[str, str]) -> str:
    """The system prompt a template writes when the conversation has none (SmolLM2's "You are a helpful AI
    assistant named SmolLM, ..."), found as LLaMA-Factory's ``parse_template`` finds it: by rendering a user turn
    with and without a system turn. Empty when the template writes none (or cannot be read this way)."""
    def render(messages: list[dict[str, str]]) -> str:
        return render_prompt(messages, template, add_generation_prompt=False, special_tokens=special_tokens)

    try:
        alone = render([{"role": "user", "content": _MARK_USER}])
        with_system = render([{"role": "system", "content": _MARK_SYSTEM}, {"role": "user", "content": _MARK_USER}])
    except Exception:  # noqa: BLE001 - a template that needs more than this: no default system prompt
        return ""
    if _MARK_SYSTEM not in with_system or _MARK_USER not in alone:
        return ""
    head, after = with_system.split(_MARK_SYSTEM, 1)
    between = after.split(_MARK_USER, 1)[0]  # the system turn's end and the user turn's start
    before_user = alone.split(_MARK_USER, 1)[0]
    if not before_user.startswith(head) or not before_user.endswith(between):
        return ""
    return before_user[len(head): len(before_user) - len(between)]
