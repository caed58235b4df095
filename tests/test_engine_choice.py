"""The engine a terminal chat runs when its settings name none (lmchat.engines.choice)."""

from __future__ import annotations

import pytest

from lmchat.engines.choice import LLAMACPP_PACKAGE, choose_chat_engine
from lmchat.errors import ConfigError


def installed(module: str) -> bool:
    return True


def missing(module: str) -> bool:
    assert module == LLAMACPP_PACKAGE
    return False


@pytest.mark.parametrize("args", [
    {"infer_backend": "huggingface"},  # named: kept, even for the default model (a GGUF)
    {"infer_backend": "hf", "model_name_or_path": "model.Q4_0.gguf"},
    {"use_kt": True},  # implies the KTransformers engine
    {"model_name_or_path": "some/folder"},  # a transformers checkpoint
])
def test_a_named_engine_or_a_transformers_checkpoint_is_left_as_given(args):
    choice = choose_chat_engine(args, installed=installed)
    assert choice.model_args is args and choice.reason is None


def test_without_llama_cpp_the_default_model_stays_on_transformers_and_says_how_to_get_it():
    args = {"do_sample": False}
    choice = choose_chat_engine(args, installed=missing)
    assert choice.model_args == args and "infer_backend" not in choice.model_args
    assert choice.reason.startswith("lmchat: transformers engine (the default model is a GGUF")
    assert "make setup installs it" in choice.reason


def test_bad_settings_fail_as_chat_model_would_fail():
    with pytest.raises(ConfigError, match="tempreature"):
        choose_chat_engine({"tempreature": 0.3}, installed=installed)


def test_a_gguf_chat_moves_to_llama_cpp_and_a_setting_it_refuses_keeps_transformers():
    pytest.importorskip(LLAMACPP_PACKAGE)
    args = {"model_name_or_path": "/models/tiny.Q8_0.gguf", "temperature": 0.3}
    choice = choose_chat_engine(args)
    assert choice.model_args == {**args, "infer_backend": "llamacpp"} and args.get("infer_backend") is None
    assert choice.reason.startswith("lmchat: llama.cpp engine (/models/tiny.Q8_0.gguf is a GGUF model")
    refused = {"quantization_bit": 8}  # the transformers engine's own quantization
    choice = choose_chat_engine(refused)
    assert choice.model_args is refused
    assert choice.reason == ("lmchat: transformers engine (the default model is a GGUF, but the llama.cpp engine "
                             "cannot honour quantization_bit).")

