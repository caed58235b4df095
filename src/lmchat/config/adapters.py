"""Named LoRA adapters: vLLM's ``--lora-modules name=path`` entries, and LLaMA-Factory's ``adapter_name_or_path``
served by name when ``merge_adapters`` is false. Pure parsing (no torch); the engines load them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmchat.config.model_config import ModelConfig

ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][\w.:/-]{0,127}$")
DEFAULT_MAX_LORA_RANK = 64


def check_adapter_name(name: Any) -> str:
    """A served adapter's name: what a request's ``model`` field says (letters, digits, ``_.:/-``, 1-128)."""
    if not isinstance(name, str) or not ADAPTER_NAME.match(name):
        raise ValueError(f"adapter name {name!r} must be 1-128 letters, digits or _.:/- (starting with a letter or "
                         "digit)")
    return name


def parse_lora_modules(value: Any) -> dict[str, str] | None:
    """``name=path`` entries (a list, or one comma-separated string), vLLM's JSON entries
    (``{"name": ..., "path": ...}``), or a mapping -> {name: path}, names unique."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, dict):
        entries = list(value.items())
    else:
        items = value.split(",") if isinstance(value, str) and not value.lstrip().startswith("{") else value
        items = [items] if isinstance(items, (str, dict)) else list(items)
        entries = [_entry(item) for item in items if not (isinstance(item, str) and not item.strip())]
    modules: dict[str, str] = {}
    for name, path in entries:
        name = check_adapter_name(name.strip() if isinstance(name, str) else name)
        if not isinstance(path, str) or not path.strip():
            raise ValueError(f"adapter '{name}' needs a path (name=path)")
        if name in modules:
            raise ValueError(f"adapter name '{name}' is given twice")
        modules[name] = path.strip()
    return modules or None


def _entry(item: Any) -> tuple[Any, Any]:
    if isinstance(item, str) and item.lstrip().startswith("{"):
        try:
            item = json.loads(item)
        except json.JSONDecodeError:
            raise ValueError(f"lora_modules entry {item!r} is not valid JSON") from None
    if isinstance(item, dict):
        if "name" not in item or "path" not in item:
            raise ValueError("a JSON lora_modules entry needs 'name' and 'path'")
        return item["name"], item["path"]
    if not isinstance(item, str) or "=" not in item:
        raise ValueError(f"lora_modules entries are name=path, got {item!r}")
    name, _, path = item.partition("=")
    return name, path


def named_adapters(config: ModelConfig) -> dict[str, str]:
    """Every adapter the config serves by name: ``lora_modules``, then ``adapter_name_or_path``'s folders (named
    after the folder) when ``merge_adapters`` is false."""
    adapters = dict(config.lora_modules or {})
    if not config.merge_adapters:
        for path in config.adapter_name_or_path or ():
            name = check_adapter_name(Path(path.rstrip("/")).name or path)
            if name in adapters:
                raise ValueError(f"adapter name '{name}' (from adapter_name_or_path {path}) is given twice")
            adapters[name] = path
    return adapters


def merged_adapters(config: ModelConfig) -> list[str]:
    """The adapter folders to merge into the weights at load (LLaMA-Factory's behaviour)."""
    return list(config.adapter_name_or_path or ()) if config.merge_adapters else []


def max_lora_rank(config: ModelConfig, default: int = DEFAULT_MAX_LORA_RANK) -> int:
    return config.max_lora_rank or default
