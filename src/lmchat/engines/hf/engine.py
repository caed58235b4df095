"""The Hugging Face transformers engine: any causal LM (or reward model) that transformers can load."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Sequence
from typing import Any

from lmchat.config.adapters import max_lora_rank
from lmchat.engines.adapters import AdapterInfo
from lmchat.engines.base import BaseEngine, Capabilities, EncodedPrompt, EngineCapacity, GenerationRequest, ModelInfo
from lmchat.engines.events import EngineEvent, TokenLogprob
from lmchat.engines.hf_tokenizer import dropped_special_ids, max_token_chars, special_tokens
from lmchat.engines.threaded import EventChannel
from lmchat.engines.hf.loading import LoadedModel, load_model
from lmchat.engines.hf.pooling import embed_ids, pooling_info, score_pairs
from lmchat.engines.hf.processor import encode, media_support
from lmchat.engines.hf.scoring import prompt_logprobs, score_texts
from lmchat.engines.hf.sequence import new_request_state
from lmchat.engines.pooling import EmbedRequest, PairScoreRequest, PairScores
from lmchat.engines.hf.worker import ModelWorker
from lmchat.errors import EngineClosedError, UnsupportedError
from lmchat.generation.detokenize import decode_dropping
from lmchat.generation.sampling import SamplingParams
from lmchat.structured import ALL_KINDS

class HuggingFaceEngine(BaseEngine):
    name = "huggingface"
    label = "transformers"
    reward_hint = " (a sequence-classification model with one label, or a checkpoint with value_head.safetensors)"
    capabilities = Capabilities(sampling_options=frozenset(SamplingParams.model_fields), lora=True,
                                named_adapters=True,
                                settings=frozenset({"quantization_bit", "rope_scaling", "flash_attn",
                                                    "model_max_length", "pooling_type", "image_do_pan_and_scan"}),
                                constraints=ALL_KINDS)

    def __init__(self, config) -> None:
        super().__init__(config)
        self.loaded: LoadedModel | None = None
        self.worker: ModelWorker | None = None
        self._eos_ids: frozenset[int] = frozenset()
        self._grammars: Any = None  # lmchat.structured.backend.TokenizerGrammars, built at the first constraint
        self._grammars_lock = asyncio.Lock()

    async def start(self) -> None:
        # The worker thread loads the model and runs every forward pass of it (see ModelWorker.attach).
        self.worker = worker = self._new_worker()
        try:
            self.loaded = await asyncio.wrap_future(worker.call(lambda: load_model(self.config)))
        except BaseException:
            self.worker = None
            await asyncio.to_thread(worker.stop)
            raise
        tokenizer, model = self.loaded.tokenizer, self.loaded.model
        is_reward = self.loaded.kind in ("sequence_classification", "value_head")
        processor = self.loaded.processor
        pooling = None if processor is not None else pooling_info(self.loaded, self.loaded.source,
                                                                  self.config.pooling_type)
        self._info = ModelInfo(
            name=self.loaded.name,
            chat_template=getattr(processor, "chat_template", None) or getattr(tokenizer, "chat_template", None),
            special_tokens=special_tokens(tokenizer),
            context_length=self.config.model_max_length
            or getattr(model.config.get_text_config(), "max_position_embeddings", None),
            is_reward_model=is_reward,
            vocab_size=getattr(model.config, "vocab_size", None) or len(tokenizer),
            max_token_chars=max_token_chars(tokenizer),
            pooling=pooling,
        )
        self.capabilities = pooling_capabilities(media_capabilities(type(self).capabilities, processor),
                                                 self.loaded.kind, processor)
        self._eos_ids = _eos_ids(model, tokenizer)
        generative = self.loaded.kind == "generative"
        await asyncio.wrap_future(worker.call(lambda: worker.attach(model, tokenizer, self.loaded.device,
                                                                    generative=generative)))

    def _new_worker(self) -> ModelWorker:
        """A worker with the batch limits of the config (their defaults live there)."""
        config = self.config
        return ModelWorker(
            max_batch_size=config.max_batch_size, kv_cache_tokens=config.kv_cache_tokens,
            prefill_chunk_tokens=config.prefill_chunk_tokens, packed_weights=config.packed_weights,
            native_decode=config.native_decode, max_lora_rank=max_lora_rank(config), max_loras=config.max_loras,
            quantized_activations=config.quantized_activations,
        )

    @property
    def capacity(self) -> EngineCapacity:
        return EngineCapacity(self.config.max_batch_size, self.config.kv_cache_tokens)

    def describe(self) -> str:
        """``the transformers engine (4-bit weights, lean+native forward, 2 threads, up to 32 streams batched, on cpu)``."""
        import torch

        from lmchat.engines.hf.quant import weight_bits

        if self.loaded is None or self.worker is None:
            return super().describe()
        bits = weight_bits(self.loaded.model)
        weights = f"{bits}-bit weights" if bits else f"{str(self.loaded.model.dtype).removeprefix('torch.')} weights"
        if bits and self.worker.native is not None and self.worker.native.activations.startswith("int8"):
            weights += " x int8 activations"
        forward = getattr(self.worker.runner, "name", "sequential")
        return (f"the transformers engine ({weights}, {forward} forward, {torch.get_num_threads()} threads, up to "
                f"{self.config.max_batch_size} streams batched, on {self.loaded.device.type})")

    def check_health(self) -> None:
        if self.worker is not None:
            self.worker.check_health()

    # --- tokenizer ------------------------------------------------------------------------------------
    def tokenize(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self.loaded.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]

    def detokenize(self, token_ids: Sequence[int]) -> str:
        return self.loaded.tokenizer.decode(list(token_ids))

    def token_strs(self, token_ids: Sequence[int]) -> list[str]:
        return list(self.loaded.tokenizer.convert_ids_to_tokens(list(token_ids)))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    async def encode_media_prompt(self, prompt: str, media: Any) -> EncodedPrompt:
        """The model's processor on the prompt and its decoded media (on the worker thread, like all torch work):
        the placeholders expanded, and the pixel values/features kept for the prefill."""
        worker, loaded = self._require_worker(), self.loaded
        rate = self.config.audio_sampling_rate
        inputs = await asyncio.wrap_future(
            worker.call(lambda: encode(loaded.processor, prompt, media, rate, loaded.image_options)))
        return EncodedPrompt(inputs.token_ids, inputs)

    # --- generation -----------------------------------------------------------------------------------
    async def generate(self, request: GenerationRequest) -> AsyncIterator[EngineEvent]:
        worker = self._require_worker()
        params = request.params
        stop_ids = frozenset(params.stop_token_ids) | (frozenset() if params.ignore_eos else self._eos_ids)
        guide = await self._guide(params.constraint, stop_ids) if params.constraint is not None else None
        channel = EventChannel(lambda: worker.abort(request.request_id))
        decode = self._decoder(params.skip_special_tokens, request.keep_special_tokens)
        worker.submit(new_request_state(request, stop_ids, decode, channel.emit, guide))
        async for event in channel.events():
            yield event

    async def _guide(self, constraint: Any, stop_ids: frozenset[int]) -> Any:
        """A request's constrained-decoding state; the tokenizer's grammars are built once (~1 s), off the loop."""
        from lmchat.structured.backend import from_hf_tokenizer
        from lmchat.structured.guide import Guide

        async with self._grammars_lock:
            if self._grammars is None:
                tokenizer, config = self.loaded.tokenizer, self.loaded.model.config
                vocab = max(len(tokenizer), getattr(config, "vocab_size", 0) or 0)
                self._grammars = await asyncio.to_thread(from_hf_tokenizer, tokenizer, vocab)
        return await asyncio.to_thread(Guide, self._grammars, constraint, stop_ids)

    def _decoder(self, skip_special_tokens: bool, keep: tuple[str, ...]):
        tokenizer = self.loaded.tokenizer
        if skip_special_tokens and keep:
            return decode_dropping(lambda ids: tokenizer.decode(ids), dropped_special_ids(tokenizer, keep))
        return lambda ids: tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    # --- named LoRA adapters (batched: lmchat.engines.hf.lora) -----------------------------------------------
    async def _load_adapter(self, name: str, path: str) -> AdapterInfo:
        worker = self._require_worker()
        if self.info.is_reward_model:
            raise UnsupportedError("A reward model does not serve named LoRA adapters.", param="lora_name")
        weights = await asyncio.wrap_future(worker.call(lambda: worker.load_adapter(name, path)))
        return AdapterInfo(name, path, weights.rank)

    async def _unload_adapter(self, name: str) -> None:
        worker = self._require_worker()
        await asyncio.wrap_future(worker.call(lambda: worker.unload_adapter(name)))

    async def abort(self, request_id: str) -> None:
        if self.worker is not None:
            self.worker.abort(request_id)

    async def score(self, texts: Sequence[str], max_length: int | None = None) -> list[float]:
        worker = self._require_worker()
        return await asyncio.wrap_future(worker.call(lambda: score_texts(self.loaded, texts, max_length)))

    async def embed(self, request: EmbedRequest) -> list[list[float]]:
        """One worker job per input, so running generations keep stepping between them."""
        worker, loaded, pooling_type = self._require_worker(), self.loaded, self.info.pooling.pooling_type
        vectors = []
        for ids in request.inputs:
            job = worker.call(lambda ids=ids: embed_ids(loaded, [ids], pooling_type)[0])
            vectors.append(await asyncio.wrap_future(job))
        return vectors

    async def score_pairs(self, request: PairScoreRequest) -> PairScores:
        """One worker job per pair (see :meth:`embed`); an error names the pair by its index."""
        worker, loaded = self._require_worker(), self.loaded
        scores, tokens = [], 0
        for i, pair in enumerate(request.pairs):
            one = dataclasses.replace(request, pairs=(pair,))
            result = await asyncio.wrap_future(worker.call(lambda one=one, i=i: score_pairs(loaded, one, first=i)))
            scores += result.scores
            tokens += result.prompt_tokens
        return PairScores(tuple(scores), tokens)

    async def prompt_logprobs(self, token_ids: Sequence[int], top: int = 0) -> list[TokenLogprob | None]:
        worker = self._require_worker()
        if not self.can_generate:
            raise UnsupportedError("A reward or embedding model has no token log-probabilities.", param="model")
        return await asyncio.wrap_future(worker.call(lambda: prompt_logprobs(self.loaded, token_ids, top)))

    def _require_worker(self) -> ModelWorker:
        if self.worker is None:
            raise EngineClosedError("The transformers engine is closed.")
        return self.worker

    async def close(self) -> None:
        worker, self.worker = self.worker, None
        if worker is not None:
            await asyncio.to_thread(worker.stop)
        self.loaded = None


def media_capabilities(base: Capabilities, processor: Any) -> Capabilities:
    """The engine's capabilities with the media kinds the loaded model's processor takes."""
    support = media_support(processor)
    return dataclasses.replace(base, images=support.images, videos=support.videos, audios=support.audios,
                               media_notes=support.notes)


def pooling_capabilities(base: Capabilities, kind: str, processor: Any) -> Capabilities:
    """The pooling tasks the loaded model runs: every text model embeds (an encoder's or a causal LM's last
    states); pairs are scored by a classifier's head or an embedding model's cosine."""
    if processor is not None:
        note = "embeddings of a vision or audio model are not supported yet"
        return dataclasses.replace(base, pooling_notes=(("embed", note), ("score", note)))
    if kind == "generative":
        note = ("it is a generative model: scoring pairs needs a cross-encoder or reward model (one-label "
                "sequence classification) or an embedding model")
        return dataclasses.replace(base, pooling=frozenset({"embed"}), pooling_notes=(("score", note),))
    if kind == "embedding":
        return dataclasses.replace(base, pooling=frozenset({"embed", "score"}))
    note = "it is a classifier (reward model or cross-encoder): it scores pairs, use /v1/score or /v1/rerank"
    return dataclasses.replace(base, pooling=frozenset({"score"}), pooling_notes=(("embed", note),))


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    generation_config = getattr(model, "generation_config", None)
    eos = getattr(generation_config, "eos_token_id", None)
    ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return frozenset(ids)
