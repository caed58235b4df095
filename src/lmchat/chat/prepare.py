"""Turn one chat call's arguments into a validated, rendered request before any engine work starts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import logging
from dataclasses import dataclass
from typing import Any

from lmchat.chat.messages import build_conversation, normalise_tools
from lmchat.chat.output import ParsingPlan, apply_tool_choice, plan_parsing
from lmchat.config.model_config import ModelConfig
from lmchat.engines.base import BaseEngine
from lmchat.errors import ContextLengthError, InvalidRequestError
from lmchat.generation.sampling import SamplingParams, resolve_sampling
from lmchat.templates.registry import ChatTemplate
from lmchat.templates.render import render_prompt

logger = logging.getLogger("lmchat.chat")


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
    tool_choice = generation.pop("tool_choice", None)
    params = resolve_sampling(config.generation_defaults(), generation)
    engine.capabilities.check_sampling(params, engine.name)
    engine.capabilities.check_media(engine.name, images=images, videos=videos, audios=audios)
    params = params.model_copy(
        update={"stop": params.stop + stops.strings, "stop_token_ids": params.stop_token_ids + stops.token_ids}
    )
    conversation = build_conversation(messages, system, config.default_system)
    tool_list = apply_tool_choice(normalise_tools(tools), tool_choice, engine.name)
    prompt = render_prompt(
        conversation, template, tools=tool_list, special_tokens=engine.info.special_tokens, **template_kwargs
    )
    prompt, token_ids = cut_prompt(engine, prompt, tuple(engine.tokenize(prompt)), config.cutoff_len)
    check_context(len(token_ids), params, engine.info.context_length)
    return PreparedChat(
        conversation, tool_list, prompt, token_ids, params, template_kwargs,
        tuple(images or ()), tuple(videos or ()), tuple(audios or ()),
        plan_parsing(template, config.tool_parser, tool_list, prompt),
    )


def cut_prompt(engine: BaseEngine, prompt: str, token_ids: tuple[int, ...],
               cutoff_len: int | None) -> tuple[str, tuple[int, ...]]:
    """LLaMA-Factory's ``cutoff_len``: a longer prompt keeps its last ``cutoff_len`` tokens (the answer's opening
    stays), and the prompt text becomes what those tokens spell."""
    if cutoff_len is None or len(token_ids) <= cutoff_len:
        return prompt, token_ids
    kept = token_ids[-cutoff_len:]
    logger.info("The prompt has %d tokens; cutoff_len keeps its last %d.", len(token_ids), cutoff_len)
    return engine.detokenize(kept), kept


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
    params = resolve_sampling(config.generation_defaults(), generation)
    engine.capabilities.check_sampling(params, engine.name)
    params = params.model_copy(update={"stop_token_ids": params.stop_token_ids + stops.token_ids})
    prompt, token_ids = cut_prompt(engine, prompt, tuple(engine.tokenize(prompt)), config.cutoff_len)
    check_context(len(token_ids), params, engine.info.context_length, param="prompt")
    return PreparedChat([], None, prompt, token_ids, params, {})
