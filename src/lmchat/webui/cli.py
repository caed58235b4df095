"""The ``webui`` command: its own flags, and a standalone entry point that reads the model's flags too."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from lmchat.errors import LmchatError

PASSWORD_ENV = "LMCHAT_WEBUI_PASSWORD"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The web UI's own flags (the model's flags belong to the caller)."""
    group = parser.add_argument_group("web UI")
    group.add_argument("--host", help="Address to bind (default: $GRADIO_SERVER_NAME, else 127.0.0.1: this machine "
                                      "only).")
    group.add_argument("--port", type=int, help="Port to listen on (default: $GRADIO_SERVER_PORT, else 7860).")
    group.add_argument("--share", choices=("off", "on"),
                       help="'on' opens a public gradio.live link (default: on if $GRADIO_SHARE is 1/true, else off).")
    group.add_argument("--username", default=None, help="Ask for this user name and a password before chatting.")
    group.add_argument("--password", default=None,
                       help=f"The password for --username (better: set {PASSWORD_ENV}).")


def run(args: argparse.Namespace, model_config: dict[str, Any]) -> int:
    """Load the model, serve the page until Ctrl-C, then close the model. Returns the exit status."""
    from lmchat.chat.chat_model import ChatModel
    from lmchat.errors import require
    from lmchat.webui import build_app

    require("gradio", "webui")  # before the model loads

    _environment_defaults(args, os.environ)
    auth = _auth(args)
    media_dir = Path(tempfile.mkdtemp(prefix="lmchat-webui-"))
    with ChatModel(model_config) as model:
        page = build_app(model, media_dir)
        page.queue(default_concurrency_limit=8)
        print(f"lmchat web chat for {model.engine.info.name} on http://{args.host}:{args.port}", flush=True)
        page.launch(
            server_name=args.host, server_port=args.port, share=args.share == "on", auth=auth,
            allowed_paths=[str(media_dir)], show_error=True, ssr_mode=False, quiet=True,
            footer_links=[], inbrowser=False, app_kwargs=login_protection(auth),
        )
    return 0


def login_protection(auth: tuple[str, str] | None) -> dict[str, Any]:
    """Gradio's ``app_kwargs`` that throttle failed logins per client (webui/login.py), when a login is asked for."""
    if auth is None:
        return {}
    from starlette.middleware import Middleware

    from lmchat.webui.login import LoginThrottleMiddleware

    return {"middleware": [Middleware(LoginThrottleMiddleware)]}


def _environment_defaults(args: argparse.Namespace, environ: Any) -> None:
    """Gradio's (and LLaMA-Factory's webchat's) variables fill what no flag gives."""
    args.host = args.host or environ.get("GRADIO_SERVER_NAME") or "127.0.0.1"
    if args.port is None:
        port = environ.get("GRADIO_SERVER_PORT") or "7860"
        if not port.isdigit():
            raise LmchatError(f"GRADIO_SERVER_PORT must be a port number, got {port!r}.")
        args.port = int(port)
    if args.share is None:
        args.share = "on" if environ.get("GRADIO_SHARE", "").lower() in ("1", "true", "yes", "on") else "off"


def _auth(args: argparse.Namespace) -> tuple[str, str] | None:
    password = args.password or os.environ.get(PASSWORD_ENV)
    if args.username is None:
        if password:
            raise LmchatError("--password needs --username.")
        return None
    if not password:
        raise LmchatError(f"--username needs a password: set {PASSWORD_ENV} or pass --password.")
    return args.username, password


def main(argv: list[str] | None = None) -> int:
    """``python -m lmchat.webui [config.yaml] [--key value ...] [--host H] [--port N]``."""
    from lmchat.cli.argv import standalone_argv
    from lmchat.config import parse_flags

    parser = argparse.ArgumentParser(
        prog="python -m lmchat.webui", allow_abbrev=False,
        description="Chat with a model in the browser. Model settings: a YAML file and/or --key value flags.",
    )
    add_arguments(parser)
    args, rest = parser.parse_known_args(standalone_argv(argv, parser))
    try:
        return run(args, parse_flags(rest))
    except LmchatError as exc:
        print(f"Error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
