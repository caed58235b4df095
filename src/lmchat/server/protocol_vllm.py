"""vLLM's extra request fields and OpenAI's bookkeeping fields, as mixins of the chat and completion requests.

Each is honoured (it reaches :class:`~lmchat.generation.sampling.SamplingParams` or the chat template, and an
engine that cannot honour it answers 400 through the central capability check), or accepted only with its
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
    "prompt_logprobs": (None, "prompt log-probabilities are not computed yet"),
    "return_tokens_as_token_ids": (False, "logprobs carry token strings only"),
    "truncate_prompt_tokens": (None, "set cutoff_len in the model's config to keep a prompt's last tokens"),
    "bad_words": (None, "no engine bans word sequences yet; logit_bias bans single tokens"),
    "allowed_token_ids": (None, "no engine restricts the vocabulary yet; logit_bias can ban tokens"),
    "documents": (None, "document-grounded chat templates are not supported yet"),
}


class VllmSamplingFields(BaseModel):
    """vLLM's extras shared by chat and completion requests, and OpenAI's ``metadata``/``store``/``service_tier``."""

    min_tokens: int = Field(0, ge=0)
    ignore_eos: bool = False
    stop_token_ids: list[int] | None = None
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    prompt_logprobs: int | None = None
    return_tokens_as_token_ids: bool = False
    truncate_prompt_tokens: int | None = None
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
        options = {
            "min_tokens": self.min_tokens or None, "ignore_eos": self.ignore_eos or None,
            "stop_token_ids": tuple(self.stop_token_ids) if self.stop_token_ids else None,
            "include_stop_str_in_output": self.include_stop_str_in_output or None,
            "skip_special_tokens": None if self.skip_special_tokens else False,
        }
        return {name: value for name, value in options.items() if value is not None}


class VllmChatFields(BaseModel):
    """vLLM's chat-only extras: how the template renders the conversation."""

    add_generation_prompt: bool | None = None
    continue_final_message: bool | None = None
    chat_template: str | None = Field(None, min_length=1)
    documents: list[dict[str, Any]] | None = None
    echo: bool = False

    def vllm_chat_options(self) -> dict[str, Any]:
        if self.echo:
            raise UnsupportedError("echo is not supported for chat completions yet; leave it out (for a continued "
                                   "assistant message, use continue_final_message).", param="echo")
        options = {"add_generation_prompt": self.add_generation_prompt,
                   "continue_final_message": self.continue_final_message, "chat_template": self.chat_template}
        return {name: value for name, value in options.items() if value is not None}
