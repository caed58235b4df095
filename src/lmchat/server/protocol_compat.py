"""Request models of llama.cpp's native server API (``/completion``, ``/tokenize {"content"}``), under its names.

Like every lmchat request they reject unknown fields; a field llama.cpp defines that lmchat cannot honour is
accepted only with its neutral value, anything else is a 400 naming it.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from lmchat.errors import InvalidRequestError, UnsupportedError
from lmchat.server.protocol import OpenAIRequest

PromptPart = str | list[int]


class LlamaCppTokenizeRequest(OpenAIRequest):
    """llama.cpp's ``/tokenize``: ``{"content", "add_special", "with_pieces"}`` -> ``{"tokens"}``."""

    content: str
    add_special: bool = False
    parse_special: bool = True
    with_pieces: bool = False
    model: str | None = None

    def check_supported(self) -> None:
        if not self.parse_special:
            raise UnsupportedError(
                "parse_special: false is not supported: lmchat tokenizes special tokens written in the text as "
                "such (as the engine reads a prompt). Leave it out.", param="parse_special",
            )


class LlamaCppCompletionRequest(OpenAIRequest):
    """llama.cpp's native ``POST /completion`` (also ``/completions``'s shape there; lmchat serves OpenAI's on
    ``/completions``). ``n_predict: -1`` generates until the end of the answer or the context."""

    prompt: PromptPart | list[PromptPart]
    n_predict: int = Field(-1, ge=-1)
    temperature: float | None = Field(None, ge=0)
    top_k: int | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    min_p: float | None = Field(None, ge=0, le=1)
    seed: int | None = None
    stop: list[str] | None = None
    repeat_penalty: float | None = Field(None, gt=0)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: list[list[Any]] | dict[str, float] | None = None
    ignore_eos: bool | None = None
    n_probs: int = Field(0, ge=0, le=20)
    stream: bool = False
    return_tokens: bool = False
    cache_prompt: bool = True  # a speed hint: engines that keep a prompt cache use it either way
    id_slot: int = -1
    n_keep: int = 0
    model: str | None = None

    def prompts(self) -> list[str | list[int]]:
        """The prompts of the request: one string or token list, or a list of them (a batch)."""
        prompt = self.prompt
        if isinstance(prompt, str) or (prompt and all(isinstance(part, int) for part in prompt)):
            return [prompt]  # type: ignore[list-item]
        if not prompt:
            raise InvalidRequestError("prompt must not be empty.", param="prompt")
        return list(prompt)  # type: ignore[arg-type]

    def sampling_options(self) -> dict[str, Any]:
        for name, neutral in (("id_slot", -1), ("n_keep", 0)):
            if getattr(self, name) != neutral:
                raise UnsupportedError(f"{name} is not supported (lmchat schedules requests itself); leave it out.",
                                       param=name)
        options = {
            "max_new_tokens": None if self.n_predict == -1 else self.n_predict, "temperature": self.temperature,
            "top_k": self.top_k, "top_p": self.top_p, "min_p": self.min_p,
            "seed": None if self.seed in (None, -1) else self.seed, "stop": self.stop,
            "repetition_penalty": self.repeat_penalty, "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty, "logit_bias": self._logit_bias(),
            "ignore_eos": self.ignore_eos,
        }
        if self.n_predict == 0:
            raise UnsupportedError("n_predict: 0 (evaluating the prompt only) is not supported; ask for 1 or more "
                                   "tokens, or -1.", param="n_predict")
        if self.n_probs:
            options.update(logprobs=True, top_logprobs=self.n_probs)
        return {name: value for name, value in options.items() if value is not None}

    def _logit_bias(self) -> dict[int, float] | None:
        """llama.cpp's ``[[token_id, bias], ...]`` (``false`` as the bias bans the token) or ``{"id": bias}``."""
        if not self.logit_bias:
            return None
        pairs = self.logit_bias.items() if isinstance(self.logit_bias, dict) else self.logit_bias
        bias: dict[int, float] = {}
        for pair in pairs:
            token, value = (list(pair) + [None, None])[:2]
            if isinstance(token, str) and token.isdigit():
                token = int(token)
            if not isinstance(token, int) or isinstance(value, str) or value is None or value is True:
                raise InvalidRequestError(
                    "logit_bias must be [[token_id, bias], ...] with integer token ids and numeric biases (or false "
                    "to ban a token).", param="logit_bias",
                )
            bias[token] = -100.0 if value is False else float(value)
        return bias
