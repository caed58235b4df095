"""Turn one chat call's arguments into a validated, rendered request before any engine work starts.

Everything an engine needs is decided here, once: the merged options (:mod:`lmchat.chat.options`), the
conversation (:mod:`lmchat.chat.messages`) and its media (:mod:`lmchat.chat.media`: which medium each placeholder
stands for, fetched and decoded once), the prompt text and token ids (with media, the engine's processor expands
the placeholders: :meth:`BaseEngine.encode_media_prompt`), and the answer's token budget.
:meth:`PreparedChat.requests` turns the result into the engines' :class:`GenerationRequest` objects.

A chat without media is prepared without any waiting (:func:`prepare_chat`); one with media needs the event loop
for its fetches and decoding on worker threads (:func:`aprepare_chat`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lmchat.chat.media import MediaItem, bind_media, count_by_kind, load_media
from lmchat.chat.messages import Media, build_conversation, normalise_tools
from lmchat.chat.options import CallOptions
from lmchat.chat.output import ParsingPlan, apply_tool_choice, plan_parsing
from lmchat.config.model_config import ModelConfig
from lmchat.engines.base import BaseEngine, GenerationRequest
from lmchat.errors import ContextLengthError, InvalidRequestError
from lmchat.generation.sampling import SamplingParams, resolve_sampling
from lmchat.templates.continuation import cut_after_final_message
from lmchat.templates.registry import ChatTemplate
from lmchat.templates.render import render_prompt

if TYPE_CHECKING:
    from lmchat.media import MediaLoader

logger = logging.getLogger("lmchat.chat")


@dataclass(frozen=True)
class PreparedChat:
    """A chat request ready for the engine: the exact prompt text and tokens, the merged options, and the answer's
    token budget (``max_tokens``: ``max_new_tokens`` cut by ``max_length`` and the model's context). ``media``
    holds the decoded media (RGB PIL images, :class:`~lmchat.media.VideoClip`, :class:`~lmchat.media.AudioClip`)
    in prompt order, ``media_inputs`` what the engine's processor made of them with the prompt (engine-owned)."""

    conversation: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    prompt: str
    prompt_token_ids: tuple[int, ...]
    params: SamplingParams
    max_tokens: int
    template_kwargs: dict[str, Any] = field(default_factory=dict)
    media: Media = Media()
    parsing: ParsingPlan = ParsingPlan()
    media_inputs: Any = None

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
                keep_special_tokens=self.parsing.keep_special_tokens,
                media_inputs=self.media_inputs,
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


@dataclass(frozen=True)
class ChatPlan:
    """A chat call checked and rendered, before its media are loaded and its prompt tokenized."""

    conversation: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    prompt: str
    params: SamplingParams
    template_kwargs: dict[str, Any]
    media: tuple[MediaItem, ...]
    parsing: ParsingPlan


def plan_chat(
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
) -> ChatPlan:
    """Validate everything and render the prompt; raises an LmchatError before any engine work or fetch.

    ``media`` (LLaMA-Factory's ``images=`` ...) fills the conversation's placeholders (see :mod:`lmchat.chat.media`).
    """
    conversation = build_conversation(messages, system, config.default_system)
    offset = len(conversation) - len(messages)
    conversation, items = bind_media(conversation, media, offset)
    engine.capabilities.check_media(engine.name, **count_by_kind(items))
    params = options.params
    params = params.model_copy(
        update={"stop": params.stop + stops.strings, "stop_token_ids": params.stop_token_ids + stops.token_ids}
    )
    tool_list = apply_tool_choice(normalise_tools(tools), options.tool_choice, engine.name)
    prompt = render_prompt(
        conversation, template, tools=tool_list, special_tokens=engine.info.special_tokens, **options.template_kwargs
    )
    if options.template_kwargs.get("continue_final_message"):
        prompt = cut_after_final_message(prompt, conversation)
    return ChatPlan(conversation, tool_list, prompt, params, options.template_kwargs, items,
                    plan_parsing(template, config.tool_parser, tool_list, prompt,
                                 options.user_value("skip_special_tokens")))


def prepare_chat(config: ModelConfig, engine: BaseEngine, template: ChatTemplate, stops: TemplateStops,
                 messages: Sequence[Mapping[str, Any]], **kwargs: Any) -> PreparedChat:
    """:func:`plan_chat`, then the prompt's tokens: a chat without media (those need :func:`aprepare_chat`)."""
    plan = plan_chat(config, engine, template, stops, messages, **kwargs)
    if plan.media:
        raise InvalidRequestError("A chat with media is prepared on the event loop: use ChatModel.aprepare.")
    return _text_prepared(config, engine, plan)


async def aprepare_chat(config: ModelConfig, engine: BaseEngine, template: ChatTemplate, stops: TemplateStops,
                        messages: Sequence[Mapping[str, Any]], *, loader: MediaLoader, **kwargs: Any
                        ) -> PreparedChat:
    """:func:`plan_chat`, then its media fetched and decoded once (worker threads, ``loader``'s policy), then
    the prompt's tokens with the media's placeholders expanded by the engine."""
    plan = plan_chat(config, engine, template, stops, messages, **kwargs)
    if not plan.media:
        return _text_prepared(config, engine, plan)
    media = await load_media(loader, plan.media)
    encoded = await engine.encode_media_prompt(plan.prompt, media)
    token_ids = tuple(encoded.token_ids)
    if config.cutoff_len is not None and len(token_ids) > config.cutoff_len:
        raise ContextLengthError(
            f"The prompt with its media has {len(token_ids)} tokens, more than cutoff_len ({config.cutoff_len}); a "
            "prompt with media is not cut (that would cut a medium's tokens apart). Send smaller or fewer media "
            "(image_max_pixels, video_maxlen), a shorter conversation, or raise cutoff_len.", param="messages",
        )
    return _prepared(plan, plan.prompt, token_ids, engine.info.context_length, media, encoded.inputs)


def _text_prepared(config: ModelConfig, engine: BaseEngine, plan: ChatPlan) -> PreparedChat:
    prompt, token_ids = cut_prompt(engine, plan.prompt, tuple(engine.tokenize(plan.prompt)), config.cutoff_len)
    return _prepared(plan, prompt, token_ids, engine.info.context_length)


def _prepared(plan: ChatPlan, prompt: str, token_ids: tuple[int, ...], context_length: int | None,
              media: Media = Media(), media_inputs: Any = None) -> PreparedChat:
    return PreparedChat(
        plan.conversation, plan.tools, prompt, token_ids, plan.params,
        max_tokens=answer_budget(len(token_ids), plan.params, context_length),
        template_kwargs=plan.template_kwargs, media=media, parsing=plan.parsing, media_inputs=media_inputs,
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


def _prompt_and_ids(engine: BaseEngine, prompt: str | Sequence[int]) -> tuple[str, tuple[int, ...]]:
    if isinstance(prompt, str):
        if not prompt:
            raise InvalidRequestError("prompt must be a non-empty string.", param="prompt")
        return prompt, tuple(engine.tokenize(prompt))
    ids = tuple(prompt)
    if not ids or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        raise InvalidRequestError("A token-id prompt must be a non-empty list of token ids (integers 0 or more).",
                                  param="prompt")
    vocab_size = engine.info.vocab_size
    outside = next((i for i in ids if vocab_size is not None and i >= vocab_size), None)
    try:
        if outside is None:
            return engine.detokenize(ids), ids
    except (IndexError, ValueError, OverflowError, TypeError):
        pass
    raise InvalidRequestError(
        f"The prompt's token ids include ids outside the model's vocabulary{_size(vocab_size)}.", param="prompt")


def _size(vocab_size: int | None) -> str:
    return f" (ids 0 to {vocab_size - 1})" if vocab_size else ""


def prepare_completion(config: ModelConfig, engine: BaseEngine, stops: TemplateStops, prompt: str | Sequence[int],
                       generation: Mapping[str, Any]) -> PreparedChat:
    """A raw-prompt request (no chat template), validated like a chat request. ``prompt`` is text, or the token
    ids themselves (sent to the engine as they are)."""
    params = resolve_sampling(config.generation_defaults(), dict(generation))
    engine.capabilities.check_sampling(params, engine.name)
    params = params.model_copy(update={"stop_token_ids": params.stop_token_ids + stops.token_ids})
    prompt, token_ids = cut_prompt(engine, *_prompt_and_ids(engine, prompt), config.cutoff_len)
    budget = answer_budget(len(token_ids), params, engine.info.context_length, param="prompt")
    return PreparedChat([], None, prompt, token_ids, params, max_tokens=budget)
