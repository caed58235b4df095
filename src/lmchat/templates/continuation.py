"""``continue_final_message`` (transformers' and vLLM's option): the prompt ends inside the last message, which must
be the assistant's, so the model goes on writing it instead of starting a new turn."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lmchat.errors import InvalidRequestError


def final_message_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The text of the last message, which must be an assistant message with text to continue."""
    final = messages[-1] if messages else {}
    content = final.get("content")
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content if isinstance(part, Mapping))
    if final.get("role") != "assistant" or not isinstance(content, str) or not content.strip():
        raise InvalidRequestError(
            "continue_final_message needs the last message to be an assistant message with the text to continue.",
            param="messages",
        )
    return content


def cut_after_final_message(prompt: str, messages: Sequence[Mapping[str, Any]]) -> str:
    """``prompt`` (rendered without a generation prompt) cut right after the final message's text."""
    text = final_message_text(messages)
    for candidate in (text, text.strip()):
        end = prompt.rfind(candidate)
        if end >= 0:
            return prompt[: end + len(candidate)]
    raise InvalidRequestError(
        "The chat template does not write the final message's text as given, so it cannot be continued; "
        "leave continue_final_message out.", param="continue_final_message",
    )


def generation_prompt_flags(add_generation_prompt: bool | None, continue_final_message: bool | None
                            ) -> tuple[bool, bool]:
    """``(add_generation_prompt, continue_final_message)`` with vLLM's rule: both at once is an error; the
    generation prompt is on unless the final message is continued."""
    if continue_final_message and add_generation_prompt:
        raise InvalidRequestError(
            "add_generation_prompt and continue_final_message cannot both be true: a continued message has no new "
            "turn after it.", param="continue_final_message",
        )
    return (not continue_final_message if add_generation_prompt is None else add_generation_prompt,
            bool(continue_final_message))
