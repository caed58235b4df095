"""The results file: JSON lines appended and flushed one by one, read back to resume, put in input order at the end.

A killed run leaves complete lines plus at most one partial last line; opening the file again cuts that partial
line off, so only the rows that were in flight are lost.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from lmchat.batch.records import is_failed, record_id


class ResultsFile:
    """Append-only JSONL results. ``done`` holds the ids already answered (failed ones too, unless retried)."""

    def __init__(self, path: str | Path, *, overwrite: bool = False, retry_failed: bool = False) -> None:
        self.path = Path(path)
        self.done: set[str] = set()
        self.repaired = False
        self._handle: IO[str] | None = None
        if overwrite and self.path.exists():
            self.path.unlink()
        if self.path.exists():
            self.repaired = _cut_partial_line(self.path)
            if retry_failed:
                _rewrite(self.path, [line for line in read_lines(self.path) if not is_failed(line)])
            self.done = {rid for line in read_lines(self.path) if (rid := record_id(line)) is not None}

    def open(self) -> ResultsFile:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("a", encoding="utf-8")
        return self

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one line and flush it, so a crash after this call keeps it."""
        assert self._handle is not None, "open() the results file first"
        self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._handle.flush()
        rid = record_id(record)
        if rid is not None:
            self.done.add(rid)

    def close(self) -> None:
        if self._handle is not None and not self._handle.closed:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()

    def sort(self, order: Mapping[str, int]) -> None:
        """Rewrite the file in input order (lines of unknown ids last), atomically."""
        lines = list(read_lines(self.path))
        lines.sort(key=lambda line: order.get(record_id(line) or "", len(order)))
        _rewrite(self.path, lines)

    def __enter__(self) -> ResultsFile:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_lines(path: str | Path) -> Iterator[dict[str, Any]]:
    """The complete, valid JSON object lines of a results file."""
    with Path(path).open(encoding="utf-8") as handle:
        for line in handle:
            if not line.endswith("\n"):
                break
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                yield value


def _cut_partial_line(path: Path) -> bool:
    """Drop a last line that has no newline (a write cut off by a kill); True when something was cut."""
    with path.open("rb+") as handle:
        data = handle.read()
        if not data or data.endswith(b"\n"):
            return False
        handle.truncate(data.rfind(b"\n") + 1)
        return True


def _rewrite(path: Path, lines: list[dict[str, Any]]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        for line in lines:
            handle.write(json.dumps(line, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
