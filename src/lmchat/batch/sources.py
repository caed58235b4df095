"""Read rows from files (JSON, JSONL, Parquet, CSV), folders of them, ``datasets`` saved on disk, and
LLaMA-Factory's ``dataset_info.json`` names."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from lmchat.batch.rows import FORMATS, Columns, Row, Source, convert, detect_format
from lmchat.errors import ConfigError, require, unknown_name_message

DATA_CONFIG = "dataset_info.json"
SUFFIXES = (".json", ".jsonl", ".parquet", ".csv")


def load_rows(
    datasets: Iterable[str] = (),
    dataset_dir: str | Path = "data",
    inputs: Iterable[str | Path] = (),
    format: str = "auto",
    max_samples: int | None = None,
    split: str = "train",
    media_dir: str | Path | None = None,
) -> list[Row]:
    """Every row of the named datasets and input paths, in order; ``max_samples`` applies to each dataset. The
    named datasets' media paths are relative to ``media_dir`` (default: ``dataset_dir``, as in LLaMA-Factory)."""
    datasets, inputs = list(datasets), [Path(path) for path in inputs]
    if format != "auto" and format not in FORMATS:
        raise ConfigError(f"Unknown format '{format}'; use auto, {', '.join(FORMATS)}.", param="format")
    parts: list[tuple[Source | None, list[Any]]] = []
    for name in datasets:
        parts.append(_named_dataset(name, Path(dataset_dir), split, Path(media_dir or dataset_dir)))
    for path in inputs:
        source = None if format == "auto" else Source(_stem(path), format, _columns_for(format), _media_dir(path))
        parts.append((source, read_records(path, split)))
    if not parts:
        raise ConfigError("Nothing to run: give --dataset NAME (with --dataset_dir) or --input PATH.", param="dataset")
    rows: list[Row] = []
    for (source, records), origin in zip(parts, [*datasets, *inputs]):
        records = records[:max_samples] if max_samples is not None else records
        if source is None:
            source = _auto_source(records, Path(origin))
        rows += [convert(record, source, i, len(rows) + i) for i, record in enumerate(records)]
    check_unique_ids(rows)
    return rows


def check_unique_ids(rows: list[Row]) -> None:
    seen: set[str] = set()
    for row in rows:
        if row.id in seen:
            raise ConfigError(
                f"Two rows have the id '{row.id}'; ids must be unique for resuming (fix the data's id/custom_id).",
                param="dataset",
            )
        seen.add(row.id)


# --- LLaMA-Factory's dataset_info.json ------------------------------------------------------------------------
def _named_dataset(name: str, dataset_dir: Path, split: str, media_dir: Path) -> tuple[Source, list[Any]]:
    info_path = dataset_dir / DATA_CONFIG
    if not info_path.is_file():
        if Path(name).exists():
            return _auto_source(records := read_records(Path(name), split), Path(name)), records
        raise ConfigError(f"Cannot find {info_path} (needed for --dataset {name}); set --dataset_dir.",
                          param="dataset_dir")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    if name not in info:
        raise ConfigError(unknown_name_message("dataset", name, info) + f" (in {info_path})", param="dataset")
    entry = info[name]
    if "file_name" not in entry:
        raise ConfigError(
            f"Dataset '{name}' is on a hub ({', '.join(k for k in entry if k.endswith('_url'))}); batch inference "
            f"reads local files: download it and give its file_name in {info_path}.", param="dataset",
        )
    if entry.get("ranking"):
        raise ConfigError(f"Dataset '{name}' is a ranking (preference) dataset; batch inference needs prompts.",
                          param="dataset")
    formatting = entry.get("formatting", "alpaca")
    if formatting not in ("alpaca", "sharegpt"):
        raise ConfigError(f"Dataset '{name}' has formatting '{formatting}'; use alpaca or sharegpt.", param="dataset")
    columns = Columns.from_dataset_info(formatting, entry)
    source = Source(name, formatting, columns, media_dir)
    return source, read_records(dataset_dir / entry["file_name"], entry.get("split", split))


# --- files --------------------------------------------------------------------------------------------------
def read_records(path: Path, split: str = "train") -> list[Any]:
    """The records of a file, a folder of files of one kind, or a ``datasets`` dataset saved with save_to_disk."""
    if path.is_dir():
        if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
            return _from_disk(path, split)
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in SUFFIXES)
        if not files:
            raise ConfigError(f"The folder {path} holds no {', '.join(SUFFIXES)} files.", param="input")
        return [record for file in files for record in read_records(file)]
    if not path.is_file():
        raise ConfigError(f"Input not found: {path}", param="input")
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise ConfigError(f"Cannot read {path}: use a {', '.join(SUFFIXES)} file or a folder.", param="input")
    return list(reader(path))


def _read_json(path: Path) -> list[Any]:
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return list(_read_jsonl(path))  # JSON Lines saved as .json, as datasets' json loader accepts
    if isinstance(data, list):
        return data
    if isinstance(data, Mapping) and data and all(isinstance(v, list) for v in data.values()):
        length = len(next(iter(data.values())))
        return [{key: data[key][i] for key in data} for i in range(length)]  # column-oriented JSON
    if isinstance(data, Mapping):
        return [data]
    raise ConfigError(f"{path} must hold a list of rows.", param="input")


def _read_jsonl(path: Path) -> Iterator[Any]:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{path}, line {number}: not valid JSON ({exc.msg}).", param="input") from None


def _read_parquet(path: Path) -> list[Any]:
    require("pyarrow", "batch")
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def _read_csv(path: Path) -> list[Any]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


_READERS = {".json": _read_json, ".jsonl": _read_jsonl, ".parquet": _read_parquet, ".csv": _read_csv}


def _from_disk(path: Path, split: str) -> list[Any]:
    require("datasets", "batch")
    import datasets

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise ConfigError(f"{path} has no split '{split}' (it has {', '.join(loaded)}); use --split.",
                              param="split")
        loaded = loaded[split]
    return loaded.to_list()


# --- helpers ------------------------------------------------------------------------------------------------
def _auto_source(records: list[Any], path: Path) -> Source:
    first = next((record for record in records if isinstance(record, Mapping)), None)
    if first is None:
        raise ConfigError(f"{path} holds no rows.", param="input")
    format, columns = detect_format(first)
    return Source(_stem(path), format, columns, _media_dir(path))


def _columns_for(format: str) -> Columns:
    if format == "sharegpt":
        return Columns(tools="tools", system="system", images="images")
    if format == "openai":
        return Columns(messages="messages", images="images")
    return Columns(system="system", tools="tools", history="history", images="images")


def _stem(path: Path) -> str:
    name = path.name
    for suffix in SUFFIXES:
        name = name.removesuffix(suffix)
    return name or "rows"


def _media_dir(path: Path) -> Path:
    return path if path.is_dir() else path.parent
