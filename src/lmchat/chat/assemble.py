"""The one answer assembler: an answer's :class:`ChatChunk` items folded into its :class:`Response`.

Non-streamed calls (``chat``, ``agenerate``), the server's responses and usage, the web UI and the CLI all read
answers through it, so a streamed answer and the same answer in one piece agree by construction. The chunks are
already parsed and carry the final finish reason (``tool_calls`` when an answer that stopped called tools, decided
once in :mod:`lmchat.chat.sequences`); nothing here parses or decides again.
"""

from __future__ import annotations

from lmchat.chat.response import ChatChunk, FinishReason, Response
from lmchat.engines.events import TokenLogprob
from lmchat.parsing import OutputDelta, collect


class AnswerAssembler:
    """The chunks of answer ``index`` so far; :meth:`response` is the answer they make."""

    def __init__(self, index: int = 0, prompt_tokens: int = 0) -> None:
        self.index = index
        self.prompt_tokens = prompt_tokens  # until the final chunk reports the engine's count
        self.completion_tokens = 0
        self.cached_tokens = 0
        self.finish_reason: FinishReason | None = None
        self._text: list[str] = []
        self._deltas: list[OutputDelta] = []
        self._logprobs: list[TokenLogprob] = []

    def add(self, chunk: ChatChunk) -> None:
        self._text.append(chunk.text)
        if chunk.content or chunk.reasoning or chunk.tool_calls:
            self._deltas.append(OutputDelta(chunk.content, chunk.reasoning, list(chunk.tool_calls)))
        self._logprobs.extend(chunk.logprobs)
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
            self.prompt_tokens = chunk.prompt_tokens or self.prompt_tokens
            self.completion_tokens = chunk.completion_tokens
            self.cached_tokens = chunk.cached_tokens

    @property
    def text(self) -> str:
        """The raw answer text so far."""
        return "".join(self._text)

    def response(self, finish_reason: FinishReason | None = None, completion_tokens: int | None = None) -> Response:
        """The answer. One that has not finished (stopped by its reader, or still streaming) needs the
        ``finish_reason`` to report; ``completion_tokens`` then counts what was generated."""
        reason = self.finish_reason or finish_reason
        if reason is None:
            raise ValueError(f"answer {self.index} has not finished: give the finish_reason to report")
        parsed = collect(self._deltas)
        return Response(
            response_text=self.text,
            response_length=self.completion_tokens if completion_tokens is None else completion_tokens,
            prompt_length=self.prompt_tokens,
            finish_reason=reason,
            index=self.index,
            content=parsed.content,
            reasoning_text=parsed.reasoning,
            tool_calls=parsed.tool_calls,
            logprobs=list(self._logprobs) or None,
            cached_tokens=self.cached_tokens,
        )


def collect_responses(chunks: list[ChatChunk], n: int, prompt_tokens: int) -> list[Response]:
    """Assemble streamed chunks into one Response per answer (so streamed == non-streamed by construction)."""
    answers = [AnswerAssembler(i, prompt_tokens) for i in range(n)]
    for chunk in chunks:
        answers[chunk.index].add(chunk)
    return [answer.response() for answer in answers]
