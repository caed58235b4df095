"""The shared end of the vLLM and SGLang engines' streams (engines/backend_stream.py), driven by a backend stream
written here: a backend error becomes an EngineError, leaving early aborts the request, the stream always closes."""

from __future__ import annotations

import asyncio

import pytest

from lmchat.engines.backend_stream import backend_stream
from lmchat.errors import EngineError


class Backend:
    """An in-process backend: a stream of outputs per request, an abort that records the request id."""

    name, label = "demo", "demo backend"

    def __init__(self, outputs, fail_after=None):
        self.outputs, self.fail_after = outputs, fail_after
        self.aborted: list[str] = []
        self.closed = False

    async def stream(self):
        try:
            for i, output in enumerate(self.outputs):
                if self.fail_after is not None and i >= self.fail_after:
                    raise ValueError("out of memory")
                await asyncio.sleep(0)
                yield output
        finally:
            self.closed = True

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    async def generate(self, request_id: str):
        """What an engine's generate does: relay outputs, mark the request finished at the last one."""
        stream = self.stream()
        async with backend_stream(self, request_id, stream) as state:
            async for output in stream:
                state.finished = output == "end"
                yield output


async def _all(events):
    return [event async for event in events]


def test_a_finished_request_is_not_aborted_and_its_stream_closes():
    backend = Backend(["a", "b", "end"])
    assert asyncio.run(_all(backend.generate("r1"))) == ["a", "b", "end"]
    assert backend.aborted == [] and backend.closed


def test_leaving_early_aborts_the_request():
    backend = Backend(["a", "b", "c", "end"])

    async def first_only():
        events = backend.generate("r2")
        first = await anext(events)
        await events.aclose()
        return first

    assert asyncio.run(first_only()) == "a"
    assert backend.aborted == ["r2"] and backend.closed


def test_a_backend_error_becomes_an_engine_error_naming_the_engine():
    backend = Backend(["a", "b", "end"], fail_after=1)
    with pytest.raises(EngineError, match="The demo backend engine failed: out of memory"):
        asyncio.run(_all(backend.generate("r3")))
    assert backend.aborted == ["r3"] and backend.closed
