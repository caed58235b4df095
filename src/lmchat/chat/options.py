"""One call's options, split and validated once: the sampling options (merged over the config's defaults into one
:class:`SamplingParams` the engine must be able to honour), the chat template's keyword arguments, and
``tool_choice``. The facade, the CLI's ``/set`` and the batch sampler all go through :func:`resolve_options`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lmchat.chat.inputs import check_input
from lmchat.errors import InvalidRequestError, UnsupportedError
from lmchat.generation.sampling import OPTION_ALIASES, SamplingParams, resolve_sampling
from lmchat.structured import Constraint
from lmchat.structured.requests import REQUEST_FIELDS, pop_constraint
from lmchat.templates.continuation import generation_prompt_flags

if TYPE_CHECKING:
    from lmchat.config.model_config import ModelConfig
    from lmchat.engines.base import BaseEngine

# Per-call options that go to the chat template (or the tool list), not to the sampler.
TEMPLATE_OPTIONS = ("chat_template_kwargs", "enable_thinking", "reasoning_effort", "add_generation_prompt",
                    "continue_final_message")
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high")
TOOL_OPTIONS = ("tool_choice", "parallel_tool_calls")
DOCUMENT_OPTIONS = ("documents",)  # vLLM's: passed to the chat template as ``documents`` (RAG templates)
ADAPTER_OPTION = "adapter"  # the named LoRA adapter a call runs with (None: the base model)
# What the renderer passes to every chat template itself (templates/render.py): not settable per call.
RESERVED_TEMPLATE_NAMES = frozenset({"messages", "tools", "documents", "add_generation_prompt", "special_tokens",
                                     "template"})


@dataclass(frozen=True)
class CallOptions:
    params: SamplingParams
    template_kwargs: dict[str, Any] = field(default_factory=dict)
    tool_choice: Any = None
    parallel_tool_calls: Any = None
    constraint: Constraint | None = None
    """Structured output asked for by its request fields (response_format, guided_json...: REQUEST_FIELDS);
    checked with the prompt (lmchat.structured.prepare)."""
    explicit: frozenset[str] = frozenset()
    """The sampling options the user set (in this call or in the config), as opposed to defaults."""
    documents: list[dict[str, Any]] | None = None
    """vLLM's ``documents``: the chat template's ``documents`` (a template that ignores them is refused)."""
    adapter: str | None = None
    """The named LoRA adapter the call runs with (checked: loaded and not being unloaded); None: the base model."""

    def user_value(self, name: str) -> Any:
        """The option's value when the user set it, else None."""
        return getattr(self.params, name) if name in self.explicit else None


def resolve_options(config: ModelConfig, engine: BaseEngine, options: Mapping[str, Any]) -> CallOptions:
    """Split ``options`` (``ChatModel.chat``'s keyword arguments) and validate each part; raises before any work."""
    skipped = (*TEMPLATE_OPTIONS, *TOOL_OPTIONS, *DOCUMENT_OPTIONS, *REQUEST_FIELDS, ADAPTER_OPTION)
    sampling = {key: value for key, value in options.items() if key not in skipped}
    constraint = pop_constraint({key: options[key] for key in REQUEST_FIELDS if key in options})
    params = resolve_sampling(config.generation_defaults(), sampling)
    engine.capabilities.check_sampling(params, engine.name)
    check_token_ids(params, engine.info.vocab_size)
    explicit = {OPTION_ALIASES.get(key, key) for key, value in sampling.items() if value is not None}
    explicit |= config.model_fields_set & set(config.generation_defaults())
    return CallOptions(params, _template_kwargs(config, options), options.get("tool_choice"),
                       parallel_tool_calls=options.get("parallel_tool_calls"), constraint=constraint,
                       explicit=frozenset(explicit), documents=_documents(options.get("documents")),
                       adapter=resolve_adapter(engine, options.get(ADAPTER_OPTION)))


