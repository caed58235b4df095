"""The engine contract every backend implements.

An engine turns one :class:`GenerationRequest` (a rendered prompt and its sampling options) into a stream of
:class:`~lmchat.engines.events.TextDelta` events followed by one :class:`~lmchat.engines.events.Finished`.
Everything else (templates, ``n`` answers, stop strings, tool and reasoning parsing, the sync API, the CLI and the
server) is built once on top of this, in engine-independent code.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from lmchat.engines.adapters import AdapterInfo, AdapterSet
from lmchat.engines.pooling import EmbedRequest, PairScoreRequest, PairScores, PoolingInfo
from lmchat.errors import EngineClosedError, InvalidRequestError, UnsupportedError
from lmchat.generation.sampling import FACADE_OPTIONS, SamplingParams
from lmchat.structured.constraint import Constraint

if TYPE_CHECKING:
    from lmchat.config.model_config import ModelConfig
    from lmchat.engines.events import EngineEvent, TokenLogprob


@dataclass(frozen=True)
class Capabilities:
    """What an engine can honour beyond the contract; the facade checks each field before any work starts.

    ``sampling_options`` and the media kinds are checked for every call (``check_sampling``, ``check_media``);
    ``lora`` and ``settings`` (the engine-dependent config settings it honours, see
    :data:`lmchat.config.review.ENGINE_SETTINGS`) when the model is chosen, before loading. Streaming and abort are not capabilities: every engine streams and aborts. Reward scoring
    follows the loaded model (:attr:`ModelInfo.is_reward_model`). ``constraints``: the structured-output kinds
    it enforces (``check_constraint``, for a call with a constraint).
    """

    sampling_options: frozenset[str] = frozenset(SamplingParams.model_fields)
    lora: bool = False
    """Applies ``adapter_name_or_path``'s adapters (merged at load)."""
    named_adapters: bool = False
    """Serves named adapters side by side, one per request (``lora_modules``, live loads: load_adapter)."""
    settings: frozenset[str] = frozenset()
    images: bool = False
    videos: bool = False
    audios: bool = False
    constraints: frozenset[str] = frozenset()
    """The structured-output kinds (Constraint.kind) it enforces; none by default."""
    media_notes: tuple[tuple[str, str], ...] = ()  # (kind, why this model cannot take it here)
    pooling: frozenset[str] = frozenset()
    """The pooling tasks it runs for the loaded model (lmchat.engines.pooling): embed, score (pairs)."""
    pooling_notes: tuple[tuple[str, str], ...] = ()  # (task, why this model or engine cannot run it)

    def check_sampling(self, params: SamplingParams, engine: str) -> None:
        unsupported = sorted(params.non_default_fields() - self.sampling_options - FACADE_OPTIONS)
        if unsupported:
            raise UnsupportedError(
                f"The {engine} engine cannot honour the option(s) {', '.join(unsupported)}; remove them or choose "
                f"another infer_backend.",
                param=unsupported[0],
            )

    def check_constraint(self, constraint: Constraint | None, engine: str) -> None:
        if constraint is not None and constraint.kind not in self.constraints:
            can = f"it enforces {', '.join(sorted(self.constraints))}" if self.constraints else "it cannot"
            raise UnsupportedError(
                f"The {engine} engine cannot constrain its output to a {constraint.kind.replace('_', ' ')} ({can}); "
                f"leave {constraint.param} out or choose another infer_backend (huggingface, llamacpp, vllm).",
                param=constraint.param,
            )

    def check_pooling(self, task: str, engine: str, param: str = "model") -> None:
        if task not in self.pooling:
            why = "".join(f" ({note})" for name, note in self.pooling_notes if name == task)
            what = {"embed": "compute embeddings", "score": "score text pairs"}.get(task, task)
            raise UnsupportedError(f"The {engine} engine with this model cannot {what}{why}.", param=param)

    def check_media(self, engine: str, **media: Sequence[Any] | None) -> None:
        for kind, items in media.items():
            if items and not getattr(self, kind):
                why = "".join(f" ({note})" for name, note in self.media_notes if name == kind)
                raise UnsupportedError(f"The {engine} engine with this model does not accept {kind}{why}.", param=kind)


@dataclass(frozen=True)
class ModelInfo:
    """What the front ends need to know of the loaded model."""

    name: str
    chat_template: str | None
    special_tokens: dict[str, str] = field(default_factory=dict)
    context_length: int | None = None
    is_reward_model: bool = False
    vocab_size: int | None = None  # token ids run from 0 to vocab_size - 1 (None: not known)
    max_token_chars: int | None = None  # no token stands for more characters (None: not known)
    pooling: PoolingInfo | None = None  # how the model pools (None: it does not)


