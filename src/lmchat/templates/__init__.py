"""Chat templates: render a conversation to prompt text, with the model's own template or a named one."""

from lmchat.templates.registry import ChatTemplate, TemplateSpec, register_template, resolve_template, template_names
from lmchat.templates.render import render_prompt

__all__ = ["ChatTemplate", "TemplateSpec", "register_template", "render_prompt", "resolve_template", "template_names"]
