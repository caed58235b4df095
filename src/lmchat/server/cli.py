"""``lmchat serve``: the server's flags, and running the app under uvicorn.

The lmchat CLI adds the model's flags (generated from ModelConfig) and calls :func:`add_arguments` and
:func:`run`; ``python -m lmchat.server`` does the same on its own (see :func:`main`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from lmchat.errors import ConfigError
from lmchat.server import ray_options
from lmchat.server.settings import API_KEY_ENV, LOG_LEVELS, ServerSettings, environment_defaults

logger = logging.getLogger("lmchat.server")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The server's flags (the model's flags are added by the caller)."""
    group = parser.add_argument_group("server (LLaMA-Factory's API_HOST, API_PORT, API_KEY and API_MODEL_NAME work too)")
    defaults = ServerSettings()
    group.add_argument("--host", help=f"Address to bind (default: $API_HOST, else {defaults.host}: this machine only).")
    group.add_argument("--port", type=int, help=f"Port to listen on (default: $API_PORT, else {defaults.port}).")
    group.add_argument("--api-key", action="append", dest="api_key", metavar="KEY",
                       help=f"Require 'Authorization: Bearer KEY' (repeatable; default: ${API_KEY_ENV} or $API_KEY).")
    group.add_argument("--served-model-name", nargs="+", metavar="NAME",
                       help="Name(s) clients use as 'model' (default: $API_MODEL_NAME, else the model's own name).")
    group.add_argument("--accept-any-model", action=argparse.BooleanOptionalAction, default=None,
                       help="Answer requests whatever 'model' they name, as LLaMA-Factory's API does (default: on "
                            "when an API_* variable of LLaMA-Factory is set, else off).")
    group.add_argument("--cors-origin", nargs="+", action="extend", metavar="ORIGIN",
                       help="Let browser pages from these origins call the API (default: none).")
    group.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes,
                       help="Largest request body accepted; larger ones get 413 (default: %(default)s).")
    group.add_argument("--max-concurrent", type=int, default=defaults.max_concurrent,
                       help="Sequences running at once; a request with n answers counts n (default: what the "
                            "engine runs at once, e.g. max_batch_size for transformers; 64 if it does not say).")
    group.add_argument("--max-queue", type=int, default=defaults.max_queue,
                       help="Sequences waiting for room; more get 429 with Retry-After (default: twice the running "
                            "ones, at least 64).")
    group.add_argument("--request-timeout", type=float, default=defaults.request_timeout, metavar="SECONDS",
                       help="Stop a generation this long after it arrived (queueing included) and answer with a "
                            "timeout error (default: no deadline).")
    group.add_argument("--shutdown-grace", type=float, default=defaults.shutdown_grace, metavar="SECONDS",
                       help="On SIGINT/SIGTERM, let running requests finish this long, then abort them "
                            "(default: %(default)s).")
    group.add_argument("--log-prompts", action="store_true", help="Log rendered prompts (media redacted).")
    group.add_argument("--enable-lora-loading", action="store_true",
                       help="Mount vLLM's POST /v1/load_lora_adapter and /v1/unload_lora_adapter (needs --api-key).")
    group.add_argument("--log-level", choices=LOG_LEVELS, default=defaults.log_level,
                       help="Log level (default: %(default)s).")
    ray_options.add_arguments(parser)


def settings_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> ServerSettings:
    """Server settings from parsed flags; environment variables supply what no flag gives: ``LMCHAT_API_KEY``, and
    LLaMA-Factory's ``API_HOST``, ``API_PORT``, ``API_KEY``, ``API_MODEL_NAME`` (any of which also makes the server
    accept any model name, as LLaMA-Factory's does)."""
    environ = os.environ if environ is None else environ
    defaults = ServerSettings()
    from_env = environment_defaults(environ)
    keys = tuple(args.api_key or ()) or from_env["api_keys"]
    names = tuple(args.served_model_name or ()) or from_env["served_model_names"]
    accept_any = from_env["accept_any_model"] if args.accept_any_model is None else args.accept_any_model
    return ServerSettings(
        host=args.host or environ.get("API_HOST") or defaults.host, port=_port(args.port, environ, defaults.port),
        api_keys=keys, served_model_names=names, accept_any_model=accept_any,
        cors_origins=tuple(args.cors_origin or ()), max_body_bytes=args.max_body_bytes,
        max_concurrent=args.max_concurrent, max_queue=args.max_queue, request_timeout=args.request_timeout,
        shutdown_grace=args.shutdown_grace,
        log_prompts=args.log_prompts, log_level=args.log_level,
        enable_lora_loading=getattr(args, "enable_lora_loading", False),
    )