@dataclass(frozen=True)
class EngineCapacity:
    """How much work the engine runs at once: ``max_sequences`` decoded together, and ``kv_cache_tokens`` of KV
    cache they share (None: not reported). The server admits requests by it; a request with ``n`` answers is
    ``n`` sequences."""

    max_sequences: int | None = None
    kv_cache_tokens: int | None = None


@dataclass(frozen=True)
class GenerationRequest:
    """One sequence to generate, as the facade decided it: the rendered prompt and its token ids, the options, and
    ``max_tokens``, the answer's budget (``max_new_tokens`` cut by ``max_length`` and the context). Engines honour
    these as given and never recompute them. ``n > 1`` is expanded by the facade into several requests.

    ``images``/``videos``/``audios`` are decoded media, in prompt order: RGB PIL images,
    :class:`~lmchat.media.VideoClip` and :class:`~lmchat.media.AudioClip` objects. ``media_inputs`` is what the
    engine's own :meth:`BaseEngine.encode_media_prompt` made of them (the ``n`` requests of a call share it)."""

    request_id: str
    prompt: str
    params: SamplingParams
    prompt_token_ids: tuple[int, ...]
    max_tokens: int
    images: tuple[Any, ...] = ()
    videos: tuple[Any, ...] = ()
    audios: tuple[Any, ...] = ()
    keep_special_tokens: tuple[str, ...] = ()
    """Special tokens the answer's parsers read (the facade's parsing plan): engines keep them in the text even
    when ``params.skip_special_tokens`` drops the other special tokens."""
    media_inputs: Any = None
    bad_words_ids: tuple[tuple[int, ...], ...] = ()
    """``params.bad_words`` as token sequences (the facade tokenized them: :mod:`lmchat.generation.token_rules`)."""
    adapter: str | None = None
    """The named LoRA adapter this request runs with (the facade checked it is loaded); None: the base model."""


@dataclass(frozen=True)
class EncodedPrompt:
    """A prompt with media as the engine will run it: its token ids (the media's placeholders expanded to as many
    tokens as the model gives each medium) and the engine's own encoding of the media (processor outputs)."""

    token_ids: tuple[int, ...]
    inputs: Any = None


