"""Embeddings with the llama.cpp engine (the embedded SmolLM2 GGUF, a chat model: it pools its last token unless
``pooling_type`` says otherwise), checked against llama-cpp-python's own ``Llama.embed``."""

from __future__ import annotations

import math

import pytest

llama_cpp = pytest.importorskip("llama_cpp")

from lmchat import ChatModel  # noqa: E402
from lmchat.errors import UnsupportedError  # noqa: E402
from lmchat.models.default import default_gguf_path  # noqa: E402

pytestmark = pytest.mark.slow
TEXTS = ["The cat sat on the mat.", "Paris is the capital of France."]


def direct_embeddings(pooling: int) -> list[list[float]]:
    # the engine's context settings: flash attention, q8_0 keys and values
    llm = llama_cpp.Llama(model_path=str(default_gguf_path()), embedding=True, pooling_type=pooling, n_ctx=512,
                          n_threads=1, flash_attn=True, type_k=8, type_v=8, verbose=False)
    try:
        return [llm.embed(text, normalize=False) for text in TEXTS]
    finally:
        llm.close()


@pytest.mark.parametrize("setting, pooling", [("auto", llama_cpp.LLAMA_POOLING_TYPE_LAST),
                                              ("mean", llama_cpp.LLAMA_POOLING_TYPE_MEAN)])
def test_embeddings_equal_llama_cpp_python(setting, pooling):
    with ChatModel({"infer_backend": "llamacpp", "pooling_type": setting, "llamacpp_config": {"n_threads": 1}}) \
            as model:  # (it loads llama.cpp's CPU backend, which the direct calls need too)
        expected = direct_embeddings(pooling)
        tokens = sum(len(_ids(text)) for text in TEXTS)
        raw = model.embed(TEXTS, normalize=False)
        normalised = model.embed(TEXTS[0])
        assert model.engine.info.pooling.pooling_type == ("last" if setting == "auto" else "mean")
        with pytest.raises(UnsupportedError, match="does not score text pairs"):
            model.score_pairs("a", "b")
        [answer] = model.chat([{"role": "user", "content": "hi"}], max_new_tokens=2)  # it still chats
    for vector, reference in zip(raw.vectors, expected):
        assert vector == pytest.approx(reference, rel=1e-4, abs=1e-4)
    assert raw.prompt_tokens == tokens
    assert math.fsum(x * x for x in normalised.vectors[0]) == pytest.approx(1.0)
    assert answer.response_length >= 1


def _ids(text: str) -> list[int]:
    llm = llama_cpp.Llama(model_path=str(default_gguf_path()), vocab_only=True, verbose=False)
    try:
        return llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
    finally:
        llm.close()
