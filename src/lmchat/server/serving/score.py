"""Reward scoring: LLaMA-Factory's ``/v1/score/evaluation`` (pre-templated texts) and
``/v1/score/conversations`` (the server applies the chat template)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence

from lmchat.chat.messages import build_conversation
from lmchat.chat.options import check_template_kwargs
from lmchat.errors import LmchatError
from lmchat.server.protocol import ScoreConversationsRequest, ScoreEvaluationRequest, ScoreResponse
from lmchat.server.protocol_messages import as_dicts
from lmchat.server.serving.base import ServerState


class ServingScore:
    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def evaluate(self, body: ScoreEvaluationRequest) -> ScoreResponse:
        self.state.check_model(body.model)
        scores = await self._scores(body.messages, body.max_length, param="messages")
        return ScoreResponse(id=f"scoreeval-{uuid.uuid4().hex}", object="score.evaluation",
                             model=self.state.model_name, scores=scores)

    async def score_conversations(self, body: ScoreConversationsRequest) -> ScoreResponse:
        self.state.check_model(body.model)
        texts = await asyncio.to_thread(self._render, body)  # templates: off the event loop
        scores = await self._scores(texts, body.max_length, param="conversations")
        return ScoreResponse(id=f"scoreconv-{uuid.uuid4().hex}", object="score.conversations",
                             model=self.state.model_name, scores=scores)

    def _render(self, body: ScoreConversationsRequest) -> list[str]:
        model = self.state.chat_model
        tools = as_dicts(body.tools)
        kwargs = check_template_kwargs(body.chat_template_kwargs or {})
        texts = []
        for i, conversation in enumerate(body.conversation_dicts()):
            try:
                messages = build_conversation(conversation, None, model.config.default_system)
                texts.append(model.render(messages, tools, add_generation_prompt=False, **kwargs))
            except LmchatError as exc:
                exc.message = f"conversations[{i}]: {exc.message}"
                exc.param = "conversations"
                raise
        return texts

    async def _scores(self, texts: Sequence[str], max_length: int | None, param: str) -> list[float]:
        lease = await self.state.admission.acquire()
        began = time.perf_counter()
        try:
            scores = await self.state.chat_model.aget_scores(list(texts), max_length=max_length)
        except LmchatError as exc:
            exc.param = param if exc.param == "batch_input" else exc.param
            raise
        finally:
            lease.release()
            self.state.metrics.request_latency.observe(time.perf_counter() - began)
        return [float(score) for score in scores]
