"""Front ends written in their own packages (``serve``, ``webui``, ``infer``), plugged into ``lmchat``.

Each provides a module with two functions: ``add_arguments(parser)`` adds its own flags to its subcommand, and
``run(args, model_args) -> int | None`` runs it with the parsed namespace and the settings dict: the YAML file's
values overridden by the model flags. The front end validates that dict (and may take its own keys out of it,
as batch inference does with ``dataset``). The modules import no optional package at import time: a missing
extra (FastAPI, Gradio, ...) fails when the command runs, naming the ``pip install 'lmchat[...]'`` to run.
"""

from __future__ import annotations

import argparse
import importlib
from types import ModuleType
from typing import Any

FRONTEND_MODULES = {
    "serve": "lmchat.server.cli",
    "webui": "lmchat.webui.cli",
    "infer": "lmchat.batch.cli",
}


def load_frontend(command: str) -> ModuleType:
    return importlib.import_module(FRONTEND_MODULES[command])


def add_frontend_arguments(command: str, parser: argparse.ArgumentParser) -> None:
    load_frontend(command).add_arguments(parser)


def run_frontend(command: str, args: argparse.Namespace, model_args: dict[str, Any]) -> int:
    return int(load_frontend(command).run(args, model_args) or 0)
