"""vLLM's extra request fields and OpenAI's bookkeeping fields, as mixins of the chat and completion requests.

Each is honoured (it reaches :class:`~lmchat.generation.sampling.SamplingParams` or the chat template, and an
engine that cannot honour it answers 400 through the central capability check; ``prompt_logprobs``,
``return_tokens_as_token_ids`` and chat ``echo`` are read by the serving classes), or accepted only with its
neutral value and otherwise a 400 that says why. Nothing is silently dropped.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from lmchat.errors import InvalidRequestError, UnsupportedError

SERVICE_TIERS = ("auto", "default")  # lmchat has one tier; flex/scale/priority would promise what it cannot keep

# vLLM fields lmchat accepts only at their neutral value, and why
NEUTRAL_ONLY: dict[str, tuple[Any, str]] = {
    "spaces_between_special_tokens": (True, "lmchat's detokenizers always join special tokens as the tokenizer does"),
}


class VllmSamplingFields(BaseModel):
    """vLLM's extras shared by chat and completion requests, and OpenAI's ``metadata``/``store``/``service_tier``."""

    min_tokens: int = Field(0, ge=0)
    ignore_eos: bool = False
    stop_token_ids: list[int] | None = None
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    prompt_logprobs: int | None = Field(None, ge=0, le=20)
    return_tokens_as_token_ids: bool = False
    truncate_prompt_tokens: int | None = Field(None, ge=-1)
    bad_words: list[str] | None = None
    allowed_token_ids: list[int] | None = None
    priority: int = 0
    request_id: str | None = Field(None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")
    metadata: dict[str, str] | None = None  # OpenAI's tags for stored completions: accepted, logged nowhere
    store: bool | None = None
    service_tier: str | None = None

    def vllm_sampling_options(self) -> dict[str, Any]:
        """The options for the facade (lmchat's names; ``None`` keeps the config's default)."""
        for name, (neutral, why) in NEUTRAL_ONLY.items():
            if name in type(self).model_fields and getattr(self, name) != neutral:
                raise UnsupportedError(f"{name} is not supported: {why}. Leave it out.", param=name)
        if self.priority != 0:
            raise UnsupportedError("priority is not supported: lmchat serves requests first come, first served. "
                                   "Leave it out or send 0.", param="priority")
        if self.store:
            raise UnsupportedError("store: true is not supported: lmchat keeps no completions to retrieve later. "
                                   "Leave it out or send false.", param="store")
        if self.service_tier is not None and self.service_tier not in SERVICE_TIERS:
            raise InvalidRequestError(
                f"service_tier must be one of {', '.join(SERVICE_TIERS)} (lmchat has a single tier), not "
                f"{self.service_tier!r}.", param="service_tier",
            )
        if any(token < 0 for token in self.stop_token_ids or ()):
            raise InvalidRequestError("stop_token_ids must be token ids (integers 0 or more).", param="stop_token_ids")
        if self.prompt_logprobs is not None and getattr(self, "stream", False):
            raise InvalidRequestError("prompt_logprobs are not available when stream is true (as in vLLM).",
                                      param="prompt_logprobs")
        options = {
            "min_tokens": self.min_tokens or None, "ignore_eos": self.ignore_eos or None,
            "stop_token_ids": tuple(self.stop_token_ids) if self.stop_token_ids else None,
            "include_stop_str_in_output": self.include_stop_str_in_output or None,
            "skip_special_tokens": None if self.skip_special_tokens else False,
            "bad_words": self.bad_words or None, "allowed_token_ids": self.allowed_token_ids,
            "truncate_prompt_tokens": self.truncate_prompt_tokens,
        }
        return {name: value for name, value in options.items() if value is not None}


class PromptLogprob(BaseModel):
    """vLLM's log-probability of one prompt token (``prompt_logprobs``: ``{token_id: PromptLogprob}``)."""

    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


PromptLogprobs = list[dict[str, PromptLogprob] | None]


class VllmChatFields(BaseModel):
    """vLLM's chat-only extras: how the template renders the conversation."""

    add_generation_prompt: bool | None = None
    continue_final_message: bool | None = None
    chat_template: str | None = Field(None, min_length=1)
    documents: list[dict[str, Any]] | None = None
    echo: bool = False

    def vllm_chat_options(self) -> dict[str, Any]:
        """The template's options (``echo`` is the serving class's: the answer starts with the last message)."""
        options = {"add_generation_prompt": self.add_generation_prompt,
                   "continue_final_message": self.continue_final_message, "chat_template": self.chat_template,
                   "documents": self.documents}
        return {name: value for name, value in options.items() if value is not None}
