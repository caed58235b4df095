"""A generation the server runs: admitted by capacity, bounded by its deadline, stoppable at shutdown."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import anyio

from lmchat.chat.assemble import AnswerAssembler
from lmchat.chat.prepare import PreparedChat
from lmchat.chat.response import ChatChunk
from lmchat.chat.response import Response as ChatResponse
from lmchat.errors import EngineClosedError, EngineError, LmchatError, RequestTimeoutError
from lmchat.server.admission import Lease

if TYPE_CHECKING:
    from lmchat.server.serving.base import ServerState


class LiveGeneration:
    """One request's generation. :meth:`start` waits for admission and the first chunk (errors until then are plain
    HTTP errors); iterate :meth:`chunks`, and always :meth:`aclose` it: that aborts the engine request if unfinished
    and frees its admission. :meth:`stop` ends it early with an error (its deadline passed, the server is shutting
    down): the engine aborts it at its next step and :meth:`chunks` raises that error."""

    def __init__(self, state: ServerState, prepared: PreparedChat, request_id: str) -> None:
        self._state, self._prepared, self._request_id = state, prepared, request_id
        self._began = time.perf_counter()
        self._stream: AsyncIterator[ChatChunk] | None = None
        self._first: ChatChunk | None = None
        self._lease: Lease | None = None
        self._stop_error: LmchatError | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    @classmethod
    async def start(cls, state: ServerState, prepared: PreparedChat, request_id: str) -> LiveGeneration:
        live = cls(state, prepared, request_id)
        try:
            await live._begin()
        except BaseException:
            await live.aclose()
            raise
        state.metrics.time_to_first_token.observe(time.perf_counter() - live._began)
        state.metrics.prompt_tokens.inc(prepared.prompt_tokens)
        return live

    async def _begin(self) -> None:
        state, prepared = self._state, self._prepared
        timeout = state.settings.request_timeout
        n = prepared.params.n
        reservation = n * (prepared.prompt_tokens + prepared.max_tokens)
        try:
            self._lease = await asyncio.wait_for(state.admission.acquire(n, reservation), timeout)
        except asyncio.TimeoutError:
            raise self._timeout_error() from None
        state.live.add(self)
        if timeout is not None:
            remaining = timeout - (time.perf_counter() - self._began)
            self._timer = asyncio.get_running_loop().call_later(max(0.0, remaining), self.stop, self._timeout_error())
        self._stream = state.chat_model.astream_chunks(prepared, self._request_id)
        try:
            self._first = await self._stream.__anext__()
        except StopAsyncIteration:
            raise EngineError("The engine ended the request without an answer.") from None
        self._raise_if_stopped(self._first)

    def _timeout_error(self) -> RequestTimeoutError:
        timeout = self._state.settings.request_timeout
        return RequestTimeoutError(
            f"The request ran past the server's deadline of {timeout:g} s (--request-timeout) and was stopped; ask "
            "for fewer tokens (max_tokens) or retry later.")

    def stop(self, error: LmchatError) -> None:
        """End the generation early with ``error`` (its answers are aborted at the engine's next step)."""
        if self._stop_error is not None or self._closed:
            return
        self._stop_error = error
        asyncio.ensure_future(self._state.chat_model.aabort(self._prepared, self._request_id))

    def _raise_if_stopped(self, chunk: ChatChunk) -> None:
        if chunk.finish_reason == "abort":
            raise self._stop_error or EngineClosedError("The engine stopped the request; the answer was cut short.")

    async def chunks(self) -> AsyncIterator[ChatChunk]:
        chunk: ChatChunk | None = self._first
        while chunk is not None:
            self._raise_if_stopped(chunk)
            if chunk.finish_reason is not None:
                self._state.metrics.generation_tokens.inc(chunk.completion_tokens)
            yield chunk
            chunk = await anext(self._stream, None)

    async def collect(self) -> list[ChatResponse]:
        """The whole of a non-streamed request: its ``n`` answers, assembled from every chunk."""
        answers = new_answers(self._prepared)
        try:
            async for chunk in self.chunks():
                answers[chunk.index].add(chunk)
        finally:
            await self.aclose()
        return [answer.response() for answer in answers]

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        self._state.live.discard(self)
        if self._lease is not None:
            self._lease.release()
            self._state.metrics.request_latency.observe(time.perf_counter() - self._began)
        if self._stream is not None:
            with anyio.CancelScope(shield=True):
                await self._stream.aclose()


def new_answers(prepared: PreparedChat) -> list[AnswerAssembler]:
    return [AnswerAssembler(i, prepared.prompt_tokens) for i in range(prepared.params.n)]
