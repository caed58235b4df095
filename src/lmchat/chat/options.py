"""One call's options, split and validated once: the sampling options (merged over the config's defaults into one
:class:`SamplingParams` the engine must be able to honour), the chat template's keyword arguments, and
``tool_choice``. The facade, the CLI's ``/set`` and the batch sampler all go through :func:`resolve_options`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lmchat.errors import InvalidRequestError
from lmchat.generation.sampling import SamplingParams, resolve_sampling
from lmchat.structured import Constraint
from lmchat.structured.requests import REQUEST_FIELDS, pop_constraint

if TYPE_CHECKING:
    from lmchat.config.model_config import ModelConfig
    from lmchat.engines.base import BaseEngine

# Per-call options that go to the chat template (or the tool list), not to the sampler.
TEMPLATE_OPTIONS = ("chat_template_kwargs", "enable_thinking", "reasoning_effort")
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high")
TOOL_OPTIONS = ("tool_choice", "parallel_tool_calls")


@dataclass(frozen=True)
class CallOptions:
    params: SamplingParams
    template_kwargs: dict[str, Any] = field(default_factory=dict)
    tool_choice: Any = None
    parallel_tool_calls: Any = None
    constraint: Constraint | None = None
    """Structured output asked for by its request fields (response_format, guided_json...: REQUEST_FIELDS);
    checked with the prompt (lmchat.structured.prepare)."""


def resolve_options(config: ModelConfig, engine: BaseEngine, options: Mapping[str, Any]) -> CallOptions:
    """Split ``options`` (``ChatModel.chat``'s keyword arguments) and validate each part; raises before any work."""
    skipped = (*TEMPLATE_OPTIONS, *TOOL_OPTIONS, *REQUEST_FIELDS)
    sampling = {key: value for key, value in options.items() if key not in skipped}
    constraint = pop_constraint({key: options[key] for key in REQUEST_FIELDS if key in options})
    params = resolve_sampling(config.generation_defaults(), sampling)
    engine.capabilities.check_sampling(params, engine.name)
    return CallOptions(params, _template_kwargs(config, options), options.get("tool_choice"),
                       options.get("parallel_tool_calls"), constraint)


def _template_kwargs(config: ModelConfig, options: Mapping[str, Any]) -> dict[str, Any]:
    kwargs = options.get("chat_template_kwargs") or {}
    if not isinstance(kwargs, Mapping):
        raise InvalidRequestError("chat_template_kwargs must be a dict.", param="chat_template_kwargs")
    kwargs = dict(kwargs)
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
    return kwargs
