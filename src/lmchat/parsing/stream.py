"""What every incremental answer splitter shares: text in with ``feed``, merged :class:`OutputDelta`s out."""

from __future__ import annotations

from lmchat.parsing.types import OutputDelta, merge_deltas


class TextStream:
    """Base of the tool-call and reasoning streams: subclasses implement ``_drain`` (and their own ``finish``),
    appending to ``_out``; ``feed`` and ``_flush`` are the same for all."""

    def __init__(self) -> None:
        self._buffer = ""
        self._finished = False
        self._out: list[OutputDelta] = []

    def feed(self, delta: str) -> list[OutputDelta]:
        """Take the next piece of the answer; returns what it decided."""
        if self._finished:
            raise RuntimeError("feed() after finish(): start a new stream for a new answer")
        self._buffer += delta
        self._drain(final=False)
        return self._flush()

    def _drain(self, final: bool) -> None:
        raise NotImplementedError

    def _flush(self) -> list[OutputDelta]:
        out, self._out = merge_deltas(self._out), []
        return out
