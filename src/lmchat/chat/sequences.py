"""Run a prepared chat on an engine: one event stream per answer, stop strings applied, ``n`` answers merged.

Each answer's chunks are made here, once: its text (stop strings trimmed), the parsed content, reasoning and
tool calls, and on the last chunk the finish reason (an answer that stopped after calling tools ends with
``tool_calls``) and token counts. :mod:`lmchat.chat.assemble` folds them into a :class:`Response`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator

from lmchat.chat.prepare import PreparedChat
from lmchat.chat.response import ChatChunk
from lmchat.engines.base import BaseEngine, GenerationRequest
from lmchat.engines.events import Finished, TextDelta
from lmchat.generation.stop import StopMatcher
from lmchat.parsing import OutputDelta, OutputParser

_DONE = object()


class _AnswerState:
    """One answer's stop-string matcher, output parser and token count, turning engine text into chunks."""

    def __init__(self, request: GenerationRequest, index: int, parser: OutputParser | None) -> None:
        self.index = index
        params = request.params
        self.matcher = StopMatcher(params.stop, include_stop=params.include_stop_str_in_output) if params.stop else None
        self.min_tokens = params.min_tokens  # vLLM: no stop string ends the answer before min_tokens tokens
        self.pending_ids: tuple[int, ...] = ()  # token ids of text held back, sent with the next chunk
        self.parser = parser
        self.prompt_tokens = len(request.prompt_token_ids)
        self.completion_tokens = 0
        self.has_tool_calls = False

    def text_chunk(self, event: TextDelta) -> ChatChunk | None:
        self.completion_tokens += event.num_tokens
        self.pending_ids += event.token_ids
        checks_stops = self.matcher is not None and self.completion_tokens >= self.min_tokens
        text = self.matcher.feed(event.text) if checks_stops else event.text
        if self.matcher is not None and self.matcher.stopped:
            return self.final_chunk(text, "stop", self.prompt_tokens, self.completion_tokens, event.logprobs)
        if not text and not event.logprobs:
            return None
        return self._chunk(text, self.parser.feed(text) if self.parser and text else [], logprobs=event.logprobs)

    def final_chunk(self, text: str, reason: str, prompt_tokens: int, completion_tokens: int,
                    logprobs=()) -> ChatChunk:
        if self.matcher is not None and not self.matcher.stopped:
            text += self.matcher.flush()
        deltas = []
        if self.parser is not None:
            deltas = (self.parser.feed(text) if text else []) + self.parser.finish()
        chunk = self._chunk(text, deltas, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                            logprobs=logprobs)
        if reason == "stop" and self.has_tool_calls:
            reason = "tool_calls"
        return dataclasses.replace(chunk, finish_reason=reason, stop_string=self.matcher and self.matcher.matched)

    def _chunk(self, text: str, deltas: list[OutputDelta], **fields) -> ChatChunk:
        fields["logprobs"] = tuple(fields.get("logprobs") or ())
        fields["token_ids"], self.pending_ids = self.pending_ids, ()
        if self.parser is None:
            return ChatChunk(index=self.index, text=text, content=text, **fields)
        calls = tuple(call for delta in deltas for call in delta.tool_calls)
        self.has_tool_calls = self.has_tool_calls or bool(calls)
        return ChatChunk(
            index=self.index, text=text, content="".join(d.content for d in deltas),
            reasoning="".join(d.reasoning for d in deltas), tool_calls=calls, **fields,
        )


async def stream_sequence(engine: BaseEngine, request: GenerationRequest, index: int,
                          parser: OutputParser | None = None) -> AsyncIterator[ChatChunk]:
    """Chunks of one answer; a stop string ends it (trimmed) and aborts the engine request."""
    state = _AnswerState(request, index, parser)
    events = engine.generate(request)
    try:
        async for event in events:
            if isinstance(event, Finished):
                chunk = state.final_chunk("", event.reason, event.prompt_tokens, event.completion_tokens)
                yield dataclasses.replace(chunk, cached_tokens=event.cached_tokens)
                return
            chunk = state.text_chunk(event)
            if chunk is not None:
                yield chunk
                if chunk.finish_reason is not None:
                    return
    finally:
        await events.aclose()


async def stream_answers(engine: BaseEngine, prepared: PreparedChat, request_id: str | None = None):
    """Chunks of all ``n`` answers, interleaved as they are generated; the call's adapter is held meanwhile (an
    unload waits for it)."""
    with engine.adapters.hold(prepared.adapter) if prepared.adapter else contextlib.nullcontext():
        async for chunk in _stream_answers(engine, prepared, request_id):
            yield chunk


async def _stream_answers(engine: BaseEngine, prepared: PreparedChat, request_id: str | None = None):
    requests = prepared.requests(request_id)
    if len(requests) == 1:
        async for chunk in stream_sequence(engine, requests[0], 0, prepared.parsing.new_parser()):
            yield chunk
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(index: int, request: GenerationRequest) -> None:
        try:
            async for chunk in stream_sequence(engine, request, index, prepared.parsing.new_parser()):
                await queue.put(chunk)
        except Exception as exc:  # re-raised by the consumer below
            await queue.put(exc)
        finally:
            await queue.put(_DONE)

    tasks = [asyncio.create_task(pump(i, request)) for i, request in enumerate(requests)]
    try:
        remaining = len(tasks)
        while remaining:
            item = await queue.get()
            if item is _DONE:
                remaining -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
