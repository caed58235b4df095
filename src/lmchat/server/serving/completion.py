"""``POST /v1/completions``: a raw prompt, no chat template (the model's end-of-turn tokens still stop it)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from lmchat.chat.prepare import PreparedChat
from lmchat.chat.response import Response as ChatResponse
from lmchat.engines.events import TokenLogprob
from lmchat.errors import LmchatError
from lmchat.server.protocol import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    UsageInfo,
    now,
)
from lmchat.server.responses import DONE_EVENT, sse_error, sse_event
from lmchat.server.serving.base import GenerationEndpoint, LiveGeneration, new_answers, usage_counts


class ServingCompletion(GenerationEndpoint):
    kind, id_prefix = "completion", "cmpl"

    def _response(self, body: CompletionRequest, answers: list[ChatResponse], completion_id: str
                  ) -> CompletionResponse:
        choices = [
            CompletionChoice(index=answer.index, text=answer.response_text, finish_reason=answer.finish_reason,
                             logprobs=_logprobs(answer.logprobs or (), 0) if body.logprobs is not None else None)
            for answer in answers
        ]
        return CompletionResponse(
            id=completion_id, model=self.state.model_name, choices=choices, usage=UsageInfo(**usage_counts(answers)),
        )

    def prepare(self, body: CompletionRequest) -> PreparedChat:
        try:
            return self.state.chat_model.prepare_completion(body.prompt_text(), **body.sampling_options())
        except LmchatError as exc:
            exc.param = "prompt" if exc.param == "messages" else body.request_field(exc.param)
            raise

    async def _stream(self, body: CompletionRequest, prepared: PreparedChat, live: LiveGeneration,
                      completion_id: str) -> AsyncIterator[str]:
        created = now()
        answers = new_answers(prepared)
        offsets = [0] * len(answers)
        try:
            async for chunk in live.chunks():
                answers[chunk.index].add(chunk)
                if not chunk.text and chunk.finish_reason is None and not chunk.logprobs:
                    continue
                logprobs = None
                if body.logprobs is not None:
                    logprobs = _logprobs(chunk.logprobs, offsets[chunk.index])
                offsets[chunk.index] += len(chunk.text)
                choice = CompletionChoice(
                    index=chunk.index, text=chunk.text, logprobs=logprobs,
                    finish_reason=chunk.finish_reason,
                )
                yield sse_event(CompletionResponse(
                    id=completion_id, created=created, model=self.state.model_name, choices=[choice]
                ))
            if body.include_usage:
                yield sse_event(CompletionResponse(
                    id=completion_id, created=created, model=self.state.model_name, choices=[],
                    usage=UsageInfo(**usage_counts([answer.response() for answer in answers])),
                ))
        except Exception as exc:  # the stream has started: the error becomes an event, then [DONE]
            yield sse_error(exc)
        finally:
            await live.aclose()
        yield DONE_EVENT


def _logprobs(tokens: list[TokenLogprob] | tuple[TokenLogprob, ...], offset: int) -> CompletionLogprobs:
    """The legacy completions shape: parallel lists, top alternatives as ``{token: logprob}``."""
    logprobs = CompletionLogprobs()
    for token in tokens:
        logprobs.tokens.append(token.token)
        logprobs.token_logprobs.append(token.logprob)
        logprobs.top_logprobs.append({text: value for text, _, value in token.top})
        logprobs.text_offset.append(offset)
        offset += len(token.token)
    return logprobs
