"""vLLM's outputs and failures in lmchat's terms: per-token log-probabilities, start-up errors."""

from __future__ import annotations

from typing import Any

from lmchat.engines.events import TokenLogprob
from lmchat.errors import ConfigError, EngineError, LmchatError


def completion_logprobs(completion: Any, top: int) -> tuple[TokenLogprob, ...]:
    """A ``CompletionOutput``'s per-token ``{token_id: Logprob}`` entries as lmchat's TokenLogprob events."""
    if not completion.logprobs:
        return ()
    result = []
    for token_id, entry in zip(completion.token_ids, completion.logprobs):
        chosen = entry[token_id]
        top = len(entry) if top == -1 else top  # -1: the whole vocabulary
        ranked = sorted(((lp.rank, tid, lp) for tid, lp in entry.items() if lp.rank is not None and lp.rank <= top),
                        key=lambda item: item[0])
        alternatives = tuple((lp.decoded_token or "", tid, lp.logprob) for _, tid, lp in ranked)[:top]
        result.append(TokenLogprob(chosen.decoded_token or "", token_id, chosen.logprob, alternatives))
    return tuple(result)


def prompt_token_logprobs(prompt_ids: list[int], entries: Any, top: int) -> list[TokenLogprob | None]:
    """vLLM's ``RequestOutput.prompt_logprobs`` (``None`` for the first token, then ``{token_id: Logprob}`` holding
    the prompt's token and the ``top`` likeliest) as lmchat's prompt log-probabilities, ranks included."""
    result: list[TokenLogprob | None] = [None]
    for token_id, entry in zip(prompt_ids[1:], list(entries or [])[1:]):
        chosen = entry[token_id]
        ranked = sorted((lp.rank, tid, lp) for tid, lp in entry.items() if lp.rank is not None and lp.rank <= top)
        alternatives = tuple((lp.decoded_token or "", tid, lp.logprob) for _, tid, lp in ranked)[:top]
        result.append(TokenLogprob(chosen.decoded_token or "", token_id, chosen.logprob, alternatives,
                                   rank=chosen.rank))
    return result


def engine_start_error(exc: BaseException) -> LmchatError:
    """What to tell the user when ``AsyncLLM.from_engine_args`` fails."""
    if isinstance(exc, RuntimeError):
        return EngineError(
            f"vLLM could not start its engine ({exc}). Its log above names the cause; on the CPU backend it is "
            "often too little free memory (set vllm_config: {kv_cache_memory_bytes: N}) or a model whose attention "
            "head size the CPU kernels lack."
        )
    return ConfigError(f"vLLM rejected the engine settings: {exc}", param="vllm_config")
