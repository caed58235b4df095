"""Log-probabilities as the clients read them: token names (vLLM's ``return_tokens_as_token_ids``), and the
prompt's log-probabilities (completions' ``echo`` with ``logprobs``, vLLM's ``prompt_logprobs``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

from lmchat.engines.events import TokenLogprob
from lmchat.errors import UnsupportedError
from lmchat.server.protocol_vllm import PromptLogprob, PromptLogprobs

if TYPE_CHECKING:
    from lmchat.chat.prepare import PreparedChat
    from lmchat.server.serving.base import ServerState

Scored = list[TokenLogprob | None]  # one prompt's tokens: None for the first, which has no log-probability


def token_name(text: str, token_id: int, as_ids: bool) -> str:
    """How a token is named in logprobs: its text, or ``token_id:N`` (vLLM's ``return_tokens_as_token_ids``, for
    clients that need the exact ids: a token's text may not decode on its own)."""
    return f"token_id:{token_id}" if as_ids else text


def with_top(tokens: Sequence[TokenLogprob | None], top: int) -> Scored:
    """``tokens`` with at most ``top`` alternatives each (the prompt is scored once for all the fields)."""
    return [None if token is None else dataclasses.replace(token, top=token.top[:top]) for token in tokens]


async def score_prompts(state: ServerState, batch: Sequence[PreparedChat], top: int, param: str) -> list[Scored]:
    """Each prepared prompt's token log-probabilities with ``top`` alternatives: one forward pass each, run
    before any generation (an engine that cannot answers 400 naming ``param``) and admitted like one sequence."""
    engine = state.chat_model.engine
    lease = await state.admission.acquire()
    try:
        return [await engine.prompt_logprobs(prepared.prompt_token_ids, top) for prepared in batch]
    except UnsupportedError as exc:
        exc.param = param
        raise
    finally:
        lease.release()


def prompt_logprobs_entries(scored: Scored) -> PromptLogprobs:
    """vLLM's ``prompt_logprobs``: ``None`` for the first token, then for each token ``{token_id: {logprob, rank,
    decoded_token}}`` with the prompt's own token first and its alternatives after it (ranks 1, 2, ...)."""
    entries: PromptLogprobs = []
    for token in scored:
        if token is None:
            entries.append(None)
            continue
        entry = {str(token.token_id): PromptLogprob(logprob=token.logprob, rank=token.rank, decoded_token=token.token)}
        for rank, (text, token_id, logprob) in enumerate(token.top, 1):
            entry.setdefault(str(token_id), PromptLogprob(logprob=logprob, rank=rank, decoded_token=text))
        entries.append(entry)
    return entries
