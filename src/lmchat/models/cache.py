"""lmchat's cache folder (``LMCHAT_CACHE``, default ``~/.cache/lmchat``)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("LMCHAT_CACHE") or Path.home() / ".cache" / "lmchat").expanduser()
