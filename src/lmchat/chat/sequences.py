"""Run a prepared chat on an engine: one event stream per answer, stop strings applied, ``n`` answers merged."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

from lmchat.chat.prepare import PreparedChat
from lmchat.chat.response import ChatChunk, Response
from lmchat.engines.base import BaseEngine, GenerationRequest
from lmchat.engines.events import Finished, TextDelta
from lmchat.generation.stop import StopMatcher

_DONE = object()


def sequence_requests(prepared: PreparedChat, request_id: str | None = None) -> list[GenerationRequest]:
    """One engine request per answer; answer i samples with ``seed + i`` when a seed is given."""
    base = request_id or uuid.uuid4().hex
    params = prepared.params
    return [
        GenerationRequest(
            request_id=f"{base}-{i}",
            prompt=prepared.prompt,
            prompt_token_ids=prepared.prompt_token_ids,
            params=params.model_copy(update={"n": 1, "seed": None if params.seed is None else params.seed + i}),
            images=prepared.images,
            videos=prepared.videos,
            audios=prepared.audios,
        )
        for i in range(params.n)
    ]


async def stream_sequence(engine: BaseEngine, request: GenerationRequest, index: int) -> AsyncIterator[ChatChunk]:
    """Chunks of one answer; a stop string ends it (trimmed) and aborts the engine request."""
    matcher = StopMatcher(request.params.stop) if request.params.stop else None
    prompt_tokens = len(request.prompt_token_ids or ())
    completion_tokens = 0
    events = engine.generate(request)
    try:
        async for event in events:
            if isinstance(event, Finished):
                tail = matcher.flush() if matcher else ""
                yield _chunk(index, tail, event.reason, event.prompt_tokens, event.completion_tokens)
                return
            completion_tokens += event.num_tokens
            text = matcher.feed(event.text) if matcher else event.text
            if matcher is not None and matcher.stopped:
                yield _chunk(index, text, "stop", prompt_tokens, completion_tokens, event.logprobs)
                return
            if text or event.logprobs:
                yield _chunk(index, text, logprobs=event.logprobs)
    finally:
        await events.aclose()


def _chunk(index: int, text: str, finish_reason=None, prompt_tokens: int = 0, completion_tokens: int = 0,
           logprobs=()) -> ChatChunk:
    return ChatChunk(index=index, text=text, content=text, finish_reason=finish_reason, prompt_tokens=prompt_tokens,
                     completion_tokens=completion_tokens, logprobs=tuple(logprobs))


async def stream_answers(engine: BaseEngine, prepared: PreparedChat, request_id: str | None = None):
    """Chunks of all ``n`` answers, interleaved as they are generated."""
    requests = sequence_requests(prepared, request_id)
    if len(requests) == 1:
        async for chunk in stream_sequence(engine, requests[0], 0):
            yield chunk
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(index: int, request: GenerationRequest) -> None:
        try:
            async for chunk in stream_sequence(engine, request, index):
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


def collect_responses(chunks: list[ChatChunk], n: int, prompt_tokens: int) -> list[Response]:
    """Assemble streamed chunks into one Response per answer (so streamed == non-streamed by construction)."""
    texts: list[list[str]] = [[] for _ in range(n)]
    logprobs: list[list] = [[] for _ in range(n)]
    finals: dict[int, ChatChunk] = {}
    for chunk in chunks:
        texts[chunk.index].append(chunk.text)
        logprobs[chunk.index].extend(chunk.logprobs)
        if chunk.finish_reason is not None:
            finals[chunk.index] = chunk
    responses = []
    for i in range(n):
        final = finals[i]
        responses.append(
            Response(
                response_text="".join(texts[i]),
                response_length=final.completion_tokens,
                prompt_length=final.prompt_tokens or prompt_tokens,
                finish_reason=final.finish_reason,
                index=i,
                logprobs=logprobs[i] or None,
            )
        )
    return responses
