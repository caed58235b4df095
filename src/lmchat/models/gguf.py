"""Convert a GGUF file once into a transformers checkpoint in the cache, so later loads take about a second."""

from __future__ import annotations

import hashlib
import logging
import shutil
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
