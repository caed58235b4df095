"""The model options of every subcommand, generated from :class:`~lmchat.config.model_config.ModelConfig`.

One definition: each field becomes a ``--field`` flag whose help text is the field's description, type and default.
Values are handed to ``ModelConfig`` as given (a string; pydantic converts and validates it), so a flag and the
same key in the YAML file behave alike. Flags override the YAML file's values. LLaMA-Factory's keys that lmchat
ignores are flags too (not shown in ``--help``; ``lmchat --help-config`` lists them).
"""

from __future__ import annotations

import argparse
import json
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic.fields import FieldInfo

from lmchat.cli.argv import normalise_argv
from lmchat.cli.failure import UsageError
from lmchat.config.llamafactory import IGNORED_KEYS
from lmchat.config.model_config import GENERATION_KEYS, public_fields
from lmchat.config.sections import EngineSettings, KTransformersSettings, MediaSettings, QuantizationSettings
from lmchat.config.sources import load_yaml
from lmchat.errors import unknown_name_message

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
SECTIONS = {  # heading -> the settings under it (the rest: model options)
    "generation defaults (change them in the chat with /set)": GENERATION_KEYS,
    "weight quantization": tuple(QuantizationSettings.model_fields),
    "media limits": tuple(MediaSettings.model_fields),
    "KTransformers": tuple(KTransformersSettings.model_fields),
    "engine-specific options": tuple(EngineSettings.model_fields),
}


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """The optional YAML file positional and one ``--field`` flag per ModelConfig field, in three groups."""
    parser.add_argument(
        "config", nargs="?", metavar="CONFIG.yaml",
        help="LLaMA-Factory-style YAML (or JSON) file of the settings below; flags override its values.",
    )
    model = parser.add_argument_group("model options (YAML keys; --dashed-names and key=value work too)")
    groups = {heading: parser.add_argument_group(heading) for heading in SECTIONS}
    for name, field in public_fields().items():
        heading = next((heading for heading, names in SECTIONS.items() if name in names), None)
        _add_field(groups[heading] if heading else model, name, field)
    for name in IGNORED_KEYS:  # accepted as LLaMA-Factory does, unused (see lmchat --help-config)
        if f"--{name}" not in parser._option_string_actions:
            parser.add_argument(f"--{name}", default=argparse.SUPPRESS, type=_yaml_value, help=argparse.SUPPRESS)


def _add_field(group: argparse._ArgumentGroup, name: str, field: FieldInfo) -> None:
    kind, choices = _kind(field.annotation)
    help_text = f"{field.description or ''} (default: {_show(field.default)})".replace("%", "%%")
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    if extra.get("nargs"):  # several values after one flag (--lora-modules a=PATH b=PATH)
        group.add_argument(f"--{name}", nargs=extra["nargs"], metavar=extra.get("metavar", "TEXT"),
                           default=argparse.SUPPRESS, type=_text, help=help_text)
        return
    if kind == "bool":
        group.add_argument(f"--{name}", nargs="?", const="true", metavar="BOOL", default=argparse.SUPPRESS,
                           type=_text, help=help_text)
        return
    metavar = "{" + ",".join(choices) + "}" if choices else _METAVARS[kind]
    group.add_argument(f"--{name}", metavar=metavar, default=argparse.SUPPRESS, type=_CONVERTERS[kind],
                       help=help_text)


def _kind(annotation: Any) -> tuple[str, list[str]]:
    """``(kind, literal choices)`` of a field's annotation, ``None`` stripped from unions."""
    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _kind(args[0])
    if origin is typing.Literal:
        return "str", [str(arg) for arg in args]
    if origin is list:
        return "list", []
    if origin is dict:
        return "json", []
    return {bool: "bool", int: "int", float: "float"}.get(annotation, "str"), []


def _text(value: str) -> str | None:
    """A flag's string as given; an empty string means 'unset' (None)."""
    return value if value != "" else None


def _number(value: str) -> str | None:
    """A number as given (pydantic parses it); ``none``/``null``/empty unsets an optional limit."""
    return None if value.lower() in ("", "none", "null") else value


def _yaml_value(value: str) -> Any:
    return yaml.safe_load(value) if value != "" else None


def _json(value: str) -> Any:
    """A JSON/YAML mapping given on the command line (``--vllm_config '{"max_num_seqs": 8}'``)."""
    if value == "":
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return yaml.safe_load(value)


_CONVERTERS: dict[str, Callable[[str], Any]] = {"str": _text, "int": _number, "float": _number,
                                                 "list": _text, "json": _json}
_METAVARS = {"str": "TEXT", "int": "INT", "float": "FLOAT", "list": "PATH[,PATH]", "json": "JSON"}


def _show(default: Any) -> str:
    if default is None:
        return "none"
    if isinstance(default, bool):
        return str(default).lower()
    return str(default)


def normalise_flags(argv: Sequence[str], parser: argparse.ArgumentParser) -> list[str]:
    """Each flag of ``parser`` in either spelling (``--model-name-or-path``, ``--api_key``), and LLaMA-Factory's
    ``key=value`` arguments as flags."""
    return normalise_argv(argv, parser)


def check_extras(parser: argparse.ArgumentParser, extras: Sequence[str]) -> None:
    """Arguments argparse did not recognise: the first one is an error naming the closest valid option."""
    for token in extras:
        if token.startswith("-") and token != "-":
            name = token.partition("=")[0]
            where = f"Every option: {parser.prog} --help; every setting: lmchat --help-config."
            raise UsageError(unknown_name_message("option", name, option_names(parser), where),
                             param=name.lstrip("-"))
    if extras:
        raise UsageError(f"Unexpected argument '{extras[0]}'; settings are given as --name value or name=value.")


def option_names(parser: argparse.ArgumentParser) -> list[str]:
    return [option for action in parser._actions for option in action.option_strings if option.startswith("--")]


def model_args(namespace: argparse.Namespace) -> dict[str, Any]:
    """The settings dict for ChatModel: the YAML file's values, overridden by the flags given."""
    args: dict[str, Any] = {}
    config = getattr(namespace, "config", None)
    if config:
        if not config.endswith(CONFIG_SUFFIXES):
            raise UsageError(
                f"Expected a .yaml/.yml/.json config file, got '{config}'. "
                f"To choose a model, use --model_name_or_path {config}."
            )
        args.update(load_yaml(Path(config).expanduser()))
    for name in (*public_fields(), *IGNORED_KEYS):
        if hasattr(namespace, name):
            args[name] = getattr(namespace, name)
    return args
