"""One input row as lmchat sees it, and the converters from each data format to it.

Formats: LLaMA-Factory's ``alpaca`` and ``sharegpt`` (with ``dataset_info.json`` column and tag mappings), OpenAI
messages (``messages``, optional ``tools``), and OpenAI Batch API request lines (``custom_id``, ``body``). A row that
cannot be converted becomes a :class:`Row` with ``error`` set, so the run records it and goes on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lmchat.chat.messages import MEDIA_KINDS, part_media
from lmchat.errors import ConfigError, LmchatError

Format = Literal["alpaca", "sharegpt", "openai", "openai_batch"]
FORMATS: tuple[str, ...] = ("alpaca", "sharegpt", "openai", "openai_batch")
# Body keys of an OpenAI Batch request that are not generation options (tool_choice, parallel_tool_calls and
# response_format are: the facade reads them with the tools).
_BATCH_BODY_KEYS = {"model", "messages", "tools", "stream", "user", "metadata", "store", "stream_options"}


@dataclass(frozen=True)
class Row:
    """A conversation to complete, with its reference answer and per-row generation options."""

    id: str
    messages: list[dict[str, Any]]
    system: str | None = None
    tools: Any = None
    images: tuple[Any, ...] = ()
    videos: tuple[Any, ...] = ()
    audios: tuple[Any, ...] = ()
    label: str | None = None
    generation: dict[str, Any] = field(default_factory=dict)
    is_openai_batch: bool = False
    position: int = 0
    error: str | None = None
    adapter: str | None = None  # the named LoRA adapter of this row (its adapter column; a batch body's model)


@dataclass
class Columns:
    """LLaMA-Factory's ``DatasetAttr`` columns and tags (its defaults; ``columns``/``tags`` override them)."""

    system: str | None = None
    tools: str | None = None
    images: str | None = None
    videos: str | None = None
    audios: str | None = None
    prompt: str | None = "instruction"
    query: str | None = "input"
    response: str | None = "output"
    history: str | None = None
    messages: str | None = "conversations"
    role_tag: str = "from"
    content_tag: str = "value"
    user_tag: str = "human"
    assistant_tag: str = "gpt"
    observation_tag: str = "observation"
    function_tag: str = "function_call"
    system_tag: str = "system"
    adapter: str | None = "adapter"  # lmchat's: the named LoRA adapter that answers the row

    @classmethod
    def from_dataset_info(cls, formatting: str, entry: Mapping[str, Any]) -> Columns:
        """As LLaMA-Factory reads it: a ``columns`` mapping replaces every column it could name (absent ones: None)."""
        columns = cls()
        if "columns" in entry:
            names = ["system", "tools", "images", "videos", "audios"]
            names += ["prompt", "query", "response", "history"] if formatting == "alpaca" else ["messages"]
            for name in names:
                setattr(columns, name, entry["columns"].get(name))
        if formatting == "sharegpt":
            for tag, value in (entry.get("tags") or {}).items():
                if hasattr(columns, tag) and tag.endswith("_tag"):
                    setattr(columns, tag, value)
        return columns


@dataclass(frozen=True)
class Source:
    """Where rows come from: their format, column mapping, id prefix and the folder media paths are relative to."""

    name: str
    format: Format
    columns: Columns = field(default_factory=Columns)
    media_dir: Path = Path(".")


def detect_format(record: Mapping[str, Any]) -> tuple[Format, Columns]:
    """Guess a row's format from its keys (``--format auto``)."""
    if "custom_id" in record and "body" in record:
        return "openai_batch", Columns()
    for key in ("messages", "conversations"):
        turns = record.get(key)
        if isinstance(turns, list) and turns and isinstance(turns[0], Mapping):
            if "from" in turns[0] and "value" in turns[0]:
                return "sharegpt", Columns(messages=key, tools="tools", system="system", images="images")
            if "role" in turns[0]:
                return "openai", Columns(messages=key, images="images")
    if "instruction" in record:
        return "alpaca", Columns(system="system", tools="tools", history="history", images="images")
    raise ConfigError(
        f"Cannot tell the format of a row with keys {sorted(record)}; expected alpaca (instruction, input, output), "
        "sharegpt (conversations of from/value), OpenAI messages (messages), or OpenAI Batch (custom_id, body). "
        "Choose one with --format."
    )


