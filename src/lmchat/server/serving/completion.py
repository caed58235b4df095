"""``POST /v1/completions``: raw prompts, no chat template (the model's end-of-turn tokens still stop them).

``prompt`` is a string, token ids, or a list of either; prompt i's answers are choices ``i * n ... i * n + n - 1``
(OpenAI's and vLLM's order). Every prompt is validated before any generation starts.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence

from starlette.responses import Response

from lmchat.chat.prepare import PreparedChat
from lmchat.chat.response import Response as ChatResponse
from lmchat.engines.events import TokenLogprob
from lmchat.errors import InvalidRequestError, LmchatError
from lmchat.server.protocol import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    PromptLogprobs,
    UsageInfo,
    now,
)
from lmchat.server.serving.logprobs import Scored, prompt_logprobs_entries, score_prompts, token_name, with_top
from lmchat.server.responses import DONE_EVENT, EventStreamResponse, json_response, sse_error, sse_event
from lmchat.server.serving.base import GenerationEndpoint, LiveGeneration, RunningUsage, new_answers


class ServingCompletion(GenerationEndpoint):
    kind, id_prefix = "completion", "cmpl"

    async def create(self, body: CompletionRequest) -> Response:
        self.state.check_ready()  # a dead engine fails the request at once, not after a wait
        self.state.check_model(body.model)
        prompts = body.prompts()  # tokenizing, off the event loop
        batch = await asyncio.to_thread(lambda: [self.prepare(body, prompt) for prompt in prompts])
        for prepared in batch:
            self.state.log_request(self.kind, prepared, bool(body.stream), body.user)
        completion_id = f"{self.id_prefix}-{body.request_id or uuid.uuid4().hex}"
        echoed, scored = await self._prompt_logprobs(body, batch)
        lives: list[LiveGeneration] = []
        try:
            for i, prepared in enumerate(batch):
                lives.append(await LiveGeneration.start(self.state, prepared, f"{completion_id}-{i}"))
        except BaseException:
            for live in lives:
                await live.aclose()
            raise
        if body.stream:
            return EventStreamResponse(self._stream_batch(body, batch, lives, completion_id, echoed))
        answers = await asyncio.gather(*(live.collect() for live in lives))
        prompt_logprobs = [prompt_logprobs_entries(one) for one in scored] if body.prompt_logprobs is not None else None
        return json_response(self._batch_response(body, batch, list(answers), completion_id, echoed, prompt_logprobs))

    async def _prompt_logprobs(self, body: CompletionRequest, batch: list[PreparedChat]
                               ) -> tuple[list[Scored], list[Scored]]:
        """Each prompt's token log-probabilities (the first ``None``) for ``echo`` with ``logprobs`` and for vLLM's
        ``prompt_logprobs``, scored once, before any generation starts (an engine that cannot gives a 400)."""
        echo = body.echo and body.logprobs is not None
        if not echo and body.prompt_logprobs is None:
            return [[] for _ in batch], [[] for _ in batch]
        scored = await score_prompts(self.state, batch, max(body.logprobs or 0, body.prompt_logprobs or 0),
                                     "echo" if echo else "prompt_logprobs")
        echoed = [with_top(one, body.logprobs) for one in scored] if echo else [[] for _ in batch]
        return echoed, [with_top(one, body.prompt_logprobs or 0) for one in scored]

    def prepare(self, body: CompletionRequest, prompt: str | list[int]) -> PreparedChat:
        if body.suffix is not None and body.echo:
            raise InvalidRequestError("echo cannot be combined with suffix (the prompt is written around the "
                                      "suffix in the model's fill-in-the-middle format).", param="suffix")
        try:
            options = {**body.sampling_options(), "adapter": self.state.adapter_of(body.model)}
            return self.state.chat_model.prepare_completion(prompt, suffix=body.suffix, **options)
        except LmchatError as exc:
            exc.param = "prompt" if exc.param == "messages" else body.request_field(exc.param)
            raise

    def _batch_response(self, body: CompletionRequest, batch: list[PreparedChat], answers: list[list[ChatResponse]],
                        completion_id: str, echoed: list[Scored], prompt_logprobs: list[PromptLogprobs] | None
                        ) -> CompletionResponse:
        choices, prompt_tokens, completion_tokens, cached_tokens = [], 0, 0, 0
        for i, (prepared, prompt_answers) in enumerate(zip(batch, answers)):
            prompt_tokens += prepared.prompt_tokens
            cached_tokens += prompt_answers[0].cached_tokens  # the prompt counts once, as its first answer ran it
            for answer in prompt_answers:
                completion_tokens += answer.response_length
                text = (prepared.prompt if body.echo else "") + answer.response_text
                choices.append(CompletionChoice(
                    index=i * prepared.params.n + answer.index, text=text, finish_reason=answer.finish_reason,
                    logprobs=_logprobs([*echoed[i], *(answer.logprobs or ())], 0, self._first_token(prepared),
                                       body.return_tokens_as_token_ids) if body.logprobs is not None else None,
                    prompt_logprobs=prompt_logprobs[i] if prompt_logprobs is not None else None,
                ))
        usage = UsageInfo(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                          total_tokens=prompt_tokens + completion_tokens,
                          prompt_tokens_details={"cached_tokens": cached_tokens})
        return CompletionResponse(id=completion_id, model=self.state.model_name, choices=choices, usage=usage,
                                  system_fingerprint=self.state.system_fingerprint)

    async def _stream_batch(self, body: CompletionRequest, batch: list[PreparedChat], lives: list[LiveGeneration],
                            completion_id: str, echoed: list[list[TokenLogprob | None]]) -> AsyncIterator[str]:
        """The prompts' answers one prompt after the other (each choice carries its index)."""
        created = now()
        totals = [0, 0, 0]  # prompt, completion and cached tokens
        try:
            for i, (prepared, live) in enumerate(zip(batch, lives)):
                async for event in self._stream_one(body, prepared, live, (i, echoed[i]), completion_id, created,
                                                    totals):
                    yield event
            if body.include_usage:
                usage = UsageInfo(prompt_tokens=totals[0], completion_tokens=totals[1],
                                  total_tokens=totals[0] + totals[1], prompt_tokens_details={"cached_tokens": totals[2]})
                yield sse_event(self._chunk(completion_id, created, [], usage))
        except Exception as exc:  # the stream has started: the error becomes an event, then [DONE]
            yield sse_error(exc)
        finally:
            for live in lives:
                await live.aclose()
        yield DONE_EVENT

    async def _stream_one(self, body: CompletionRequest, prepared: PreparedChat, live: LiveGeneration,
                          prompt: tuple[int, list[TokenLogprob | None]], completion_id: str, created: int,
                          totals: list[int]) -> AsyncIterator[str]:
        (i, prompt_logprobs), n = prompt, prepared.params.n
        answers, running = new_answers(prepared), RunningUsage(prepared)
        echoed = [False] * n
        offsets = [0] * n
        async for chunk in live.chunks():
            answers[chunk.index].add(chunk)
            usage = running.add(chunk)
            text, tokens = chunk.text, list(chunk.logprobs)
            if body.echo and not echoed[chunk.index]:
                text, echoed[chunk.index] = prepared.prompt + text, True
                tokens = [*prompt_logprobs, *tokens]
            if not text and chunk.finish_reason is None and not tokens:
                continue
            logprobs = None
            if body.logprobs is not None:
                logprobs = _logprobs(tokens, offsets[chunk.index], self._first_token(prepared),
                                     body.return_tokens_as_token_ids)
            offsets[chunk.index] += len(text)
            choice = CompletionChoice(index=i * n + chunk.index, text=text, logprobs=logprobs,
                                      finish_reason=chunk.finish_reason)
            yield sse_event(self._chunk(completion_id, created, [choice],
                                        UsageInfo(**usage) if body.continuous_usage else None))
        totals[0] += prepared.prompt_tokens
        totals[1] += sum(answer.completion_tokens for answer in answers)
        totals[2] += answers[0].cached_tokens

    def _first_token(self, prepared: PreparedChat) -> tuple[str, int]:
        """The prompt's first token (text and id), which has no log-probability."""
        return self.state.chat_model.engine.detokenize(prepared.prompt_token_ids[:1]), prepared.prompt_token_ids[0]

    def _chunk(self, completion_id: str, created: int, choices: list[CompletionChoice],
               usage: UsageInfo | None) -> CompletionResponse:
        return CompletionResponse(id=completion_id, created=created, model=self.state.model_name, choices=choices,
                                  usage=usage, system_fingerprint=self.state.system_fingerprint)


def _logprobs(tokens: Sequence[TokenLogprob | None], offset: int, first_token: tuple[str, int],
              as_ids: bool = False) -> CompletionLogprobs:
    """The legacy completions shape: parallel lists, top alternatives as ``{token: logprob}``. ``None`` stands for
    the first prompt token (echo), which has no log-probability: OpenAI's ``null``. ``as_ids``: tokens named
    ``token_id:N``."""
    logprobs = CompletionLogprobs()
    for token in tokens:
        text = token.token if token is not None else first_token[0]
        logprobs.tokens.append(token_name(text, token.token_id if token is not None else first_token[1], as_ids))
        logprobs.token_logprobs.append(None if token is None else token.logprob)
        logprobs.top_logprobs.append(None if token is None else {
            token_name(alt, alt_id, as_ids): value for alt, alt_id, value in token.top})
        logprobs.text_offset.append(offset)
        offset += len(text)
    return logprobs
