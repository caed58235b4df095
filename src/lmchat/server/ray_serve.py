"""The OpenAI-compatible server on Ray Serve: ``lmchat serve --replicas N`` and ``serve run`` configs.

Each replica is one Ray Serve deployment replica holding its own ``ChatModel`` and running lmchat's own FastAPI app
(``create_app``, ingress bound at replica start: ``@serve.ingress()`` with ``__serve_build_asgi_app__``). Ray Serve's
HTTP proxy routes each request to the less busy of two replicas and streams the response back; a client that
disconnects cancels the request on its replica, which aborts the generation. API keys, body limits, request ids,
admission (429s), errors and streaming are the app's own, so they behave as with one process; ``GET /metrics``
sums every replica (``server/ray_metrics.py``).

``serve run lmchat.server.ray_serve:app_builder model_name_or_path=... replicas=2`` (or a config file naming
``import_path: lmchat.server.ray_serve:app_builder``) deploys the same application without the lmchat CLI.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from ray import serve

from lmchat.chat.chat_model import ChatModel
from lmchat.errors import ConfigError
from lmchat.server.ray_options import ServeScaling
from lmchat.server.settings import ServerSettings

logger = logging.getLogger("lmchat.server")
APP_NAME = "lmchat"
BOARD_PREFIX = "lmchat-metrics:"


@serve.ingress()
class LmchatReplica:
    """One engine replica: a ChatModel and the app that serves it."""

    def __init__(self, model_config: Mapping[str, Any], settings: ServerSettings, app_name: str = APP_NAME) -> None:
        self.chat_model = ChatModel(dict(model_config))
        self.settings = settings
        self.board_name = BOARD_PREFIX + app_name

    async def __serve_build_asgi_app__(self):
        import ray

        from lmchat.server.app import create_app
        from lmchat.server.ray_metrics import ClusterMetrics

        app = create_app(self.chat_model, self.settings)
        app.add_middleware(ProxyOwnsRequestId)
        state = app.state.lmchat
        state.metrics = ClusterMetrics(state.metrics, metrics_board(self.board_name),
                                       ray.get_runtime_context().get_actor_id())
        state.metrics.start_reporting()
        return app

    def check_health(self) -> None:
        """Ray Serve restarts a replica whose engine stopped (``info`` raises EngineClosedError then)."""
        _ = self.chat_model.engine.info

    def __del__(self) -> None:
        chat_model = getattr(self, "chat_model", None)
        if chat_model is not None:
            chat_model.close()


class ProxyOwnsRequestId:
    """Ray Serve's proxy answers with ``x-request-id`` (the id it handed the replica, the client's own when it sent
    one); the app's copy of the same header is dropped so that it comes once."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        async def send_once(message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"x-request-id"]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_once)


def metrics_board(name: str):
    """The app's metrics board: one detached actor, created by the first replica that asks for it."""
    import ray

    from lmchat.server.ray_metrics import MetricsBoard

    board_class = ray.remote(num_cpus=0, max_restarts=-1)(MetricsBoard)
    return board_class.options(name=name, namespace="lmchat", lifetime="detached", get_if_exists=True).remote()


def build_app(model_config: Mapping[str, Any], settings: ServerSettings, scaling: ServeScaling,
              app_name: str = APP_NAME):
    """The Ray Serve application: the replica deployment with its scaling and resources."""
    # the replica admits by its engine's capacity; Serve's bound on ongoing requests is set before the engine
    # loads, so it takes the same default as one process with no --max-concurrent
    running = settings.running_sequences(None)
    options = scaling.deployment_options(running, settings.waiting_sequences(running), settings.shutdown_grace)
    deployment = serve.deployment(LmchatReplica, name="LmchatReplica").options(**options)
    return deployment.bind(dict(model_config), settings, app_name)


def app_builder(args: dict[str, Any]):
    """``serve run lmchat.server.ray_serve:app_builder KEY=VALUE ...`` (or a Serve config file's ``args``)."""
    return build_app(*builder_args(args))


