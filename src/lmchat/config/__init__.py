"""Configuration: one validated model per component."""

from lmchat.config.model_config import GENERATION_KEYS, ModelConfig
from lmchat.config.sources import args_from_command_line, load_yaml, parse_flags

__all__ = ["GENERATION_KEYS", "ModelConfig", "args_from_command_line", "load_yaml", "parse_flags"]
