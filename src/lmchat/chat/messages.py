"""Validate and normalise a conversation (OpenAI message format, plus LLaMA-Factory's roles) without touching
the caller's objects: one copy, tool-call arguments decoded once, and the media of content parts taken out in one
place, whatever vocabulary they use (OpenAI's, vLLM's, LLaMA-Factory's, transformers').
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lmchat.errors import InvalidRequestError, UnsupportedError

ROLES = ("system", "developer", "user", "assistant", "tool")
# LLaMA-Factory's roles: an "observation" is a tool result, a "function" turn is the assistant calling tools.
LF_ROLES = {"observation": "tool", "function": "assistant"}
MEDIA_KINDS = ("image", "video", "audio")
# Content-part types that hold text, and the key the text is under.
TEXT_PARTS = {"text": "text", "input_text": "text", "output_text": "text", "refusal": "refusal"}


@dataclass(frozen=True)
class Media:
    """The images, videos and audios of one request, in order: paths, URLs, data URLs or engine-native objects."""

    images: tuple[Any, ...] = ()
    videos: tuple[Any, ...] = ()
    audios: tuple[Any, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.images or self.videos or self.audios)

    def by_kind(self) -> dict[str, tuple[Any, ...]]:
        """``{"images": ..., "videos": ..., "audios": ...}`` (the names of ``ChatModel.prepare``'s arguments)."""
        return {"images": self.images, "videos": self.videos, "audios": self.audios}

    def __add__(self, other: Media) -> Media:
        return Media(self.images + other.images, self.videos + other.videos, self.audios + other.audios)


# --- media content parts ------------------------------------------------------------------------------------
def _url(key: str) -> Callable[[Mapping[str, Any]], Any]:
    """``{key: {"url": ...}}`` (OpenAI, vLLM, LLaMA-Factory) or ``{key: "..."}``."""

    def read(part: Mapping[str, Any]) -> Any:
        value = part.get(key)
        return value.get("url") if isinstance(value, Mapping) else value

    return read


def _input_audio(part: Mapping[str, Any]) -> str | None:
    """OpenAI's ``input_audio`` (base64 ``data`` and its ``format``) as a data URL."""
    audio = part.get("input_audio")
    if not isinstance(audio, Mapping) or not isinstance(audio.get("data"), str) or not audio.get("format"):
        return None
    return f"data:audio/{audio['format']};base64,{audio['data']}"


def _inline(kind: str) -> Callable[[Mapping[str, Any]], Any]:
    """transformers' ``{"type": "image", "image" | "url" | "path": ...}``; no source: a placeholder for the next
    item of ``images=`` (as LLaMA-Factory's ``<image>`` is)."""
    return lambda part: next((part[key] for key in (kind, "url", "path") if part.get(key) is not None), None)


# content-part type -> (media kind, how to read its source)
MEDIA_PARTS: dict[str, tuple[str, Callable[[Mapping[str, Any]], Any]]] = {
    "image_url": ("image", _url("image_url")),
    "input_image": ("image", _url("image_url")),  # OpenAI's Responses API
    "image_pil": ("image", lambda part: part.get("image_pil")),  # vLLM: a PIL image object
    "image": ("image", _inline("image")),
    "video_url": ("video", _url("video_url")),
    "video": ("video", _inline("video")),
    "audio_url": ("audio", _url("audio_url")),
    "input_audio": ("audio", _input_audio),
    "audio": ("audio", _inline("audio")),
}
_PLACEHOLDER_ONLY = {"image_url", "input_image", "image_pil", "video_url", "audio_url", "input_audio"}


def part_media(part: Mapping[str, Any], where: str = "content") -> tuple[str, Any] | None:
    """``(kind, source)`` of a media content part (``source`` None: a placeholder); None for a text part.

    An unknown part type, or a media part without its source, is an error naming ``where``.
    """
    kind = part.get("type")
    if kind in TEXT_PARTS:
        return None
    if kind not in MEDIA_PARTS:
        known = ", ".join([*TEXT_PARTS, *MEDIA_PARTS])
        raise UnsupportedError(f"{where} has a content part of type {kind!r}, which is not supported (use one of "
                               f"{known}).", param=where)
    media_kind, read = MEDIA_PARTS[kind]
    source = read(part)
    if source is None and kind in _PLACEHOLDER_ONLY:
        raise InvalidRequestError(f"{where} has a {kind} part without its {media_kind}.", param=where)
    return media_kind, source


def media_of(messages: Iterable[Mapping[str, Any]]) -> Media:
    """Every media source the content parts of ``messages`` hold, in order (placeholders hold none)."""
    found: dict[str, list[Any]] = {kind: [] for kind in MEDIA_KINDS}
    for message in messages:
        content = message.get("content")
        for part in content if isinstance(content, list) else ():
            media = part_media(part) if isinstance(part, Mapping) else None
            if media is not None and media[1] is not None:
                found[media[0]].append(media[1])
    return Media(tuple(found["image"]), tuple(found["video"]), tuple(found["audio"]))


# --- messages -----------------------------------------------------------------------------------------------
def build_conversation(
    messages: Sequence[Mapping[str, Any]], system: str | None = None, default_system: str | None = None
) -> list[dict[str, Any]]:
    """A copy of ``messages`` with roles and content normalised and the system prompt in place.

    Content parts that are all text become one string; otherwise every media part becomes transformers' form
    ``{"type": KIND, KIND: source}`` (what multimodal chat templates read; :func:`media_of` collects the sources).
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise InvalidRequestError("messages must be a list of {'role': ..., 'content': ...} dicts.", param="messages")
    conversation = [_normalise(i, message) for i, message in enumerate(messages)]
    has_system = bool(conversation) and conversation[0]["role"] in ("system", "developer")
    if system is not None:
        if has_system:
            raise InvalidRequestError(
                "The system prompt was given twice (system= and a first system message); give it once.",
                param="system",
            )
        conversation.insert(0, {"role": "system", "content": system})
    elif not has_system and default_system:
        conversation.insert(0, {"role": "system", "content": default_system})
    return conversation


def _normalise(index: int, message: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(message, Mapping):
        raise InvalidRequestError(f"messages[{index}] must be a dict, got {type(message).__name__}.", param="messages")
    message = copy.deepcopy(dict(message))  # the one copy: nothing below touches the caller's objects
    role = message.get("role")
    if role == "function":
        message = _lf_function_turn(index, message)
    role = LF_ROLES.get(role, role)
    if role not in ROLES:
        raise InvalidRequestError(
            f"messages[{index}] has role {role!r}; use one of {', '.join(ROLES)}.", param=f"messages[{index}].role"
        )
    message["role"] = role
    content = message.get("content")
    if content is None and not message.get("tool_calls"):
        if role != "assistant":
            raise InvalidRequestError(f"messages[{index}] ({role}) has no content.", param=f"messages[{index}].content")
    if content is not None or not message.get("tool_calls"):
        message["content"] = _content(index, content)  # an assistant's tool-call turn may keep None
    if message.get("tool_calls"):
        message["tool_calls"] = [_call_with_object_arguments(call) for call in message["tool_calls"]]
    return message


def _call_with_object_arguments(call: Any) -> Any:
    """OpenAI clients send tool-call arguments as JSON text; templates expect the object (as vLLM passes it)."""
    function = call.get("function") if isinstance(call, dict) else None
    if isinstance(function, dict) and isinstance(function.get("arguments"), str):
        parsed = _arguments(function["arguments"])
        if isinstance(parsed, dict):
            function["arguments"] = parsed  # ``call`` is already this function's own copy
    return call


def _content(index: int, content: Any) -> Any:
    """A string stays; content parts that are all text become one string (joined by newlines), as templates
    expect; mixed parts keep their order, text as ``{"type": "text"}`` and media in transformers' form."""
    where = f"messages[{index}].content"
    if content is None or isinstance(content, str):
        return content if content is not None else ""
    if not isinstance(content, list):
        raise InvalidRequestError(f"{where} must be a string or a list of content parts.", param=where)
    parts = []
    for part in content:
        if not isinstance(part, Mapping) or "type" not in part:
            raise InvalidRequestError(f"{where} parts must be dicts with a 'type'.", param=where)
        media = part_media(part, where)
        if media is None:
            parts.append({"type": "text", "text": str(part.get(TEXT_PARTS[part["type"]], ""))})
        else:
            kind, source = media
            parts.append({"type": kind} if source is None else {"type": kind, kind: source})
    if all(part["type"] == "text" for part in parts):
        return "\n".join(part["text"] for part in parts)
    return parts


def _lf_function_turn(index: int, message: dict[str, Any]) -> dict[str, Any]:
    """LLaMA-Factory's ``function`` turn holds the calls as JSON: ``[{"name": ..., "arguments": ...}]``."""
    content = message.get("content")
    try:
        calls = json.loads(content) if isinstance(content, str) and content else None
    except json.JSONDecodeError:
        calls = None
    calls = calls if isinstance(calls, list) else [calls]
    if not all(isinstance(call, dict) and isinstance(call.get("name"), str) for call in calls):
        raise InvalidRequestError(
            f"messages[{index}] (role function) must hold the tool calls as JSON: "
            '[{"name": "...", "arguments": {...}}].', param=f"messages[{index}].content"
        )
    tool_calls = [
        {
            "id": f"call_{index}_{n}",
            "type": "function",
            "function": {"name": call.get("name"), "arguments": _arguments(call.get("arguments", {}))},
        }
        for n, call in enumerate(calls)
    ]
    return {"role": "assistant", "content": "", "tool_calls": tool_calls}


def _arguments(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


# --- tools --------------------------------------------------------------------------------------------------
def normalise_tools(tools: str | Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]] | None:
    """OpenAI function tools from a list (or LLaMA-Factory's JSON string); bare function dicts are wrapped."""
    if tools is None or tools == "" or tools == []:
        return None
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError as exc:
            raise InvalidRequestError(f"tools is not valid JSON: {exc}", param="tools") from None
    if isinstance(tools, Mapping):
        tools = [tools]
    if not isinstance(tools, Sequence):
        raise InvalidRequestError("tools must be a list of function definitions.", param="tools")
    return [_tool(i, tool) for i, tool in enumerate(tools)]


def _tool(index: int, tool: Any) -> dict[str, Any]:
    if not isinstance(tool, Mapping):
        raise InvalidRequestError(f"tools[{index}] must be a dict.", param="tools")
    tool = copy.deepcopy(dict(tool))
    function = tool.get("function") if tool.get("type", "function") == "function" and "function" in tool else tool
    if not isinstance(function, Mapping) or not isinstance(function.get("name"), str) or not function["name"]:
        raise InvalidRequestError(f"tools[{index}] needs a function 'name'.", param="tools")
    return {"type": "function", "function": dict(function)}
