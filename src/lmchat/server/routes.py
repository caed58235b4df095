"""The thin router: each endpoint hands its validated body to its serving class."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from lmchat.server.disconnect import cancel_on_disconnect
from lmchat.server.openapi import error_responses, stream_response
from lmchat.server.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatCompletionStreamResponse,
    CompletionRequest,
    CompletionResponse,
    DetokenizeRequest,
    DetokenizeResponse,
    HealthResponse,
    ModelCard,
    ModelList,
    ScoreConversationsRequest,
    ScoreEvaluationRequest,
    ScoreResponse,
    TokenizeRequest,
    TokenizeResponse,
)
from lmchat.server.responses import json_response
from lmchat.server.serving.base import ServerState

router = APIRouter()


def _state(request: Request) -> ServerState:
    return request.app.state.lmchat


@router.get("/health", responses={200: {"model": HealthResponse}, **error_responses("health")})
async def health(request: Request) -> Response:
    """200 while the server takes requests; 503 once the engine died or the server is shutting down."""
    _state(request).check_ready()
    return JSONResponse({"status": "ok"})


@router.get("/metrics", response_class=PlainTextResponse,
            responses={200: {"description": "Prometheus metrics."}, **error_responses("reading")})
async def metrics(request: Request) -> Response:
    state = _state(request)
    return Response(await state.metrics.arender(), media_type=state.metrics.content_type)


@router.get("/v1/models", responses={200: {"model": ModelList}, **error_responses("reading")})
async def list_models(request: Request) -> Response:
    state = _state(request)
    context = state.chat_model.engine.info.context_length
    cards = [ModelCard(id=name, max_model_len=context) for name in state.served_names]
    cards += [_adapter_card(state, adapter.name) for adapter in state.chat_model.engine.adapters]
    return json_response(ModelList(data=cards))


def _adapter_card(state: ServerState, name: str) -> ModelCard:
    """A named LoRA adapter's card: vLLM lists it with its folder (``root``) and base model (``parent``)."""
    adapters = {adapter.name: adapter for adapter in state.chat_model.engine.adapters}
    return ModelCard(id=name, max_model_len=state.chat_model.engine.info.context_length,
                     root=adapters[name].path, parent=state.model_name)


@router.get("/v1/models/{model_id:path}", responses={200: {"model": ModelCard}, **error_responses("model")})
async def retrieve_model(model_id: str, request: Request) -> Response:
    state = _state(request)
    state.check_model(model_id)
    if state.adapter_of(model_id):
        return json_response(_adapter_card(state, model_id))
    return json_response(ModelCard(id=model_id, max_model_len=state.chat_model.engine.info.context_length))


@router.post("/v1/chat/completions", responses={
    **stream_response(ChatCompletionResponse, ChatCompletionStreamResponse), **error_responses("generation")})
async def create_chat_completion(body: ChatCompletionRequest, request: Request) -> Response:
    return await cancel_on_disconnect(request, request.app.state.serving_chat.create(body))


@router.post("/v1/completions", responses={
    **stream_response(CompletionResponse, CompletionResponse), **error_responses("generation")})
async def create_completion(body: CompletionRequest, request: Request) -> Response:
    return await cancel_on_disconnect(request, request.app.state.serving_completion.create(body))


@router.post("/v1/score/evaluation", responses={200: {"model": ScoreResponse}, **error_responses("scoring")})
async def score_evaluation(body: ScoreEvaluationRequest, request: Request) -> Response:
    return json_response(await cancel_on_disconnect(request, request.app.state.serving_score.evaluate(body)))


@router.post("/v1/score/conversations", responses={200: {"model": ScoreResponse}, **error_responses("scoring")})
async def score_conversations(body: ScoreConversationsRequest, request: Request) -> Response:
    serving = request.app.state.serving_score
    return json_response(await cancel_on_disconnect(request, serving.score_conversations(body)))

# /tokenize and /detokenize (vLLM's and llama.cpp's shapes) live in routes_compat
