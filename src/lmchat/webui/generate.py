"""Answer a conversation through :class:`~lmchat.chat.chat_model.ChatModel`, with a stop flag per browser session.

:meth:`Answerer.stream` yields :class:`Progress` snapshots; it never raises. A user's error (an LmchatError) and
an engine failure both end the stream with a readable ``notice``. Stop sets the session's flag; the stream then
leaves the facade's iterator, which aborts the request in the engine.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from lmchat.chat.chat_model import ChatModel
from lmchat.errors import InvalidRequestError, LmchatError
from lmchat.webui.answer import AnswerBuilder
from lmchat.webui.conversation import Message, can_answer

log = logging.getLogger(__name__)
_UPDATE_EVERY = 0.05  # seconds between two streamed updates of the page
BASE_MODEL = "base model"  # the model dropdown's first choice: no adapter


@dataclass(frozen=True)
class Options:
    """The page's generation controls."""

    temperature: float
    top_p: float
    top_k: int
    max_new_tokens: int
    seed: str | None = None
    enable_thinking: bool | None = None
    adapter: str | None = None  # a named LoRA adapter (the page's model choice); None or BASE_MODEL: the base model

    def generation_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "temperature": float(self.temperature), "top_p": float(self.top_p),
            "top_k": int(self.top_k), "max_new_tokens": int(self.max_new_tokens),
        }
        seed = str(self.seed or "").strip()
        if seed:
            if not seed.lstrip("-").isdigit():
                raise InvalidRequestError(f"The seed must be a whole number, not '{seed}'.", param="seed")
            kwargs["seed"] = int(seed)
        if self.enable_thinking is not None:
            kwargs["enable_thinking"] = bool(self.enable_thinking)
        if self.adapter and self.adapter != BASE_MODEL:
            kwargs["adapter"] = str(self.adapter)
        return kwargs


@dataclass(frozen=True)
class Progress:
    """The conversation with the answer so far; ``done`` on the last snapshot, with ``stats`` or a ``notice``."""

    messages: list[Message]
    notice: str = ""
    stats: str = ""
    done: bool = False


class Answerer:
    """Streams answers for every browser session of one model."""

    def __init__(self, model: ChatModel) -> None:
        self.model = model
        self._stops: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def stop(self, session: str) -> bool:
        """Ask the session's running answer to stop; False when none is running."""
        with self._lock:
            flag = self._stops.get(session)
        if flag is None:
            return False
        flag.set()
        return True

    def stream(self, session: str, messages: list[Message], system: str, tools: str,
               options: Options) -> Iterator[Progress]:
        if not can_answer(messages):
            yield Progress(messages, done=True)
            return
        flag = threading.Event()
        with self._lock:
            self._stops[session] = flag
        try:
            yield from self._answer(messages, system, tools, options, flag)
        finally:
            with self._lock:
                if self._stops.get(session) is flag:
                    del self._stops[session]

    def _answer(self, messages: list[Message], system: str, tools: str, options: Options,
                flag: threading.Event) -> Iterator[Progress]:
        answer = AnswerBuilder()
        try:
            prepared = self.model.prepare(  # the media are the messages' own content parts
                messages, system=system.strip() or None, tools=tools.strip() or None, **options.generation_kwargs(),
            )
            chunks = self.model.stream_chunks(prepared)
            last_update = 0.0
            for chunk in chunks:
                answer.feed(chunk)
                if flag.is_set():
                    chunks.close()  # leaving the facade's iterator aborts the request in the engine
                    answer.finish("abort", prepared.prompt_tokens, self.model.engine.count_tokens(answer.raw))
                    break
                if time.monotonic() - last_update >= _UPDATE_EVERY:
                    last_update = time.monotonic()
                    yield Progress([*messages, answer.message()])
        except LmchatError as exc:
            yield Progress(_with_partial(messages, answer), notice=exc.message, done=True)
            return
        except Exception as exc:  # an unexpected failure still ends as a message in the page, never a spinner
            log.exception("web chat answer failed")
            yield Progress(_with_partial(messages, answer), notice=f"{type(exc).__name__}: {exc}", done=True)
            return
        if answer.finish_reason is None:
            answer.finish("stop", prepared.prompt_tokens)
        yield Progress([*messages, answer.message()], stats=answer.stats(), done=True)


def _with_partial(messages: list[Message], answer: AnswerBuilder) -> list[Message]:
    partial = answer.message()
    has_answer = partial["content"] or partial.get("reasoning_content") or partial.get("tool_calls")
    return [*messages, partial] if has_answer else list(messages)