def convert(record: Mapping[str, Any], source: Source, index: int, position: int) -> Row:
    """The :class:`Row` of one record; a record that cannot be converted gives a row with ``error``."""
    row_id = default_id(record, source, index)
    try:
        if not isinstance(record, Mapping):
            raise _RowError(f"a row must be an object, got {type(record).__name__}")
        converter = _CONVERTERS[source.format]
        return converter(record, source, row_id, position)
    except _RowError as exc:
        return Row(id=row_id, messages=[], position=position, error=f"Row {row_id}: {exc}")


def default_id(record: Any, source: Source, index: int) -> str:
    if isinstance(record, Mapping):
        for key in ("custom_id", "id"):
            if isinstance(record.get(key), (str, int)) and not isinstance(record.get(key), bool):
                return str(record[key])
    return f"{source.name}-{index:05d}"


class _RowError(Exception):
    """A row that cannot be converted (recorded as a failed row, the run goes on)."""


# --- alpaca -------------------------------------------------------------------------------------------------
def _alpaca(record: Mapping[str, Any], source: Source, row_id: str, position: int) -> Row:
    cols = source.columns
    messages: list[dict[str, Any]] = []
    for pair in _get(record, cols.history) or []:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise _RowError("history must be a list of [question, answer] pairs")
        messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    query = [text for text in (_get(record, cols.prompt), _get(record, cols.query)) if text]
    if not query:
        raise _RowError(f"no instruction (column '{cols.prompt}')")
    messages.append({"role": "user", "content": "\n".join(str(text) for text in query)})
    response = _get(record, cols.response)
    return Row(
        id=row_id, messages=messages, system=_get(record, cols.system) or None, tools=_get(record, cols.tools) or None,
        label=response if isinstance(response, str) else None, position=position, adapter=_adapter(record, cols),
        **_media(record, source),
    )


# --- sharegpt -----------------------------------------------------------------------------------------------
def _sharegpt(record: Mapping[str, Any], source: Source, row_id: str, position: int) -> Row:
    cols = source.columns
    turns = _get(record, cols.messages)
    if not isinstance(turns, list) or not turns:
        raise _RowError(f"no conversation (column '{cols.messages}')")
    roles = {cols.user_tag: "user", cols.assistant_tag: "assistant", cols.observation_tag: "observation",
             cols.function_tag: "function", cols.system_tag: "system"}
    system = _get(record, cols.system) or None
    messages = []
    for turn in turns:
        if not isinstance(turn, Mapping) or turn.get(cols.role_tag) not in roles:
            tag = turn.get(cols.role_tag) if isinstance(turn, Mapping) else turn
            raise _RowError(f"unknown role tag {tag!r} (expected one of {', '.join(map(repr, roles))})")
        messages.append({"role": roles[turn[cols.role_tag]], "content": turn.get(cols.content_tag)})
    if messages[0]["role"] == "system":
        system = messages.pop(0)["content"]
    messages, label = _split_label(messages)
    return Row(
        id=row_id, messages=messages, system=system, tools=_get(record, cols.tools) or None, label=label,
        position=position, adapter=_adapter(record, cols), **_media(record, source),
    )


# --- OpenAI messages and OpenAI Batch -----------------------------------------------------------------------
def _openai(record: Mapping[str, Any], source: Source, row_id: str, position: int) -> Row:
    turns = _get(record, source.columns.messages or "messages")
    if not isinstance(turns, list) or not turns:
        raise _RowError("no messages")
    messages, label = _split_label([dict(turn) if isinstance(turn, Mapping) else turn for turn in turns])
    for key in ("reference", "label"):
        if label is None and isinstance(record.get(key), str):
            label = record[key]
    messages, in_parts = _take_part_media(messages, source.media_dir)
    media = _media(record, source)
    media = {kind: media[kind] + in_parts[kind] for kind in media}
    return Row(id=row_id, messages=messages, tools=record.get("tools") or None, label=label, position=position,
               adapter=_adapter(record, source.columns), **media)