class BaseEngine(abc.ABC):
    """Base class of every engine. Subclasses set ``name`` and ``capabilities`` and implement the abstract methods."""

    name: ClassVar[str] = "base"
    label: ClassVar[str] = ""  # how messages name the engine (default: ``name``)
    reward_hint: ClassVar[str] = ""  # how to load a reward model with this engine, for get_scores' error
    capabilities: Capabilities = Capabilities()

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self._info: ModelInfo | None = None  # set by start()
        self.adapters = AdapterSet(getattr(config, "max_loras", 8))  # the named LoRA adapters served

    # --- named LoRA adapters ------------------------------------------------------------------------------
    async def load_adapter(self, name: str, path: str) -> AdapterInfo:
        """Load the LoRA adapter in folder ``path`` under ``name``, for requests that choose it. A bad adapter
        raises an :class:`~lmchat.errors.InvalidRequestError` and changes nothing."""
        name = _checked_name(name)
        if not isinstance(path, str) or not path.strip():
            raise InvalidRequestError("lora_path must be the adapter's folder.", param="lora_path")
        if not self.capabilities.named_adapters:
            raise UnsupportedError(f"The {self.label or self.name} engine does not serve named LoRA adapters.",
                                   param="lora_name")
        self.adapters.begin_load(name)
        info = None
        try:
            info = await self._load_adapter(name, path)
        finally:
            self.adapters.end_load(name, info)
        return info

    async def unload_adapter(self, name: str) -> None:
        """Stop serving ``name``: new requests for it are refused at once, and it is freed once the requests using
        it have ended."""
        await self.adapters.begin_unload(name)
        removed = False
        try:
            await self._unload_adapter(name)
            removed = True
        finally:
            self.adapters.end_unload(name, removed)

    async def _load_adapter(self, name: str, path: str) -> AdapterInfo:
        """Engines with ``capabilities.named_adapters`` load one adapter (checked: format, rank, targets)."""
        raise UnsupportedError(f"The {self.label or self.name} engine does not serve named LoRA adapters.",
                               param="lora_name")

    async def _unload_adapter(self, name: str) -> None:
        """Free an adapter no running request uses any more."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Load the model. Called once, on the facade's event loop, before any request."""

    @property
    def info(self) -> ModelInfo:
        """The loaded model's name, chat template and special tokens (what ``start`` stored in ``_info``)."""
        if self._info is None:
            raise EngineClosedError(f"The {self.label or self.name} engine is not started.")
        return self._info

    @property
    def can_generate(self) -> bool:
        """False for a reward model (it scores, it does not chat), as LLaMA-Factory's engines have it."""
        pooling = self.info.pooling
        return not self.info.is_reward_model and not (pooling is not None and pooling.embedding_model)

    @property
    def capacity(self) -> EngineCapacity:
        """What the engine runs at once (engines with a scheduler of their own report its limits)."""
        return EngineCapacity()

    def describe(self) -> str:
        """One line of what was chosen for the loaded model, for the start-up log (engines with choices of their own,
        weights, forward pass, threads, add them)."""
        return f"the {self.label or self.name} engine"

    def check_health(self) -> None:
        """Raise :class:`~lmchat.errors.EngineDeadError` once the engine can serve no more requests (its model
        thread or backend died); engines without such a failure mode are always healthy."""

    @abc.abstractmethod
    def generate(self, request: GenerationRequest) -> AsyncIterator[EngineEvent]:
        """Stream one sequence. Closing the iterator early aborts the request at the engine's next step.

        Raise a :class:`~lmchat.errors.LmchatError` before the first event for a request that cannot run
        (for example :class:`~lmchat.errors.ContextLengthError`).
        """

    @abc.abstractmethod
    async def abort(self, request_id: str) -> None:
        """Stop a running request at the next step; unknown ids are ignored."""

    @abc.abstractmethod
    def count_tokens(self, text: str) -> int:
        """Number of tokens ``text`` encodes to (no special tokens added)."""

    def tokenize(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of ``text`` (special tokens written in it are parsed as such); ``add_special_tokens`` adds
        what the tokenizer adds to a plain text (a BOS token, for most models)."""
        raise UnsupportedError(f"The {self.name} engine does not expose its tokenizer.")

    def detokenize(self, token_ids: Sequence[int]) -> str:
        raise UnsupportedError(f"The {self.name} engine does not expose its tokenizer.")

    async def encode_media_prompt(self, prompt: str, media: Any) -> EncodedPrompt:
        """The token ids of a rendered prompt whose media (a :class:`~lmchat.chat.messages.Media` of decoded
        media) the engine will take; called once per chat call, before any generation. Engines whose model expands
        media placeholders (a processor) override it; by default the prompt is tokenized as it is."""
        return EncodedPrompt(tuple(self.tokenize(prompt)))

    def token_strs(self, token_ids: Sequence[int]) -> list[str]:
        """Each token's own string in the vocabulary (transformers' ``convert_ids_to_tokens``); by default each
        token's text."""
        return [self.detokenize([token]) for token in token_ids]

    async def prompt_logprobs(self, token_ids: Sequence[int], top: int = 0) -> list[TokenLogprob | None]:
        """Each prompt token's log-probability given those before it (``None`` for the first), with the ``top``
        most likely alternatives: completions' ``echo`` with ``logprobs``, as evaluation harnesses use them."""
        raise UnsupportedError(
            f"The {self.label or self.name} engine cannot compute the prompt's log-probabilities yet (echo with "
            "logprobs); the transformers engine can.", param="echo",
        )

    async def score(self, texts: Sequence[str], max_length: int | None = None) -> list[float]:
        """Reward scores, one float per text; called only when the loaded model is a reward model."""
        raise UnsupportedError(f"The {self.label or self.name} engine cannot compute reward scores.")

    async def embed(self, request: EmbedRequest) -> list[list[float]]:
        """One raw pooled vector per input (no normalisation); called when ``capabilities.pooling`` has embed."""
        raise UnsupportedError(f"The {self.label or self.name} engine cannot compute embeddings.", param="model")

    async def score_pairs(self, request: PairScoreRequest) -> PairScores:
        """One raw score per text pair from the model's own head; called when ``capabilities.pooling`` has score
        and ``info.pooling.pair_scores`` is ``classifier``."""
        raise UnsupportedError(f"The {self.label or self.name} engine cannot score text pairs.", param="model")

    async def close(self) -> None:
        """Stop background work and free the model."""


def _checked_name(name: Any) -> str:
    from lmchat.config.adapters import check_adapter_name

    try:
        return check_adapter_name(name)
    except ValueError as exc:
        raise InvalidRequestError(f"lora_name: {exc}.", param="lora_name") from None
