"""SGLang's streamed chunks as lmchat's events, as a pure state machine (no sglang import), unit-tested here.

``Engine.async_generate(..., stream=True)`` yields dicts ``{"text", "meta_info"}``: the text is cumulative unless
the server runs with ``incremental_streaming_output``; ``meta_info`` carries cumulative token counts, the
cumulative ``output_token_logprobs`` / ``output_top_logprobs`` lists and, at the end, ``finish_reason``.
"""

from __future__ import annotations

from typing import Any

from lmchat.engines.events import EngineEvent, Finished, TextDelta, TokenLogprob
from lmchat.engines.sglang.sampling import finish_reason


class ChunkReader:
    """Turns one request's SGLang chunks into TextDelta events and one Finished."""

    def __init__(self, prompt_tokens: int, incremental: bool, logprobs: bool, stop_text=lambda token: token) -> None:
        self.prompt_tokens, self.incremental, self.logprobs = prompt_tokens, incremental, logprobs
        self.stop_text = stop_text  # token id -> its text (the tokenizer's), for Finished.stop_token
        self.sent_text, self.sent_logprobs, self.sent_tokens = "", 0, 0
        self.finished = False

    def read(self, chunk: dict[str, Any]) -> list[EngineEvent]:
        meta = chunk["meta_info"]
        text = chunk["text"] if self.incremental else chunk["text"][len(self.sent_text):]
        self.sent_text = self.sent_text + text if self.incremental else chunk["text"]
        logprobs = token_logprobs(meta, 0 if self.incremental else self.sent_logprobs) if self.logprobs else ()
        self.sent_logprobs += len(logprobs)
        tokens = meta.get("completion_tokens", self.sent_tokens) - self.sent_tokens
        self.sent_tokens += tokens
        events: list[EngineEvent] = [TextDelta(text, tokens, logprobs=logprobs)] if text or logprobs else []
        reason = finish_reason(meta)
        if reason is not None:
            self.finished = True
            raw = meta["finish_reason"]
            stop = raw.get("matched") if isinstance(raw, dict) else None
            events.append(Finished(reason, meta.get("prompt_tokens", self.prompt_tokens),
                                   meta.get("completion_tokens", 0), self.stop_text(stop),
                                   cached_tokens=meta.get("cached_tokens") or 0))  # its radix cache's reuse
        return events


def token_logprobs(meta: dict[str, Any], already_sent: int) -> tuple[TokenLogprob, ...]:
    """SGLang's ``(logprob, token_id, text)`` lists, from ``already_sent`` on, as TokenLogprob events."""
    chosen = meta.get("output_token_logprobs") or []
    tops = meta.get("output_top_logprobs") or []
    events = []
    for i in range(already_sent, len(chosen)):
        logprob, token_id, text = chosen[i]
        top = tuple((alt_text or "", alt_id, alt_lp) for alt_lp, alt_id, alt_text in (tops[i] if i < len(tops) else ()))
        events.append(TokenLogprob(text or "", token_id, logprob, top))
    return tuple(events)
