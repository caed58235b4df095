"""The vLLM engine: ``AsyncLLMEngine`` (``AsyncLLM`` in vLLM's v1 engine) in-process, on the GPUs given.

lmchat renders and tokenizes the prompt; vLLM batches every running request continuously (no lmchat-side
serialisation), streams deltas (``RequestOutputKind.DELTA``) and aborts a request whose stream is closed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import torch
from vllm import AsyncEngineArgs, AsyncLLMEngine
from vllm import SamplingParams as VllmSamplingParams
from vllm.lora.request import LoRARequest
from vllm.sampling_params import RequestOutputKind

from lmchat.engines.backend_stream import backend_stream
from lmchat.engines.base import BaseEngine, Capabilities, GenerationRequest, ModelInfo
from lmchat.engines.events import EngineEvent, Finished, TextDelta, TokenLogprob
from lmchat.engines.hf_tokenizer import HFTokenizerMixin, load_image, special_tokens, token_text
from lmchat.engines.vllm.sampling import finish_reason, to_vllm_engine_kwargs, to_vllm_sampling_kwargs
from lmchat.errors import EngineClosedError, InvalidRequestError
from lmchat.generation.sampling import SamplingParams


class VllmEngine(HFTokenizerMixin, BaseEngine):
    name = "vllm"
    capabilities = Capabilities(sampling_options=frozenset(SamplingParams.model_fields), lora=True)

    def __init__(self, config) -> None:
        super().__init__(config)
        self.engine: Any = None
        self._lora: LoRARequest | None = None

    async def start(self) -> None:
        kwargs = to_vllm_engine_kwargs(self.config, torch.cuda.device_count())
        self.engine = AsyncLLMEngine.from_engine_args(AsyncEngineArgs(**kwargs))
        self.tokenizer = await self.engine.get_tokenizer()
        model_config = self.engine.model_config
        multimodal = bool(getattr(model_config, "is_multimodal_model", False))
        self.capabilities = Capabilities(
            sampling_options=frozenset(SamplingParams.model_fields), lora=True,
            images=multimodal, videos=multimodal, audios=multimodal,
        )
        if self.config.adapter_name_or_path:
            self._lora = LoRARequest("default", 1, self.config.adapter_name_or_path[0])
        self._info = ModelInfo(
            name=self.config.model_name_or_path or "",
            chat_template=getattr(self.tokenizer, "chat_template", None),
            special_tokens=special_tokens(self.tokenizer),
            context_length=model_config.max_model_len,
        )


    async def generate(self, request: GenerationRequest) -> AsyncIterator[EngineEvent]:
        if self.engine is None:
            raise EngineClosedError("The vllm engine is closed.")
        prompt_ids, budget = list(request.prompt_token_ids), request.max_tokens
        try:
            sampling = VllmSamplingParams(**to_vllm_sampling_kwargs(request.params, budget),
                                          output_kind=RequestOutputKind.DELTA)
        except ValueError as exc:
            raise InvalidRequestError(f"vLLM rejected the sampling options: {exc}") from None
        stream = self.engine.generate(_prompt(request, prompt_ids), sampling, request.request_id,
                                      lora_request=self._lora)
        generated = 0
        async with backend_stream(self, request.request_id, stream, (ValueError, RuntimeError)) as state:
            async for output in stream:
                completion = output.outputs[0]
                generated += len(completion.token_ids)
                if completion.text or completion.token_ids:
                    logprobs = _logprobs(completion.logprobs, completion.token_ids, request.params.top_logprobs)
                    yield TextDelta(completion.text, len(completion.token_ids), tuple(completion.token_ids), logprobs)
                if output.finished:
                    state.finished = True
                    reason = finish_reason(completion.finish_reason)
                    stop = token_text(self.tokenizer, completion.stop_reason) if reason == "stop" else None
                    yield Finished(reason, len(prompt_ids), generated, stop)

    async def abort(self, request_id: str) -> None:
        if self.engine is not None:
            await self.engine.abort(request_id)

    async def close(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None and hasattr(engine, "shutdown"):
            engine.shutdown()


def _prompt(request: GenerationRequest, prompt_ids: list[int]) -> dict[str, Any]:
    """vLLM's prompt dict: token ids, or the text plus media for a multimodal request."""
    media = {kind: [load_image(item) for item in items] if kind == "image" else list(items)
             for kind, items in (("image", request.images), ("video", request.videos), ("audio", request.audios))
             if items}
    if not media:
        return {"prompt_token_ids": prompt_ids}
    return {"prompt": request.prompt, "multi_modal_data": {k: v[0] if len(v) == 1 else v for k, v in media.items()}}


def _logprobs(entries: Any, token_ids: Any, top: int) -> tuple[TokenLogprob, ...]:
    """vLLM's per-token ``{token_id: Logprob}`` dicts as lmchat's TokenLogprob events."""
    if not entries:
        return ()
    result = []
    for token_id, entry in zip(token_ids, entries):
        chosen = entry[token_id]
        ranked = sorted(entry.items(), key=lambda item: item[1].rank or 0)
        alternatives = tuple((lp.decoded_token or "", tid, lp.logprob) for tid, lp in ranked if lp.rank <= top)[:top]
        result.append(TokenLogprob(chosen.decoded_token or "", token_id, chosen.logprob, alternatives))
    return tuple(result)
