"""The SGLang engine: ``sglang.Engine`` in-process, driven through ``async_generate`` on the caller's event loop
(never a blocking HTTP client). SGLang batches running requests itself; a closed stream aborts its request.
With ``sglang_config: {is_embedding: true}`` a reward model is loaded and ``get_scores`` uses ``async_encode``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import sglang
import torch

from lmchat.engines.backend_stream import backend_stream
from lmchat.engines.base import BaseEngine, Capabilities, GenerationRequest, ModelInfo
from lmchat.engines.events import EngineEvent
from lmchat.engines.sglang.outputs import ChunkReader
from lmchat.engines.sglang.sampling import (
    ADAPTER_NAME,
    SGLANG_OPTIONS,
    to_sglang_engine_kwargs,
    to_sglang_generate_kwargs,
    to_sglang_sampling_params,
)
from lmchat.engines.hf_tokenizer import HFTokenizerMixin, special_among, special_tokens, token_text
from lmchat.errors import EngineClosedError

logger = logging.getLogger("lmchat.engines.sglang")
UNTESTED = ("The sglang engine is untested: lmchat's test suite has not run it yet (SGLang needs a GPU; its mapping "
            "and chunk-reading functions are unit-tested, the engine itself is not). See docs/engines.md.")


class SGLangEngine(HFTokenizerMixin, BaseEngine):
    name = "sglang"
    reward_hint = " (load one with sglang_config: {is_embedding: true})"
    capabilities = Capabilities(sampling_options=SGLANG_OPTIONS, lora=True)

    def __init__(self, config) -> None:
        super().__init__(config)
        self.engine: Any = None
        self._incremental = False

    async def start(self) -> None:
        logger.warning(UNTESTED)
        kwargs = to_sglang_engine_kwargs(self.config, torch.cuda.device_count())
        self.engine = sglang.Engine(**kwargs)
        self.tokenizer = self.engine.tokenizer_manager.tokenizer
        server_args = self.engine.server_args
        self._incremental = bool(getattr(server_args, "incremental_streaming_output", False))
        is_reward = bool(kwargs.get("is_embedding"))
        multimodal = bool(getattr(self.engine.tokenizer_manager.model_config, "is_multimodal", False))
        self.capabilities = Capabilities(
            sampling_options=SGLANG_OPTIONS, lora=True,
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
            sampling_params=to_sglang_sampling_params(
                params, budget, special_among(self.tokenizer, request.keep_special_tokens)),
            image_data=list(request.images) or None,
            video_data=list(request.videos) or None,
            audio_data=list(request.audios) or None,
            lora_path=ADAPTER_NAME if self.config.adapter_name_or_path else None,
            stream=True,
            rid=request.request_id,
            **to_sglang_generate_kwargs(params),
        )
        reader = ChunkReader(len(prompt_ids), self._incremental, params.logprobs,
                             lambda token: token_text(self.tokenizer, token))
        async with backend_stream(self, request.request_id, stream) as state:
            async for chunk in stream:
                for event in reader.read(chunk):
                    yield event
            state.finished = reader.finished

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

