"""What every serving class shares: the server's state, the model-name check, and a started generation."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import anyio
from starlette.responses import Response

from lmchat.chat.assemble import AnswerAssembler
from lmchat.chat.prepare import PreparedChat
from lmchat.chat.response import ChatChunk
from lmchat.chat.response import Response as ChatResponse
from lmchat.errors import EngineClosedError, EngineError, ModelNotFoundError
from lmchat.server.admission import Admission, Lease
from lmchat.server.logs import redact_media
from lmchat.server.metrics import ServerMetrics
from lmchat.server.responses import EventStreamResponse, json_response
from lmchat.server.settings import ServerSettings

if TYPE_CHECKING:
    from lmchat.chat.chat_model import ChatModel

logger = logging.getLogger("lmchat.server")


@dataclass
class ServerState:
    """Everything a request needs, built once by ``create_app``."""

    chat_model: ChatModel
    settings: ServerSettings
    served_names: tuple[str, ...]
    admission: Admission
    metrics: ServerMetrics

    @property
    def model_name(self) -> str:
        return self.served_names[0]

    def check_model(self, name: str | None) -> None:
        if name is not None and name not in self.served_names and not self.settings.accept_any_model:
            raise ModelNotFoundError(
                f"The model '{name}' does not exist on this server; it serves: {', '.join(self.served_names)}.",
                param="model",
            )

    def log_request(self, kind: str, prepared: PreparedChat, stream: bool, user: str | None) -> None:
        params = prepared.params
        logger.info(
            "%s: %d prompt tokens, n=%d, max_new_tokens=%s, stream=%s%s", kind, prepared.prompt_tokens, params.n,
            params.max_new_tokens, stream, f", user={user!r}" if user else "",
        )
        if self.settings.log_prompts:
            logger.info("%s prompt: %s", kind, redact_media(prepared.prompt))


class LiveGeneration:
    """A generation whose first chunk has arrived, so it is known to run (errors before this are plain HTTP
    errors). Iterate :meth:`chunks`, and always :meth:`aclose` it: that aborts the engine request if unfinished
    and frees the slot."""

    def __init__(self, state: ServerState, stream: AsyncIterator[ChatChunk], first: ChatChunk, lease: Lease,
                 began: float) -> None:
        self._state, self._stream, self._first, self._lease, self._began = state, stream, first, lease, began

    @classmethod
    async def start(cls, state: ServerState, prepared: PreparedChat, request_id: str) -> LiveGeneration:
        began = time.perf_counter()
        lease = await state.admission.acquire()
        stream = state.chat_model.astream_chunks(prepared, request_id)
        try:
            first = await stream.__anext__()
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await stream.aclose()
            lease.release()
            if isinstance(exc, StopAsyncIteration):
                raise EngineError("The engine ended the request without an answer.") from None
            raise
        state.metrics.time_to_first_token.observe(time.perf_counter() - began)
        state.metrics.prompt_tokens.inc(prepared.prompt_tokens)
        return cls(state, stream, first, lease, began)

    async def chunks(self) -> AsyncIterator[ChatChunk]:
        chunk: ChatChunk | None = self._first
        while chunk is not None:
            if chunk.finish_reason == "abort":
                raise EngineClosedError("The server is shutting down; the answer was cut short.")
            if chunk.finish_reason is not None:
                self._state.metrics.generation_tokens.inc(chunk.completion_tokens)
            yield chunk
            chunk = await anext(self._stream, None)

    async def collect(self, prepared: PreparedChat) -> list[ChatResponse]:
        """The whole of a non-streamed request: its ``n`` answers, assembled from every chunk."""
        answers = new_answers(prepared)
        try:
            async for chunk in self.chunks():
                answers[chunk.index].add(chunk)
        finally:
            await self.aclose()
        return [answer.response() for answer in answers]

    async def aclose(self) -> None:
        if self._lease is None:
            return
        self._lease.release()
        self._lease = None
        self._state.metrics.request_latency.observe(time.perf_counter() - self._began)
        with anyio.CancelScope(shield=True):
            await self._stream.aclose()


def new_answers(prepared: PreparedChat) -> list[AnswerAssembler]:
    return [AnswerAssembler(i, prepared.prompt_tokens) for i in range(prepared.params.n)]


def usage_counts(answers: list[ChatResponse]) -> dict[str, Any]:
    prompt = answers[0].prompt_length
    completion = sum(answer.response_length for answer in answers)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class GenerationEndpoint:
    """One generating endpoint (chat or raw completions): check the model, prepare (every 400 before any work),
    log, start the generation, then stream it or collect it. Subclasses set ``kind`` and ``id_prefix`` and give
    ``prepare``, ``_stream`` and ``_response``."""

    kind: ClassVar[str] = ""
    id_prefix: ClassVar[str] = ""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def create(self, body: Any) -> Response:
        self.state.check_model(body.model)
        prepared = self.prepare(body)
        self.state.log_request(self.kind, prepared, bool(body.stream), body.user)
        completion_id = f"{self.id_prefix}-{uuid.uuid4().hex}"
        live = await LiveGeneration.start(self.state, prepared, completion_id)
        if body.stream:
            return EventStreamResponse(self._stream(body, prepared, live, completion_id))
        answers = await live.collect(prepared)
        return json_response(self._response(body, answers, completion_id))

    def prepare(self, body: Any) -> PreparedChat:
        raise NotImplementedError

    def _stream(self, body: Any, prepared: PreparedChat, live: LiveGeneration, completion_id: str
                ) -> AsyncIterator[str]:
        raise NotImplementedError

    def _response(self, body: Any, answers: list[ChatResponse], completion_id: str) -> Any:
        raise NotImplementedError
