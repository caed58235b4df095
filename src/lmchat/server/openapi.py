"""The published OpenAPI document says what the server really answers: each route's real status codes with
OpenAI's error body (never FastAPI's 422: validation errors are 400s), and the event stream of streamed
generations (``text/event-stream``, each event a JSON chunk, then ``data: [DONE]``)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from lmchat.server.protocol import ChatCompletionStreamResponse, CompletionResponse

_WHEN = {
    400: "Invalid request: not JSON, a missing, unknown or badly typed field, a value out of range, an option the "
         "engine cannot honour, or a prompt longer than the context (code context_length_exceeded).",
    401: "Missing or wrong API key (code invalid_api_key).",
    404: "Unknown model (code model_not_found).",
    408: "The request ran past --request-timeout and was stopped (code request_timeout).",
    413: "The request body is over --max-body-bytes (code request_too_large).",
    429: "The server is busy; retry after the Retry-After header's seconds (code rate_limit_exceeded).",
    500: "The engine failed before the answer started.",
    503: "The server is shutting down, or its engine died (code service_unavailable).",
}
_GENERATION = (400, 401, 404, 408, 413, 429, 500, 503)
_SCORING = (400, 401, 404, 413, 429, 500, 503)
_TOKENIZING = (400, 401, 404, 413, 503)
_READING = (401,)


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """OpenAI's error body."""

    error: ErrorInfo


def error_responses(kind: str) -> dict[int | str, dict[str, Any]]:
    """The error statuses a kind of route answers (``generation``, ``scoring``, ``tokenizing``, ``reading``,
    ``model``, ``health``), each with OpenAI's error body."""
    codes = {"generation": _GENERATION, "scoring": _SCORING, "tokenizing": _TOKENIZING, "reading": _READING,
             "model": (401, 404), "health": (503,)}[kind]
    responses: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorResponse, "description": _WHEN[code]} for code in codes
    }
    if 429 in codes:
        responses[429]["headers"] = {"Retry-After": {"schema": {"type": "integer"},
                                                     "description": "Seconds to wait, from recent throughput."}}
    return responses


def stream_response(model: type[BaseModel], chunk: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """200: ``model`` as JSON, or with ``stream: true`` an event stream of ``chunk`` objects."""
    return {200: {"model": model, "content": {"text/event-stream": {"schema": {
        "type": "string",
        "description": f"Server-sent events: `data: <{chunk.__name__} JSON>` lines; an error during the stream is "
                       "one `data: {\"error\": {...}}` event (OpenAI's error body); always ended by `data: [DONE]`.",
    }}}, "description": "The answer; with stream: true, server-sent events."}}


def publish_real_responses(app: FastAPI) -> None:
    """Make ``app.openapi()`` leave out FastAPI's 422 responses and list the stream chunk schemas."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        for chunk in (ChatCompletionStreamResponse, CompletionResponse):
            definitions = chunk.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(definitions.pop("$defs", {}))
            schemas.setdefault(chunk.__name__, definitions)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
