"""``POST /v1/chat/completions``: validate and render first, then answer in one piece or as a stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from lmchat.chat.prepare import PreparedChat
from lmchat.chat.response import ChatChunk
from lmchat.chat.response import Response as ChatResponse
from lmchat.engines.events import TokenLogprob
from lmchat.errors import LmchatError
from lmchat.server.protocol import (
    ChatCompletionLogprob,
    ChatCompletionLogprobs,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatCompletionResponseChoice,
    ChatCompletionStreamChoice,
    ChatCompletionStreamResponse,
    ChatMessage,
    DeltaFunctionCall,
    DeltaMessage,
    DeltaToolCall,
    FunctionCall,
    ToolCall,
    TopLogprob,
    UsageInfo,
    now,
)
from lmchat.server.responses import DONE_EVENT, EventTemplate, sse_error, sse_event
from lmchat.server.serving.base import GenerationEndpoint, LiveGeneration, RunningUsage, new_answers, usage_counts
from lmchat.server.serving.logprobs import prompt_logprobs_entries, score_prompts, token_name

_MEDIA_ARGUMENTS = ("images", "videos", "audios")  # errors about media name the request's messages


class ServingChat(GenerationEndpoint):
    kind, id_prefix = "chat.completion", "chatcmpl"

    async def prepare(self, body: ChatCompletionRequest) -> PreparedChat:
        """Every check, the media fetched and decoded (the clients' policy), and the template rendering; raises
        (a 400) before any generation starts."""
        try:
            options = body.sampling_options()
            options["adapter"] = self.state.adapter_of(body.model)
            return await self.state.chat_model.aprepare(
                body.message_dicts(), tools=body.tool_dicts(), tool_choice=body.tool_choice,
                media_loader=self.state.media_loader,
                chat_template_kwargs=body.chat_template_kwargs, **options,
            )
        except LmchatError as exc:
            exc.param = "messages" if exc.param in _MEDIA_ARGUMENTS else body.request_field(exc.param)
            raise

    async def before_generation(self, body: ChatCompletionRequest, prepared: PreparedChat) -> Any:
        """vLLM's ``prompt_logprobs``: the rendered prompt's, scored before the answer (a 400 where the engine
        cannot)."""
        if body.prompt_logprobs is None:
            return None
        [scored] = await score_prompts(self.state, [prepared], body.prompt_logprobs, "prompt_logprobs")
        return prompt_logprobs_entries(scored)

    # --- one piece ------------------------------------------------------------------------------------
    def _response(self, body: ChatCompletionRequest, answers: list[ChatResponse], completion_id: str,
                  extra: Any = None) -> ChatCompletionResponse:
        echo = echo_text(body)
        choices = [
            ChatCompletionResponseChoice(
                index=answer.index, message=_message(answer, echo), finish_reason=answer.finish_reason,
                logprobs=_logprobs(answer.logprobs or (), body.return_tokens_as_token_ids) if body.logprobs else None,
            )
            for answer in answers
        ]
        return ChatCompletionResponse(
            id=completion_id, model=self.state.model_name, choices=choices, usage=UsageInfo(**usage_counts(answers)),
            system_fingerprint=self.state.system_fingerprint, service_tier="default" if body.service_tier else None,
            prompt_logprobs=extra,
        )

    # --- streamed -------------------------------------------------------------------------------------
    async def _stream(self, body: ChatCompletionRequest, prepared: PreparedChat, live: LiveGeneration,
                      completion_id: str) -> AsyncIterator[str]:
        created = now()

        def event(choices: list[ChatCompletionStreamChoice], usage: UsageInfo | None = None) -> str:
            return sse_event(ChatCompletionStreamResponse(
                id=completion_id, created=created, model=self.state.model_name, choices=choices, usage=usage,
                system_fingerprint=self.state.system_fingerprint,
            ))

        def content_event(index: int) -> EventTemplate:  # answer index's plain content deltas
            return EventTemplate(lambda text: event([ChatCompletionStreamChoice(
                index=index, delta=DeltaMessage(content=text))]))

        answers = new_answers(prepared)
        running = RunningUsage(prepared)
        echo = echo_text(body)
        templates: dict[int, EventTemplate] = {}
        with_logprobs, continuous = bool(body.logprobs), body.continuous_usage
        try:
            for index in range(len(answers)):
                yield event([ChatCompletionStreamChoice(index=index, delta=DeltaMessage(role="assistant", content=""))])
            for index in range(len(answers) if echo else 0):  # vLLM's echo: the last message, before the answer
                yield event([ChatCompletionStreamChoice(index=index, delta=DeltaMessage(content=echo))])
            async for chunk in live.chunks():
                answers[chunk.index].add(chunk)
                usage = running.add(chunk)
                if not continuous and is_plain_content(chunk, with_logprobs):
                    template = templates.get(chunk.index) or templates.setdefault(chunk.index,
                                                                                  content_event(chunk.index))
                    yield template(chunk.content)
                    continue
                choice = _stream_choice(chunk, with_logprobs, body.return_tokens_as_token_ids)
                if choice is not None:
                    yield event([choice], UsageInfo(**usage) if body.continuous_usage else None)
            if body.include_usage:
                yield event([], UsageInfo(**usage_counts([answer.response() for answer in answers])))
        except Exception as exc:  # the stream has started: the error becomes an event, then [DONE]
            yield sse_error(exc)
        finally:
            await live.aclose()
        yield DONE_EVENT


def echo_text(body: ChatCompletionRequest) -> str:
    """vLLM's chat ``echo``: the last message's text when it is in the role being generated (the assistant's, or
    the last message's own when the generation prompt is left off), which the answer then starts with."""
    if not body.echo:
        return ""
    last = body.message_dicts()[-1]
    continues = body.add_generation_prompt is False or body.continue_final_message
    if not continues and last["role"] != "assistant":
        return ""
    content = last.get("content") or ""
    if isinstance(content, list):
        content = "\n".join(part.get("text", "") for part in content if part.get("type") == "text")
    return content


def is_plain_content(chunk: ChatChunk, with_logprobs: bool) -> bool:
    """A chunk whose event is its content alone (the common one: EventTemplate writes it)."""
    return bool(chunk.content) and not (chunk.reasoning or chunk.tool_calls or chunk.finish_reason is not None
                                        or (with_logprobs and chunk.logprobs))


def _stream_choice(chunk: ChatChunk, with_logprobs: bool, as_ids: bool = False) -> ChatCompletionStreamChoice | None:
    delta = DeltaMessage(
        content=chunk.content or None,
        reasoning_content=chunk.reasoning or None,
        tool_calls=[_delta_tool_call(call) for call in chunk.tool_calls] or None,
    )
    logprobs = _logprobs(chunk.logprobs, as_ids) if with_logprobs and chunk.logprobs else None
    if chunk.finish_reason is None and logprobs is None and delta == DeltaMessage():
        return None
    return ChatCompletionStreamChoice(index=chunk.index, delta=delta, logprobs=logprobs,
                                      finish_reason=chunk.finish_reason)


def _delta_tool_call(call: Any) -> DeltaToolCall:
    if call.id or call.name:
        return DeltaToolCall(
            index=call.index, id=call.id, type="function",
            function=DeltaFunctionCall(name=call.name, arguments=call.arguments or ""),
        )
    return DeltaToolCall(index=call.index, function=DeltaFunctionCall(arguments=call.arguments or ""))


def _message(answer: ChatResponse, echo: str = "") -> ChatMessage:
    """OpenAI's message: ``content`` is null only when the answer called tools and wrote nothing else; ``echo``
    (vLLM's) comes first."""
    tool_calls = [
        ToolCall(id=call.id, function=FunctionCall(name=call.name, arguments=call.arguments))
        for call in answer.tool_calls
    ]
    content = echo + (answer.content or "")
    return ChatMessage(
        content=None if tool_calls and not content else content,
        tool_calls=tool_calls or None,
        reasoning_content=answer.reasoning_text,
    )


def _logprobs(tokens: list[TokenLogprob] | tuple[TokenLogprob, ...], as_ids: bool = False) -> ChatCompletionLogprobs:
    """OpenAI's chat logprobs; ``as_ids``: tokens named ``token_id:N`` (vLLM's ``return_tokens_as_token_ids``)."""
    def entry(text: str, token_id: int, logprob: float) -> TopLogprob:
        name = token_name(text, token_id, as_ids)
        return TopLogprob(token=name, logprob=logprob, bytes=list(name.encode("utf-8")))

    return ChatCompletionLogprobs(content=[
        ChatCompletionLogprob(**entry(token.token, token.token_id, token.logprob).model_dump(),
                              top_logprobs=[entry(*alternative) for alternative in token.top])
        for token in tokens
    ])
