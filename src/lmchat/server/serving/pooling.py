"""The pooling routes: embeddings (OpenAI's and llama.cpp's shapes), vLLM's pair scores and rerank. Each request
is admitted as one sequence, like reward scoring, and runs through the facade (``ChatModel.aembed``,
``ChatModel.ascore_pairs``)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable
from typing import Any, TypeVar

from lmchat.chat.pooling import Embeddings, PairScoreResult
from lmchat.server.protocol_pooling import (
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
    LlamaCppEmbeddingRequest,
    PoolingUsage,
    RerankDocument,
    RerankRequest,
    RerankResponse,
    RerankResult,
    RerankUsage,
    ScoreData,
    ScoreListResponse,
    ScoreRequest,
    encode_embedding,
)
from lmchat.server.serving.base import ServerState

Result = TypeVar("Result")


class ServingPooling:
    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def embeddings(self, body: EmbeddingRequest) -> EmbeddingResponse:
        self.state.check_model(body.model)
        normalize = body.normalize_option()
        result: Embeddings = await self._admitted(self.state.chat_model.aembed(
            body.input, normalize=normalize, dimensions=body.dimensions,
            truncate_prompt_tokens=body.truncate_prompt_tokens, add_special_tokens=body.add_special_tokens))
        data = [EmbeddingData(index=i, embedding=encode_embedding(vector, body.encoding_format))
                for i, vector in enumerate(result.vectors)]
        usage = EmbeddingUsage(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens)
        return EmbeddingResponse(id=f"embd-{uuid.uuid4().hex}", model=self.state.model_name, data=data, usage=usage)

    async def llamacpp_embeddings(self, body: LlamaCppEmbeddingRequest) -> list[dict[str, Any]]:
        """llama.cpp's own shape: ``[{"index": i, "embedding": [[...]]}]`` (one pooled vector per input)."""
        self.state.check_model(body.model)
        result: Embeddings = await self._admitted(self.state.chat_model.aembed(
            body.inputs(), normalize=body.embd_normalize == 2, truncate_prompt_tokens=body.truncate_prompt_tokens))
        return [{"index": i, "embedding": [vector]} for i, vector in enumerate(result.vectors)]

    async def score(self, body: ScoreRequest) -> ScoreListResponse:
        self.state.check_model(body.model)
        result: PairScoreResult = await self._admitted(self.state.chat_model.ascore_pairs(
            body.text_1, body.text_2, truncate_prompt_tokens=body.truncate_prompt_tokens,
            use_activation=body.use_activation))
        usage = PoolingUsage(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens)
        return ScoreListResponse(id=f"score-{uuid.uuid4().hex}", model=self.state.model_name, usage=usage,
                                 data=[ScoreData(index=i, score=score) for i, score in enumerate(result.scores)])

    async def rerank(self, body: RerankRequest) -> RerankResponse:
        self.state.check_model(body.model)
        result: PairScoreResult = await self._admitted(self.state.chat_model.ascore_pairs(
            body.query, body.documents, truncate_prompt_tokens=body.truncate_prompt_tokens,
            use_activation=body.use_activation))
        order = sorted(range(len(result.scores)), key=lambda i: result.scores[i], reverse=True)
        if body.top_n:
            order = order[:body.top_n]
        results = [RerankResult(index=i, relevance_score=result.scores[i],
                                document=RerankDocument(text=body.documents[i]) if body.return_documents else None)
                   for i in order]
        usage = RerankUsage(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens)
        return RerankResponse(id=f"rerank-{uuid.uuid4().hex}", model=self.state.model_name, usage=usage,
                              results=results)

    async def _admitted(self, work: Awaitable[Result]) -> Result:
        """Run ``work`` under an admission lease of one sequence (a pooling call holds the model like one)."""
        self.state.check_ready()
        try:
            lease = await self.state.admission.acquire()
        except BaseException:
            if hasattr(work, "close"):
                work.close()  # never awaited: no "coroutine was never awaited" warning
            raise
        began = time.perf_counter()
        try:
            return await work
        finally:
            lease.release()
            self.state.metrics.request_latency.observe(time.perf_counter() - began)
