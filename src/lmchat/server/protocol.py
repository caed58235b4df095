"""Request and response models, under OpenAI's own names (and vLLM's for tokenize, LLaMA-Factory's for scoring).

Requests reject unknown fields and are typed strictly, as OpenAI's are: messages, content parts and tools are the
typed models of :mod:`lmchat.server.protocol_messages`, numbers carry OpenAI's ranges, and no value is coerced.
A field OpenAI defines but lmchat cannot honour yet is accepted only with its neutral value; anything else is a
400 naming it, never silently ignored.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, Field, model_serializer

from lmchat.errors import InvalidRequestError, UnsupportedError
from lmchat.server.protocol_messages import (
    ChatCompletionTool,
    ChatMessageParam,
    CheckedRequest,
    StrictModel,
    as_dicts,
)
from lmchat.server.protocol_vllm import PromptLogprobs, VllmChatFields, VllmSamplingFields

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
LogitBias = dict[str, Annotated[float, Field(ge=-100, le=100)]]


STRUCTURED_FIELDS = ("response_format", "structured_outputs", "guided_json", "guided_regex", "guided_choice",
                     "guided_grammar", "guided_decoding_backend", "guided_whitespace_pattern", "grammar", "json_schema")


# --- requests ------------------------------------------------------------------------------------------
class OpenAIRequest(CheckedRequest):
    """A request body: strict types, no unknown fields, nesting and text checked first."""


class StreamOptions(StrictModel):
    include_usage: bool | None = None
    continuous_usage_stats: bool | None = None  # vLLM: usage on every chunk


class SamplingRequest(OpenAIRequest, VllmSamplingFields):
    """The generation fields chat and completion requests share, plus lmchat's extras (top_k, min_p, ...)."""

    model: str | None = None
    n: int | None = Field(None, ge=1, le=128)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=INT64_MIN, le=INT64_MAX)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: LogitBias | None = Field(None, description="Token id (as a string) -> bias from -100 to 100.")
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # extras beyond OpenAI (vLLM's names)
    top_k: int | None = Field(None, ge=-1, description="-1 or 0 keeps all tokens.")
    min_p: float | None = Field(None, ge=0, le=1)
    repetition_penalty: float | None = Field(None, ge=0.01, le=100, description="1.0 is off.")
    do_sample: bool | None = None  # LLaMA-Factory's API: false decodes greedily
    # structured output (read by lmchat.structured.requests): OpenAI's, vLLM's (new and older) and llama.cpp's fields
    response_format: dict[str, Any] | None = None
    structured_outputs: dict[str, Any] | None = None
    guided_json: dict[str, Any] | str | None = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_grammar: str | None = None
    guided_decoding_backend: str | None = None
    guided_whitespace_pattern: str | None = None
    grammar: str | None = None
    json_schema: dict[str, Any] | None = None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

    @property
    def continuous_usage(self) -> bool:
        return bool(self.include_usage and self.stream_options and self.stream_options.continuous_usage_stats)

    def max_new_tokens(self) -> tuple[int | None, str]:
        """The answer's token limit and the request field it came from."""
        return self.max_tokens, "max_tokens"

    def sampling_options(self) -> dict[str, Any]:
        """The options for ``ChatModel.prepare`` (lmchat's names); fields left out keep the config's defaults."""
        if self.stream_options is not None and not self.stream:
            raise InvalidRequestError("stream_options is only allowed when stream is true.", param="stream_options")
        max_new_tokens, _ = self.max_new_tokens()
        options = {
            "n": self.n, "max_new_tokens": max_new_tokens, "temperature": self.temperature, "top_p": self.top_p,
            "stop": self.stop, "seed": self.seed, "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty, "logit_bias": self._logit_bias(),
            "top_k": 0 if self.top_k == -1 else self.top_k, "min_p": self.min_p,
            "repetition_penalty": self.repetition_penalty, "do_sample": self.do_sample,
            **{name: getattr(self, name) for name in STRUCTURED_FIELDS},
            **self.vllm_sampling_options(),
        }
        return {name: value for name, value in options.items() if value is not None}

    def request_field(self, option: str | None) -> str | None:
        """The request's name for an lmchat option named in an error (``max_new_tokens`` -> ``max_tokens``)."""
        if option == "adapter":  # the server's adapter is the request's model
            return "model"
        return self.max_new_tokens()[1] if option == "max_new_tokens" else option

    def _logit_bias(self) -> dict[int, float] | None:
        if not self.logit_bias:
            return None
        try:
            return {int(token): bias for token, bias in self.logit_bias.items()}
        except ValueError:
            raise InvalidRequestError("logit_bias keys must be token ids (integers).", param="logit_bias") from None