def _port(flag: int | None, environ: Mapping[str, str], default: int) -> int:
    if flag is not None:
        return flag
    text = environ.get("API_PORT")
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"API_PORT must be a port number, got {text!r}.", param="port") from None


def run(args: argparse.Namespace, model_config: dict[str, Any]) -> int:
    """Serve the model until SIGINT/SIGTERM and return the exit code. The port is bound first and answers 503
    "Loading model" while the model loads (:mod:`lmchat.server.loading`), as llama.cpp's server does.

    An LmchatError (bad settings, missing model) propagates for the caller to print as one line.
    """
    from lmchat.errors import require

    require("uvicorn", "serve")

    from lmchat.chat.chat_model import ChatModel
    from lmchat.server.app import create_app
    from lmchat.server.lifecycle import LmchatServer
    from lmchat.server.loading import LoadingApp, ModelLoader
    from lmchat.server.logs import configure_logging

    settings = settings_from_args(args)
    scaling = ray_options.scaling_from_args(args)
    configure_logging(settings.log_level)
    warning = settings.exposure_warning()
    if warning:
        print(warning, file=sys.stderr, flush=True)
    if scaling is not None:  # --replicas N: on Ray Serve (server/ray_serve.py)
        require("ray", "ray")
        from lmchat.server.ray_serve import run_on_ray

        return run_on_ray(settings, scaling, model_config)
    holder = LoadingApp()
    server = LmchatServer(holder, settings)

    def ready(chat_model: ChatModel) -> None:
        app = create_app(chat_model, settings)
        holder.ready(app)
        logger.info("Running %s on %s", chat_model.engine.info.name, chat_model.engine.describe())
        logger.info("Serving %s as %s on http://%s:%d", chat_model.engine.info.name,
                    ", ".join(app.state.lmchat.served_names), settings.host, settings.port)

    def failed(exc: BaseException) -> None:
        server.should_exit = True  # the error is raised below, once the server has stopped

    loader = ModelLoader(lambda: ChatModel(model_config), ready, failed)
    loader.start()
    try:
        with _signals_end_serving_only():
            server.run()
    except SystemExit as exc:  # uvicorn exits this way when it cannot bind
        return int(exc.code or 1)
    finally:
        loader.join()  # a model still loading (the server was stopped meanwhile) is closed once loaded
        if loader.chat_model is not None:
            loader.chat_model.close()
    if loader.error is not None:
        raise loader.error
    return server.exit_code


@contextlib.contextmanager
def _signals_end_serving_only() -> Iterator[None]:
    """uvicorn re-raises SIGINT/SIGTERM once it has shut down gracefully; catch that, so the model is closed
    and ``run`` returns 0 instead of the process dying on the signal."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lmchat.server [config.yaml] [server flags] [--model-key value ...]``."""
    from lmchat.cli.argv import standalone_argv
    from lmchat.config import parse_flags
    from lmchat.errors import LmchatError

    parser = argparse.ArgumentParser(
        prog="python -m lmchat.server", allow_abbrev=False,
        description="Serve a model over an OpenAI-compatible API. Other --key value flags (and an optional "
                    "config.yaml) are the model's settings, as for ChatModel.",
    )
    add_arguments(parser)
    args, rest = parser.parse_known_args(standalone_argv(argv, parser))
    try:
        return run(args, parse_flags(rest))
    except LmchatError as exc:
        print(f"lmchat serve: error: {exc.message}", file=sys.stderr)
        return 2
