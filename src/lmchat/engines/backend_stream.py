"""The end of a request's stream, for engines that drive an asyncio backend in-process (vLLM, SGLang).

Engines with a model thread use :class:`lmchat.engines.threaded.EventChannel` instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lmchat.errors import EngineError

if TYPE_CHECKING:
    from lmchat.engines.base import BaseEngine


@dataclass
class StreamState:
    """Set ``finished`` once the backend reported the request's end."""

    finished: bool = False


@asynccontextmanager
async def backend_stream(engine: BaseEngine, request_id: str, stream: Any,
                         errors: tuple[type[Exception], ...] = (ValueError,)) -> AsyncIterator[StreamState]:
    """Around the loop over a backend's output ``stream``: one of the backend's ``errors`` becomes an
    :class:`EngineError` naming the engine; leaving before the request finished (the consumer closed the stream, or
    an error) aborts it in the backend; the backend's stream is closed either way."""
    state = StreamState()
    try:
        yield state
    except errors as exc:
        raise EngineError(f"The {engine.label or engine.name} engine failed: {exc}") from exc
    finally:
        if not state.finished:
            await engine.abort(request_id)
        await stream.aclose()
