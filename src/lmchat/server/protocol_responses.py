"""OpenAI's Responses API (``POST /v1/responses``), stateless: its request items mapped to the chat messages, tools
and options the chat route gives the facade, and its response objects and stream events.

Nothing is stored: ``store: true``, ``previous_response_id``, ``item_reference`` items and ``background`` are
refused (send the whole conversation as ``input`` items, as with ``store: false``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag

from lmchat.errors import UnsupportedError
from lmchat.server.protocol import OpenAIRequest, OpenAIResponse
from lmchat.server.protocol_messages import StrictModel

ItemStatus = Literal["in_progress", "completed", "incomplete"]


# --- input items -----------------------------------------------------------------------------------------
class InputText(StrictModel):
    type: Literal["input_text"]
    text: str


class InputImage(StrictModel):
    type: Literal["input_image"]
    image_url: str | None = Field(None, description="An http(s) URL, a data: URL, or a path in "
                                                    "--allowed-local-media-path.")
    file_id: str | None = None
    detail: Literal["low", "high", "auto"] | None = None


class OutputText(StrictModel):
    type: Literal["output_text"]
    text: str
    annotations: list[dict[str, Any]] | None = None
    logprobs: list[dict[str, Any]] | None = None


class Refusal(StrictModel):
    type: Literal["refusal"]
    refusal: str


ContentPart = Annotated[InputText | InputImage | OutputText | Refusal, Field(discriminator="type")]


class MessageItem(StrictModel):
    """A message (OpenAI's EasyInputMessage leaves ``type`` out)."""

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]
    id: str | None = None
    status: ItemStatus | None = None
    phase: None = Field(None, description="Not accepted (lmchat's answers have no phases).")


class FunctionCallItem(StrictModel):
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str
    id: str | None = None
    status: ItemStatus | None = None
    namespace: None = Field(None, description="Not accepted: lmchat's tools have no namespaces.")
    caller: None = Field(None, description="Not accepted: calls come from the model.")


class FunctionCallOutputItem(StrictModel):
    type: Literal["function_call_output"]
    call_id: str
    output: str | list[ContentPart]
    id: str | None = None
    status: ItemStatus | None = None
    name: str | None = Field(None, description="The tool's name (the call_id already says which call it answers).")
    namespace: None = None
    caller: None = None


class SummaryText(StrictModel):
    type: Literal["summary_text"]
    text: str


class ReasoningText(StrictModel):
    type: Literal["reasoning_text"]
    text: str


class ReasoningItem(StrictModel):
    type: Literal["reasoning"]
    id: str | None = None
    summary: list[SummaryText] = Field(default_factory=list)
    content: list[ReasoningText] | None = None
    encrypted_content: None = Field(None, description="Not accepted: lmchat returns reasoning as plain text.")
    status: ItemStatus | None = None


class ItemReference(StrictModel):
    type: Literal["item_reference"]
    id: str


def _item_type(value: Any) -> str:
    kind = value.get("type", "message") if isinstance(value, dict) else getattr(value, "type", "message")
    return kind if isinstance(kind, str) else "message"


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")] | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")] | Annotated[ReasoningItem, Tag("reasoning")]
    | Annotated[ItemReference, Tag("item_reference")],
    Discriminator(_item_type),
]


