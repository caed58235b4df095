"""Request and response models of the pooling routes: OpenAI's ``/v1/embeddings`` (with vLLM's extra fields),
llama.cpp's ``/embeddings``, vLLM's ``/v1/score`` and the Jina/Cohere ``/v1/rerank`` as vLLM serves it."""

from __future__ import annotations

import base64
import struct
from typing import Annotated, Literal

from pydantic import Field

from lmchat.errors import InvalidRequestError
from lmchat.server.protocol import OpenAIRequest, OpenAIResponse, now

TokenIds = Annotated[list[int], Field(min_length=1)]
Truncate = Annotated[int, Field(ge=-1, description="Keep each input's last N tokens; -1: the context length.")]


class PoolingFields(OpenAIRequest):
    model: str | None = None
    truncate_prompt_tokens: Truncate | None = None


class EmbeddingRequest(PoolingFields):
    """OpenAI's embeddings request, plus vLLM's ``normalize`` (``use_activation`` in newer vLLM),
    ``add_special_tokens`` and ``truncate_prompt_tokens``."""

    input: str | TokenIds | Annotated[list[str | TokenIds], Field(min_length=1)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1, description="Keep the first N values (matryoshka models only).")
    user: str | None = None
    normalize: bool | None = Field(None, description="L2-normalise each vector (default: true).")
    use_activation: bool | None = Field(None, description="vLLM's newer name of normalize.")
    add_special_tokens: bool = True

    def normalize_option(self) -> bool | None:
        if None not in (self.normalize, self.use_activation) and self.normalize != self.use_activation:
            raise InvalidRequestError("normalize and use_activation disagree; send one of them.",
                                      param="use_activation")
        return self.normalize if self.normalize is not None else self.use_activation


class LlamaCppEmbeddingRequest(PoolingFields):
    """llama.cpp's ``/embeddings`` (and ``/embedding``): ``input`` or ``content``; ``embd_normalize`` -1 (none)
    or 2 (Euclidean, the default)."""

    input: str | TokenIds | Annotated[list[str | TokenIds], Field(min_length=1)] | None = None
    content: str | TokenIds | Annotated[list[str | TokenIds], Field(min_length=1)] | None = None
    embd_normalize: Literal[-1, 2] = 2

    def inputs(self) -> str | list:
        if (self.input is None) == (self.content is None):
            raise InvalidRequestError("Send the text to embed as input (or content), once.", param="input")
        return self.input if self.input is not None else self.content  # type: ignore[return-value]


class ScoreRequest(PoolingFields):
    """vLLM's ``/v1/score``: ``text_1`` against ``text_2`` (one and one, one and N, or N and N pairwise)."""

    text_1: str | Annotated[list[str], Field(min_length=1)]
    text_2: str | Annotated[list[str], Field(min_length=1)]
    use_activation: bool | None = Field(None, description="Sigmoid of a classifier's score (default: true).")


class RerankRequest(PoolingFields):
    """Jina's and Cohere's rerank request as vLLM serves it; ``top_n`` 0 or absent returns every document."""

    query: str
    documents: Annotated[list[str], Field(min_length=1)]
    top_n: int | None = Field(None, ge=0)
    return_documents: bool = True
    use_activation: bool | None = Field(None, description="Sigmoid of a classifier's score (default: true).")


class TeiRerankRequest(PoolingFields):
    """Text Embeddings Inference's rerank, which llama.cpp's ``/rerank`` also takes: ``texts`` for documents."""

    query: str
    texts: Annotated[list[str], Field(min_length=1)]
    top_n: int | None = Field(None, ge=0)
    return_text: bool = False
    raw_scores: bool = False

    def rerank_request(self) -> RerankRequest:
        return RerankRequest(model=self.model, truncate_prompt_tokens=self.truncate_prompt_tokens, query=self.query,
                             documents=self.texts, top_n=self.top_n, use_activation=not self.raw_scores)


# --- responses -----------------------------------------------------------------------------------------
class EmbeddingUsage(OpenAIResponse):
    prompt_tokens: int
    total_tokens: int


class EmbeddingData(OpenAIResponse):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingResponse(OpenAIResponse):
    id: str
    object: Literal["list"] = "list"
    created: int = Field(default_factory=now)
    model: str
    data: list[EmbeddingData]
    usage: EmbeddingUsage


def encode_embedding(vector: list[float], encoding_format: str) -> list[float] | str:
    """``base64``: the vector's float32 values, little-endian, base64-encoded (what OpenAI's client decodes)."""
    if encoding_format == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


class ScoreData(OpenAIResponse):
    index: int
    object: Literal["score"] = "score"
    score: float


class PoolingUsage(OpenAIResponse):
    prompt_tokens: int
    total_tokens: int
    completion_tokens: int = 0


class ScoreListResponse(OpenAIResponse):
    id: str
    object: Literal["list"] = "list"
    created: int = Field(default_factory=now)
    model: str
    data: list[ScoreData]
    usage: PoolingUsage


class RerankDocument(OpenAIResponse):
    text: str


class RerankResult(OpenAIResponse):
    index: int
    relevance_score: float
    document: RerankDocument | None = None
    omit_if_none = frozenset({"document"})


class RerankUsage(OpenAIResponse):
    prompt_tokens: int
    total_tokens: int


class RerankResponse(OpenAIResponse):
    id: str
    model: str
    usage: RerankUsage
    results: list[RerankResult]
