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

import asyncio
import functools
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from lmchat.chat.inputs import check_input
from lmchat.chat.media import MediaItem, bind_media, count_by_kind, load_media
from lmchat.chat.messages import Media, build_conversation, normalise_tools
from lmchat.chat.options import ADAPTER_OPTION, CallOptions, check_token_ids, resolve_adapter
from lmchat.chat.output import ParsingPlan, plan_parsing
from lmchat.config.model_config import ModelConfig
from lmchat.engines.base import BaseEngine, GenerationRequest
from lmchat.errors import ContextLengthError, InvalidRequestError, UnsupportedError
from lmchat.generation.sampling import SamplingParams, resolve_sampling
from lmchat.generation.token_rules import bad_words_token_ids
from lmchat.structured.prepare import StructuredRequest
from lmchat.structured.requests import pop_constraint
from lmchat.templates.continuation import cut_after_final_message
from lmchat.templates.fim import fill_in_middle_prompt
from lmchat.templates.registry import ChatTemplate
from lmchat.templates.tool_fallback import FALLBACK_TOOL_PARSER, RenderedChat, render_chat

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
    bad_words_ids: tuple[tuple[int, ...], ...] = ()  # params.bad_words as token sequences
    adapter: str | None = None  # the named LoRA adapter (CallOptions.adapter); None: the base model

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    def request_ids(self, request_id: str) -> list[str]:
        """The engine request ids of the ``n`` answers of the request ``request_id``."""
        return [f"{request_id}-{i}" for i in range(self.params.n)]

    def requests(self, request_id: str | None = None) -> list[GenerationRequest]:
        """One engine request per answer; answer i samples with ``seed + i`` when a seed is given."""
        params = self.params
        return [
            GenerationRequest(
                request_id=engine_id,
                prompt=self.prompt,
                params=params.model_copy(update={"n": 1, "seed": None if params.seed is None else params.seed + i}),
                prompt_token_ids=self.prompt_token_ids,
                max_tokens=self.max_tokens,
                images=self.media.images,
                videos=self.media.videos,
                audios=self.media.audios,
                keep_special_tokens=self.parsing.keep_special_tokens,
                media_inputs=self.media_inputs,
                bad_words_ids=self.bad_words_ids,
                adapter=self.adapter,
            )
            for i, engine_id in enumerate(self.request_ids(request_id or uuid.uuid4().hex))
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
    adapter: str | None = None


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
    check_input(messages, "messages")
    conversation = build_conversation(messages, system, config.default_system)
    offset = len(conversation) - len(messages)
    conversation, items = bind_media(conversation, media, offset)
    engine.capabilities.check_media(engine.name, **count_by_kind(items))
    check_input(tools, "tools")
    structured = StructuredRequest.of(options.constraint, normalise_tools(tools), options.tool_choice,
                                      options.parallel_tool_calls)
    tool_list = structured.prompt_tools
    rendered = render_conversation(conversation, template, config.tool_parser, engine, tools=tool_list,
                                   documents=options.documents, **options.template_kwargs)
    prompt = rendered.prompt
    if options.template_kwargs.get("continue_final_message"):
        prompt = cut_after_final_message(prompt, conversation)
    plan = replace(plan_parsing(template, config.tool_parser, tool_list, prompt, rendered.tool_fallback,
                                options.user_value("skip_special_tokens")), **structured.parsing_changes())
    params = structured.constrain(options.params, engine, prompt, plan.reasoning_parser, plan.starts_in_reasoning)
    params = with_stops(params, stops)
    return ChatPlan(conversation, tool_list, prompt, params, options.template_kwargs, items, plan, options.adapter)


def with_stops(params: SamplingParams, stops: TemplateStops) -> SamplingParams:
    """The template's end-of-turn tokens and strings added (a constrained answer ends with its constraint, so
    stop strings, which could cut it, are not added to it)."""
    strings = () if params.constraint is not None else stops.strings
    return params.model_copy(
        update={"stop": params.stop + strings, "stop_token_ids": params.stop_token_ids + stops.token_ids}
    )


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
    # rendering and tokenizing run on a worker thread: a huge prompt never stalls the caller's event loop
    plan = await asyncio.to_thread(functools.partial(plan_chat, config, engine, template, stops, messages, **kwargs))
    if not plan.media:
        return await asyncio.to_thread(_text_prepared, config, engine, plan)
    media = await load_media(loader, plan.media)
    encoded = await engine.encode_media_prompt(plan.prompt, media)
    token_ids = tuple(encoded.token_ids)
    cutoff = prompt_cutoff(config, plan.params, engine.info.context_length)
    if cutoff is not None and len(token_ids) > cutoff:
        raise ContextLengthError(
            f"The prompt with its media has {len(token_ids)} tokens, more than the {cutoff} it may keep "
            "(cutoff_len, truncate_prompt_tokens); a prompt with media is not cut (that would cut a medium's tokens "
            "apart). Send smaller or fewer media (image_max_pixels, video_maxlen), a shorter conversation, or keep "
            "more tokens.", param="messages",
        )
    return _prepared(engine, plan, plan.prompt, token_ids, media, encoded.inputs)


def _text_prepared(config: ModelConfig, engine: BaseEngine, plan: ChatPlan) -> PreparedChat:
    cutoff = prompt_cutoff(config, plan.params, engine.info.context_length)
    token_ids = tokenize_prompt(engine, plan.prompt, refuse_long=cutoff is None)
    prompt, token_ids = cut_prompt(engine, plan.prompt, token_ids, cutoff)
    return _prepared(engine, plan, prompt, token_ids)


def _prepared(engine: BaseEngine, plan: ChatPlan, prompt: str, token_ids: tuple[int, ...], media: Media = Media(),
              media_inputs: Any = None) -> PreparedChat:
    return PreparedChat(
        plan.conversation, plan.tools, prompt, token_ids, plan.params,
        max_tokens=answer_budget(len(token_ids), plan.params, engine.info.context_length),
        template_kwargs=plan.template_kwargs, media=media, parsing=plan.parsing, media_inputs=media_inputs,
        bad_words_ids=bad_words_token_ids(plan.params.bad_words, engine.tokenize),
        adapter=plan.adapter,
    )


def prompt_cutoff(config: ModelConfig, params: SamplingParams, context_length: int | None) -> int | None:
    """How many of the prompt's last tokens it keeps: the config's ``cutoff_len`` and the call's
    ``truncate_prompt_tokens`` (vLLM's; -1: the model's context length), the smaller of them; None: all."""
    keep = kept_prompt_tokens(params.truncate_prompt_tokens, context_length)
    limits = [limit for limit in (config.cutoff_len, keep) if limit is not None]
    return min(limits) if limits else None


def kept_prompt_tokens(truncate_prompt_tokens: int | None, context_length: int | None) -> int | None:
    """vLLM's ``truncate_prompt_tokens`` as the number of last tokens a prompt keeps (-1: the context length;
    None: not asked), for every kind of prompt (chats, completions, embedding inputs, scored pairs)."""
    keep = truncate_prompt_tokens
    if keep is None:
        return None
    if keep == -1:
        return context_length
    if keep < 1:
        raise InvalidRequestError("truncate_prompt_tokens must be -1 (the context length) or a positive number.",
                                  param="truncate_prompt_tokens")
    if context_length is not None and keep > context_length:
        raise InvalidRequestError(
            f"truncate_prompt_tokens ({keep}) is more than the model's context length ({context_length}).",
            param="truncate_prompt_tokens",
        )
    return keep


def render_conversation(conversation: Sequence[Mapping[str, Any]], template: ChatTemplate,
                        tool_parser: str | None, engine: BaseEngine, **render: Any) -> RenderedChat:
    """The template's rendering of ``conversation`` (``render``: tools, add_generation_prompt, the template's
    keyword arguments), refused where tools fell back to the default tool prompt that ``tool_parser`` cannot read."""
    rendered = render_chat(conversation, template, special_tokens=engine.info.special_tokens, **render)
    if rendered.tool_fallback:
        check_fallback_parser(template, tool_parser)
    return rendered


def check_fallback_parser(template: ChatTemplate, configured_tool_parser: str | None) -> None:
    """Tools described by the default tool prompt are read by its parser; another configured parser cannot."""
    if configured_tool_parser not in (None, FALLBACK_TOOL_PARSER):
        raise UnsupportedError(
            f"The chat template '{template.name}' ignores tools, so lmchat would describe them with LLaMA-Factory's "
            f"default tool prompt, which the configured tool_parser '{configured_tool_parser}' does not read. "
            "Choose a template that renders tools (template: qwen3, llama3.2, mistral, ... or a .jinja file with a "
            f"tools section), or set tool_parser: {FALLBACK_TOOL_PARSER}.", param="tools",
        )


def tokenize_prompt(engine: BaseEngine, prompt: str, param: str = "messages",
                    refuse_long: bool = True) -> tuple[int, ...]:
    """The prompt's token ids; a prompt far longer than the context is refused first, without tokenizing it (its
    characters divided by the most any token stands for are already more tokens than the context holds).
    ``refuse_long=False`` (a ``cutoff_len`` keeps the prompt's end) tokenizes it all."""
    context, per_token = engine.info.context_length, engine.info.max_token_chars
    if refuse_long and context and per_token and len(prompt) > context * per_token:
        at_least = len(prompt) // per_token
        raise ContextLengthError(
            f"The prompt has at least {at_least} tokens ({len(prompt)} characters), which leaves no room for an "
            f"answer within the model's context length ({context} tokens). Shorten the conversation.", param=param,
        )
    return tuple(engine.tokenize(prompt))


def cut_prompt(engine: BaseEngine, prompt: str, token_ids: tuple[int, ...],
               cutoff_len: int | None) -> tuple[str, tuple[int, ...]]:
    """A longer prompt keeps its last ``cutoff_len`` tokens (:func:`prompt_cutoff`: LLaMA-Factory's ``cutoff_len``,
    vLLM's ``truncate_prompt_tokens``; the answer's opening stays), and the prompt text becomes what they spell."""
    if cutoff_len is None or len(token_ids) <= cutoff_len:
        return prompt, token_ids
    kept = token_ids[-cutoff_len:]
    logger.info("The prompt has %d tokens; it keeps its last %d.", len(token_ids), cutoff_len)
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


def _prompt_and_ids(engine: BaseEngine, prompt: str | Sequence[int], refuse_long: bool
                    ) -> tuple[str, tuple[int, ...]]:
    if isinstance(prompt, str):
        if not prompt:
            raise InvalidRequestError("prompt must be a non-empty string.", param="prompt")
        check_input(prompt, "prompt")
        return prompt, tokenize_prompt(engine, prompt, param="prompt", refuse_long=refuse_long)
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
                       generation: Mapping[str, Any], suffix: str | None = None) -> PreparedChat:
    """A raw-prompt request (no chat template), validated like a chat request. ``prompt`` is text, or the token
    ids themselves (sent to the engine as they are). ``suffix``: the answer fills the middle between the prompt
    and it, in the model's fill-in-the-middle format (:mod:`lmchat.templates.fim`)."""
    generation = dict(generation)
    adapter = resolve_adapter(engine, generation.pop(ADAPTER_OPTION, None))
    structured = StructuredRequest.of(pop_constraint(generation))
    params = resolve_sampling(config.generation_defaults(), generation)
    engine.capabilities.check_sampling(params, engine.name)
    check_token_ids(params, engine.info.vocab_size)
    params = params.model_copy(update={"stop_token_ids": params.stop_token_ids + stops.token_ids})
    if suffix is not None:
        prompt = fill_in_middle_prompt(engine, prompt, suffix)
    cutoff = prompt_cutoff(config, params, engine.info.context_length)
    prompt, token_ids = _prompt_and_ids(engine, prompt, refuse_long=cutoff is None)
    prompt, token_ids = cut_prompt(engine, prompt, token_ids, cutoff)
    params = structured.constrain(params, engine, prompt)
    budget = answer_budget(len(token_ids), params, engine.info.context_length, param="prompt")
    return PreparedChat([], None, prompt, token_ids, params, max_tokens=budget,
                        bad_words_ids=bad_words_token_ids(params.bad_words, engine.tokenize), adapter=adapter)
