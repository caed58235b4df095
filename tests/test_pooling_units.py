"""The facade's pooling decisions (lmchat.chat.pooling) and the vLLM engine's pooling mapping, as pure units (no
model, no vLLM: .venv-vllm is not there to run the vLLM engine's pooling runner for real)."""

from __future__ import annotations

import math

import pytest

from lmchat.chat.pooling import EmbedOptions, check_dimensions, embedding_inputs, finish_vector, text_pairs
from lmchat.engines.pooling import PoolingInfo
from lmchat.engines.vllm.pooling import matryoshka_sizes, pooling_params_kwargs, pooling_support
from lmchat.errors import InvalidRequestError, UnsupportedError


def test_embedding_inputs_as_openai_reads_them():
    assert embedding_inputs("a") == ["a"]
    assert embedding_inputs([1, 2]) == [[1, 2]]
    assert embedding_inputs(["a", [3]]) == ["a", [3]]
    for bad, param in (([], "input"), ([True], "input[0]"), ([[]], "input[0]"), ([1.5], "input[0]"), (7, "input")):
        with pytest.raises(InvalidRequestError) as error:
            embedding_inputs(bad)
        assert error.value.param == param


def test_dimensions_cut_then_normalise():
    vector = [3.0, 4.0, 12.0]
    assert finish_vector(vector, EmbedOptions(dimensions=2)) == pytest.approx([0.6, 0.8])
    assert finish_vector(vector, EmbedOptions(normalize=False)) == vector
    assert math.fsum(x * x for x in finish_vector(vector, EmbedOptions())) == pytest.approx(1.0)
    assert finish_vector([0.0, 0.0], EmbedOptions()) == [0.0, 0.0]


def test_dimensions_follow_vllms_matryoshka_rule():
    plain = PoolingInfo(embedding_size=8, pooling_type="mean")
    check_dimensions(plain, None, "m")
    with pytest.raises(UnsupportedError, match="matryoshka"):
        check_dimensions(plain, 4, "m")
    free = PoolingInfo(embedding_size=8, pooling_type="mean", matryoshka_dimensions=())
    check_dimensions(free, 3, "m")
    with pytest.raises(InvalidRequestError, match="from 1 to the model's 8"):
        check_dimensions(free, 9, "m")
    listed = PoolingInfo(embedding_size=8, pooling_type="mean", matryoshka_dimensions=(4, 8))
    with pytest.raises(InvalidRequestError, match="4, 8 dimensions only"):
        check_dimensions(listed, 3, "m")


def test_text_pairs_as_vllm_pairs_them():
    assert text_pairs("q", ["a", "b"]) == [("q", "a"), ("q", "b")]
    assert text_pairs(["q"], "a") == [("q", "a")]
    assert text_pairs(["q", "r"], ["a", "b"]) == [("q", "a"), ("r", "b")]
    with pytest.raises(InvalidRequestError) as error:
        text_pairs(["q", "r"], ["a", "b", "c"])
    assert error.value.param == "text_2"
    with pytest.raises(InvalidRequestError):
        text_pairs([], "a")


def test_vllm_pooling_follows_its_supported_tasks():
    assert pooling_support(["embed", "token_embed"]) == (frozenset({"embed", "score"}), "cosine", ())
    tasks, pairs, notes = pooling_support(("classify", "score"))
    assert tasks == frozenset({"score"}) and pairs == "classifier" and notes[0][0] == "embed"
    tasks, pairs, notes = pooling_support(("generate",))
    assert tasks == frozenset() and pairs is None and "runner: pooling" in notes[0][1]
    assert pooling_params_kwargs("embed") == {"task": "embed", "use_activation": False}
    assert matryoshka_sizes(False, [4]) is None and matryoshka_sizes(True, None) == ()
    assert matryoshka_sizes(True, [64, 128]) == (64, 128)


def test_truncation_keeps_the_special_tokens_around_a_text():
    from lmchat.chat.pooling import _cut_text

    class Tokenizer:  # a BERT-like tokenizer: [CLS]=0 text [SEP]=1, each character a token
        def tokenize(self, text, add_special_tokens=False):
            ids = [ord(c) for c in text]
            return [0, *ids, 1] if add_special_tokens else ids

    engine = Tokenizer()
    assert _cut_text(engine, "abcdef", 4, EmbedOptions()) == [0, ord("e"), ord("f"), 1]
    assert _cut_text(engine, "abcdef", 3, EmbedOptions(add_special_tokens=False)) == [ord(c) for c in "def"]
    assert _cut_text(engine, "abcdef", 1, EmbedOptions()) == [0]
