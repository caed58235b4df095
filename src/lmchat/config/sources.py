"""Where settings come from: a dict, a YAML file, ``--key value`` flags, or LLaMA-Factory's command line."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

from lmchat.errors import ConfigError

ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*=")
"""LLaMA-Factory's ``key=value`` command-line form."""


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML (or JSON) settings file into a dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"Config file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {path} must hold a mapping of settings, not a {type(data).__name__}.")
    return data


def parse_flags(argv: list[str]) -> dict[str, Any]:
    """Parse ``[config.yaml] --key value --flag key=value`` into a dict; flags override the file's values.

    ``key=value`` is LLaMA-Factory's override form (``python script.py llama3.yaml infer_backend=vllm``)."""
    args: dict[str, Any] = {}
    rest = list(argv)
    if rest and not rest[0].startswith("-") and not ASSIGNMENT.match(rest[0]):
        if not rest[0].endswith((".yaml", ".yml", ".json")):
            raise ConfigError(f"Expected a .yaml/.yml/.json config file or --key value flags, got '{rest[0]}'.")
        args.update(load_yaml(rest.pop(0)))
    while rest:
        token = rest.pop(0)
        if ASSIGNMENT.match(token):
            token = "--" + token
        if not token.startswith("--") or token == "--":
            raise ConfigError(f"Expected a --key flag or key=value, got '{token}'.")
        key, sep, value = token[2:].partition("=")
        key = key.replace("-", "_")
        if not sep:
            value = rest.pop(0) if rest and not rest[0].startswith("--") else "true"
        args[key] = yaml.safe_load(value) if value != "" else None
    return args


def args_from_command_line(argv: list[str] | None = None) -> dict[str, Any]:
    """LLaMA-Factory's ``ChatModel(None)``: read settings from the process's command line."""
    return parse_flags(sys.argv[1:] if argv is None else argv)
