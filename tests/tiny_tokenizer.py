"""SmolLM2's real tokenizer, taken out of the default model's GGUF without converting its weights (no torch).

The GGUF's metadata holds the byte-level BPE vocabulary, merges, special tokens and chat template; this builds the
same ``tokenizer.json`` transformers writes for it (tests/test_tiny_tokenizer.py checks that), plus its
``tokenizer_config.json`` and ``chat_template.jinja``, in a folder ``AutoTokenizer`` loads. Reading the metadata
takes a few seconds, so the folder is cached in lmchat's cache, keyed like the converted checkpoint.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

CONTROL = 3  # GGUF token type of special (control) tokens


def smollm2_tokenizer_dir() -> Path:
    """The cached tokenizer folder of the embedded default model (built on first use)."""
    from lmchat.models.default import default_gguf_path
    from lmchat.models.gguf import gguf_checkpoint_dir

    gguf_path = default_gguf_path()
    target = gguf_checkpoint_dir(gguf_path).with_name(gguf_checkpoint_dir(gguf_path).name + "-tokenizer")
    if (target / "tokenizer.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        write_tokenizer(gguf_path, Path(tmp) / "out")
        shutil.rmtree(target, ignore_errors=True)
        (Path(tmp) / "out").rename(target)
    return target


def write_tokenizer(gguf_path: Path, out_dir: Path) -> None:
    metadata = _metadata(gguf_path)
    out_dir.mkdir(parents=True)
    _tokenizer(metadata).save(str(out_dir / "tokenizer.json"))
    tokens = metadata["tokenizer.ggml.tokens"]
    config = {
        "backend": "tokenizers",
        "bos_token": tokens[metadata["tokenizer.ggml.bos_token_id"]],
        "eos_token": tokens[metadata["tokenizer.ggml.eos_token_id"]],
        "pad_token": tokens[metadata["tokenizer.ggml.padding_token_id"]],
        "unk_token": tokens[metadata["tokenizer.ggml.unknown_token_id"]],
        "tokenizer_class": "TokenizersBackend",
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (out_dir / "chat_template.jinja").write_text(metadata["tokenizer.chat_template"], encoding="utf-8")


def _metadata(gguf_path: Path) -> dict:
    import gguf

    reader = gguf.GGUFReader(str(gguf_path))
    wanted = ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type",
              "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.padding_token_id",
              "tokenizer.ggml.unknown_token_id", "tokenizer.chat_template", "tokenizer.ggml.model")
    return {key: reader.fields[key].contents() for key in wanted}


def _tokenizer(metadata: dict):
    """Byte-level BPE, as transformers builds it for a GGUF whose ``tokenizer.ggml.model`` is ``gpt2``."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    if metadata["tokenizer.ggml.model"] != "gpt2":
        raise ValueError(f"a byte-level BPE GGUF tokenizer is expected, not {metadata['tokenizer.ggml.model']}")
    tokens = metadata["tokenizer.ggml.tokens"]
    vocab = {token: index for index, token in enumerate(tokens)}
    merges = [tuple(merge.split(" ", 1)) for merge in metadata["tokenizer.ggml.merges"]]
    tokenizer = Tokenizer(models.BPE(vocab, merges, dropout=None, unk_token=None, continuing_subword_prefix="",
                                     end_of_word_suffix="", fuse_unk=False, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    tokenizer.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B:1", special_tokens=[])
    special = [token for token, kind in zip(tokens, metadata["tokenizer.ggml.token_type"]) if kind == CONTROL]
    tokenizer.add_special_tokens([AddedToken(token, normalized=False, special=True) for token in special])
    return tokenizer