def resolve_adapter(engine: BaseEngine, name: Any) -> str | None:
    """A call's ``adapter``: the name of a loaded adapter of the engine, or None for the base model."""
    if name is None:
        return None
    if not engine.capabilities.named_adapters:
        raise UnsupportedError(f"The {engine.label or engine.name} engine does not serve named LoRA adapters; "
                               "leave adapter out.", param=ADAPTER_OPTION)
    return engine.adapters.check(name, ADAPTER_OPTION)


def check_token_ids(params: SamplingParams, vocab_size: int | None) -> None:
    """Every token id an option names (``logit_bias``, ``allowed_token_ids``) must be one of the model's (ids
    0 .. vocab_size - 1)."""
    for name, ids in (("logit_bias", params.logit_bias or ()), ("allowed_token_ids", params.allowed_token_ids or ())):
        outside = sorted(token for token in ids if vocab_size is not None and token >= vocab_size)
        if outside:
            raise InvalidRequestError(
                f"{name} names token id {outside[0]}, but the model's vocabulary has ids 0 to {vocab_size - 1}.",
                param=name,
            )


def _documents(documents: Any) -> list[dict[str, Any]] | None:
    """vLLM's ``documents``: a list of dicts (``{"title": ..., "text": ...}`` in most RAG templates)."""
    if documents is None:
        return None
    if not isinstance(documents, list) or not all(isinstance(doc, Mapping) for doc in documents):
        raise InvalidRequestError("documents must be a list of objects (for example {\"title\": ..., \"text\": ...}).",
                                  param="documents")
    check_input(documents, "documents")
    return [dict(doc) for doc in documents] or None


def check_template_kwargs(kwargs: Any) -> dict[str, Any]:
    """``chat_template_kwargs`` as a dict of names the template may read; the names lmchat itself passes (the
    messages, tools, special tokens, ...) cannot be set through it."""
    if not isinstance(kwargs, Mapping):
        raise InvalidRequestError("chat_template_kwargs must be a dict.", param="chat_template_kwargs")
    check_input(kwargs, "chat_template_kwargs")
    reserved = sorted(set(kwargs) & RESERVED_TEMPLATE_NAMES)
    if reserved:
        raise InvalidRequestError(
            f"chat_template_kwargs cannot set '{reserved[0]}': lmchat passes it to the template itself (send "
            "messages and tools as the request's own fields).", param="chat_template_kwargs",
        )
    return dict(kwargs)


def _template_kwargs(config: ModelConfig, options: Mapping[str, Any]) -> dict[str, Any]:
    kwargs = check_template_kwargs(options.get("chat_template_kwargs") or {})
    thinking = options.get("enable_thinking")
    if thinking is not None and not isinstance(thinking, bool):
        raise InvalidRequestError(f"Invalid value for 'enable_thinking': use true or false (got {thinking!r}).",
                                  param="enable_thinking")
    kwargs.setdefault("enable_thinking", config.enable_thinking if thinking is None else thinking)
    effort = options.get("reasoning_effort")
    if effort is not None:  # OpenAI's option; gpt-oss's template reads it
        if effort not in REASONING_EFFORTS:
            raise InvalidRequestError(
                f"reasoning_effort must be one of {', '.join(map(repr, REASONING_EFFORTS))}, not {effort!r}.",
                param="reasoning_effort",
            )
        kwargs.setdefault("reasoning_effort", effort)
    _generation_prompt_kwargs(options, kwargs)
    return kwargs


def _generation_prompt_kwargs(options: Mapping[str, Any], kwargs: dict[str, Any]) -> None:
    """``add_generation_prompt`` / ``continue_final_message`` (vLLM's request fields, or chat_template_kwargs)."""
    values = []
    for name in ("add_generation_prompt", "continue_final_message"):
        value = options.get(name) if options.get(name) is not None else kwargs.get(name)
        if value is not None and not isinstance(value, bool):
            raise InvalidRequestError(f"Invalid value for '{name}': use true or false (got {value!r}).", param=name)
        values.append(value)
    add, keep = generation_prompt_flags(*values)
    if not add:  # rendering adds it by default
        kwargs["add_generation_prompt"] = False
    if keep:
        kwargs["continue_final_message"] = True
