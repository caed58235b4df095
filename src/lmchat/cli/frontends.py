"""Front ends written in their own packages (``serve``, ``webui``, ``infer``), plugged into ``lmchat``.

Each provides a module with two functions: ``add_arguments(parser)`` adds its own flags to its subcommand, and
``run(args, model_args) -> int | None`` runs it with the parsed namespace and the settings dict: the YAML file's
values overridden by the model flags. The front end validates that dict (and may take its own keys out of it,
as batch inference does with ``dataset``). A module that cannot be imported yet makes its subcommand answer
"not available yet" (exit code 2).
"""

from __future__ import annotations

import argparse
import importlib
from types import ModuleType
from typing import Any

from lmchat.cli.failure import NotAvailableError

FRONTEND_MODULES = {
    "serve": "lmchat.server.cli",
    "webui": "lmchat.webui.cli",
    "infer": "lmchat.batch.cli",
}


def load_frontend(command: str) -> ModuleType | None:
    """The front end's module, or None when it does not exist (yet). Its own missing dependencies still raise."""
    module_name = FRONTEND_MODULES[command]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == module_name or module_name.startswith(exc.name + ".")):
            return None
        raise
    if not (callable(getattr(module, "add_arguments", None)) and callable(getattr(module, "run", None))):
        return None
    return module


def add_frontend_arguments(command: str, parser: argparse.ArgumentParser) -> None:
    module = load_frontend(command)
    if module is not None:
        module.add_arguments(parser)


def run_frontend(command: str, args: argparse.Namespace, model_args: dict[str, Any]) -> int:
    module = load_frontend(command)
    if module is None:
        raise NotAvailableError(
            f"'lmchat {command}' is not available yet (its module {FRONTEND_MODULES[command]} is not installed)."
        )
    return int(module.run(args, model_args) or 0)
