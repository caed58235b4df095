"""Convert a GGUF file once into a transformers checkpoint in the cache, so later loads take about a second."""

from __future__ import annotations

import hashlib
import logging
import shutil
import struct
import tempfile
from pathlib import Path

from lmchat.errors import ModelNotFoundError, require
from lmchat.models.cache import cache_root

logger = logging.getLogger(__name__)
_COMPLETE = ".lmchat-complete"


def gguf_checkpoint_dir(gguf_path: str | Path) -> Path:
    """Where the converted checkpoint of ``gguf_path`` lives (keyed by path, size and modification time)."""
    path = Path(gguf_path).expanduser().resolve()
    stat = path.stat()
    key = hashlib.sha1(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return cache_root() / "models" / f"{path.stem}-{key}"


def convert_gguf(gguf_path: str | Path) -> Path:
    """The cached transformers checkpoint for ``gguf_path``, converting it first if needed."""
    path = Path(gguf_path).expanduser()
    if not path.is_file():
        raise ModelNotFoundError(f"GGUF file not found: {path}")
    target = gguf_checkpoint_dir(path)
    if (target / _COMPLETE).exists():
        return target
    require("gguf", "hf")
    logger.info("Converting %s into a transformers checkpoint (once) at %s", path, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        _write_checkpoint(path, Path(tmp) / "checkpoint")
        if target.exists():
            shutil.rmtree(target)
        (Path(tmp) / "checkpoint").rename(target)
    return target


_WEIGHT_BITS = {2: 4, 3: 4, 14: 4, 15: 4, 7: 8}
"""GGUF file types (``general.file_type``: Q4_0, Q4_1, Q4_K_S, Q4_K_M; Q8_0) whose weights lmchat's CPU quantization
keeps at their width (quantization_bit 4 or 8)."""


def gguf_weight_bits(checkpoint: str | Path) -> int | None:
    """The weight width of the GGUF a cached checkpoint was converted from (4 for Q4_0/Q4_1/Q4_K, 8 for Q8_0), or
    None: not converted from a GGUF, or from a float or another quantization."""
    marker = Path(checkpoint) / _COMPLETE
    if not marker.is_file():
        return None
    source = Path(marker.read_text(encoding="utf-8").strip())
    if not source.is_file():
        return None
    return _WEIGHT_BITS.get(_header_value(source, "general.file_type"))


_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def _header_value(path: Path, wanted: str) -> object | None:
    """One scalar of a GGUF file's key/value header, read without parsing its tensors (gguf's GGUFReader maps
    every tensor: seconds for a small model, too slow for every start)."""
    with path.open("rb") as file:
        def read(fmt: str) -> object:
            size = struct.calcsize("<" + fmt)
            return struct.unpack("<" + fmt, file.read(size))[0]

        def skip(kind: int) -> None:
            if kind == 8:
                file.seek(read("Q"), 1)
            elif kind == 9:
                element, count = read("I"), read("Q")
                for _ in range(count):
                    skip(element)
            else:
                file.seek(struct.calcsize("<" + _SCALARS[kind]), 1)

        if file.read(4) != b"GGUF" or read("I") < 2:
            return None
        read("Q")  # tensor count
        for _ in range(read("Q")):
            key = file.read(read("Q")).decode("utf-8", "replace")
            kind = read("I")
            if key == wanted and kind in _SCALARS:
                return read(_SCALARS[kind])
            skip(kind)
    return None


def _write_checkpoint(gguf_path: Path, out_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    # The weights are dequantized on load; drop the GGUF quantizer so they can be saved as a plain checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / _COMPLETE).write_text(str(gguf_path), encoding="utf-8")
