"""Turn one chat call's arguments into a validated, rendered request before any engine work starts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from lmchat.chat.messages import build_conversation, normalise_tools
from lmchat.chat.output import ParsingPlan, plan_parsing
from lmchat.config.model_config import ModelConfig
from lmchat.engines.base import BaseEngine
from lmchat.errors import ContextLengthError, InvalidRequestError
from lmchat.generation.sampling import SamplingParams, resolve_sampling
from lmchat.structured.prepare import StructuredRequest
from lmchat.templates.registry import ChatTemplate
from lmchat.templates.render import render_prompt


@dataclass(frozen=True)
class PreparedChat:
    """A chat request ready for the engine: the exact prompt text and tokens, and the merged options."""

    conversation: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    prompt: str
    prompt_token_ids: tuple[int, ...]
    params: SamplingParams
    template_kwargs: dict[str, Any]
    images: tuple[Any, ...] = ()
    videos: tuple[Any, ...] = ()
    audios: tuple[Any, ...] = ()
    parsing: ParsingPlan = ParsingPlan()

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)


@dataclass(frozen=True)
class TemplateStops:
    """What ends a turn for this template and tokenizer: single special tokens as ids, the rest as strings."""

    token_ids: tuple[int, ...]
    strings: tuple[str, ...]

    @classmethod
    def resolve(cls, template: ChatTemplate, engine: BaseEngine) -> TemplateStops:
        token_ids: list[int] = []
        strings: list[str] = []
        for word in template.stop_words:
            ids = _try_tokenize(engine, word)
            if ids is not None and len(ids) == 1:
                token_ids.append(ids[0])
            else:
                strings.append(word)
        return cls(tuple(token_ids), tuple(strings))


def _try_tokenize(engine: BaseEngine, text: str) -> list[int] | None:
    try:
        return engine.tokenize(text)
    except InvalidRequestError:
        return None


def prepare_chat(
    config: ModelConfig,
    engine: BaseEngine,
    template: ChatTemplate,
    stops: TemplateStops,
    messages: Sequence[Mapping[str, Any]],
    *,
    system: str | None = None,
    tools: Any = None,
    images: Sequence[Any] | None = None,
    videos: Sequence[Any] | None = None,
    audios: Sequence[Any] | None = None,
    generation: dict[str, Any],
) -> PreparedChat:
    """Validate everything and render the prompt; raises an LmchatError before any engine work."""
    generation = dict(generation)
    template_kwargs = dict(generation.pop("chat_template_kwargs", None) or {})
    template_kwargs.setdefault("enable_thinking", generation.pop("enable_thinking", config.enable_thinking))
    if "reasoning_effort" in generation:  # OpenAI's option; gpt-oss's template reads it
        template_kwargs.setdefault("reasoning_effort", check_reasoning_effort(generation.pop("reasoning_effort")))
    structured = StructuredRequest.take(generation, normalise_tools(tools))
    params = resolve_sampling(config.generation_defaults(), generation)
    engine.capabilities.check_sampling(params, engine.name)
    engine.capabilities.check_media(engine.name, images=images, videos=videos, audios=audios)
    conversation = build_conversation(messages, system, config.default_system)
    tool_list = structured.prompt_tools
    prompt = render_prompt(
        conversation, template, tools=tool_list, special_tokens=engine.info.special_tokens, **template_kwargs
    )
    plan = replace(plan_parsing(template, config.tool_parser, tool_list, prompt), **structured.parsing_changes())
    params = with_stops(structured.constrain(params, engine, prompt, plan.reasoning_parser, plan.starts_in_reasoning),
                        stops)
    token_ids = tuple(engine.tokenize(prompt))
    check_context(len(token_ids), params, engine.info.context_length)
    return PreparedChat(
        conversation, tool_list, prompt, token_ids, params, template_kwargs,
        tuple(images or ()), tuple(videos or ()), tuple(audios or ()), plan,
    )


def with_stops(params: SamplingParams, stops: TemplateStops) -> SamplingParams:
    """The template's end-of-turn tokens and strings added (a constrained answer ends with its constraint, so
    stop strings, which could cut it, are not added to it)."""
    strings = () if params.constraint is not None else stops.strings
    return params.model_copy(
        update={"stop": params.stop + strings, "stop_token_ids": params.stop_token_ids + stops.token_ids}
    )


REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high")


def check_reasoning_effort(value: Any) -> str:
    if value not in REASONING_EFFORTS:
        raise InvalidRequestError(
            f"reasoning_effort must be one of {', '.join(map(repr, REASONING_EFFORTS))}, not {value!r}.",
            param="reasoning_effort",
        )
    return value


def check_context(prompt_tokens: int, params: SamplingParams, context_length: int | None,
                  param: str = "messages") -> None:
    """The prompt must leave room for at least one new token within max_length and the model's context."""
    for limit, what in ((params.max_length, "max_length"), (context_length, "the model's context length")):
        if limit is not None and prompt_tokens >= limit:
            raise ContextLengthError(
                f"The prompt has {prompt_tokens} tokens, which leaves no room for an answer within {what} "
                f"({limit} tokens). Shorten the conversation or raise the limit.",
                param=param,
            )


def answer_budget(prompt_tokens: int, params: SamplingParams, context_length: int | None) -> int:
    """How many tokens the answer may have: max_new_tokens, bounded by max_length and the context."""
    limits = [params.max_new_tokens] if params.max_new_tokens else []
    limits += [limit - prompt_tokens for limit in (params.max_length, context_length) if limit]
    return max(1, min(limits)) if limits else 1 << 30


def prepare_completion(config: ModelConfig, engine: BaseEngine, stops: TemplateStops, prompt: str,
                       generation: dict[str, Any]) -> PreparedChat:
    """A raw-prompt request (no chat template), validated like a chat request."""
    if not isinstance(prompt, str) or not prompt:
        raise InvalidRequestError("prompt must be a non-empty string.", param="prompt")
    generation = dict(generation)
    structured = StructuredRequest.take(generation, None)
    params = resolve_sampling(config.generation_defaults(), generation)
    engine.capabilities.check_sampling(params, engine.name)
    params = structured.constrain(params, engine, prompt)
    params = params.model_copy(update={"stop_token_ids": params.stop_token_ids + stops.token_ids})
    token_ids = tuple(engine.tokenize(prompt))
    check_context(len(token_ids), params, engine.info.context_length, param="prompt")
    return PreparedChat([], None, prompt, token_ids, params, {})
