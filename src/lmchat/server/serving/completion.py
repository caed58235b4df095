"""``POST /v1/completions``: a raw prompt, no chat template (the model's end-of-turn tokens still stop it)."""

from __future__ import annotations

from collections.abc import AsyncIterator


from lmchat.chat.prepare import PreparedChat
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
from lmchat.server.serving.base import Answer, GenerationEndpoint, LiveGeneration, usage_counts


class ServingCompletion(GenerationEndpoint):
    kind, id_prefix = "completion", "cmpl"

    def _response(self, body: CompletionRequest, prepared: PreparedChat, answers: list[Answer],
                  completion_id: str) -> CompletionResponse:
        choices = [
            CompletionChoice(index=i, text="".join(answer.text), finish_reason=answer.finish,
                             logprobs=_logprobs(answer.logprobs, 0) if body.logprobs is not None else None)
            for i, answer in enumerate(answers)
        ]
        return CompletionResponse(
            id=completion_id, model=self.state.model_name, choices=choices,
            usage=UsageInfo(**usage_counts(prepared, answers)),
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
        answers = [Answer() for _ in range(prepared.params.n)]
        offsets = [0] * len(answers)
        try:
            async for chunk in live.chunks():
                answer = answers[chunk.index]
                answer.add(chunk)
                if not chunk.text and chunk.finish_reason is None and not chunk.logprobs:
                    continue
                logprobs = None
                if body.logprobs is not None:
                    logprobs = _logprobs(chunk.logprobs, offsets[chunk.index])
                offsets[chunk.index] += len(chunk.text)
                choice = CompletionChoice(
                    index=chunk.index, text=chunk.text, logprobs=logprobs,
                    finish_reason=answer.finish if chunk.finish_reason is not None else None,
                )
                yield sse_event(CompletionResponse(
                    id=completion_id, created=created, model=self.state.model_name, choices=[choice]
                ))
            if body.include_usage:
                yield sse_event(CompletionResponse(
                    id=completion_id, created=created, model=self.state.model_name, choices=[],
                    usage=UsageInfo(**usage_counts(prepared, answers)),
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
