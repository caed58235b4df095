"""The tests' tokenizer (tests/tiny_tokenizer.py, built from the GGUF's metadata without torch) is the one
transformers makes of the default model's GGUF, file for file."""

from __future__ import annotations

import pytest

transformers = pytest.importorskip("transformers")

from lmchat.models.default import default_gguf_path  # noqa: E402


def test_the_tiny_tokenizer_is_transformers_own_from_the_gguf(tiny_tokenizer_dir, tmp_path):
    gguf = default_gguf_path()
    reference = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)  # no weights
    reference.save_pretrained(tmp_path / "reference")
    ours = transformers.AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    ours.save_pretrained(tmp_path / "ours")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (tmp_path / "ours" / name).read_bytes() == (tmp_path / "reference" / name).read_bytes(), name
    built = (tiny_tokenizer_dir / "tokenizer.json").read_bytes()
    assert built == (tmp_path / "reference" / "tokenizer.json").read_bytes()
    text = "<|im_start|>user\nHéllo 你好 🎉<|im_end|>"
    assert ours.encode(text) == reference.encode(text) and ours.decode(ours.encode(text)) == text
