"""llama.cpp's native server API, for its clients: ``POST /completion`` (``n_predict``, ``timings``, streamed as
``data:`` events without ``[DONE]``), ``/tokenize {"content"}``, ``GET /props``."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import JSONResponse, Response

from lmchat import __version__
from lmchat.chat.prepare import PreparedChat
from lmchat.chat.response import ChatChunk
from lmchat.engines.events import TokenLogprob
from lmchat.errors import InvalidRequestError, LmchatError
from lmchat.server.protocol_compat import LlamaCppCompletionRequest, LlamaCppTokenizeRequest
from lmchat.server.responses import EventStreamResponse, sse_error, sse_event
from lmchat.server.serving.base import LiveGeneration, ServerState


@dataclass
class _Answer:
    """One native completion as it arrives: text, token ids, probabilities, timings."""

    began: float
    prompt_done: float = 0.0
    text: list[str] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    probabilities: list[dict[str, Any]] = field(default_factory=list)
    last: ChatChunk | None = None


class ServingLlamaCpp:
    def __init__(self, state: ServerState) -> None:
        self.state = state

    # --- /tokenize, /props ------------------------------------------------------------------------------
    def tokenize(self, body: LlamaCppTokenizeRequest) -> dict[str, Any]:
        self.state.check_model(body.model)
        body.check_supported()
        engine = self.state.chat_model.engine
        tokens = engine.tokenize(body.content, add_special_tokens=body.add_special)
        if not body.with_pieces:
            return {"tokens": tokens}
        return {"tokens": [{"id": token, "piece": engine.detokenize([token])} for token in tokens]}

    def props(self) -> dict[str, Any]:
        model = self.state.chat_model
        info, capabilities, defaults = model.engine.info, model.engine.capabilities, model.config.generation_defaults()
        params = {
            "n_predict": defaults.get("max_new_tokens") or -1, "temperature": defaults.get("temperature", 1.0),
            "top_k": defaults.get("top_k", 0), "top_p": defaults.get("top_p", 1.0),
            "min_p": defaults.get("min_p", 0.0), "repeat_penalty": defaults.get("repetition_penalty", 1.0),
        }
        return {
            "default_generation_settings": {"n_ctx": info.context_length, "params": params},
            "total_slots": self.state.admission.max_sequences,  # sequences decoded at once (admission)
            "model_alias": self.state.model_name,
            "model_path": model.config.model_name_or_path,
            "chat_template": model.template.source if model.template.name != "none" else "",
            "bos_token": info.special_tokens.get("bos_token", ""),
            "eos_token": info.special_tokens.get("eos_token", ""),
            "modalities": {"vision": capabilities.images, "audio": capabilities.audios},
            "build_info": f"lmchat {__version__} ({model.engine.name} engine)",
            "is_sleeping": False,
        }

    # --- /completion ------------------------------------------------------------------------------------
    async def completion(self, body: LlamaCppCompletionRequest) -> Response:
        self.state.check_model(body.model)
        prepared = [self._prepare(body, prompt) for prompt in body.prompts()]  # every 400 before any work
        if body.stream:
            if len(prepared) != 1:
                raise InvalidRequestError("stream: true takes one prompt, not a batch.", param="prompt")
            answer = _Answer(began=time.perf_counter())
            live = await self._start(prepared[0], answer)
            return EventStreamResponse(self._stream(body, prepared[0], live, answer))
        results = await asyncio.gather(*(self._complete(body, one) for one in prepared))
        return JSONResponse(results[0] if len(results) == 1 and not _is_batch(body) else list(results))

    def _prepare(self, body: LlamaCppCompletionRequest, prompt: str | list[int]) -> PreparedChat:
        try:
            options = {**body.sampling_options(), "adapter": self.state.adapter_of(body.model)}
            prepared = self.state.chat_model.prepare_completion(prompt, **options)
        except LmchatError as exc:
            exc.param = {"max_new_tokens": "n_predict", "repetition_penalty": "repeat_penalty",
                         "messages": "prompt", "adapter": "model"}.get(exc.param or "", exc.param)
            raise
        self.state.log_request("completion (llama.cpp)", prepared, body.stream, None)
        return prepared

    async def _start(self, prepared: PreparedChat, answer: _Answer) -> LiveGeneration:
        live = await LiveGeneration.start(self.state, prepared, f"llamacpp-{uuid.uuid4().hex}")
        answer.prompt_done = time.perf_counter()
        return live

    async def _complete(self, body: LlamaCppCompletionRequest, prepared: PreparedChat) -> dict[str, Any]:
        answer = _Answer(began=time.perf_counter())
        live = await self._start(prepared, answer)
        try:
            async for chunk in live.chunks():
                _add(answer, chunk, body.n_probs)
        finally:
            await live.aclose()
        return self._final(body, prepared, answer, content="".join(answer.text), tokens=answer.token_ids,
                           probabilities=answer.probabilities)

    async def _stream(self, body: LlamaCppCompletionRequest, prepared: PreparedChat, live: LiveGeneration,
                      answer: _Answer) -> AsyncIterator[str]:
        try:
            async for chunk in live.chunks():
                seen = len(answer.probabilities)
                _add(answer, chunk, body.n_probs)
                if chunk.text or chunk.token_ids:
                    event = {"index": 0, "content": chunk.text, "tokens": list(chunk.token_ids), "stop": False,
                             "id_slot": 0, "tokens_predicted": len(answer.token_ids),
                             "tokens_evaluated": prepared.prompt_tokens}
                    if body.n_probs:
                        event["completion_probabilities"] = answer.probabilities[seen:]
                    yield sse_event(event)
            yield sse_event(self._final(body, prepared, answer, content="", tokens=[], probabilities=None))
        except Exception as exc:  # the stream has started: the error becomes an event
            yield sse_error(exc)
        finally:
            await live.aclose()

    def _final(self, body: LlamaCppCompletionRequest, prepared: PreparedChat, answer: _Answer, content: str,
               tokens: list[int], probabilities: list[dict[str, Any]] | None) -> dict[str, Any]:
        last = answer.last
        predicted = last.completion_tokens if last else 0
        stop_type = {"length": "limit"}.get(last.finish_reason if last else "", "eos")
        if last is not None and last.stop_string:
            stop_type = "word"
        text = "".join(answer.text)
        result = {
            "index": 0, "content": content, "tokens": tokens if body.return_tokens else [], "id_slot": 0,
            "stop": True, "model": self.state.model_name, "tokens_predicted": predicted,
            "tokens_evaluated": prepared.prompt_tokens, "generation_settings": self._settings(body, prepared),
            "prompt": prepared.prompt, "has_new_line": "\n" in text, "truncated": False, "stop_type": stop_type,
            "stopping_word": (last.stop_string if last else None) or "",
            "timings": _timings(answer, prepared.prompt_tokens, predicted, last.cached_tokens if last else 0),
        }
        if probabilities is not None and body.n_probs:
            result["completion_probabilities"] = probabilities
        return result

    def _settings(self, body: LlamaCppCompletionRequest, prepared: PreparedChat) -> dict[str, Any]:
        params = prepared.params
        return {
            "n_predict": body.n_predict, "seed": params.seed if params.seed is not None else -1,
            "temperature": params.temperature if params.do_sample else 0.0, "top_k": params.top_k,
            "top_p": params.top_p, "min_p": params.min_p, "repeat_penalty": params.repetition_penalty,
            "presence_penalty": params.presence_penalty, "frequency_penalty": params.frequency_penalty,
            "stop": list(body.stop or ()), "n_probs": body.n_probs, "ignore_eos": params.ignore_eos,
            "stream": body.stream, "model": self.state.model_name,
        }


def _is_batch(body: LlamaCppCompletionRequest) -> bool:
    prompt = body.prompt
    return isinstance(prompt, list) and bool(prompt) and not all(isinstance(part, int) for part in prompt)


def _add(answer: _Answer, chunk: ChatChunk, n_probs: int) -> None:
    answer.text.append(chunk.text)
    answer.token_ids.extend(chunk.token_ids)
    if n_probs:
        answer.probabilities.extend(_probability(token) for token in chunk.logprobs)
    if chunk.finish_reason is not None:
        answer.last = chunk


def _probability(token: TokenLogprob) -> dict[str, Any]:
    """llama.cpp's ``completion_probabilities`` entry: the token, its log-probability and the top alternatives."""
    return {
        "id": token.token_id, "token": token.token, "logprob": token.logprob, "bytes": list(token.token.encode()),
        "top_logprobs": [{"id": token_id, "token": text, "logprob": logprob, "bytes": list(text.encode())}
                         for text, token_id, logprob in token.top],
    }


def _timings(answer: _Answer, prompt_tokens: int, predicted_n: int, cache_n: int = 0) -> dict[str, float]:
    """llama.cpp's ``timings``: the prompt's time (until the first token) and the answer's (the rest), measured;
    ``cache_n`` prompt tokens the engine reused, ``prompt_n`` the ones it computed (llama-server's split)."""
    prompt_n = prompt_tokens - cache_n
    end = time.perf_counter()
    prompt_ms = max(answer.prompt_done - answer.began, 0.0) * 1000
    predicted_ms = max(end - answer.prompt_done, 0.0) * 1000
    return {
        "cache_n": cache_n, "prompt_n": prompt_n, "prompt_ms": prompt_ms,
        "prompt_per_token_ms": prompt_ms / prompt_n if prompt_n else 0.0,
        "prompt_per_second": prompt_n * 1000 / prompt_ms if prompt_ms else 0.0,
        "predicted_n": predicted_n, "predicted_ms": predicted_ms,
        "predicted_per_token_ms": predicted_ms / predicted_n if predicted_n else 0.0,
        "predicted_per_second": predicted_n * 1000 / predicted_ms if predicted_ms else 0.0,
    }
