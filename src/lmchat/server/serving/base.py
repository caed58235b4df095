"""What every serving class shares: the server's state, the model-name check, and a started generation."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from starlette.responses import Response

from lmchat import __version__
from lmchat.chat.prepare import PreparedChat
from lmchat.chat.response import ChatChunk
from lmchat.chat.response import Response as ChatResponse
from lmchat.errors import EngineClosedError, ModelNotFoundError
from lmchat.server.admission import Admission
from lmchat.server.logs import redact_media
from lmchat.server.metrics import ServerMetrics
from lmchat.server.responses import EventStreamResponse, json_response
from lmchat.server.serving.live import LiveGeneration, new_answers
from lmchat.server.settings import ServerSettings

__all__ = ["GenerationEndpoint", "LiveGeneration", "ServerState", "new_answers", "usage_counts"]

if TYPE_CHECKING:
    from lmchat.chat.chat_model import ChatModel
    from lmchat.media import MediaLoader

logger = logging.getLogger("lmchat.server")


@dataclass
class ServerState:
    """Everything a request needs, built once by ``create_app``."""

    chat_model: ChatModel
    settings: ServerSettings
    served_names: tuple[str, ...]
    admission: Admission
    metrics: ServerMetrics
    media_loader: MediaLoader | None = None  # the clients' media: local files only under allowed_local_media_path
    live: set[LiveGeneration] = field(default_factory=set)
    draining: bool = False

    @property
    def model_name(self) -> str:
        return self.served_names[0]

    @property
    def system_fingerprint(self) -> str:
        """OpenAI's ``system_fingerprint``: what produced the answer (lmchat's version and the engine)."""
        return f"lmchat-{__version__}-{self.chat_model.engine.name}"
    def check_ready(self) -> None:
        """Raise a 503 error once the server is shutting down or the engine can serve no more requests."""
        if self.draining:
            raise EngineClosedError("The server is shutting down; send the request to another replica.")
        self.chat_model.check_health()

    def begin_shutdown(self) -> None:
        """New requests get 503; running and queued ones go on (for the grace period)."""
        self.draining = True

    def end_requests(self) -> None:
        """The grace period is over: queued requests fail and running ones stop, each with a 503 error (an error
        event then ``[DONE]`` for a stream)."""
        message = "The server is shutting down; the answer was cut short."
        self.admission.close(EngineClosedError(message))
        for live in list(self.live):
            live.stop(EngineClosedError(message))

    def check_model(self, name: str | None) -> None:
        """A request's ``model``: a served name of the base model, or a loaded adapter's name."""
        if name is None or name in self.served_names or self.adapter_of(name) or self.settings.accept_any_model:
            return
        served = ", ".join([*self.served_names, *self.chat_model.engine.adapters.names()])
        raise ModelNotFoundError(f"The model '{name}' does not exist on this server; it serves: {served}.",
                                 param="model")

    def adapter_of(self, name: str | None) -> str | None:
        """The named LoRA adapter a request's ``model`` chooses (None: the base model)."""
        if name is None or name in self.served_names or name not in self.chat_model.engine.adapters:
            return None
        return name

    def log_request(self, kind: str, prepared: PreparedChat, stream: bool, user: str | None) -> None:
        params = prepared.params
        logger.info(
            "%s: %d prompt tokens, n=%d, max_new_tokens=%s, stream=%s%s", kind, prepared.prompt_tokens, params.n,
            params.max_new_tokens, stream, f", user={user!r}" if user else "",
        )
        if self.settings.log_prompts:
            logger.info("%s prompt: %s", kind, redact_media(prepared.prompt))


class RunningUsage:
    """vLLM's ``continuous_usage_stats``: the usage so far, on every streamed chunk (tokens counted from the
    chunks' token ids until an answer's last chunk gives its true count)."""

    def __init__(self, prepared: PreparedChat) -> None:
        self.prompt_tokens = prepared.prompt_tokens
        self.completion = [0] * prepared.params.n

    def add(self, chunk: ChatChunk) -> dict[str, int]:
        if chunk.finish_reason is not None:
            self.completion[chunk.index] = chunk.completion_tokens
        else:
            self.completion[chunk.index] += len(chunk.token_ids)
        completion = sum(self.completion)
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion,
                "total_tokens": self.prompt_tokens + completion}


def usage_counts(answers: list[ChatResponse]) -> dict[str, Any]:
    """A request's usage: the prompt counted once (as its first answer ran it, ``cached_tokens`` the prompt tokens
    the engine reused for it), every answer's tokens."""
    prompt = answers[0].prompt_length
    completion = sum(answer.response_length for answer in answers)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": answers[0].cached_tokens}}


class GenerationEndpoint:
    """One generating endpoint (chat or raw completions): check the model, prepare (every 400 before any work),
    log, start the generation, then stream it or collect it. Subclasses set ``kind`` and ``id_prefix`` and give
    ``prepare``, ``_stream`` and ``_response``, and may give ``before_generation`` (work that must succeed before
    any generation starts; what it returns reaches ``_response``)."""

    kind: ClassVar[str] = ""
    id_prefix: ClassVar[str] = ""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def create(self, body: Any) -> Response:
        self.state.check_ready()  # a dead engine fails the request at once, not after a wait
        self.state.check_model(body.model)
        prepared = await self.prepare(body)
        self.state.log_request(self.kind, prepared, bool(body.stream), body.user)
        completion_id = f"{self.id_prefix}-{body.request_id or uuid.uuid4().hex}"  # vLLM's request_id
        extra = await self.before_generation(body, prepared)
        live = await LiveGeneration.start(self.state, prepared, completion_id)
        if body.stream:
            return EventStreamResponse(self._stream(body, prepared, live, completion_id))
        answers = await live.collect()
        return json_response(self._response(body, answers, completion_id, extra))

    async def prepare(self, body: Any) -> PreparedChat:
        raise NotImplementedError

    async def before_generation(self, body: Any, prepared: PreparedChat) -> Any:
        return None

    def _stream(self, body: Any, prepared: PreparedChat, live: LiveGeneration, completion_id: str
                ) -> AsyncIterator[str]:
        raise NotImplementedError

    def _response(self, body: Any, answers: list[ChatResponse], completion_id: str, extra: Any = None) -> Any:
        raise NotImplementedError
