"""The SGLang engine: ``sglang.Engine`` in-process, driven through ``async_generate`` on the caller's event loop
(never a blocking HTTP client). SGLang batches running requests itself; a closed stream aborts its request.
With ``sglang_config: {is_embedding: true}`` a reward model is loaded and ``get_scores`` uses ``async_encode``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import sglang
import torch

from lmchat.engines.backend_stream import backend_stream
from lmchat.engines.base import BaseEngine, Capabilities, GenerationRequest, ModelInfo
from lmchat.engines.events import EngineEvent, Finished, TextDelta, TokenLogprob
from lmchat.engines.sglang.sampling import (
    ADAPTER_NAME,
    finish_reason,
    to_sglang_engine_kwargs,
    to_sglang_generate_kwargs,
    to_sglang_sampling_params,
)
from lmchat.engines.hf_tokenizer import HFTokenizerMixin, special_tokens, token_text
from lmchat.errors import EngineClosedError
from lmchat.generation.sampling import SamplingParams


class SGLangEngine(HFTokenizerMixin, BaseEngine):
    name = "sglang"
    reward_hint = " (load one with sglang_config: {is_embedding: true})"
    capabilities = Capabilities(sampling_options=frozenset(SamplingParams.model_fields), lora=True)

    def __init__(self, config) -> None:
        super().__init__(config)
        self.engine: Any = None
        self._incremental = False

    async def start(self) -> None:
        kwargs = to_sglang_engine_kwargs(self.config, torch.cuda.device_count())
        self.engine = sglang.Engine(**kwargs)
        self.tokenizer = self.engine.tokenizer_manager.tokenizer
        server_args = self.engine.server_args
        self._incremental = bool(getattr(server_args, "incremental_streaming_output", False))
        is_reward = bool(kwargs.get("is_embedding"))
        multimodal = bool(getattr(self.engine.tokenizer_manager.model_config, "is_multimodal", False))
        self.capabilities = Capabilities(
            sampling_options=frozenset(SamplingParams.model_fields), lora=True,
            images=multimodal, videos=multimodal, audios=multimodal,
        )
        self._info = ModelInfo(
            name=self.config.model_name_or_path or "",
            chat_template=getattr(self.tokenizer, "chat_template", None),
            special_tokens=special_tokens(self.tokenizer),
            context_length=self.engine.tokenizer_manager.context_len,
            is_reward_model=is_reward,
        )


    async def generate(self, request: GenerationRequest) -> AsyncIterator[EngineEvent]:
        if self.engine is None:
            raise EngineClosedError("The sglang engine is closed.")
        params = request.params
        prompt_ids, budget = list(request.prompt_token_ids), request.max_tokens
        stream = await self.engine.async_generate(
            input_ids=prompt_ids,
            sampling_params=to_sglang_sampling_params(params, budget),
            image_data=list(request.images) or None,
            video_data=list(request.videos) or None,
            audio_data=list(request.audios) or None,
            lora_path=ADAPTER_NAME if self.config.adapter_name_or_path else None,
            stream=True,
            rid=request.request_id,
            **to_sglang_generate_kwargs(params),
        )
        sent_text, sent_logprobs, sent_tokens = "", 0, 0
        async with backend_stream(self, request.request_id, stream) as state:
            async for chunk in stream:  # cumulative text unless SGLang runs with incremental_streaming_output
                meta = chunk["meta_info"]
                text = chunk["text"] if self._incremental else chunk["text"][len(sent_text):]
                sent_text = sent_text + text if self._incremental else chunk["text"]
                logprobs = _logprobs(meta, 0 if self._incremental else sent_logprobs) if params.logprobs else ()
                sent_logprobs += len(logprobs)
                tokens = meta.get("completion_tokens", sent_tokens) - sent_tokens
                sent_tokens += tokens
                if text or logprobs:
                    yield TextDelta(text, tokens, logprobs=logprobs)
                reason = finish_reason(meta)
                if reason is not None:
                    state.finished = True
                    stop = meta["finish_reason"].get("matched") if isinstance(meta["finish_reason"], dict) else None
                    yield Finished(reason, meta.get("prompt_tokens", len(prompt_ids)),
                                   meta.get("completion_tokens", 0), token_text(self.tokenizer, stop))

    async def abort(self, request_id: str) -> None:
        if self.engine is not None:
            self.engine.tokenizer_manager.abort_request(request_id)

    async def score(self, texts: Sequence[str], max_length: int | None = None) -> list[float]:
        outputs = await self.engine.async_encode(list(texts))
        return [float(output["embedding"][0]) for output in outputs]

    async def close(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            engine.shutdown()


def _logprobs(meta: dict[str, Any], already_sent: int) -> tuple[TokenLogprob, ...]:
    """SGLang's cumulative ``(logprob, token_id, text)`` lists, from ``already_sent`` on, as TokenLogprob events."""
    chosen = meta.get("output_token_logprobs") or []
    tops = meta.get("output_top_logprobs") or []
    events = []
    for i in range(already_sent, len(chosen)):
        logprob, token_id, text = chosen[i]
        top = tuple((alt_text or "", alt_id, alt_lp) for alt_lp, alt_id, alt_text in (tops[i] if i < len(tops) else ()))
        events.append(TokenLogprob(text or "", token_id, logprob, top))
    return tuple(events)
