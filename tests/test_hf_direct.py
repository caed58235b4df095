"""Direct loading (engines/hf/direct.py): Llama-family checkpoints straight into lmchat's own modules, against
transformers' own model on the same weights."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from lmchat import ChatModel
from lmchat.config.model_config import ModelConfig
from lmchat.engines.hf import direct
from lmchat.engines.hf.direct_model import DirectCausalLM
from lmchat.engines.hf.loading import load_model
from lmchat.engines.hf.quant import QuantizedLinear, weight_bits
from lmchat.engines.hf.runner import pick_runner
from lmchat.errors import ModelNotFoundError

CPU = torch.device("cpu")
SMALL = dict(vocab_size=49152, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=256, bos_token_id=1, eos_token_id=2)
FAMILIES = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),  # q/k/v biases
    "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
    "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM),  # q/k norms: not a direct family
}
IDS = [[5, 17, 42, 7, 99, 3, 12, 250, 8, 11]]


def save(tmp_path, tokenizer_dir, kind="llama", name=None, **overrides):
    """A random-weight checkpoint of ``kind`` with SmolLM2's tokenizer; returns (folder, transformers model)."""
    torch.manual_seed(0)
    config_class, model_class = FAMILIES[kind]
    model = model_class(config_class(**{**SMALL, **overrides})).eval()
    folder = tmp_path / (name or kind)
    model.save_pretrained(folder)
    transformers.AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(folder)
    return folder, model


def reference_float(folder):
    return load_model(config_for(folder, direct_load="off")).model


def config_for(folder, **settings) -> ModelConfig:
    return ModelConfig(model_name_or_path=str(folder), infer_backend="huggingface", **settings)


@pytest.mark.parametrize("kind, overrides", [
    ("llama", {"tie_word_embeddings": True}), ("llama", {"tie_word_embeddings": False, "num_key_value_heads": 4}),
    ("qwen2", {}), ("mistral", {"sliding_window": None}), ("llama", {"attention_bias": True}),
])
def test_direct_model_gives_transformers_logits(tmp_path, tiny_tokenizer_dir, kind, overrides):
    folder, reference = save(tmp_path, tiny_tokenizer_dir, kind, **overrides)
    loaded = load_model(config_for(folder))
    assert isinstance(loaded.model, DirectCausalLM)
    ids = torch.tensor(IDS)
    expected = reference(ids).logits
    got = loaded.model(input_ids=ids, use_cache=False).logits
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)
    # the module names are transformers' own (LoRA adapters and the lean forward find the same weights)
    assert {n for n, _ in loaded.model.named_parameters()} <= set(reference.state_dict())
    # and the lean forward (the runner serving it) passes the start-up check against the reference forward
    runner = pick_runner(loaded.model, CPU, "off")
    assert runner.name == "lean"


def test_direct_and_transformers_loads_answer_alike(tmp_path, tiny_tokenizer_dir):
    folder, _ = save(tmp_path, tiny_tokenizer_dir, "qwen2")
    answers = {}
    for mode in ("auto", "off"):
        with ChatModel({"model_name_or_path": str(folder), "infer_backend": "huggingface", "direct_load": mode,
                        "native_decode": "off"}) as model:
            assert isinstance(model.engine.loaded.model, DirectCausalLM) == (mode == "auto")
            reply = model.chat([{"role": "user", "content": "Hello there"}], do_sample=False, max_new_tokens=12)[0]
            answers[mode] = (reply.response_text, reply.response_length, reply.prompt_length)
            assert model.engine.info.context_length == 256
            assert model.engine.info.vocab_size == 49152
    assert answers["auto"] == answers["off"]


def test_quantized_direct_load_matches_quantize_model_and_is_cached(tmp_path, tiny_tokenizer_dir, monkeypatch,
                                                                    caplog):
    monkeypatch.setenv("LMCHAT_CACHE", str(tmp_path / "cache"))
    folder, _ = save(tmp_path, tiny_tokenizer_dir, "llama", tie_word_embeddings=True)
    via_transformers = load_model(config_for(folder, quantization_bit=4, direct_load="off")).model
    with caplog.at_level(logging.DEBUG, logger="lmchat.engines.hf.direct"):
        first = load_model(config_for(folder, quantization_bit=4)).model
        assert not any("Read the cached" in r.message for r in caplog.records)
        caplog.clear()
        second = load_model(config_for(folder, quantization_bit=4)).model
        assert any("Read the cached 4-bit weights" in r.message for r in caplog.records)
    assert len(list((tmp_path / "cache" / "quantized").glob("*.safetensors"))) == 1
    for name, module in via_transformers.named_modules():
        if isinstance(module, QuantizedLinear):
            for model in (first, second):
                mine = model.get_submodule(name).quantized
                assert mine.bits == module.quantized.bits
                assert torch.equal(mine.codes, module.quantized.codes), name
                assert torch.equal(mine.scales, module.quantized.scales), name
    assert second.lm_head.quantized.bits == 8  # the head keeps 8 bits, as quantize_model keeps it
    assert weight_bits(second) == weight_bits(via_transformers) == 4 and weight_bits(reference_float(folder)) is None
    assert second.model.embed_tokens.quantized is second.lm_head.quantized  # tied: one copy of the rows
    ids = torch.tensor(IDS)
    assert torch.allclose(second(input_ids=ids).logits, via_transformers(ids).logits, atol=1e-4, rtol=0)


