"""Turn one chat call's arguments into a validated, rendered request before any engine work starts.

Everything an engine needs is decided here, once: the merged options (:mod:`lmchat.chat.options`), the
conversation and its media (:mod:`lmchat.chat.messages`), the prompt text and token ids, and the answer's token
budget. :meth:`PreparedChat.requests` turns the result into the engines' :class:`GenerationRequest` objects.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
import logging
from dataclasses import dataclass, field, replace
from typing import Any

from lmchat.chat.messages import Media, build_conversation, media_of, normalise_tools
from lmchat.chat.options import CallOptions
from lmchat.chat.output import ParsingPlan, plan_parsing
from lmchat.config.model_config import ModelConfig
from lmchat.engines.base import BaseEngine, GenerationRequest
from lmchat.errors import ContextLengthError, InvalidRequestError
from lmchat.generation.sampling import SamplingParams, resolve_sampling
from lmchat.structured.prepare import StructuredRequest
from lmchat.structured.requests import pop_constraint
from lmchat.templates.registry import ChatTemplate
from lmchat.templates.render import render_prompt

logger = logging.getLogger("lmchat.chat")


@dataclass(frozen=True)
class PreparedChat:
    """A chat request ready for the engine: the exact prompt text and tokens, the merged options, and the answer's
    token budget (``max_tokens``: ``max_new_tokens`` cut by ``max_length`` and the model's context)."""

    conversation: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    prompt: str
    prompt_token_ids: tuple[int, ...]
    params: SamplingParams
    max_tokens: int
    template_kwargs: dict[str, Any] = field(default_factory=dict)
    media: Media = Media()
    parsing: ParsingPlan = ParsingPlan()

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    def requests(self, request_id: str | None = None) -> list[GenerationRequest]:
        """One engine request per answer; answer i samples with ``seed + i`` when a seed is given."""
        base = request_id or uuid.uuid4().hex
        params = self.params
        return [
            GenerationRequest(
                request_id=f"{base}-{i}",
                prompt=self.prompt,
                params=params.model_copy(update={"n": 1, "seed": None if params.seed is None else params.seed + i}),
                prompt_token_ids=self.prompt_token_ids,
                max_tokens=self.max_tokens,
                images=self.media.images,
                videos=self.media.videos,
                audios=self.media.audios,
            )
            for i in range(params.n)
        ]


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
    media: Media = Media(),
    options: CallOptions,
) -> PreparedChat:
    """Validate everything and render the prompt; raises an LmchatError before any engine work.

    ``media`` (LLaMA-Factory's ``images=`` ...) comes first, then the media of the messages' content parts.
    """
    conversation = build_conversation(messages, system, config.default_system)
    media = media + media_of(conversation)
    engine.capabilities.check_media(engine.name, **media.by_kind())
    structured = StructuredRequest.of(options.constraint, normalise_tools(tools), options.tool_choice,
                                      options.parallel_tool_calls)
    tool_list = structured.prompt_tools
    prompt = render_prompt(
        conversation, template, tools=tool_list, special_tokens=engine.info.special_tokens, **options.template_kwargs
    )
    prompt, token_ids = cut_prompt(engine, prompt, tuple(engine.tokenize(prompt)), config.cutoff_len)
    plan = replace(plan_parsing(template, config.tool_parser, tool_list, prompt), **structured.parsing_changes())
    params = structured.constrain(options.params, engine, prompt, plan.reasoning_parser, plan.starts_in_reasoning)
    params = with_stops(params, stops)
    return PreparedChat(
        conversation, tool_list, prompt, token_ids, params,
        max_tokens=answer_budget(len(token_ids), params, engine.info.context_length),
        template_kwargs=options.template_kwargs, media=media, parsing=plan,
    )


def with_stops(params: SamplingParams, stops: TemplateStops) -> SamplingParams:
    """The template's end-of-turn tokens and strings added (a constrained answer ends with its constraint, so
    stop strings, which could cut it, are not added to it)."""
    strings = () if params.constraint is not None else stops.strings
    return params.model_copy(
        update={"stop": params.stop + strings, "stop_token_ids": params.stop_token_ids + stops.token_ids}
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


def answer_budget(prompt_tokens: int, params: SamplingParams, context_length: int | None,
                  param: str = "messages") -> int:
    """How many tokens the answer may have: ``max_new_tokens``, bounded by ``max_length`` and the context. A prompt
    that leaves no room for one new token within either limit is a :class:`ContextLengthError`."""
    for limit, what in ((params.max_length, "max_length"), (context_length, "the model's context length")):
        if limit is not None and prompt_tokens >= limit:
            raise ContextLengthError(
                f"The prompt has {prompt_tokens} tokens, which leaves no room for an answer within {what} "
                f"({limit} tokens). Shorten the conversation or raise the limit.",
                param=param,
            )
    limits = [params.max_new_tokens] if params.max_new_tokens else []
    limits += [limit - prompt_tokens for limit in (params.max_length, context_length) if limit]
    return max(1, min(limits)) if limits else 1 << 30


def prepare_completion(config: ModelConfig, engine: BaseEngine, stops: TemplateStops, prompt: str,
                       generation: Mapping[str, Any]) -> PreparedChat:
    """A raw-prompt request (no chat template), validated like a chat request."""
    if not isinstance(prompt, str) or not prompt:
        raise InvalidRequestError("prompt must be a non-empty string.", param="prompt")
    generation = dict(generation)
    structured = StructuredRequest.of(pop_constraint(generation))
    params = resolve_sampling(config.generation_defaults(), generation)
    engine.capabilities.check_sampling(params, engine.name)
    params = structured.constrain(params, engine, prompt)
    params = params.model_copy(update={"stop_token_ids": params.stop_token_ids + stops.token_ids})
    prompt, token_ids = cut_prompt(engine, prompt, tuple(engine.tokenize(prompt)), config.cutoff_len)
    budget = answer_budget(len(token_ids), params, engine.info.context_length, param="prompt")
    return PreparedChat([], None, prompt, token_ids, params, max_tokens=budget)
