"""The KTransformers engine: GGUF weights placed across CPU and GPU by an optimize-rule YAML, decoded with
KTransformers' ``prefill_and_generate``. Requests are **serialised** on one model thread (the model holds one
static KV cache), ``n > 1`` runs by repetition, and a closed stream stops the generator at its next token.

Settings are LLaMA-Factory's keys (``kt_optimize_rule``: the rule YAML, ``cpu_infer``: CPU threads, ``chunk_size``,
``kt_maxlen``: prompt plus answer, ``kt_mode``, ``kt_use_cuda_graph``, ``kt_force_think``); ``ktransformers_config``
may override them and add ``gguf_path`` (folder or file; default: ``model_name_or_path``, the folder with the config
and tokenizer).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from ktransformers.optimize.optimize import optimize_and_load_gguf
from ktransformers.util import utils as kt_utils
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from lmchat.engines.base import BaseEngine, Capabilities, GenerationRequest, ModelInfo
from lmchat.engines.events import EngineEvent, Finished, TextDelta
from lmchat.engines.threaded import EventChannel
from lmchat.engines.ktransformers.sampling import (
    SUPPORTED_OPTIONS,
    kt_settings,
    to_ktransformers_generate_kwargs,
    piece_finish_reason,
    to_ktransformers_generation_config,
)
from lmchat.engines.hf_tokenizer import HFTokenizerMixin, special_tokens
from lmchat.errors import ConfigError, EngineClosedError, EngineError

logger = logging.getLogger("lmchat.engines.ktransformers")
UNTESTED = ("The ktransformers engine is untested: lmchat's test suite has not run it yet (KTransformers needs a "
            "GPU and a rule file; its mapping functions are unit-tested, the engine itself is not). See "
            "docs/engines.md.")


class KTransformersEngine(HFTokenizerMixin, BaseEngine):
    name = "ktransformers"
    capabilities = Capabilities(sampling_options=SUPPORTED_OPTIONS)

    def __init__(self, config) -> None:
        super().__init__(config)
        self.model: Any = None
        self.settings = kt_settings(config)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lmchat-ktransformers")
        self._aborted: set[str] = set()
        self._lock = threading.Lock()

    async def start(self) -> None:
        logger.warning(UNTESTED)
        if not self.settings["kt_optimize_rule"]:
            raise ConfigError("The ktransformers engine needs kt_optimize_rule: RULES.yaml (the rule file placing the "
                              "weights on CPU and GPU).", param="kt_optimize_rule")
        loop = asyncio.get_running_loop()
        self.model = await loop.run_in_executor(self._executor, self._load)
        self._info = ModelInfo(
            name=self.config.model_name_or_path or "",
            chat_template=getattr(self.tokenizer, "chat_template", None),
            special_tokens=special_tokens(self.tokenizer),
            context_length=min(filter(None, (getattr(self.model.config, "max_position_embeddings", None),
                                              self.settings["kt_maxlen"]))),
        )

    def _load(self) -> Any:
        from ktransformers.server.config.config import Config

        Config().cpu_infer = self.settings["cpu_infer"]  # as LLaMA-Factory sets them before loading
        Config().chunk_size = self.settings["chunk_size"]
        path = self.config.model_name_or_path
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=self.config.trust_remote_code)
        model_config = AutoConfig.from_pretrained(path, trust_remote_code=self.config.trust_remote_code)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(model_config, trust_remote_code=self.config.trust_remote_code)
        gguf_path = self.settings["gguf_path"] or path
        optimize_and_load_gguf(model, self.settings["kt_optimize_rule"], gguf_path, model_config)
        return model.eval()


    async def generate(self, request: GenerationRequest) -> AsyncIterator[EngineEvent]:
        if self.model is None:
            raise EngineClosedError("The ktransformers engine is closed.")
        prompt_ids, budget = list(request.prompt_token_ids), request.max_tokens
        channel = EventChannel(lambda: self.abort(request.request_id))
        self._executor.submit(self._run, request, prompt_ids, budget, channel.emit)
        async for event in channel.events():
            yield event

    def _run(self, request: GenerationRequest, prompt_ids: list[int], budget: int, emit) -> None:
        """On the model thread: stream one answer's text pieces until done, the budget, or an abort."""
        try:
            self.model.generation_config = GenerationConfig(**to_ktransformers_generation_config(request.params))
            inputs = torch.tensor([prompt_ids], dtype=torch.long, device=self._device())
            pieces = kt_utils.prefill_and_generate_capture(
                self.model, self.tokenizer, inputs, echo_stream=False,
                **to_ktransformers_generate_kwargs(self.settings, budget),
            )
            text, reason = "", "stop"
            for piece in pieces:
                if request.request_id in self._aborted:
                    reason = "abort"
                    break
                emit(TextDelta(str(piece), 1))
                text += str(piece)
            pieces.close() if hasattr(pieces, "close") else None
            generated = self.count_tokens(text)
            emit(Finished(piece_finish_reason(reason == "abort", generated, budget), len(prompt_ids), generated))
        except Exception as exc:  # noqa: BLE001  (handed to the waiting caller as a typed error)
            emit(EngineError(f"The ktransformers engine failed: {exc}"))
        finally:
            with self._lock:
                self._aborted.discard(request.request_id)

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    async def abort(self, request_id: str) -> None:
        with self._lock:
            self._aborted.add(request_id)

    async def close(self) -> None:
        await asyncio.to_thread(self._executor.shutdown, wait=True)
        self.model = None
