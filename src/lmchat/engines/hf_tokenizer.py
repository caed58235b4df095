"""A transformers tokenizer as lmchat's engines need it: tokenize, detokenize, template and special tokens.

Shared by the engines whose native tokenizer is a transformers tokenizer (transformers, vLLM, SGLang, KTransformers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class HFTokenizerMixin:
    """Implements BaseEngine's tokenizer methods over ``self.tokenizer`` (a transformers tokenizer)."""

    tokenizer: Any = None

    def tokenize(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=add_special_tokens))

    def detokenize(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(token_ids))

    def token_strs(self, token_ids: Sequence[int]) -> list[str]:
        return list(self.tokenizer.convert_ids_to_tokens(list(token_ids)))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))


def special_tokens(tokenizer: Any) -> dict[str, str]:
    tokens = {}
    for name in ("bos_token", "eos_token", "unk_token", "pad_token"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, str):
            tokens[name] = value
    return tokens


def max_token_chars(tokenizer: Any) -> int | None:
    """An upper bound on the characters one token stands for, so that ``len(text) / bound`` is a lower bound on
    the tokens of ``text`` (the server refuses far too long prompts without tokenizing them). A token's text in the
    vocabulary is at least as long as the text it decodes to (byte-level tokens have one character per byte); a
    tokenizer that normalises its input (which may shorten it) gets four times that margin."""
    try:
        vocab = tokenizer.get_vocab()
    except (AttributeError, NotImplementedError):
        return None
    if not vocab:
        return None
    longest = max(len(token) for token in vocab)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    plain = backend is not None and backend.normalizer is None
    return max(1, longest) * (1 if plain else 4)
def _special_by_id(tokenizer: Any) -> dict[int, str]:
    """The tokens ``skip_special_tokens`` drops: the tokenizer's special tokens, by id."""
    special = {i: token.content for i, token in tokenizer.added_tokens_decoder.items() if token.special}
    special.update(zip(tokenizer.all_special_ids, tokenizer.all_special_tokens))
    return special


def dropped_special_ids(tokenizer: Any, keep: Sequence[str]) -> frozenset[int]:
    """The ids ``skip_special_tokens`` drops, but for the tokens in ``keep`` (one not in the vocabulary: none)."""
    return frozenset(i for i, token in _special_by_id(tokenizer).items() if token not in keep)


def special_among(tokenizer: Any, tokens: Sequence[str]) -> tuple[str, ...]:
    """Those of ``tokens`` that are special tokens of the tokenizer (the others are in the text anyway)."""
    special = set(_special_by_id(tokenizer).values())
    return tuple(token for token in tokens if token in special)


def token_text(tokenizer: Any, token: int | str | None) -> str | None:
    """The text of a stop token id (or the stop string itself)."""
    if token is None or isinstance(token, str):
        return token
    return tokenizer.convert_ids_to_tokens(token)


def load_image(image: Any) -> Any:
    """A PIL image from a path (a PIL image or an engine-native object is passed through)."""
    if isinstance(image, str) and not image.startswith(("http://", "https://", "data:")):
        from PIL import Image

        return Image.open(image).convert("RGB")
    return image
