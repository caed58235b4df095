"""``create_app(chat_model, settings)``: the FastAPI app, its middleware and its error mapping."""

from __future__ import annotations

from lmchat.errors import require

require("fastapi", "serve")

from fastapi import FastAPI, Request  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from starlette.exceptions import HTTPException  # noqa: E402
from starlette.middleware.cors import CORSMiddleware  # noqa: E402
from starlette.responses import Response  # noqa: E402

from lmchat import __version__  # noqa: E402
from lmchat.chat.chat_model import ChatModel  # noqa: E402
from lmchat.errors import InvalidRequestError, LmchatError  # noqa: E402
from lmchat.server.admission import Admission  # noqa: E402
from lmchat.server.auth import ApiKeyMiddleware  # noqa: E402
from lmchat.server.errors import (  # noqa: E402
    ClientDisconnected,
    MethodNotAllowedError,
    RouteNotFoundError,
    from_validation_errors,
)
from lmchat.server.metrics import ServerMetrics  # noqa: E402
from lmchat.server.middleware import BodyLimitMiddleware, RequestContextMiddleware  # noqa: E402
from lmchat.server.openapi import publish_real_responses  # noqa: E402
from lmchat.server.responses import error_response  # noqa: E402
from lmchat.server.routes import router  # noqa: E402
from lmchat.server.routes_compat import router as compat_router  # noqa: E402
from lmchat.server.routes_pooling import compat_router as pooling_compat_router  # noqa: E402
from lmchat.server.routes_pooling import router as pooling_router  # noqa: E402
from lmchat.server.routes_responses import compat_router as responses_compat_router  # noqa: E402
from lmchat.server.routes_responses import router as responses_router  # noqa: E402
from lmchat.server.routes_lora import router as lora_router  # noqa: E402
from lmchat.server.serving.base import ServerState  # noqa: E402
from lmchat.server.serving.chat import ServingChat  # noqa: E402
from lmchat.server.serving.completion import ServingCompletion  # noqa: E402
from lmchat.server.serving.llamacpp_compat import ServingLlamaCpp  # noqa: E402
from lmchat.server.serving.pooling import ServingPooling  # noqa: E402
from lmchat.server.serving.responses_api import ServingResponses  # noqa: E402
from lmchat.server.serving.score import ServingScore  # noqa: E402
from lmchat.server.serving.tokenize import ServingTokenize  # noqa: E402
from lmchat.server.settings import ServerSettings  # noqa: E402


def create_app(chat_model: ChatModel, settings: ServerSettings | None = None) -> FastAPI:
    """An OpenAI-compatible app serving ``chat_model`` (which the caller keeps and closes)."""
    settings = settings or ServerSettings()
    served_names = settings.served_model_names or (chat_model.engine.info.name,)
    capacity = chat_model.engine.capacity
    running = settings.running_sequences(capacity.max_sequences)
    admission = Admission(running, settings.waiting_sequences(running), capacity.kv_cache_tokens)
    metrics = ServerMetrics(admission, served_names[0])
    state = ServerState(chat_model, settings, served_names, admission, metrics,
                        media_loader=chat_model.new_media_loader(trusted=False))

    app = FastAPI(title="lmchat", version=__version__, description="OpenAI-compatible API served by lmchat.")
    app.state.lmchat = state
    app.state.serving_chat = ServingChat(state)
    app.state.serving_completion = ServingCompletion(state)
    app.state.serving_score = ServingScore(state)
    app.state.serving_tokenize = ServingTokenize(state)
    app.state.serving_llamacpp = ServingLlamaCpp(state)
    app.state.serving_pooling = ServingPooling(state)
    app.state.serving_responses = ServingResponses(state)
    extra_routers = (pooling_router, responses_router)  # in the OpenAPI document
    extra_compat_routers = (pooling_compat_router, responses_compat_router)
    app.include_router(router)
    for extra in extra_routers:
        app.include_router(extra)
    # llama.cpp's and vLLM's own routes, in their shapes (docs/server.md); the OpenAPI document is the OpenAI API
    app.include_router(compat_router, include_in_schema=False)
    for extra in extra_compat_routers:
        app.include_router(extra, include_in_schema=False)
    if settings.enable_lora_loading:  # vLLM's live adapter routes (server/routes_lora.py), behind the API key
        app.include_router(lora_router, include_in_schema=False)
    publish_real_responses(app)
    _add_exception_handlers(app)

    routers = (router, compat_router, *extra_routers, *extra_compat_routers, lora_router)
    known_paths = {getattr(route, "path", "") for each in routers for route in each.routes}
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(ApiKeyMiddleware, api_keys=settings.api_keys)
    app.add_middleware(
        CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["*"], expose_headers=["x-request-id"], allow_credentials=False, max_age=600,
    )
    app.add_middleware(
        RequestContextMiddleware,
        on_response=lambda path, status: metrics.count_request(path if path in known_paths else "other", status),
    )
    return app


def _add_exception_handlers(app: FastAPI) -> None:
    @app.exception_handler(LmchatError)
    async def lmchat_error(request: Request, exc: LmchatError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        return error_response(from_validation_errors(exc.errors(), getattr(exc, "body", None)))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404:
            return error_response(RouteNotFoundError(f"Unknown path: {request.method} {request.url.path}"))
        if exc.status_code == 405:
            return error_response(MethodNotAllowedError(f"{request.method} is not allowed on {request.url.path}."))
        error = InvalidRequestError(str(exc.detail))
        error.http_status = exc.status_code
        return error_response(error)

    @app.exception_handler(ClientDisconnected)
    async def client_disconnected(request: Request, exc: ClientDisconnected) -> Response:
        return Response(status_code=499)  # nobody is listening; the status shows in logs and metrics