class ChatCompletionRequest(SamplingRequest, VllmChatFields):
    messages: list[ChatMessageParam] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=-1, le=20, description="-1: the whole vocabulary (vLLM's).")
    tools: list[ChatCompletionTool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    reasoning_effort: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None

    def message_dicts(self) -> list[dict[str, Any]]:
        return as_dicts(self.messages) or []

    def tool_dicts(self) -> list[dict[str, Any]] | None:
        return as_dicts(self.tools)

    def max_new_tokens(self) -> tuple[int | None, str]:
        if self.max_completion_tokens is not None and self.max_tokens not in (None, self.max_completion_tokens):
            raise InvalidRequestError(
                "max_tokens and max_completion_tokens disagree; send one of them.", param="max_completion_tokens"
            )
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens, "max_completion_tokens"
        return self.max_tokens, "max_tokens"

    def sampling_options(self) -> dict[str, Any]:
        options = super().sampling_options()
        if self.top_logprobs and not self.logprobs:
            raise InvalidRequestError("top_logprobs needs logprobs: true.", param="top_logprobs")
        if self.logprobs:
            options.update(logprobs=True, top_logprobs=self.top_logprobs or 0)
        if self.reasoning_effort is not None:  # to the chat template, like enable_thinking
            options["reasoning_effort"] = self.reasoning_effort
        if self.parallel_tool_calls is not None:  # read with tool_choice by the facade (lmchat.structured)
            options["parallel_tool_calls"] = self.parallel_tool_calls
        options.update(self.vllm_chat_options())
        return options


class CompletionRequest(SamplingRequest):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool | None = False
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1)

    def prompts(self) -> list[str | list[int]]:
        """The request's prompts: a string, a list of token ids, or a list of either (a batch)."""
        prompt = self.prompt
        if isinstance(prompt, str) or (prompt and all(isinstance(token, int) for token in prompt)):
            return [prompt]  # type: ignore[list-item]
        if not prompt:
            raise InvalidRequestError("prompt must not be empty.", param="prompt")
        return list(prompt)  # type: ignore[arg-type]

    def sampling_options(self) -> dict[str, Any]:
        if self.best_of is not None and self.best_of != (self.n or 1):
            raise UnsupportedError("best_of is not supported yet (only best_of == n).", param="best_of")
        options = super().sampling_options()
        if self.logprobs is not None:
            options.update(logprobs=True, top_logprobs=self.logprobs)
        return options


class ScoreEvaluationRequest(OpenAIRequest):
    """LLaMA-Factory's ``/v1/score/evaluation``: texts already templated by the client."""

    model: str | None = None
    messages: list[str] = Field(min_length=1)
    max_length: int | None = Field(None, ge=1)


class ScoreConversationsRequest(OpenAIRequest):
    """Conversations the server renders with the model's chat template, then scores."""

    model: str | None = None
    conversations: list[list[ChatMessageParam]] = Field(min_length=1)
    tools: list[ChatCompletionTool] | None = None
    max_length: int | None = Field(None, ge=1)
    chat_template_kwargs: dict[str, Any] | None = None

    def conversation_dicts(self) -> list[list[dict[str, Any]]]:
        return [as_dicts(conversation) or [] for conversation in self.conversations]


class TokenizeRequest(OpenAIRequest):
    """vLLM's ``/tokenize``: a ``prompt``, or chat ``messages`` rendered with the template."""

    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessageParam] | None = None
    add_generation_prompt: bool | None = None  # default true, false with continue_final_message
    continue_final_message: bool = False
    add_special_tokens: bool | None = None  # vLLM's defaults: true for a prompt, false for messages
    return_token_strs: bool = False
    tools: list[ChatCompletionTool] | None = None
    chat_template_kwargs: dict[str, Any] | None = None


