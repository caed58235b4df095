"""``ChatModel``: the one facade over every engine, async at its core with a thin sync bridge."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from lmchat.chat.assemble import collect_responses
from lmchat.chat.bridge import LoopThread
from lmchat.chat.inputs import check_input
from lmchat.chat.media import fetch_policy, media_options
from lmchat.chat.messages import TEXT_PARTS, Media, normalise_tools
from lmchat.chat.options import CallOptions, check_template_kwargs, resolve_options
from lmchat.chat.pooling import EmbedOptions, Embeddings, PairScoreResult, text_pairs
from lmchat.chat.pooling import embed as embed_inputs
from lmchat.chat.pooling import score_pairs as score_text_pairs
from lmchat.chat.prepare import (
    PreparedChat,
    TemplateStops,
    aprepare_chat,
    prepare_chat,
    prepare_completion,
    render_conversation,
)
from lmchat.chat.response import ChatChunk, Response
from lmchat.chat.sequences import stream_answers
from lmchat.config.model_config import ModelConfig
from lmchat.config.review import check_stage, review_settings
from lmchat.config.sources import args_from_command_line
from lmchat.config.adapters import named_adapters
from lmchat.engines.adapters import AdapterInfo
from lmchat.engines.base import BaseEngine
from lmchat.engines.registry import get_engine_class
from lmchat.errors import ConfigError, InvalidRequestError, UnsupportedError
from lmchat.parsing import get_tool_parser
from lmchat.templates.registry import ChatTemplate, resolve_template

if TYPE_CHECKING:
    from lmchat.media import MediaLoader

Messages = Sequence[Mapping[str, Any]]


class ChatModel:
    """Chat with a model through any engine.

    ``args`` holds LLaMA-Factory's inference keys (``model_name_or_path``, ``template``, ``infer_backend``, ...);
    ``None`` reads them from the command line (``--key value`` flags and/or a YAML file), as LLaMA-Factory does.
    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, args: dict[str, Any] | None = None) -> None:
        self.config = ModelConfig.from_dict(args_from_command_line() if args is None else args)
        if self.config.tool_parser:
            get_tool_parser(self.config.tool_parser)  # an unknown name fails now, naming the closest one
        engine_class = get_engine_class(self.config.infer_backend)
        review_settings(self.config, engine_class)
        self.media_loader = self.new_media_loader(trusted=True)
        self._loop = LoopThread()
        self.engine: BaseEngine = engine_class(self.config)
        try:
            self._loop.run(self.engine.start())
            check_stage(self.config, self.engine.info)
            self._loop.run(self._load_configured_adapters())
            self.template = self._resolve_template()
            self._stops = TemplateStops.resolve(self.template, self.engine)
        except BaseException:
            self._loop.close()
            raise

    # --- setup --------------------------------------------------------------------------------------
    async def _load_configured_adapters(self) -> None:
        """The config's named adapters (lora_modules, adapter_name_or_path unmerged), loaded before any request."""
        for name, path in named_adapters(self.config).items():
            try:
                await self.engine.load_adapter(name, path)
            except InvalidRequestError as exc:
                await self.engine.close()
                param = "lora_modules" if name in (self.config.lora_modules or {}) else "adapter_name_or_path"
                raise ConfigError(f"Adapter '{name}' ({path}): {exc}", param=param) from None

    # --- named LoRA adapters ----------------------------------------------------------------------------
    @property
    def adapters(self) -> list[AdapterInfo]:
        """The named LoRA adapters served beside the base model (``chat(..., adapter=NAME)`` chooses one)."""
        return list(self.engine.adapters)

    async def aload_adapter(self, name: str, path: str) -> AdapterInfo:
        """Load a LoRA adapter folder under ``name``, live; a bad adapter raises and changes nothing."""
        return await self.engine.load_adapter(name, path)

    async def aunload_adapter(self, name: str) -> None:
        """Stop serving ``name``: new calls for it fail at once; it is freed when the calls using it have ended."""
        await self.engine.unload_adapter(name)

    def load_adapter(self, name: str, path: str) -> AdapterInfo:
        return self._loop.run(self.aload_adapter(name, path))

    def unload_adapter(self, name: str) -> None:
        self._loop.run(self.aunload_adapter(name))

    @property
    def engine_type(self) -> str:
        """The engine's name (``huggingface``, ``vllm``, ...), as LLaMA-Factory's ChatModel has it."""
        return self.engine.name

    def _resolve_template(self) -> ChatTemplate:
        if self.config.template:
            return resolve_template(self.config.template, tool_format=self.config.tool_format,
                                    preserve_thinking=self.config.preserve_thinking)
        info = self.engine.info
        if info.chat_template:
            return ChatTemplate(name="model", source=info.chat_template)
        return ChatTemplate(name="none", source="{{ raise_exception('no chat template') }}")

    def _require_template(self) -> None:
        if self.template.name == "none":
            raise ConfigError(
                f"The model '{self.engine.info.name}' has no chat template; choose one with template: NAME "
                "(for example chatml or default).",
                param="template",
            )

    def new_media_loader(self, *, trusted: bool) -> MediaLoader:
        """A media loader with this model's limits (``image_max_pixels``, ...) and a fetch policy for
        ``trusted`` callers (this process's user: any local file unless ``allowed_local_media_path``) or
        untrusted ones (the server's clients: local files only under ``allowed_local_media_path``); see
        :func:`lmchat.chat.media.fetch_policy`. The model's own loader (``media_loader``) is the trusted one."""
        from lmchat.media import MediaLoader

        return MediaLoader(media_options(self.config), fetch_policy(self.config, trusted=trusted))

    # --- preparation ----------------------------------------------------------------------------------
    def prepare(
        self,
        messages: Messages,
        system: str | None = None,
        tools: Any = None,
        images: Sequence[Any] | None = None,
        videos: Sequence[Any] | None = None,
        audios: Sequence[Any] | None = None,
        **generation: Any,
    ) -> PreparedChat:
        """Validate a chat call and render its prompt; every error is raised here, before any generation.

        ``messages`` may hold OpenAI/vLLM media content parts (``image_url``, ``input_audio``, ``video_url``,
        ``audio_url``, ...) and LLaMA-Factory's ``<image>`` placeholders for ``images``/``videos``/``audios``.
        Media are fetched and decoded on the model's event loop; inside a running event loop use :meth:`aprepare`.
        ``chat_template`` (vLLM's request field: Jinja source, rendered in the sandbox) replaces the model's template
        for this call; the model's stop words and output parsers stay.
        """
        media, template, kwargs = self._prepare_arguments(messages, system, tools, images, videos, audios, generation)
        if not media:
            return prepare_chat(self.config, self.engine, template, self._stops, messages, **kwargs)
        if _in_event_loop():
            raise InvalidRequestError("ChatModel.prepare was called inside an event loop with media, which it would "
                                      "block: use await ChatModel.aprepare(...) there.")
        return self._loop.run(aprepare_chat(self.config, self.engine, template, self._stops, messages,
                                            loader=self.media_loader, **kwargs))

    async def aprepare(
        self,
        messages: Messages,
        system: str | None = None,
        tools: Any = None,
        images: Sequence[Any] | None = None,
        videos: Sequence[Any] | None = None,
        audios: Sequence[Any] | None = None,
        *,
        media_loader: MediaLoader | None = None,
        **generation: Any,
    ) -> PreparedChat:
        """:meth:`prepare` from any event loop: media are fetched and decoded on worker threads, once.
        ``media_loader`` (default: the model's, for trusted callers) decides where they may come from."""
        _, template, kwargs = self._prepare_arguments(messages, system, tools, images, videos, audios, generation)
        return await aprepare_chat(self.config, self.engine, template, self._stops, messages,
                                   loader=media_loader or self.media_loader, **kwargs)

    def _prepare_arguments(self, messages: Messages, system: str | None, tools: Any, images: Any, videos: Any,
                           audios: Any, generation: dict[str, Any]) -> tuple[bool, ChatTemplate, dict[str, Any]]:
        """The checks every chat call starts with, the call's template and ``prepare_chat``'s keyword arguments;
        also whether the call has media (given, or as content parts)."""
        self._require_generative()
        template = self._call_template(generation.pop("chat_template", None))
        media = Media(*(_media_items(value, name) for value, name in
                        ((images, "images"), (videos, "videos"), (audios, "audios"))))
        kwargs = {"system": system, "tools": tools, "media": media, "options": self.resolve_options(**generation)}
        return bool(media) or has_media_parts(messages), template, kwargs

    def _require_generative(self) -> None:
        info = self.engine.info
        if info.is_reward_model:
            raise UnsupportedError(f"'{info.name}' is a reward model: use get_scores, not chat.", param="model")
        if not self.engine.can_generate:
            raise UnsupportedError(f"'{info.name}' is an embedding model: use embed (the server's /v1/embeddings), "
                                   "not chat.", param="model")

    def _call_template(self, source: str | None) -> ChatTemplate:
        if source is None:
            self._require_template()
            return self.template
        if not isinstance(source, str) or not source.strip():
            raise InvalidRequestError("chat_template must be the template's Jinja source.", param="chat_template")
        return dataclasses.replace(self.template, name="request", source=source)

    def resolve_options(self, **generation: Any) -> CallOptions:
        """Validate one call's options (sampling, chat-template and tool_choice) against the config and engine."""
        return resolve_options(self.config, self.engine, generation)

    def prepare_completion(self, prompt: str | Sequence[int], suffix: str | None = None,
                           **generation: Any) -> PreparedChat:
        """Validate a raw-prompt completion (no chat template); the model's end-of-turn tokens still stop it.
        ``prompt`` may be token ids; ``suffix`` makes the answer fill the middle (a model with FIM tokens)."""
        return prepare_completion(self.config, self.engine, self._stops, prompt, generation, suffix=suffix)

    def render(self, messages: Messages, tools: Any = None, add_generation_prompt: bool = True, **kwargs: Any) -> str:
        """The prompt text this model's template makes of ``messages`` (no generation)."""
        self._require_template()
        check_input(messages, "messages")
        check_input(tools, "tools")
        kwargs = check_template_kwargs(kwargs)
        kwargs.setdefault("enable_thinking", self.config.enable_thinking)
        return render_conversation(messages, self.template, self.config.tool_parser, self.engine,
                                   tools=normalise_tools(tools), add_generation_prompt=add_generation_prompt,
                                   **kwargs).prompt

    # --- async API ------------------------------------------------------------------------------------
    async def astream_chunks(self, prepared: PreparedChat, request_id: str | None = None) -> AsyncIterator[ChatChunk]:
        """Typed chunks of every answer of a prepared request (what the server and the CLI consume)."""
        async for chunk in stream_answers(self.engine, prepared, request_id):
            yield chunk

    async def aabort(self, prepared: PreparedChat, request_id: str) -> None:
        """Stop every answer of a request started with ``request_id`` at the engine's next step; its streams end
        with the finish reason ``abort``."""
        for engine_id in prepared.request_ids(request_id):
            await self.engine.abort(engine_id)

    async def agenerate(self, prepared: PreparedChat, request_id: str | None = None) -> list[Response]:
        chunks = [chunk async for chunk in self.astream_chunks(prepared, request_id)]
        return collect_responses(chunks, prepared.params.n, prepared.prompt_tokens)

    async def achat(self, messages: Messages, system: str | None = None, tools: Any = None, images=None,
                    videos=None, audios=None, **generation: Any) -> list[Response]:
        """One :class:`Response` per answer (``n``/``num_return_sequences`` of them)."""
        prepared = await self.aprepare(messages, system, tools, images, videos, audios, **generation)
        return await self.agenerate(prepared)

    async def astream_chat(self, messages: Messages, system: str | None = None, tools: Any = None, images=None,
                           videos=None, audios=None, **generation: Any) -> AsyncIterator[str]:
        """The answer's text, piece by piece. Closing the iterator stops the generation."""
        prepared = await self.aprepare(messages, system, tools, images, videos, audios, **generation)
        if prepared.params.n != 1:
            raise InvalidRequestError("stream_chat streams one answer; use n=1 (or astream_chunks).", param="n")
        async for chunk in self.astream_chunks(prepared):
            if chunk.text:
                yield chunk.text

    async def aget_scores(self, batch_input: Sequence[str], **generation: Any) -> list[float]:
        """Reward scores, one float per input text."""
        unknown = set(generation) - {"max_length"}
        if unknown:
            raise InvalidRequestError(f"get_scores accepts only max_length, not {', '.join(sorted(unknown))}.")
        if isinstance(batch_input, str) or not all(isinstance(text, str) for text in batch_input):
            raise InvalidRequestError("batch_input must be a list of strings.", param="batch_input")
        info = self.engine.info
        if not info.is_reward_model:
            engine = self.engine.label or self.engine.name
            raise UnsupportedError(
                f"The {engine} engine cannot compute reward scores with '{info.name}': it is a generative model; "
                f"get_scores needs a reward model{self.engine.reward_hint}.",
                param="model",
            )
        return await self.engine.score(list(batch_input), generation.get("max_length"))

    async def aembed(self, input: Any, *, normalize: bool | None = None, dimensions: int | None = None,
                     truncate_prompt_tokens: int | None = None, add_special_tokens: bool = True) -> Embeddings:
        """Embeddings of ``input`` (a string, token ids, or a list of either), one vector per input, normalised
        unless ``normalize=False``; ``dimensions`` keeps the first N values of a matryoshka model's vectors."""
        options = EmbedOptions(normalize=normalize is not False, dimensions=dimensions,
                               truncate_prompt_tokens=truncate_prompt_tokens, add_special_tokens=add_special_tokens)
        return await embed_inputs(self.engine, input, options)

    async def ascore_pairs(self, text_1: str | Sequence[str], text_2: str | Sequence[str], *,
                           truncate_prompt_tokens: int | None = None, use_activation: bool | None = None
                           ) -> PairScoreResult:
        """Relevance scores of text pairs (vLLM's pairing of ``text_1`` and ``text_2``): a cross-encoder's or reward
        model's head on each pair (sigmoid unless ``use_activation=False``), or an embedding model's cosine."""
        return await score_text_pairs(self.engine, text_pairs(text_1, text_2), truncate_prompt_tokens,
                                      use_activation)

    # --- sync API -------------------------------------------------------------------------------------
    def chat(self, messages: Messages, system: str | None = None, tools: Any = None, images=None, videos=None,
             audios=None, **generation: Any) -> list[Response]:
        return self._loop.run(self.achat(messages, system, tools, images, videos, audios, **generation))

    def stream_chat(self, messages: Messages, system: str | None = None, tools: Any = None, images=None,
                    videos=None, audios=None, **generation: Any) -> Iterator[str]:
        prepared = self.prepare(messages, system, tools, images, videos, audios, **generation)
        if prepared.params.n != 1:
            raise InvalidRequestError("stream_chat streams one answer; use n=1 (or stream_chunks).", param="n")
        for chunk in self._loop.iterate(self.astream_chunks(prepared)):
            if chunk.text:
                yield chunk.text

    def stream_chunks(self, prepared: PreparedChat) -> Iterator[ChatChunk]:
        return self._loop.iterate(self.astream_chunks(prepared))

    def get_scores(self, batch_input: Sequence[str], **generation: Any) -> list[float]:
        return self._loop.run(self.aget_scores(batch_input, **generation))

    def embed(self, input: Any, **options: Any) -> Embeddings:
        """:meth:`aembed` from synchronous code."""
        return self._loop.run(self.aembed(input, **options))

    def score_pairs(self, text_1: str | Sequence[str], text_2: str | Sequence[str], **options: Any
                    ) -> PairScoreResult:
        """:meth:`ascore_pairs` from synchronous code."""
        return self._loop.run(self.ascore_pairs(text_1, text_2, **options))

    def run_sync(self, coroutine: Any) -> Any:
        """Run a coroutine of this model's async API on its background loop (for sync wrappers built on it)."""
        return self._loop.run(coroutine)

    def iterate_sync(self, stream: AsyncIterator[Any]) -> Iterator[Any]:
        """Iterate an async stream of this model on its background loop; leaving early cancels it there."""
        return self._loop.iterate(stream)

    # --- lifecycle ------------------------------------------------------------------------------------
    def check_health(self) -> None:
        """Raise :class:`~lmchat.errors.EngineDeadError` once the engine can serve no more requests."""
        self.engine.check_health()

    def close(self) -> None:
        """Stop the engine's background work, free the model and stop the event-loop thread."""
        if self._loop.loop.is_closed():
            return
        try:
            self._loop.run(self.engine.close())
        finally:
            self._loop.close()

    def __enter__(self) -> ChatModel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _media_items(value: Any, name: str) -> tuple[Any, ...]:
    """``images=`` and friends: a list (or tuple) of sources; one bare source is taken as a list of one."""
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(value)
    if isinstance(value, (str, bytes)) or hasattr(value, "size") or hasattr(value, "read"):
        return (value,)
    raise InvalidRequestError(f"{name} must be a list of media (paths, URLs, data URLs, bytes, images, arrays), "
                              f"not {type(value).__name__}.", param=name)


def has_media_parts(messages: Any) -> bool:
    """Whether any message has a content part other than text (its media are read by ``prepare_chat``)."""
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)):
        return False
    return any(isinstance(part, Mapping) and part.get("type") not in TEXT_PARTS
               for message in messages if isinstance(message, Mapping)
               for part in (message.get("content") if isinstance(message.get("content"), list) else ()))


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True

