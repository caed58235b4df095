"""``lmchat score``: reward scores of texts, one per line in, one score per line out."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from lmchat.errors import InvalidRequestError

BATCH_SIZE = 16


def read_texts(stream: TextIO, source: str = "stdin") -> Iterator[str]:
    """Texts from plain lines or JSONL objects with a ``text`` field; blank lines are skipped."""
    for number, line in enumerate(stream, start=1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            yield _json_text(line, f"{source} line {number}")
        else:
            yield line


def _json_text(line: str, where: str) -> str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InvalidRequestError(f"{where} is not valid JSON: {exc.msg}.") from None
    text = record.get("text") if isinstance(record, dict) else None
    if not isinstance(text, str):
        raise InvalidRequestError(f"{where}: a JSON line needs a string 'text' field.")
    return text


def score_stream(model: Any, texts: Iterator[str], out: TextIO) -> int:
    """Score ``texts`` in batches, printing each batch's scores as soon as they are known; returns the count."""
    batch: list[str] = []
    count = 0
    for text in texts:
        batch.append(text)
        if len(batch) == BATCH_SIZE:
            count += _flush(model, batch, out)
    if batch:
        count += _flush(model, batch, out)
    return count


def _flush(model: Any, batch: list[str], out: TextIO) -> int:
    for score in model.get_scores(batch):
        out.write(f"{score}\n")
    out.flush()
    size = len(batch)
    batch.clear()
    return size


def run_score(model_args: dict[str, Any], input_path: str | None) -> int:
    """Open the input first (a missing file fails before the model loads), then score it."""
    from lmchat.chat.chat_model import ChatModel

    if input_path in (None, "-"):
        stream, source = contextlib.nullcontext(sys.stdin), "stdin"
    else:
        stream, source = Path(input_path).expanduser().open(encoding="utf-8"), input_path
    with stream as lines, ChatModel(model_args) as model:
        score_stream(model, read_texts(lines, source), sys.stdout)
    return 0
