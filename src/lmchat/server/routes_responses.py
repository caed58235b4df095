"""``POST /v1/responses`` (OpenAI's Responses API, stateless) and its spelling without ``/v1``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from lmchat.server.disconnect import cancel_on_disconnect
from lmchat.server.openapi import error_responses
from lmchat.server.protocol_responses import ResponseObject, ResponsesRequest

router = APIRouter()
compat_router = APIRouter()

_STREAM = {"text/event-stream": {"schema": {
    "type": "string", "description": "Server-sent events (`event: <type>` and `data: <event JSON>`): "
    "response.created, response.in_progress, response.output_item.added, response.content_part.added, "
    "response.output_text.delta/done, response.reasoning_text.delta/done, response.function_call_arguments."
    "delta/done, response.content_part.done, response.output_item.done, then response.completed (or "
    "response.incomplete); an error after the start is one `error` event."}}}


@router.post("/v1/responses", responses={
    200: {"model": ResponseObject, "content": _STREAM, "description": "The response; with stream: true, events."},
    **error_responses("generation")})
async def create_response(body: ResponsesRequest, request: Request) -> Response:
    """A model response to ``input`` (text or input items), with function calls and reasoning as output items."""
    return await cancel_on_disconnect(request, request.app.state.serving_responses.create(body))


compat_router.add_api_route("/responses", create_response, methods=["POST"], include_in_schema=False)
