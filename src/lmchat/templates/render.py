"""Render a conversation into prompt text. Needs no model: a template (name, Jinja text or file) is enough."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import jinja2

from lmchat.errors import TemplateError
from lmchat.templates.jinja_env import compile_template
from lmchat.templates.registry import ChatTemplate, resolve_template

# Names a message's reasoning may come under; templates read ``reasoning_content`` (gpt-oss reads ``thinking``).
_REASONING_KEYS = ("reasoning_content", "thinking", "reasoning")


def render_prompt(
    messages: Sequence[Mapping[str, Any]],
    template: str | ChatTemplate,
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    documents: Sequence[Mapping[str, Any]] | None = None,
    add_generation_prompt: bool = True,
    special_tokens: Mapping[str, str] | None = None,
    **template_kwargs: Any,
) -> str:
    """The prompt text for ``messages``.

    ``template`` is a known template name, a path to a ``.jinja`` file, Jinja source, or a resolved
    :class:`ChatTemplate`. ``documents`` (vLLM's request field) is the template's ``documents``. ``special_tokens`` (``bos_token``, ``eos_token``, ...) and ``template_kwargs``
    (``enable_thinking``, ...) are visible to the template, as with transformers' ``apply_chat_template``.
    """
    chat_template = template if isinstance(template, ChatTemplate) else resolve_template(template)
    variables = {**chat_template.special_tokens, **dict(special_tokens or {}), **template_kwargs}
    try:
        return compile_template(chat_template.source).render(
            messages=[_alias_reasoning(m) for m in copy.deepcopy(list(messages))],
            tools=copy.deepcopy(list(tools)) if tools else None,
            documents=copy.deepcopy(list(documents)) if documents else None,
            add_generation_prompt=add_generation_prompt,
            **variables,
        )
    except jinja2.TemplateError as exc:
        raise TemplateError(f"The chat template '{chat_template.name}' rejected the conversation: {exc}") from None


def _alias_reasoning(message: dict[str, Any]) -> dict[str, Any]:
    reasoning = next((message[key] for key in _REASONING_KEYS if message.get(key) is not None), None)
    if reasoning is None:
        return message
    return {"thinking": reasoning, **message, "reasoning_content": reasoning}
