"""The server's own settings (the model's settings are a :class:`~lmchat.config.ModelConfig`)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from lmchat.errors import ConfigError

API_KEY_ENV = "LMCHAT_API_KEY"
LLAMAFACTORY_ENV = ("API_HOST", "API_PORT", "API_KEY", "API_MODEL_NAME")  # its API server's variables
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
DEFAULT_RUNNING_SEQUENCES = 64  # for engines that report no capacity of their own
DEFAULT_WAITING_SEQUENCES = 64


def environment_defaults(environ: Mapping[str, str]) -> dict[str, object]:
    """What the environment supplies when no flag (or ``serve run`` argument) gives it: the API key
    (``LMCHAT_API_KEY``, else LLaMA-Factory's ``API_KEY``), the served name (``API_MODEL_NAME``), and whether any
    model name is accepted (when any of LLaMA-Factory's ``API_*`` variables is set, as its server does)."""
    key = environ.get(API_KEY_ENV) or environ.get("API_KEY")
    name = environ.get("API_MODEL_NAME")
    return {"api_keys": (key,) if key else (), "served_model_names": (name,) if name else (),
            "accept_any_model": any(environ.get(variable) for variable in LLAMAFACTORY_ENV)}


@dataclass(frozen=True)
class ServerSettings:
    """How the server listens, whom it lets in, and how much work it accepts."""

    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: tuple[str, ...] = ()
    served_model_names: tuple[str, ...] = ()
    accept_any_model: bool = False  # answer whatever 'model' a request names (LLaMA-Factory's API does)
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 16 * 1024 * 1024
    max_concurrent: int | None = None  # sequences; None: the engine's capacity (see running_sequences)
    max_queue: int | None = None  # sequences; None: see waiting_sequences
    request_timeout: float | None = None  # seconds from arrival to the last token; None: no deadline
    shutdown_grace: float = 30.0
    log_prompts: bool = False
    log_level: str = "info"
    enable_lora_loading: bool = False  # vLLM's live /v1/load_lora_adapter and /v1/unload_lora_adapter routes

    def __post_init__(self) -> None:
        _check(0 <= self.port <= 65535, f"port must lie between 0 and 65535, got {self.port}.", "port")
        _check(self.max_body_bytes >= 1, "max_body_bytes must be at least 1.", "max_body_bytes")
        _check(self.max_concurrent is None or self.max_concurrent >= 1, "max_concurrent must be at least 1.",
               "max_concurrent")
        _check(self.max_queue is None or self.max_queue >= 0, "max_queue must be 0 or more.", "max_queue")
        _check(self.request_timeout is None or self.request_timeout > 0, "request_timeout must be more than 0 "
               "seconds.", "request_timeout")
        _check(self.shutdown_grace >= 0, "shutdown_grace must be 0 or more seconds.", "shutdown_grace")
        _check(self.log_level in LOG_LEVELS, f"log_level must be one of {', '.join(LOG_LEVELS)}.", "log_level")
        _check(all(self.api_keys), "An API key must not be empty.", "api_key")
        _check(all(self.served_model_names), "A served model name must not be empty.", "served_model_name")
        _check(not self.enable_lora_loading or bool(self.api_keys), "--enable-lora-loading lets clients change what "
               "the server serves: it needs an API key (--api-key or LMCHAT_API_KEY).", "enable_lora_loading")

    def running_sequences(self, engine_max_sequences: int | None) -> int:
        """Sequences admitted at once: ``max_concurrent``, else what the engine runs at once, else 64."""
        return self.max_concurrent or engine_max_sequences or DEFAULT_RUNNING_SEQUENCES

    def waiting_sequences(self, running: int) -> int:
        """Sequences that may wait for room: ``max_queue``, else twice the running ones (at least 64)."""
        return self.max_queue if self.max_queue is not None else max(DEFAULT_WAITING_SEQUENCES, 2 * running)

    @property
    def is_loopback(self) -> bool:
        return is_loopback_host(self.host)

    def exposure_warning(self) -> str | None:
        """A warning when the server listens beyond this machine without an API key."""
        if self.is_loopback or self.api_keys:
            return None
        return (
            f"WARNING: lmchat serve listens on {self.host} without an API key: anyone who can reach this address "
            f"can use the model. Set --api-key or the {API_KEY_ENV} (or API_KEY) environment variable, or bind "
            "127.0.0.1."
        )


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check(condition: bool, message: str, param: str) -> None:
    if not condition:
        raise ConfigError(message, param=param)