def test_the_cache_follows_the_checkpoint(tmp_path, tiny_tokenizer_dir, monkeypatch):
    monkeypatch.setenv("LMCHAT_CACHE", str(tmp_path / "cache"))
    folder, _ = save(tmp_path, tiny_tokenizer_dir, "llama")
    load_model(config_for(folder, quantization_bit=8))
    save(tmp_path, tiny_tokenizer_dir, "llama", num_hidden_layers=3)  # the same folder, new weights
    model = load_model(config_for(folder, quantization_bit=8)).model
    assert len(model.model.layers) == 3
    assert len(list((tmp_path / "cache" / "quantized").glob("*.safetensors"))) == 2
    # a checkpoint that is gone loses its cached weights at the next write
    other, _ = save(tmp_path, tiny_tokenizer_dir, "llama", name="other")
    import shutil

    shutil.rmtree(folder)
    load_model(config_for(other, quantization_bit=8))
    [left] = (tmp_path / "cache" / "quantized").glob("*.safetensors")
    assert left.name.startswith("other-8bit-")


@pytest.mark.parametrize("kind, overrides, settings, reason", [
    ("llama", {}, {"direct_load": "off"}, "direct_load: off"),
    ("qwen3", {}, {}, "architecture"),
    ("mistral", {"sliding_window": 16}, {}, "sliding-window"),
    ("llama", {"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}}, {}, "scaled RoPE"),
    ("llama", {}, {"rope_scaling": "linear"}, "rope_scaling"),
    ("llama", {}, {"infer_dtype": "bfloat16"}, "float32"),
])
def test_what_direct_loading_leaves_to_transformers(tmp_path, tiny_tokenizer_dir, kind, overrides, settings, reason):
    folder, reference = save(tmp_path, tiny_tokenizer_dir, kind, **overrides)
    config = config_for(folder, **settings)
    assert reason in direct.unsupported(config, str(folder), CPU)
    loaded = load_model(config)
    assert type(loaded.model) is type(reference)


def test_a_checkpoint_that_does_not_fit_its_config_is_named(tmp_path, tiny_tokenizer_dir):
    folder, _ = save(tmp_path, tiny_tokenizer_dir, "llama")
    raw = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**raw, "intermediate_size": 128}))
    with pytest.raises(ModelNotFoundError, match=r"gate_proj is 96x64, but config.json says 128x64"):
        load_model(config_for(folder))
    (folder / "config.json").write_text(json.dumps({**raw, "num_hidden_layers": 3}))
    with pytest.raises(ModelNotFoundError, match=r"no tensor model.layers.2.* direct_load: off"):
        load_model(config_for(folder))


def test_generic_tokenizer_class_loads_as_autotokenizer_does(default_model_dir):
    fast = direct.load_tokenizer(default_model_dir, False)
    auto = transformers.AutoTokenizer.from_pretrained(default_model_dir)
    text = "Hello <|im_start|>user\nCafé 123 \t tabs and émojis 🎉<|im_end|>"
    assert fast(text)["input_ids"] == auto(text)["input_ids"]
    assert fast.all_special_tokens == auto.all_special_tokens and fast.eos_token_id == auto.eos_token_id
    assert fast.chat_template == auto.chat_template and len(fast) == len(auto)


@pytest.mark.slow
def test_default_model_starts_without_transformers_model_classes(default_model_dir):
    """What makes a cold start fast: the default model answers with no transformers modeling module imported."""
    script = (
        "import sys\n"
        "from lmchat import ChatModel\n"
        "with ChatModel({'infer_backend': 'huggingface'}) as m:\n"
        "    r = m.chat([{'role': 'user', 'content': 'Name the capital of France.'}], do_sample=False,"
        " max_new_tokens=16)[0]\n"
        "    print(type(m.engine.loaded.model).__name__, repr(r.response_text))\n"
        "print(sorted(k for k in sys.modules if k.startswith(('transformers.modeling', 'transformers.models.llama',"
        " 'transformers.generation'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    first, modules = result.stdout.strip().splitlines()[-2:]
    assert first.startswith("DirectCausalLM") and "Paris" in first
    assert modules == "[]"
