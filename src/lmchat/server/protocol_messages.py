"""Typed chat messages, content parts and tools, under OpenAI's names (plus the vLLM and LLaMA-Factory
vocabularies lmchat reads), so that every request is checked field by field and the published OpenAPI schema says
exactly what is accepted.

``messages`` is a union of message types told apart by ``role``; ``content`` parts by ``type``. Every model
rejects unknown fields and types strictly (``"8"`` is not an integer, ``true`` not a number, ``Infinity`` no
number at all), as OpenAI does. :func:`as_dicts` turns validated messages back into the plain dicts the facade
takes (``ChatModel.prepare``), leaving out what the client left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from lmchat.chat.inputs import check_input
from lmchat.errors import InvalidRequestError, closest


class StrictModel(BaseModel):
    """Unknown fields are errors; values are not coerced (OpenAI's own strictness)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class CheckedRequest(StrictModel):
    """A request body: before any field is read, its nesting depth and text are checked (:mod:`lmchat.chat.inputs`),
    and an unknown field a typo away from a known one is named with it (lmchat's one typo rule,
    :func:`lmchat.errors.closest`)."""

    @model_validator(mode="before")
    @classmethod
    def _check_body(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                guess = None if key in cls.model_fields else closest(str(key), cls.model_fields)
                if guess is not None:
                    raise PydanticCustomError("lmchat_input", "{message}", {
                        "message": f"Unrecognized request argument supplied: {key} (did you mean '{guess}'?)",
                        "param": str(key)})
            for key, value in data.items():
                try:
                    check_input(value, str(key))
                except InvalidRequestError as exc:
                    raise PydanticCustomError("lmchat_input", "{message}", {"message": exc.message,
                                                                           "param": exc.param}) from None
        return data


# --- content parts -------------------------------------------------------------------------------------
class ImageURL(StrictModel):
    url: str = Field(description="An http(s) URL, a data: URL, or a path in --allowed-local-media-path.")
    detail: Literal["auto", "low", "high"] | None = Field(None, description="Accepted; the model sees the image "
                                                                             "as its processor prepares it.")


class MediaURL(StrictModel):
    url: str


class InputAudio(StrictModel):
    data: str = Field(description="Base64-encoded audio.")
    format: str = Field(description="wav, mp3, flac, ...")


class TextPart(StrictModel):
    type: Literal["text"]
    text: str


class InputTextPart(StrictModel):
    type: Literal["input_text", "output_text"]
    text: str


class RefusalPart(StrictModel):
    type: Literal["refusal"]
    refusal: str


class ImageURLPart(StrictModel):
    type: Literal["image_url"]
    image_url: ImageURL | str


class InputImagePart(StrictModel):
    """OpenAI's Responses API form."""

    type: Literal["input_image"]
    image_url: str
    detail: Literal["auto", "low", "high"] | None = None


class VideoURLPart(StrictModel):
    type: Literal["video_url"]
    video_url: MediaURL | str


class AudioURLPart(StrictModel):
    type: Literal["audio_url"]
    audio_url: MediaURL | str


class InputAudioPart(StrictModel):
    type: Literal["input_audio"]
    input_audio: InputAudio


class InlineMediaPart(StrictModel):
    """transformers' form: ``{"type": "image", "image" | "url" | "path": ...}``."""

    type: Literal["image", "video", "audio"]
    image: str | None = None
    video: str | None = None
    audio: str | None = None
    url: str | None = None
    path: str | None = None


ContentPart = Annotated[
    Union[TextPart, InputTextPart, RefusalPart, ImageURLPart, InputImagePart, VideoURLPart, AudioURLPart,
          InputAudioPart, InlineMediaPart],
    Field(discriminator="type"),
]
TextContentPart = Annotated[Union[TextPart, InputTextPart], Field(discriminator="type")]
AssistantContentPart = Annotated[Union[TextPart, InputTextPart, RefusalPart], Field(discriminator="type")]


# --- messages ------------------------------------------------------------------------------------------
class FunctionCallParam(StrictModel):
    name: str
    arguments: str | dict[str, Any] = Field(description="The arguments as JSON text (OpenAI) or an object.")


class ToolCallParam(StrictModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallParam


class SystemMessage(StrictModel):
    role: Literal["system"]
    content: str | list[TextContentPart]
    name: str | None = None


class DeveloperMessage(StrictModel):
    role: Literal["developer"]
    content: str | list[TextContentPart]
    name: str | None = None


class UserMessage(StrictModel):
    role: Literal["user"]
    content: str | list[ContentPart]
    name: str | None = None


class AssistantMessage(StrictModel):
    role: Literal["assistant"]
    content: str | list[AssistantContentPart] | None = None
    name: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCallParam] | None = None
    reasoning_content: str | None = Field(None, description="Earlier reasoning, for templates that show it.")
    reasoning: str | None = Field(None, description="vLLM's name for reasoning_content.")


class ToolMessage(StrictModel):
    role: Literal["tool"]
    content: str | list[TextContentPart]
    tool_call_id: str | None = Field(None, description="The call this answers; LLaMA-Factory's clients leave it out.")


class FunctionMessage(StrictModel):
    """LLaMA-Factory's ``function`` turn: the assistant's tool calls as JSON ``[{"name", "arguments"}]``."""

    role: Literal["function"]
    content: str | None = None
    name: str | None = None


ChatMessageParam = Annotated[
    Union[SystemMessage, DeveloperMessage, UserMessage, AssistantMessage, ToolMessage, FunctionMessage],
    Field(discriminator="role"),
]


# --- tools ---------------------------------------------------------------------------------------------
class FunctionDefinition(StrictModel):
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = Field(None, description="The arguments as a JSON Schema object.")
    strict: bool | None = None


class ChatCompletionTool(StrictModel):
    type: Literal["function"] = "function"
    function: FunctionDefinition


def as_dicts(items: Sequence[BaseModel] | None) -> list[dict[str, Any]] | None:
    """Validated models as the plain dicts the facade takes (fields left out or null stay out)."""
    if items is None:
        return None
    return [item.model_dump(exclude_none=True) for item in items]
