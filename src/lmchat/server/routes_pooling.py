"""The pooling routes: ``/v1/embeddings``, ``/v1/score`` and ``/v1/rerank`` (in the OpenAPI document), and the
spellings other servers' clients call (``compat_router``, left out of it): llama.cpp's ``/embeddings`` and
``/embedding`` (its own response shape), ``/rerank``, ``/reranking``, ``/v1/reranking``, and vLLM's ``/score``,
``/rerank`` and ``/v2/rerank``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from lmchat.server.disconnect import cancel_on_disconnect
from lmchat.server.openapi import error_responses
from lmchat.server.protocol_pooling import (
    EmbeddingRequest,
    EmbeddingResponse,
    LlamaCppEmbeddingRequest,
    RerankRequest,
    RerankResponse,
    ScoreListResponse,
    ScoreRequest,
    TeiRerankRequest,
)
from lmchat.server.responses import json_response
from lmchat.server.routes_compat import json_object, validated

router = APIRouter()
compat_router = APIRouter()


@router.post("/v1/embeddings", responses={200: {"model": EmbeddingResponse}, **error_responses("scoring")})
async def create_embedding(body: EmbeddingRequest, request: Request) -> Response:
    """OpenAI's embeddings (vLLM's extra fields too): one pooled, normalised vector per input."""
    serving = request.app.state.serving_pooling
    return json_response(await cancel_on_disconnect(request, serving.embeddings(body)))


@router.post("/v1/score", responses={200: {"model": ScoreListResponse}, **error_responses("scoring")})
async def create_score(body: ScoreRequest, request: Request) -> Response:
    """vLLM's pair scores: a cross-encoder's or reward model's head on each pair, or an embedding model's cosine."""
    serving = request.app.state.serving_pooling
    return json_response(await cancel_on_disconnect(request, serving.score(body)))


@router.post("/v1/rerank", responses={200: {"model": RerankResponse}, **error_responses("scoring")})
async def create_rerank(body: RerankRequest, request: Request) -> Response:
    """Jina's and Cohere's rerank: the documents by relevance to the query, most relevant first."""
    serving = request.app.state.serving_pooling
    return json_response(await cancel_on_disconnect(request, serving.rerank(body)))


@compat_router.post("/embeddings")
@compat_router.post("/embedding")
async def llamacpp_embeddings(body: LlamaCppEmbeddingRequest, request: Request) -> Response:
    serving = request.app.state.serving_pooling
    return JSONResponse(await cancel_on_disconnect(request, serving.llamacpp_embeddings(body)))


@compat_router.post("/rerank")
async def rerank_either_shape(request: Request) -> Response:
    """llama.cpp's ``/rerank``: Jina's shape (``documents``), or TEI's (``texts`` -> ``[{"index", "score"}]``)."""
    body = await json_object(request)
    if "texts" not in body:
        return await create_rerank(validated(RerankRequest, body), request)
    tei = validated(TeiRerankRequest, body)
    result = await cancel_on_disconnect(request, request.app.state.serving_pooling.rerank(tei.rerank_request()))
    return JSONResponse([{"index": item.index, "score": item.relevance_score,
                          **({"text": tei.texts[item.index]} if tei.return_text else {})} for item in result.results])


compat_router.add_api_route("/score", create_score, methods=["POST"], include_in_schema=False)
for _path in ("/v2/rerank", "/reranking", "/v1/reranking"):
    compat_router.add_api_route(_path, create_rerank, methods=["POST"], include_in_schema=False)
