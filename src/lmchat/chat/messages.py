"""Validate and normalise a conversation (OpenAI message format, plus LLaMA-Factory's roles) without touching
the caller's objects."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from typing import Any

from lmchat.errors import InvalidRequestError

ROLES = ("system", "developer", "user", "assistant", "tool")
# LLaMA-Factory's roles: an "observation" is a tool result, a "function" turn is the assistant calling tools.
LF_ROLES = {"observation": "tool", "function": "assistant"}


def build_conversation(
    messages: Sequence[Mapping[str, Any]], system: str | None = None, default_system: str | None = None
) -> list[dict[str, Any]]:
    """A deep copy of ``messages`` with roles and content normalised and the system prompt in place."""
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
    message = copy.deepcopy(dict(message))
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
        message["content"] = _flatten_text_parts(index, content)  # an assistant's tool-call turn may keep None
    if message.get("tool_calls"):
        message["tool_calls"] = [_call_with_object_arguments(call) for call in message["tool_calls"]]
    return message


def _call_with_object_arguments(call: Any) -> Any:
    """OpenAI clients send tool-call arguments as JSON text; templates expect the object (as vLLM passes it)."""
    function = call.get("function") if isinstance(call, dict) else None
    if isinstance(function, dict) and isinstance(function.get("arguments"), str):
        parsed = _arguments(function["arguments"])
        if isinstance(parsed, dict):
            return {**call, "function": {**function, "arguments": parsed}}
    return call


def _flatten_text_parts(index: int, content: Any) -> Any:
    """OpenAI content parts that are all text become one string (joined by newlines), as templates expect."""
    if content is None or isinstance(content, str):
        return content if content is not None else ""
    if not isinstance(content, list):
        raise InvalidRequestError(
            f"messages[{index}].content must be a string or a list of content parts.", param=f"messages[{index}].content"
        )
    for part in content:
        if not isinstance(part, Mapping) or "type" not in part:
            raise InvalidRequestError(
                f"messages[{index}].content parts must be dicts with a 'type'.", param=f"messages[{index}].content"
            )
    if all(part["type"] == "text" for part in content):
        return "\n".join(str(part.get("text", "")) for part in content)
    return content


def _lf_function_turn(index: int, message: dict[str, Any]) -> dict[str, Any]:
    """LLaMA-Factory's ``function`` turn holds the calls as JSON: ``[{"name": ..., "arguments": ...}]``."""
    try:
        calls = json.loads(message.get("content") or "")
    except json.JSONDecodeError:
        raise InvalidRequestError(
            f"messages[{index}] (role function) must hold the tool calls as JSON.", param=f"messages[{index}].content"
        ) from None
    calls = calls if isinstance(calls, list) else [calls]
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
