"""``POST /v1/chat/completions``: validate and render first, then answer in one piece or as a stream."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from typing import Any


from lmchat.chat.prepare import PreparedChat
from lmchat.chat.response import ChatChunk
from lmchat.engines.events import TokenLogprob
from lmchat.errors import LmchatError, UnsupportedError
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
from lmchat.server.responses import DONE_EVENT, sse_error, sse_event
from lmchat.server.serving.base import Answer, GenerationEndpoint, LiveGeneration, usage_counts

# OpenAI content-part types and the prepare() argument their media goes to
_MEDIA_PARTS = {"image_url": "images", "video_url": "videos", "input_audio": "audios"}


class ServingChat(GenerationEndpoint):
    kind, id_prefix = "chat.completion", "chatcmpl"

    def prepare(self, body: ChatCompletionRequest) -> PreparedChat:
        """Every check and the template rendering; raises (a 400) before any generation starts."""
        try:
            options = body.sampling_options()
            messages, media = split_messages(body.messages)
            return self.state.chat_model.prepare(
                messages, tools=body.tools, chat_template_kwargs=body.chat_template_kwargs, **media,
                **options,
            )
        except LmchatError as exc:
            exc.param = "messages" if exc.param in _MEDIA_PARTS.values() else body.request_field(exc.param)
            raise

    # --- one piece ------------------------------------------------------------------------------------
    def _response(self, body: ChatCompletionRequest, prepared: PreparedChat, answers: list[Answer],
                  completion_id: str) -> ChatCompletionResponse:
        choices = [
            ChatCompletionResponseChoice(
                index=index, message=_message(answer), finish_reason=answer.finish,
                logprobs=_logprobs(answer.logprobs) if body.logprobs else None,
            )
            for index, answer in enumerate(answers)
        ]
        return ChatCompletionResponse(
            id=completion_id, model=self.state.model_name, choices=choices,
            usage=UsageInfo(**usage_counts(prepared, answers)),
        )

    # --- streamed -------------------------------------------------------------------------------------
    async def _stream(self, body: ChatCompletionRequest, prepared: PreparedChat, live: LiveGeneration,
                      completion_id: str) -> AsyncIterator[str]:
        created = now()

        def event(choices: list[ChatCompletionStreamChoice], usage: UsageInfo | None = None) -> str:
            return sse_event(ChatCompletionStreamResponse(
                id=completion_id, created=created, model=self.state.model_name, choices=choices, usage=usage,
            ))

        answers = [Answer() for _ in range(prepared.params.n)]
        try:
            for index in range(len(answers)):
                yield event([ChatCompletionStreamChoice(index=index, delta=DeltaMessage(role="assistant", content=""))])
            async for chunk in live.chunks():
                answer = answers[chunk.index]
                answer.add(chunk)
                choice = _stream_choice(chunk, answer, bool(body.logprobs))
                if choice is not None:
                    yield event([choice])
            if body.include_usage:
                yield event([], UsageInfo(**usage_counts(prepared, answers)))
        except Exception as exc:  # the stream has started: the error becomes an event, then [DONE]
            yield sse_error(exc)
        finally:
            await live.aclose()
        yield DONE_EVENT


def _stream_choice(chunk: ChatChunk, answer: Answer, with_logprobs: bool) -> ChatCompletionStreamChoice | None:
    delta = DeltaMessage(
        content=chunk.content or None,
        reasoning_content=chunk.reasoning or None,
        tool_calls=[_delta_tool_call(call) for call in chunk.tool_calls] or None,
    )
    logprobs = _logprobs(chunk.logprobs) if with_logprobs and chunk.logprobs else None
    finish = answer.finish if chunk.finish_reason is not None else None
    if finish is None and logprobs is None and delta == DeltaMessage():
        return None
    return ChatCompletionStreamChoice(index=chunk.index, delta=delta, logprobs=logprobs, finish_reason=finish)


def _delta_tool_call(call: Any) -> DeltaToolCall:
    if call.id or call.name:
        return DeltaToolCall(
            index=call.index, id=call.id, type="function",
            function=DeltaFunctionCall(name=call.name, arguments=call.arguments or ""),
        )
    return DeltaToolCall(index=call.index, function=DeltaFunctionCall(arguments=call.arguments or ""))


def _message(answer: Answer) -> ChatMessage:
    tool_calls = [
        ToolCall(id=call["id"], function=FunctionCall(name=call["name"], arguments=call["arguments"]))
        for _, call in sorted(answer.tool_calls.items())
    ]
    content = "".join(answer.content)
    reasoning = "".join(answer.reasoning)
    return ChatMessage(
        content=None if tool_calls and not content else content,
        tool_calls=tool_calls or None,
        reasoning_content=reasoning or None,
    )


def _logprobs(tokens: list[TokenLogprob] | tuple[TokenLogprob, ...]) -> ChatCompletionLogprobs:
    return ChatCompletionLogprobs(content=[
        ChatCompletionLogprob(
            token=token.token, logprob=token.logprob, bytes=list(token.token.encode("utf-8")),
            top_logprobs=[TopLogprob(token=text, logprob=logprob, bytes=list(text.encode("utf-8")))
                          for text, _, logprob in token.top],
        )
        for token in tokens
    ])


def split_messages(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, list[Any]]]:
    """The messages ready for the template (tool-call arguments as objects, as templates expect them) and the
    media their content parts carry, by kind (an engine without media support rejects them in prepare)."""
    media: dict[str, list[Any]] = {}
    prepared = []
    for i, message in enumerate(messages):
        message = copy.deepcopy(message)
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind in _MEDIA_PARTS:
                    media.setdefault(_MEDIA_PARTS[kind], []).append(_media_source(part[kind]))
                elif kind not in ("text", None):
                    raise UnsupportedError(f"messages[{i}] has a content part of type '{kind}', which is not "
                                           "supported.", param=f"messages[{i}].content")
        for call in message.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                function["arguments"] = _json_object(function["arguments"])
        prepared.append(message)
    return prepared, media


def _media_source(value: Any) -> Any:
    return value.get("url", value) if isinstance(value, dict) else value


def _json_object(text: str) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    return value if isinstance(value, dict) else text