def _openai_batch(record: Mapping[str, Any], source: Source, row_id: str, position: int) -> Row:
    url = record.get("url", "/v1/chat/completions")
    if url != "/v1/chat/completions":
        raise _RowError(f"url {url!r} is not supported; batch inference runs /v1/chat/completions requests")
    body = record.get("body")
    if not isinstance(body, Mapping) or not isinstance(body.get("messages"), list):
        raise _RowError("body must be a chat completion request with messages")
    if body.get("stream"):
        raise _RowError("stream: true is not possible in a batch")
    generation = {key: value for key, value in body.items() if key not in _BATCH_BODY_KEYS | {"adapter"}}
    adapter = body.get("adapter", body.get("model"))  # a model naming a served adapter chooses it (the sampler)
    messages = [dict(turn) if isinstance(turn, Mapping) else turn for turn in body["messages"]]
    messages, media = _take_part_media(messages, source.media_dir)
    return Row(id=row_id, messages=messages, tools=body.get("tools") or None, generation=generation,
               is_openai_batch=True, position=position, adapter=_checked_adapter(adapter), **media)


_CONVERTERS = {"alpaca": _alpaca, "sharegpt": _sharegpt, "openai": _openai, "openai_batch": _openai_batch}


# --- helpers ------------------------------------------------------------------------------------------------
def _adapter(record: Mapping[str, Any], columns: Columns) -> str | None:
    return _checked_adapter(_get(record, columns.adapter))


def _checked_adapter(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _RowError(f"adapter must be an adapter's name, got {type(value).__name__}")
    return value


def _get(record: Mapping[str, Any], column: str | None) -> Any:
    return record.get(column) if column else None


def _split_label(messages: list[Any]) -> tuple[list[Any], str | None]:
    """A conversation that ends with the assistant: the prompt is the rest, the last turn is the reference."""
    last = messages[-1] if messages else None
    if not isinstance(last, Mapping) or last.get("role") not in ("assistant", "function") or len(messages) < 2:
        return messages, None
    content = last.get("content")
    if not content and last.get("tool_calls"):
        calls = [call.get("function", call) for call in last["tool_calls"]]
        content = json.dumps([{"name": c.get("name"), "arguments": c.get("arguments")} for c in calls])
    return messages[:-1], content if isinstance(content, str) else None


def _media(record: Mapping[str, Any], source: Source) -> dict[str, tuple[Any, ...]]:
    """Images, videos and audios of a row; relative paths are resolved against the dataset's folder."""
    media = {}
    for kind in ("images", "videos", "audios"):
        value = _get(record, getattr(source.columns, kind))
        items = value if isinstance(value, list) else [value] if value else []
        media[kind] = tuple(_resolve(item, source.media_dir) for item in items)
    return media


def _take_part_media(messages: list[Any], media_dir: Path) -> tuple[list[Any], dict[str, tuple[Any, ...]]]:
    """The media of the messages' content parts (any vocabulary ``ChatModel.prepare`` reads), relative paths
    resolved against the dataset's folder, in order; in the messages each such part becomes a placeholder
    (``{"type": "image"}``), which stands for the row's next image as LLaMA-Factory's ``<image>`` does."""
    media: dict[str, list[Any]] = {kind: [] for kind in MEDIA_KINDS}
    taken = []
    for message in messages:
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, list):
            message = {**message, "content": [_take(part, media, media_dir) for part in content]}
        taken.append(message)
    return taken, {kind + "s": tuple(items) for kind, items in media.items()}


def _take(part: Any, media: dict[str, list[Any]], media_dir: Path) -> Any:
    try:
        found = part_media(part) if isinstance(part, Mapping) else None
    except LmchatError as exc:
        raise _RowError(exc.message) from None
    if found is None or found[1] is None:
        return part
    kind, source = found
    media[kind].append(_resolve(source, media_dir))
    return {"type": kind}


def _resolve(item: Any, media_dir: Path) -> Any:
    if isinstance(item, str) and not item.startswith(("http://", "https://", "data:", "/")):
        return str(media_dir / item)
    return item
