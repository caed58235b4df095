"""``POST /v1/responses``: OpenAI's Responses API on the chat route's path (the same facade preparation and
generation), its input items mapped by :mod:`lmchat.server.protocol_responses`; answered as one response object, or
streamed as Responses events (``response.created`` ... ``response.completed``)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from lmchat.chat.prepare import PreparedChat
from lmchat.chat.response import ChatChunk
from lmchat.chat.response import Response as ChatResponse
from lmchat.errors import LmchatError
from lmchat.server.errors import to_openai_error
from lmchat.server.protocol import now
from lmchat.server.protocol_responses import (
    IncompleteDetails,
    ResponseFunctionCall,
    ResponseObject,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseReasoning,
    ResponseReasoningText,
    ResponsesRequest,
    ResponseUsage,
)
from lmchat.server.serving.base import GenerationEndpoint, LiveGeneration, new_answers

_MEDIA_ARGUMENTS = ("images", "videos", "audios", "messages")


def _item_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class ServingResponses(GenerationEndpoint):
    kind, id_prefix = "response", "resp"

    async def prepare(self, body: ResponsesRequest) -> PreparedChat:
        body.check_stateless()
        try:
            return await self.state.chat_model.aprepare(
                body.chat_messages(), tools=body.chat_tools(), tool_choice=body.chat_tool_choice(),
                media_loader=self.state.media_loader, **body.sampling_options())
        except LmchatError as exc:
            exc.param = "input" if exc.param in _MEDIA_ARGUMENTS else body.request_field(exc.param)
            raise

    def _response(self, body: ResponsesRequest, answers: list[ChatResponse], completion_id: str,
                  extra: Any = None) -> ResponseObject:
        [answer] = answers
        output: list[Any] = []
        if answer.reasoning_text:
            output.append(ResponseReasoning(id=_item_id("rs"), status="completed",
                                            content=[ResponseReasoningText(text=answer.reasoning_text)]))
        if answer.content or not answer.tool_calls:
            output.append(ResponseOutputMessage(id=_item_id("msg"), status=_status(answer.finish_reason),
                                                content=[ResponseOutputText(text=answer.content or "")]))
        output += [ResponseFunctionCall(id=_item_id("fc"), call_id=call.id, name=call.name, arguments=call.arguments,
                                        status="completed") for call in answer.tool_calls]
        return response_object(self.state.model_name, body, completion_id, now(), output, answer)

    async def _stream(self, body: ResponsesRequest, prepared: PreparedChat, live: LiveGeneration,
                      completion_id: str) -> AsyncIterator[str]:
        stream = ResponseEvents(self.state.model_name, body, completion_id)
        [answer] = new_answers(prepared)
        yield stream.event("response.created", response=stream.snapshot("in_progress"))
        yield stream.event("response.in_progress", response=stream.snapshot("in_progress"))
        try:
            async for chunk in live.chunks():
                answer.add(chunk)
                for event in stream.add(chunk):
                    yield event
            for event in stream.finish():
                yield event
            done = answer.response()
            final = response_object(self.state.model_name, body, completion_id, stream.created, stream.items, done)
            kind = "response.incomplete" if final.status == "incomplete" else "response.completed"
            yield stream.event(kind, response=final.model_dump(mode="json"))
        except Exception as exc:  # the stream has started: the error becomes an error event
            error = to_openai_error(exc)[1]["error"]
            yield stream.event("error", code=error.get("code") or error.get("type"), message=error["message"],
                               param=error.get("param"))
        finally:
            await live.aclose()


def _status(finish_reason: str | None) -> str:
    return "incomplete" if finish_reason == "length" else "completed"


def response_object(model: str, body: ResponsesRequest, response_id: str, created: int, output: list[Any],
                    answer: ChatResponse | None, status: str | None = None) -> ResponseObject:
    """The response object, echoing the request's settings as OpenAI's does."""
    usage = incomplete = None
    if answer is not None:
        usage = ResponseUsage(input_tokens=answer.prompt_length, output_tokens=answer.response_length,
                              total_tokens=answer.prompt_length + answer.response_length,
                              input_tokens_details={"cached_tokens": answer.cached_tokens})
        status = _status(answer.finish_reason)
        incomplete = IncompleteDetails(reason="max_output_tokens") if status == "incomplete" else None
    tool_choice = body.tool_choice.model_dump() if hasattr(body.tool_choice, "model_dump") else body.tool_choice
    return ResponseObject(
        id=response_id, created_at=created, status=status or "in_progress", model=model, output=output, usage=usage,
        incomplete_details=incomplete, instructions=body.instructions,
        tools=[tool.model_dump(exclude_none=True) for tool in body.tools or ()], tool_choice=tool_choice or "auto",
        parallel_tool_calls=body.parallel_tool_calls is not False, temperature=body.temperature, top_p=body.top_p,
        max_output_tokens=body.max_output_tokens,
        text=body.text.model_dump(by_alias=True, exclude_none=True) if body.text else {"format": {"type": "text"}},
        reasoning=body.reasoning.model_dump() if body.reasoning else None, metadata=body.metadata or {},
        user=body.user,
    )


class ResponseEvents:
    """One streamed response's events: each output item (reasoning, message, function call) opened at its first
    delta and closed when another kind starts or the answer ends, every event numbered."""

    def __init__(self, model: str, body: ResponsesRequest, response_id: str) -> None:
        self.model, self.body, self.response_id = model, body, response_id
        self.created = now()
        self.sequence = 0
        self.items: list[Any] = []  # closed items, in output order
        self.finish_reason: str | None = None
        self._open: dict[str, Any] | None = None  # the item being streamed: kind, id, text, call index ...

    def event(self, kind: str, **fields: Any) -> str:
        payload = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return f"event: {kind}\ndata: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"

    def snapshot(self, status: str) -> dict[str, Any]:
        return response_object(self.model, self.body, self.response_id, self.created, [], None, status).model_dump(
            mode="json")

    def add(self, chunk: ChatChunk) -> list[str]:
        events: list[str] = []
        if chunk.reasoning:
            events += self._text("reasoning", chunk.reasoning)
        if chunk.content:
            events += self._text("message", chunk.content)
        for call in chunk.tool_calls:
            if call.id or call.name:
                events += self.close_item()
                events += self._open_call(call)
            if call.arguments and self._open is not None and self._open["kind"] == "function_call":
                self._open["text"] += call.arguments
                events.append(self.event("response.function_call_arguments.delta", item_id=self._open["id"],
                                         output_index=self._index, delta=call.arguments))
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
        return events

    @property
    def _index(self) -> int:
        return len(self.items)

    def _text(self, kind: str, delta: str) -> list[str]:
        events: list[str] = []
        if self._open is None or self._open["kind"] != kind:
            events += self.close_item()
            events += self._open_text(kind)
        self._open["text"] += delta
        name = "response.output_text.delta" if kind == "message" else "response.reasoning_text.delta"
        extra = {"logprobs": []} if kind == "message" else {}
        events.append(self.event(name, item_id=self._open["id"], output_index=self._index, content_index=0,
                                 delta=delta, **extra))
        return events

    def _open_text(self, kind: str) -> list[str]:
        self._open = {"kind": kind, "id": _item_id("msg" if kind == "message" else "rs"), "text": ""}
        if kind == "reasoning":
            item = {"type": "reasoning", "id": self._open["id"], "summary": [], "content": [], "status": "in_progress"}
            return [self.event("response.output_item.added", output_index=self._index, item=item)]
        item = {"type": "message", "id": self._open["id"], "role": "assistant", "status": "in_progress",
                "content": []}
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        return [self.event("response.output_item.added", output_index=self._index, item=item),
                self.event("response.content_part.added", item_id=self._open["id"], output_index=self._index,
                           content_index=0, part=part)]

    def _open_call(self, call: Any) -> list[str]:
        self._open = {"kind": "function_call", "id": _item_id("fc"), "text": "", "call_id": call.id or _item_id("call"),
                      "name": call.name or ""}
        item = {"type": "function_call", "id": self._open["id"], "call_id": self._open["call_id"],
                "name": self._open["name"], "arguments": "", "status": "in_progress"}
        return [self.event("response.output_item.added", output_index=self._index, item=item)]

    def finish(self) -> list[str]:
        """Close the open item; an answer with no output at all still gets its (empty) message, as unstreamed."""
        events = self.close_item()
        if not self.items:
            events += self._open_text("message") + self.close_item()
        return events

    def close_item(self) -> list[str]:
        """The done events of the open item, which joins ``items``."""
        item, self._open = self._open, None
        if item is None:
            return []
        index, item_id, text = self._index, item["id"], item["text"]
        if item["kind"] == "function_call":
            done = ResponseFunctionCall(id=item_id, call_id=item["call_id"], name=item["name"], arguments=text,
                                        status="completed")
            events = [self.event("response.function_call_arguments.done", item_id=item_id, output_index=index,
                                 name=item["name"], arguments=text)]
        elif item["kind"] == "reasoning":
            done = ResponseReasoning(id=item_id, status="completed", content=[ResponseReasoningText(text=text)])
            events = [self.event("response.reasoning_text.done", item_id=item_id, output_index=index,
                                 content_index=0, text=text)]
        else:
            part = ResponseOutputText(text=text)
            done = ResponseOutputMessage(id=item_id, status=_status(self.finish_reason),
                                         content=[part])
            part_json = part.model_dump(mode="json")
            events = [self.event("response.output_text.done", item_id=item_id, output_index=index, content_index=0,
                                 text=text, logprobs=[]),
                      self.event("response.content_part.done", item_id=item_id, output_index=index, content_index=0,
                                 part=part_json)]
        events.append(self.event("response.output_item.done", output_index=index, item=done.model_dump(mode="json")))
        self.items.append(done)
        return events
