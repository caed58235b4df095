"""The routes other servers' clients call: llama.cpp's (OpenAI routes without ``/v1``, ``/completion``,
``/tokenize {"content"}``, ``/props``) and vLLM's (``/version``, ``/ping``, ``/invocations``, ``/tokenize``).

``/tokenize`` serves both shapes: a body with ``content`` is llama.cpp's, one with ``prompt`` or ``messages``
vLLM's. ``/invocations`` (SageMaker) dispatches on the body: ``messages`` is a chat completion, ``prompt`` a
completion.
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import APIRouter, Request
from pydantic import BaseModel, ValidationError
from starlette.responses import JSONResponse, Response

from lmchat import __version__
from lmchat.errors import InvalidRequestError
from lmchat.server import routes
from lmchat.server.disconnect import cancel_on_disconnect
from lmchat.server.errors import from_validation_errors
from lmchat.server.protocol import ChatCompletionRequest, CompletionRequest, DetokenizeRequest, TokenizeRequest
from lmchat.server.protocol_compat import LlamaCppCompletionRequest, LlamaCppTokenizeRequest
from lmchat.server.responses import json_response

router = APIRouter()
Body = TypeVar("Body", bound=BaseModel)

# OpenAI's routes without the /v1 prefix, as llama.cpp serves them (aliases: the OpenAPI document lists the /v1 ones)
for _path, _endpoint, _method in (("/models", routes.list_models, "GET"),
                                  ("/models/{model_id:path}", routes.retrieve_model, "GET"),
                                  ("/chat/completions", routes.create_chat_completion, "POST"),
                                  ("/completions", routes.create_completion, "POST")):
    router.add_api_route(_path, _endpoint, methods=[_method], include_in_schema=False)


async def json_object(request: Request) -> dict[str, Any]:
    """The request's JSON object body, or the 400 a validated route would give."""
    try:
        body = await request.json()
    except ValueError:
        raise from_validation_errors([{"type": "json_invalid", "loc": ("body",)}]) from None
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object (send Content-Type: application/json).")
    return body


def validated(model: type[Body], body: dict[str, Any]) -> Body:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise from_validation_errors(exc.errors(), body) from None


@router.post("/tokenize")
async def tokenize(request: Request) -> Response:
    body = await json_object(request)
    if "content" in body:  # llama.cpp's shape
        return JSONResponse(request.app.state.serving_llamacpp.tokenize(validated(LlamaCppTokenizeRequest, body)))
    return json_response(await request.app.state.serving_tokenize.tokenize(validated(TokenizeRequest, body)))


@router.post("/detokenize")
async def detokenize(body: DetokenizeRequest, request: Request) -> Response:
    return json_response(request.app.state.serving_tokenize.detokenize(body))


@router.post("/completion")
async def llamacpp_completion(body: LlamaCppCompletionRequest, request: Request) -> Response:
    return await cancel_on_disconnect(request, request.app.state.serving_llamacpp.completion(body))


@router.get("/props")
async def props(request: Request) -> Response:
    return JSONResponse(request.app.state.serving_llamacpp.props())


@router.get("/version")
async def version() -> Response:
    return JSONResponse({"version": __version__})


@router.get("/ping", operation_id="ping_get")
@router.post("/ping", operation_id="ping_post")
async def ping() -> Response:
    return Response(status_code=200)  # SageMaker's health check: the model is loaded once the server listens


@router.post("/invocations")
async def invocations(request: Request) -> Response:
    """SageMaker's one route, as vLLM serves it: the request's kind from its body (``messages``: chat, ``prompt``:
    completion, ``input``: embeddings, ``query`` with ``documents``: rerank, ``text_1`` with ``text_2``: score)."""
    from lmchat.server import routes_pooling
    from lmchat.server.protocol_pooling import EmbeddingRequest, RerankRequest, ScoreRequest

    body = await json_object(request)
    if "messages" in body:
        return await routes.create_chat_completion(validated(ChatCompletionRequest, body), request)
    if "prompt" in body:
        return await routes.create_completion(validated(CompletionRequest, body), request)
    if "input" in body:
        return await routes_pooling.create_embedding(validated(EmbeddingRequest, body), request)
    if "query" in body and "documents" in body:
        return await routes_pooling.create_rerank(validated(RerankRequest, body), request)
    if "text_1" in body and "text_2" in body:
        return await routes_pooling.create_score(validated(ScoreRequest, body), request)
    raise InvalidRequestError(
        "/invocations takes a chat completion request (with 'messages'), a completion request ('prompt'), an "
        "embedding request ('input'), a rerank request ('query' and 'documents') or a score request ('text_1' and "
        "'text_2').", param="messages",
    )