class DetokenizeRequest(OpenAIRequest):
    model: str | None = None
    tokens: list[int]


# --- responses -----------------------------------------------------------------------------------------
class OpenAIResponse(BaseModel):
    """Serialises every field, except those in ``omit_if_none`` while they are None."""

    omit_if_none: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _drop_absent(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        return {key: value for key, value in data.items() if value is not None or key not in self.omit_if_none}


def now() -> int:
    return int(time.time())


class ModelCard(OpenAIResponse):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=now)
    owned_by: str = "lmchat"
    max_model_len: int | None = None
    root: str | None = None  # vLLM's: an adapter's folder
    parent: str | None = None  # vLLM's: the model an adapter runs on
    omit_if_none = frozenset({"max_model_len", "root", "parent"})


class ModelList(OpenAIResponse):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class PromptTokensDetails(OpenAIResponse):
    cached_tokens: int = 0


class UsageInfo(OpenAIResponse):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails | None = None  # cached_tokens: prompt tokens the engine reused
    omit_if_none = frozenset({"prompt_tokens_details"})



class FunctionCall(OpenAIResponse):
    name: str
    arguments: str


class ToolCall(OpenAIResponse):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class DeltaFunctionCall(OpenAIResponse):
    name: str | None = None
    arguments: str | None = None
    omit_if_none = frozenset({"name", "arguments"})


class DeltaToolCall(OpenAIResponse):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: DeltaFunctionCall | None = None
    omit_if_none = frozenset({"id", "type", "function"})


class TopLogprob(OpenAIResponse):
    token: str
    logprob: float
    bytes: list[int] | None


class ChatCompletionLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChatCompletionLogprobs(OpenAIResponse):
    content: list[ChatCompletionLogprob] | None = None
    refusal: None = None


class ChatMessage(OpenAIResponse):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: None = None
    tool_calls: list[ToolCall] | None = None
    reasoning_content: str | None = None
    omit_if_none = frozenset({"tool_calls", "reasoning_content"})


class ChatCompletionResponseChoice(OpenAIResponse):
    index: int
    message: ChatMessage
    logprobs: ChatCompletionLogprobs | None = None
    finish_reason: Literal["stop", "length", "tool_calls"]


class ChatCompletionResponse(OpenAIResponse):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=now)
    model: str
    choices: list[ChatCompletionResponseChoice]
    usage: UsageInfo
    system_fingerprint: str | None = None
    service_tier: str | None = None
    prompt_logprobs: PromptLogprobs | None = None  # vLLM's
    omit_if_none = frozenset({"service_tier", "prompt_logprobs"})


class DeltaMessage(OpenAIResponse):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[DeltaToolCall] | None = None
    omit_if_none = frozenset({"role", "content", "reasoning_content", "tool_calls"})


class ChatCompletionStreamChoice(OpenAIResponse):
    index: int
    delta: DeltaMessage
    logprobs: ChatCompletionLogprobs | None = None
    finish_reason: Literal["stop", "length", "tool_calls"] | None = None


class ChatCompletionStreamResponse(OpenAIResponse):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatCompletionStreamChoice]
    usage: UsageInfo | None = None
    system_fingerprint: str | None = None
    omit_if_none = frozenset({"usage"})


class CompletionLogprobs(OpenAIResponse):
    text_offset: list[int] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)  # None: the first prompt token (echo)
    tokens: list[str] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)


class CompletionChoice(OpenAIResponse):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None
    prompt_logprobs: PromptLogprobs | None = None  # vLLM's
    omit_if_none = frozenset({"prompt_logprobs"})


class CompletionResponse(OpenAIResponse):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=now)
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo | None = None
    system_fingerprint: str | None = None
    omit_if_none = frozenset({"usage"})


class ScoreResponse(OpenAIResponse):
    id: str
    object: Literal["score.evaluation", "score.conversations"] = "score.evaluation"
    model: str
    scores: list[float]


class TokenizeResponse(OpenAIResponse):
    count: int
    max_model_len: int | None
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeResponse(OpenAIResponse):
    prompt: str  # vLLM's name
    content: str  # llama.cpp's name


class HealthResponse(OpenAIResponse):
    status: Literal["ok"] = "ok"
