"""Generation options: one validated object, merged with the config's defaults in one place."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from lmchat.config.validation import explain
from lmchat.errors import InvalidRequestError
from lmchat.structured.constraint import Constraint

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # seeds are 64-bit, as every engine's generator takes them
GREEDY_TEMPERATURE = 1e-5  # temperatures below this decode greedily
# Options the facade itself honours for every engine (engines never see them: not capability-checked).
FACADE_OPTIONS = frozenset({"constraint", "truncate_prompt_tokens"})
# Per-call names that mean the same option.
OPTION_ALIASES = {"num_return_sequences": "n", "max_tokens": "max_new_tokens", "max_completion_tokens": "max_new_tokens"}


class SamplingParams(BaseModel):
    """How one request is decoded. Engines map this to their native form (one small function each)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int = Field(1, ge=1, le=128, description="Number of answers (num_return_sequences).")
    max_new_tokens: int | None = Field(None, ge=1, description="Most tokens to generate.")
    max_length: int | None = Field(None, ge=1, description="Most tokens of prompt plus answer.")
    do_sample: bool = Field(True, description="Sample, or decode greedily.")
    temperature: float = Field(1.0, ge=0, description="0 decodes greedily.")
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0, description="0 keeps all tokens.")
    min_p: float = Field(0.0, ge=0, le=1)
    repetition_penalty: float = Field(1.0, ge=0.01, le=100, description="1.0 is off; logits are divided by it.")
    num_beams: int = Field(1, ge=1, description="Beam search is not available: only 1.")
    length_penalty: float = Field(1.0, description="Beam-search length penalty: no effect with num_beams 1.")
    presence_penalty: float = Field(0.0, ge=-2, le=2, description="OpenAI meaning: flat penalty once a token appeared.")
    frequency_penalty: float = Field(0.0, ge=-2, le=2, description="OpenAI meaning: penalty per earlier occurrence.")
    logit_bias: dict[int, float] | None = Field(None, description="Token id -> bias added to its logit.")
    seed: int | None = Field(None, ge=INT64_MIN, le=INT64_MAX,
                             description="Seed of this request's own random generator (answer i uses seed + i).")
    stop: tuple[str, ...] = Field((), description="Strings that end the answer (trimmed from the text).")
    stop_token_ids: tuple[int, ...] = Field((), description="Extra token ids that end the answer.")
    ignore_eos: bool = False
    min_tokens: int = Field(0, ge=0, description="Tokens to generate before an end-of-answer token or a stop string may "
                                                 "end it (vLLM's meaning).")
    bad_words: tuple[str, ...] = Field((), description="Words the answer may not contain: each word's tokens, with and "
                                                       "without a leading space, are never completed (vLLM's meaning).")
    allowed_token_ids: tuple[int, ...] | None = Field(None, description="Only these token ids may be sampled.")
    truncate_prompt_tokens: int | None = Field(None, ge=-1, description="Keep the prompt's last k tokens (-1: the "
                                                                        "model's context length); the facade cuts it.")
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = Field(False, description="Keep the stop string that ended the answer.")
    logprobs: bool = False
    top_logprobs: int = Field(0, ge=-1, le=20, description="Alternatives per token; -1: the whole vocabulary.")
    constraint: Constraint | None = Field(None, description="What the answer must match (structured output).")

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, value: Any) -> Any:
        if value is None:
            return ()
        if isinstance(value, str):
            return (value,)
        return tuple(value)

    @field_validator("stop")
    @classmethod
    def _stop_not_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not s for s in value):
            raise ValueError("stop strings must not be empty")
        return value

    @field_validator("bad_words", mode="before")
    @classmethod
    def _word_list(cls, value: Any) -> Any:
        if value is None:
            return ()
        if not isinstance(value, (list, tuple)):
            raise ValueError("bad_words must be a list of strings")
        return tuple(value)

    @field_validator("bad_words")
    @classmethod
    def _words_not_blank(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not word.strip() for word in value):
            raise ValueError("bad words must not be empty or only spaces")
        return value

    @field_validator("allowed_token_ids", mode="before")
    @classmethod
    def _id_list(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, (list, tuple)):
            raise ValueError("allowed_token_ids must be a list of token ids")
        return None if value is None else tuple(value)

    @field_validator("allowed_token_ids")
    @classmethod
    def _ids_valid(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is not None and not value:
            raise ValueError("allowed_token_ids must name at least one token id (leave it out to allow every token)")
        if value and min(value) < 0:
            raise ValueError(f"token ids are 0 or more, not {min(value)}")
        return value

    @field_validator("truncate_prompt_tokens")
    @classmethod
    def _keep_some(cls, value: int | None) -> int | None:
        if value == 0:
            raise ValueError("truncate_prompt_tokens keeps the prompt's last k tokens: k is 1 or more (or -1, the "
                             "model's context length)")
        return value

    @field_validator("num_beams")
    @classmethod
    def _no_beam_search(cls, value: int) -> int:
        if value != 1:
            raise ValueError("beam search is not available (lmchat samples or decodes greedily); use num_beams 1")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _bias_range(cls, value: dict[int, float] | None) -> dict[int, float] | None:
        if value and any(not -100 <= bias <= 100 for bias in value.values()):
            raise ValueError("each bias must lie between -100 and 100")
        if value and any(token < 0 for token in value):
            raise ValueError(f"token ids are 0 or more, not {min(value)}")
        return value or None

    @field_validator("seed")
    @classmethod
    def _seeds_fit(cls, value: int | None, info: ValidationInfo) -> int | None:
        """Answer i samples with seed + i, which must stay a 64-bit integer too."""
        n = info.data.get("n", 1)
        if value is not None and value + n - 1 > INT64_MAX:
            raise ValueError(f"with n={n}, seed must be at most {INT64_MAX - n + 1} (answer i samples with seed + i, "
                             "a 64-bit integer)")
        return value

    @field_validator("top_logprobs")
    @classmethod
    def _top_logprobs_needs_logprobs(cls, value: int, info: ValidationInfo) -> int:
        if value and not info.data.get("logprobs"):
            raise ValueError("top_logprobs needs logprobs=true")
        return value

    @property
    def is_greedy(self) -> bool:
        """Greedy decoding: ``do_sample`` off, or a temperature so small that sampling is argmax anyway (dividing
        logits by it would only overflow them; vLLM draws the same line)."""
        return not self.do_sample or self.temperature < GREEDY_TEMPERATURE

    def non_default_fields(self) -> set[str]:
        """The options whose value differs from a plain greedy/sampling request (for capability checks)."""
        defaults = SamplingParams()
        return {name for name in type(self).model_fields if getattr(self, name) != getattr(defaults, name)}


def resolve_sampling(defaults: dict[str, Any], overrides: dict[str, Any]) -> SamplingParams:
    """Merge the config's generation defaults with one call's options; unknown options are errors."""
    merged = dict(defaults)
    for key, value in overrides.items():
        name = OPTION_ALIASES.get(key, key)
        if value is None and name in ("max_new_tokens", "max_length", "seed", "stop", "logit_bias",
                                      "allowed_token_ids", "truncate_prompt_tokens"):
            merged[name] = None
            continue
        if value is None:
            continue  # an explicit None means "use the default"
        merged[name] = value
    if "max_new_tokens" in overrides and "max_length" not in overrides:
        merged["max_length"] = None  # as in LLaMA-Factory: max_new_tokens wins over a configured max_length
    try:
        return SamplingParams(**merged)
    except ValidationError as exc:
        names = set(SamplingParams.model_fields) | set(OPTION_ALIASES)
        raise explain(exc, kind="generation option", valid_names=names, error_cls=InvalidRequestError) from None
