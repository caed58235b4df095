"""Engine-independent generation pieces: option validation, stop strings, incremental detokenization."""

import pytest

from lmchat.errors import InvalidRequestError
from lmchat.generation import StopMatcher, resolve_sampling
from lmchat.generation.detokenize import IncrementalDetokenizer


def test_options_merge_over_defaults_with_aliases():
    params = resolve_sampling({"temperature": 0.9, "max_new_tokens": 100}, {"num_return_sequences": 3, "stop": "x"})
    assert (params.n, params.temperature, params.max_new_tokens, params.stop) == (3, 0.9, 100, ("x",))
    assert resolve_sampling({}, {"max_tokens": 5}).max_new_tokens == 5


def test_max_new_tokens_per_call_overrides_a_configured_max_length():
    params = resolve_sampling({"max_length": 50, "max_new_tokens": 10}, {"max_new_tokens": 20})
    assert (params.max_new_tokens, params.max_length) == (20, None)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tempreature": 1}, "Unknown generation option 'tempreature'; did you mean 'temperature'"),
        ({"top_p": 0}, "Invalid value for 'top_p'"),
        ({"stop": [""]}, "stop strings must not be empty"),
        ({"top_logprobs": 3}, "top_logprobs needs logprobs=true"),
        ({"logit_bias": {5: 200}}, "between -100 and 100"),
    ],
)
def test_bad_options_are_rejected(options, message):
    with pytest.raises(InvalidRequestError, match=message):
        resolve_sampling({}, options)


def feed_all(matcher, pieces):
    return "".join(matcher.feed(piece) for piece in pieces)


def test_stop_string_split_across_deltas_is_cut():
    matcher = StopMatcher(("STOP",))
    assert feed_all(matcher, ["Hello S", "TO", "P and more"]) == "Hello "
    assert matcher.stopped


def test_partial_stop_prefix_is_released_when_it_does_not_match():
    matcher = StopMatcher(("</end>",))
    out = feed_all(matcher, ["a </e", "x", " b"])
    assert out + matcher.flush() == "a </ex b"
    assert not matcher.stopped


def test_earliest_of_several_stops_wins():
    matcher = StopMatcher(("world", "lo"))
    assert feed_all(matcher, ["hello world"]) == "hel"


def test_detokenizer_never_splits_a_multibyte_character(tiny_tokenizer_dir):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tiny_tokenizer_dir / "tokenizer.json"))  # SmolLM2's byte-level BPE
    text = "Héllo wörld 你好 🎉 ok"
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    detok = IncrementalDetokenizer(lambda i: tokenizer.decode(i, skip_special_tokens=False), [1, 2, 3])
    pieces = [detok.add(token) for token in ids] + [detok.flush()]
    assert not any("\ufffd" in piece for piece in pieces)
    assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=False) == text
    assert "" in pieces  # some token ended mid-character and was held back
