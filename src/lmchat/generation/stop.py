"""Stop strings, applied once for every engine: hold back text that may start a stop string, cut at a match."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StopMatcher:
    """Feed text deltas; get the text that is safe to emit, and whether a stop string ended the answer."""

    stops: tuple[str, ...]
    _pending: str = ""
    include_stop: bool = False  # vLLM's include_stop_str_in_output: the matched stop string stays in the text
    stopped: bool = field(default=False, init=False)
    matched: str | None = field(default=None, init=False)

    def feed(self, text: str) -> str:
        """Return the part of ``pending + text`` that can be emitted now."""
        if self.stopped:
            return ""
        buffer = self._pending + text
        cut = self._first_stop(buffer)
        if cut is not None:
            self.stopped = True
            self._pending = ""
            self.matched = min((stop for stop in self.stops if buffer.find(stop) == cut), key=len)
            return buffer[: cut + len(self.matched)] if self.include_stop else buffer[:cut]
        keep = self._partial_suffix(buffer)
        self._pending = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """The held-back text once the answer ended for another reason."""
        text, self._pending = self._pending, ""
        return text

    def _first_stop(self, buffer: str) -> int | None:
        positions = [pos for pos in (buffer.find(stop) for stop in self.stops) if pos >= 0]
        return min(positions) if positions else None

    def _partial_suffix(self, buffer: str) -> int:
        """Length of the longest end of ``buffer`` that is a proper start of some stop string."""
        longest = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(buffer)), longest, -1):
                if buffer.endswith(stop[:size]):
                    longest = size
                    break
        return longest