def builder_args(args: Mapping[str, Any], environ: Mapping[str, str] | None = None,
                 ) -> tuple[dict[str, Any], ServerSettings, ServeScaling]:
    """The model config, server settings and scaling of ``app_builder``'s arguments: scaling keys (``replicas``,
    ``min_replicas``, ``max_replicas``, ``target_ongoing_requests``, ``gpus_per_replica``, ``cpus_per_replica``),
    server keys (``api_keys``, ``served_model_names``, comma-separated; ``max_concurrent``, ``max_queue``,
    ``max_body_bytes``, ``shutdown_grace``, ``log_prompts``) and the model's keys (the rest, or a ``model``
    mapping). ``serve run`` passes every value as a string. The environment of the process that builds the
    application (the Serve controller's node) supplies what the arguments leave out, as for the CLI:
    ``LMCHAT_API_KEY`` or ``API_KEY``, ``API_MODEL_NAME``, and ``accept_any_model`` when an ``API_*`` variable is
    set."""
    import os

    from lmchat.config.model_config import ModelConfig
    from lmchat.server.settings import environment_defaults

    environ = os.environ if environ is None else environ
    args = dict(args)
    scaling_keys = {f.name for f in fields(ServeScaling)} - {"ray_address"}
    scaling = ServeScaling(**{key: _number(args.pop(key)) for key in list(args) if key in scaling_keys})
    server = {key: args.pop(key) for key in list(args) if key in _SERVER_KEYS}
    for key in ("api_keys", "served_model_names"):
        if isinstance(server.get(key), str):
            server[key] = tuple(part.strip() for part in server[key].split(",") if part.strip())
    for key in ("max_concurrent", "max_queue", "max_body_bytes", "shutdown_grace"):
        if key in server:
            server[key] = _number(server[key])
    if isinstance(server.get("log_prompts"), str):
        server["log_prompts"] = server["log_prompts"].lower() in ("1", "true", "yes")
    if isinstance(server.get("accept_any_model"), str):
        server["accept_any_model"] = server["accept_any_model"].lower() in ("1", "true", "yes")
    server = {**environment_defaults(environ), **server}  # as for the CLI: arguments win over the environment
    model = args.pop("model", None)
    if model is not None and args:
        raise ConfigError(f"Unknown key(s) beside 'model': {', '.join(sorted(args))} (model keys go inside it; "
                          f"scaling and server keys are {', '.join(sorted(scaling_keys | _SERVER_KEYS))}).",
                          param=sorted(args)[0])
    model_config = dict(model if model is not None else args)
    ModelConfig.from_dict(model_config)  # unknown or bad keys fail here, not on every replica
    return model_config, ServerSettings(**server), scaling


_SERVER_KEYS = frozenset({"api_keys", "served_model_names", "accept_any_model", "max_concurrent", "max_queue",
                          "max_body_bytes", "shutdown_grace", "log_prompts"})


def run_on_ray(settings: ServerSettings, scaling: ServeScaling, model_config: Mapping[str, Any]) -> int:
    """Deploy on the cluster, serve until SIGINT/SIGTERM, then delete the application (and stop Serve when no
    other application is left on the cluster)."""
    from lmchat.config.model_config import ModelConfig
    from lmchat.distributed import lmchat_cause, ray_session

    ModelConfig.from_dict(dict(model_config))  # a bad key fails here, before any replica starts
    stop = threading.Event()
    with ray_session(scaling.ray_address), _stop_on_signals(stop):
        serve.start(http_options={"host": settings.host, "port": settings.port},
                    proxy_location="HeadOnly" if settings.is_loopback else "EveryNode")
        try:
            serve.run(build_app(model_config, settings, scaling), name=APP_NAME, route_prefix="/", blocking=False)
        except Exception as exc:  # noqa: BLE001 - a replica that could not load its model: lmchat's own message
            cause = lmchat_cause(exc)
            _delete_app()
            if cause is not None:
                raise cause from None
            raise
        logger.info("Serving %s on http://%s:%d with %s", model_config.get("model_name_or_path") or "the model",
                    settings.host, settings.port, _describe(scaling))
        try:
            stop.wait()
        finally:
            logger.info("Stopping: running requests get %.0f s to finish.", settings.shutdown_grace)
            _delete_app()
    return 0


def _delete_app() -> None:
    import ray

    serve.delete(APP_NAME)
    try:
        ray.kill(ray.get_actor(BOARD_PREFIX + APP_NAME, namespace="lmchat"))
    except ValueError:
        pass  # no replica got as far as creating it
    if not serve.status().applications:
        serve.shutdown()


class _stop_on_signals:
    """SIGINT/SIGTERM set ``stop`` (the main thread only), so the app is deleted and the model closed."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop, self.previous = stop, {}

    def __enter__(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.signal(sig, lambda *_: self.stop.set())
                             for sig in (signal.SIGINT, signal.SIGTERM)}

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _describe(scaling: ServeScaling) -> str:
    if scaling.autoscaling:
        return f"{scaling.min_replicas or 0} to {scaling.max_replicas} replicas (autoscaling)"
    return f"{scaling.replicas or 1} replica(s)"


def _number(value: Any) -> Any:
    """``serve run`` passes KEY=VALUE arguments as strings."""
    if not isinstance(value, str):
        return value
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"Expected a number, got {value!r}.") from None
