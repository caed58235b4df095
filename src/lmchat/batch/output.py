"""The results file: JSON lines appended and flushed one by one, read back to resume, put in input order at the end.

A killed run leaves complete lines plus at most one partial last line; opening the file again cuts that partial
line off, so only the rows that were in flight are lost. One run at a time owns a results file: an exclusive lock
(``flock`` on ``<output>.lock``, removed at the end of the run and released by the kernel when the process ends,
even by kill -9) makes a second run
on the same file fail at once. A file that holds one id twice (written before the lock existed) is de-duplicated
when it is resumed: the first answered line of each id is kept.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from lmchat.batch.records import is_failed, record_id
from lmchat.errors import ConfigError


class ResultsFile:
    """Append-only JSONL results. ``done`` holds the ids already answered (failed ones too, unless retried)."""

    def __init__(self, path: str | Path, *, overwrite: bool = False, retry_failed: bool = False) -> None:
        self.path = Path(path)
        self.done: set[str] = set()
        self.repaired = False
        self._handle: IO[str] | None = None
        self._lock = _lock(self.path)
        try:
            if overwrite and self.path.exists():
                self.path.unlink()
            if self.path.exists():
                self.repaired = _cut_partial_line(self.path)
                lines = list(read_lines(self.path))
                kept = unique_lines(line for line in lines if not (retry_failed and is_failed(line)))
                if len(kept) < len(lines):
                    self.removed = len(lines) - len(kept)
                    _rewrite(self.path, kept)
                self.done = {rid for line in kept if (rid := record_id(line)) is not None}
        except BaseException:
            self.release()
            raise

    removed = 0  # lines dropped on opening: failed ones (retry_failed) and repeated ids

    def release(self) -> None:
        """Give up the file's lock (the end of the run)."""
        if not self._lock.closed:
            lock_path_of(self.path).unlink(missing_ok=True)  # while still holding it (see _lock)
            self._lock.close()  # closing the descriptor releases the flock

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
        lines = unique_lines(read_lines(self.path))
        lines.sort(key=lambda line: order.get(record_id(line) or "", len(order)))
        _rewrite(self.path, lines)

    def __enter__(self) -> ResultsFile:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def unique_lines(lines: Iterator[dict[str, Any]] | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per id: an answered line wins over a failed one, else the first; lines without an id are kept."""
    chosen: dict[str, int] = {}
    kept: list[dict[str, Any] | None] = []
    for line in lines:
        rid = record_id(line)
        if rid is None:
            kept.append(line)
        elif rid not in chosen:
            chosen[rid] = len(kept)
            kept.append(line)
        elif is_failed(kept[chosen[rid]]) and not is_failed(line):
            kept[chosen[rid]] = None
            chosen[rid] = len(kept)
            kept.append(line)
    return [line for line in kept if line is not None]


def lock_path_of(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _lock(path: Path) -> IO[bytes]:
    """An exclusive, non-blocking lock on ``<path>.lock``; a clear error when another run holds it. The lock file
    is removed when the run ends, so the lock taken must be on the file still at that path (else try again)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = lock_path_of(path)
    while True:
        handle = lock_path.open("ab")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise ConfigError(
                f"Another run is writing {path} (it holds {lock_path}). Wait for it to finish, or give this run "
                "another --output (two runs on one file would answer the same rows twice).", param="output",
            ) from None
        try:
            if os.fstat(handle.fileno()).st_ino == os.stat(lock_path).st_ino:
                return handle
        except FileNotFoundError:
            pass
        handle.close()  # the run that held it removed it meanwhile: lock the new one


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
