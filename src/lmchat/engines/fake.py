"""A scripted engine for tests and demos: real engine contract, scripted answers, no model.

``infer_backend: fake``. ``model_name_or_path`` names a JSON/YAML script, or is empty for echo mode
("You said: ..."). Script keys: ``replies`` (strings, or ``{text, match, finish_reason, error_after}``),
``delay`` (seconds per token), ``chat_template``, ``context_length``, ``unsupported`` (option names it will
reject), ``log`` (a JSONL file where every request, finish and abort is recorded), ``reward`` (score texts by
length instead of chatting), ``media`` (the kinds it accepts: ``[image, video, audio]``; the echo reply then
describes the decoded media it got, e.g. ``[image 64x48]``), ``capacity`` (``{max_sequences, kv_cache_tokens}``
it reports), ``pooling`` (``{embedding_size, matryoshka_dimensions, pair_scores, embedding_model}``: embeddings
that count each token id at ``id % embedding_size``, and pair scores that count the words two texts share),
``start_delay`` (seconds its start, the model's "loading", takes). A reply with ``die: true`` makes the engine fail
for good, as an engine whose model thread died
(``check_health`` fails, every later request too). Tokens are whitespace-led words, so the streaming is realistic.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from lmchat.config.sources import load_yaml
from lmchat.engines.base import BaseEngine, Capabilities, EngineCapacity, GenerationRequest, ModelInfo
from lmchat.engines.events import EngineEvent, Finished, TextDelta, TokenLogprob
from lmchat.engines.pooling import EmbedRequest, PairScoreRequest, PairScores, PoolingInfo
from lmchat.errors import EngineDeadError, EngineError, ModelNotFoundError
from lmchat.generation.sampling import SamplingParams

_TOKEN = re.compile(r"\s*\S+|\s+")
_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{% if m['content'] is string %}{{ m['content'] }}{% elif m['content'] %}"
    "{% for p in m['content'] %}{% if p['type'] == 'text' %}{{ p['text'] }}{% else %}<{{ p['type'] }}>{% endif %}"
    "{% endfor %}{% endif %}<|end|>\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


NOT_SCRIPTED = frozenset({"min_tokens", "bad_words", "allowed_token_ids"})  # options that change which tokens come


class ScriptedEngine(BaseEngine):
    name = "fake"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.script: dict[str, Any] = {}
        self._vocab: dict[str, int] = {}
        self._pieces: list[str] = []
        self._aborted: set[str] = set()
        self._turn = 0
        self._dead = False
        self.requests: list[GenerationRequest] = []

    async def start(self) -> None:
        path = self.config.model_name_or_path
        if path:
            if not Path(path).is_file():
                raise ModelNotFoundError(f"Fake engine script not found: {path}")
            self.script = load_yaml(path)
        await asyncio.sleep(self.script.get("start_delay", 0))
        unsupported = set(self.script.get("unsupported", ()))
        kinds = set(self.script.get("media", ()))
        self.capabilities = Capabilities(
            sampling_options=frozenset(SamplingParams.model_fields) - NOT_SCRIPTED - unsupported,
            images="image" in kinds, videos="video" in kinds, audios="audio" in kinds,
            pooling=frozenset({"embed", "score"} if self.script.get("pooling") else ()))

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(
            name=self.script.get("name", "fake-echo"),
            chat_template=self.script.get("chat_template", _TEMPLATE),
            special_tokens={"bos_token": "", "eos_token": "<|end|>"},
            context_length=self.script.get("context_length", 4096),
            is_reward_model=bool(self.script.get("reward")),
            pooling=self._pooling_info(),
        )

    def _pooling_info(self) -> PoolingInfo | None:
        pooling = self.script.get("pooling")
        if not pooling:
            return None
        sizes = pooling.get("matryoshka_dimensions")
        return PoolingInfo(embedding_size=pooling.get("embedding_size", 8), pooling_type="mean",
                           matryoshka_dimensions=None if sizes is None else tuple(sizes),
                           embedding_model=bool(pooling.get("embedding_model")),
                           pair_scores=pooling.get("pair_scores", "classifier"))

    @property
    def capacity(self) -> EngineCapacity:
        return EngineCapacity(**self.script.get("capacity", {}))

    def check_health(self) -> None:
        if self._dead:
            raise EngineDeadError("The scripted engine died (as its script says); restart lmchat.")

    # --- tokenizer --------------------------------------------------------------------------------
    def tokenize(self, text: str, add_special_tokens: bool = False) -> list[int]:  # no special tokens to add
        return [self._token_id(piece) for piece in _split(text)]

    def _token_id(self, piece: str) -> int:
        if piece not in self._vocab:
            self._vocab[piece] = len(self._pieces)
            self._pieces.append(piece)
        return self._vocab[piece]

    def detokenize(self, token_ids: Sequence[int]) -> str:
        return "".join(self._pieces[i] for i in token_ids)

    def count_tokens(self, text: str) -> int:
        return len(_split(text))

    # --- generation -------------------------------------------------------------------------------
    def _reply(self, prompt: str, media: str = "") -> dict[str, Any]:
        replies = [r if isinstance(r, dict) else {"text": r} for r in self.script.get("replies", ())]
        for reply in replies:
            if reply.get("match") and reply["match"] in prompt:
                return reply
        unmatched = [reply for reply in replies if not reply.get("match")]
        if not unmatched:
            last_user = prompt.rsplit("<|user|>\n", 1)[-1].split("<|end|>", 1)[0]
            return {"text": f"You said: {last_user}{media}"}
        reply = unmatched[self._turn % len(unmatched)]
        self._turn += 1
        return reply

    async def generate(self, request: GenerationRequest) -> AsyncIterator[EngineEvent]:
        self.check_health()
        self.requests.append(request)
        media = describe_media(request)
        self._log("request", request, prompt=request.prompt, params=request.params.model_dump(mode="json"),
                  **({"media": media} if media else {}))
        reply = self._reply(request.prompt, "".join(f" [{item}]" for item in media))
        if reply.get("die"):
            self._dead = True
            self.check_health()
        pieces = _split(reply["text"])
        prompt_tokens, budget = len(request.prompt_token_ids), request.max_tokens
        produced = 0
        try:
            for piece in pieces[:budget]:
                if request.request_id in self._aborted:
                    break
                if reply.get("error_after") is not None and produced >= reply["error_after"]:
                    raise EngineError("The scripted engine failed mid-answer (as its script says).")
                await asyncio.sleep(self.script.get("delay", 0))
                produced += 1
                logprobs = (TokenLogprob(piece, self.tokenize(piece)[0], 0.0),) if request.params.logprobs else ()
                yield TextDelta(piece, 1, tuple(self.tokenize(piece)), logprobs)
            if request.request_id in self._aborted:
                self._log("abort", request, tokens=produced)
                yield Finished("abort", prompt_tokens, produced)
                return
            reason = reply.get("finish_reason") or ("length" if len(pieces) > budget else "stop")
            completion = produced + (1 if reason == "stop" else 0)
            self._log("finish", request, reason=reason, tokens=produced)
            yield Finished(reason, prompt_tokens, completion)
        finally:
            if produced < min(len(pieces), budget) and request.request_id not in self._aborted:
                self._log("abort", request, tokens=produced)

    async def prompt_logprobs(self, token_ids: Sequence[int], top: int = 0) -> list[TokenLogprob | None]:
        """Scripted: every prompt token after the first has log-probability -1 (and is its own top choice)."""
        pieces = [self._pieces[i] for i in token_ids]
        return [None] + [TokenLogprob(piece, token, -1.0, ((piece, token, -1.0),) if top else (), rank=1)
                         for piece, token in zip(pieces[1:], token_ids[1:])]

    async def abort(self, request_id: str) -> None:
        self._aborted.add(request_id)

    async def score(self, texts: Sequence[str], max_length: int | None = None) -> list[float]:
        return [float(len(_split(text))) for text in texts]

    async def embed(self, request: EmbedRequest) -> list[list[float]]:
        size = self.info.pooling.embedding_size
        vectors = []
        for ids in request.inputs:
            vector = [0.0] * size
            for token in ids:
                vector[token % size] += 1.0
            vectors.append(vector)
        return vectors

    async def score_pairs(self, request: PairScoreRequest) -> PairScores:
        scores, tokens = [], 0
        for first, second in request.pairs:
            one, two = ({word.strip() for word in _split(text.lower())} for text in (first, second))
            scores.append(float(len(one & two)))
            tokens += len(_split(first)) + len(_split(second))
        return PairScores(tuple(scores), tokens)

    def _log(self, event: str, request: GenerationRequest, **fields: Any) -> None:
        path = self.script.get("log")
        if path:
            with open(path, "a", encoding="utf-8") as log:
                log.write(json.dumps({"event": event, "request_id": request.request_id, **fields}) + "\n")


def describe_media(request: GenerationRequest) -> list[str]:
    """``image 64x48``, ``video 4x32x24`` (frames x width x height), ``audio 16000@16000`` (samples @ rate): what
    the decoded media of a request are, in prompt order by kind."""
    described = [f"image {image.width}x{image.height}" for image in request.images]
    described += [f"video {len(clip.frames)}x{clip.frames[0].width}x{clip.frames[0].height}" for clip in request.videos]
    described += [f"audio {len(clip.waveform)}@{clip.sampling_rate}" for clip in request.audios]
    return described


def _split(text: str) -> list[str]:
    # token by token, as a real tokenizer works through a text: one findall over a huge prompt would hold the GIL
    # for the whole of it, which no real tokenizer does
    return [match.group() for match in _TOKEN.finditer(text)]