# --- tools, formats, options -----------------------------------------------------------------------------
class FunctionTool(StrictModel):
    """A function tool in the Responses API's flat shape."""

    type: Literal["function"]
    name: str = Field(min_length=1)
    parameters: dict[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None


class ToolChoiceFunction(StrictModel):
    type: Literal["function"]
    name: str


class FormatText(StrictModel):
    type: Literal["text"]


class FormatJsonObject(StrictModel):
    type: Literal["json_object"]


class FormatJsonSchema(StrictModel):
    type: Literal["json_schema"]
    name: str
    json_schema: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None


class TextConfig(StrictModel):
    format: Annotated[FormatText | FormatJsonObject | FormatJsonSchema, Field(discriminator="type")] | None = None
    verbosity: Literal["medium"] | None = Field(None, description="Only medium (the model's own length).")


class ReasoningConfig(StrictModel):
    effort: Literal["none", "minimal", "low", "medium", "high"] | None = Field(
        None, description="Passed to the chat template as reasoning_effort.")
    summary: Literal["auto"] | None = Field(None, description="Reasoning comes as reasoning_text content, not "
                                                              "summarised.")


class ResponsesRequest(OpenAIRequest):
    model: str | None = None
    input: str | Annotated[list[InputItem], Field(min_length=1)]
    instructions: str | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | ToolChoiceFunction | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    stream: bool | None = False
    store: bool | None = Field(None, description="Only false: lmchat stores no responses.")
    background: bool | None = Field(None, description="Only false.")
    previous_response_id: None = Field(None, description="Not accepted: send the conversation as input items.")
    include: list[str] | None = Field(None, description="Only empty.")
    truncation: Literal["disabled"] | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    request_id: str | None = None

    def check_stateless(self) -> None:
        if self.store:
            raise UnsupportedError("lmchat's Responses API is stateless: nothing is stored, so store must be false "
                                   "(send the whole conversation as input items).", param="store")
        if self.background:
            raise UnsupportedError("background responses need storage; lmchat's Responses API is stateless.",
                                   param="background")
        if self.include:
            raise UnsupportedError(f"include is not supported ({', '.join(self.include)}); leave it out.",
                                   param="include")

    def chat_messages(self) -> list[dict[str, Any]]:
        """The conversation as chat messages: instructions as the system turn, then each input item."""
        messages: list[dict[str, Any]] = []
        if self.instructions is not None:
            messages.append({"role": "system", "content": self.instructions})
        if isinstance(self.input, str):
            return [*messages, {"role": "user", "content": self.input}]
        for i, item in enumerate(self.input):
            _add_item(messages, item, f"input[{i}]")
        return messages

    def chat_tools(self) -> list[dict[str, Any]] | None:
        if self.tools is None:
            return None
        return [{"type": "function", "function": tool.model_dump(exclude={"type"}, exclude_none=True)}
                for tool in self.tools]

    def chat_tool_choice(self) -> str | dict[str, Any] | None:
        if isinstance(self.tool_choice, ToolChoiceFunction):
            return {"type": "function", "function": {"name": self.tool_choice.name}}
        return self.tool_choice

    def sampling_options(self) -> dict[str, Any]:
        """The chat route's options for ``ChatModel.aprepare`` (lmchat's names)."""
        options: dict[str, Any] = {"max_new_tokens": self.max_output_tokens, "temperature": self.temperature,
                                   "top_p": self.top_p, "parallel_tool_calls": self.parallel_tool_calls,
                                   "response_format": self._response_format()}
        if self.reasoning is not None and self.reasoning.effort is not None:
            options["reasoning_effort"] = self.reasoning.effort
        return {name: value for name, value in options.items() if value is not None}

    def _response_format(self) -> dict[str, Any] | None:
        form = self.text.format if self.text is not None else None
        if isinstance(form, FormatJsonSchema):
            schema = {"name": form.name, "schema": form.json_schema, "strict": form.strict,
                      "description": form.description}
            return {"type": "json_schema", "json_schema": {k: v for k, v in schema.items() if v is not None}}
        if isinstance(form, FormatJsonObject):
            return {"type": "json_object"}
        return None

    def request_field(self, option: str | None) -> str | None:
        """The request's name for an lmchat option named in an error."""
        names = {"max_new_tokens": "max_output_tokens", "response_format": "text.format",
                 "reasoning_effort": "reasoning.effort", "messages": "input"}
        return names.get(option or "", option)


def _add_item(messages: list[dict[str, Any]], item: Any, where: str) -> None:
    """One input item into the chat conversation: an answer's reasoning, message and function calls (consecutive
    items) become one assistant turn."""
    last = messages[-1] if messages and messages[-1]["role"] == "assistant" else None
    if isinstance(item, MessageItem):
        content = _content(item.content, item.role, where)
        if item.role == "assistant" and last is not None and last.get("content") is None \
                and not last.get("tool_calls"):
            last["content"] = content  # the answer whose reasoning came just before
        else:
            messages.append({"role": item.role, "content": content})
    elif isinstance(item, FunctionCallItem):
        call = {"id": item.call_id, "type": "function", "function": {"name": item.name, "arguments": item.arguments}}
        if last is not None:
            last.setdefault("tool_calls", []).append(call)
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif isinstance(item, FunctionCallOutputItem):
        messages.append({"role": "tool", "tool_call_id": item.call_id,
                         "content": _content(item.output, "tool", f"{where}.output")})
    elif isinstance(item, ReasoningItem):
        text = "".join(part.text for part in item.content or ()) or "".join(part.text for part in item.summary)
        messages.append({"role": "assistant", "content": None, "reasoning_content": text})
    else:
        raise UnsupportedError(f"{where}: item_reference needs stored responses; lmchat's Responses API is stateless "
                               "(send the referenced item itself).", param=f"{where}.type")


def _content(content: str | list[Any], role: str, where: str) -> str | list[dict[str, Any]]:
    """A chat message's content: text parts as text, images as ``image_url`` parts (user turns only)."""
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        if isinstance(part, InputImage):
            if role != "user" or part.image_url is None:
                why = "file_id images need the Files API" if part.image_url is None else "only user turns hold images"
                raise UnsupportedError(f"{where}.content[{j}]: {why}.", param=f"{where}.content[{j}]")
            parts.append({"type": "image_url", "image_url": {"url": part.image_url}})
        else:
            parts.append({"type": "text", "text": part.refusal if isinstance(part, Refusal) else part.text})
    if role != "user" or all(part["type"] == "text" for part in parts):
        return "".join(part["text"] for part in parts)
    return parts


# --- the response ----------------------------------------------------------------------------------------
class ResponseOutputText(OpenAIResponse):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[dict[str, Any]] = Field(default_factory=list)
    logprobs: list[dict[str, Any]] = Field(default_factory=list)


class ResponseOutputMessage(OpenAIResponse):
    type: Literal["message"] = "message"
    id: str
    role: Literal["assistant"] = "assistant"
    status: ItemStatus
    content: list[ResponseOutputText]


class ResponseFunctionCall(OpenAIResponse):
    type: Literal["function_call"] = "function_call"
    id: str
    call_id: str
    name: str
    arguments: str
    status: ItemStatus


class ResponseReasoningText(OpenAIResponse):
    type: Literal["reasoning_text"] = "reasoning_text"
    text: str


class ResponseReasoning(OpenAIResponse):
    type: Literal["reasoning"] = "reasoning"
    id: str
    summary: list[dict[str, Any]] = Field(default_factory=list)
    content: list[ResponseReasoningText]
    status: ItemStatus


OutputItem = Annotated[ResponseOutputMessage | ResponseFunctionCall | ResponseReasoning,
                       Field(discriminator="type")]


class ResponseUsage(OpenAIResponse):
    input_tokens: int
    input_tokens_details: dict[str, int] = Field(default_factory=lambda: {"cached_tokens": 0})
    output_tokens: int
    output_tokens_details: dict[str, int] = Field(default_factory=lambda: {"reasoning_tokens": 0})
    total_tokens: int


class IncompleteDetails(OpenAIResponse):
    reason: Literal["max_output_tokens"]


class ResponseObject(OpenAIResponse):
    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: Literal["in_progress", "completed", "incomplete", "failed"]
    model: str
    output: list[OutputItem]
    usage: ResponseUsage | None = None
    incomplete_details: IncompleteDetails | None = None
    error: dict[str, Any] | None = None
    instructions: str | None = None
    tools: list[dict[str, Any]] = Field(default_factory=list)
    tool_choice: str | dict[str, Any] = "auto"
    parallel_tool_calls: bool = True
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    text: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    store: bool = False
    previous_response_id: None = None
    truncation: Literal["disabled"] = "disabled"
    user: str | None = None
