"""LLaMA-Factory's inference YAMLs and keys work unchanged: accepted, honoured or reported once as ignored.

The table below holds our own copies of the keys of every YAML under LLaMA-Factory's ``examples/inference/`` (its main
branch history, llama3.yaml to qwen3vl.yaml), with ``model_name_or_path`` (and adapters) pointing at tiny local
models. Those for the transformers engine load and answer; those for vLLM, SGLang and KTransformers (not installed
here) get past the config and fail only on the missing engine package.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from lmchat import ChatModel
from lmchat.config import ModelConfig
from lmchat.config.review import ignored_line, review_settings
from lmchat.errors import ConfigError, MissingDependencyError

MODEL, ADAPTER = "TINY_MODEL", "TINY_ADAPTER"
EXAMPLES = {
    "llama3.yaml": {"model_name_or_path": MODEL, "template": "llama3", "infer_backend": "huggingface",
                    "trust_remote_code": True},
    "llama3_full_sft.yaml": {"model_name_or_path": MODEL, "template": "llama3", "infer_backend": "huggingface",
                             "trust_remote_code": True},
    "llama3_lora_sft.yaml": {"model_name_or_path": MODEL, "adapter_name_or_path": ADAPTER, "template": "llama3",
                             "infer_backend": "huggingface", "trust_remote_code": True},
    "llava1_5.yaml": {"model_name_or_path": MODEL, "template": "llava", "infer_backend": "huggingface",
                      "trust_remote_code": True},
    "qwen2_vl.yaml": {"model_name_or_path": MODEL, "template": "qwen2_vl", "infer_backend": "huggingface",
                      "trust_remote_code": True},
    "qwen2_5vl.yaml": {"model_name_or_path": MODEL, "template": "qwen2_vl", "infer_backend": "huggingface",
                       "trust_remote_code": True},
    "qwen3.yaml": {"model_name_or_path": MODEL, "template": "qwen3_nothink", "infer_backend": "huggingface",
                   "trust_remote_code": True},
    "qwen3_full_sft.yaml": {"model_name_or_path": MODEL, "template": "qwen3_nothink", "infer_backend": "huggingface",
                            "trust_remote_code": True},
    "qwen3_lora_sft.yaml": {"model_name_or_path": MODEL, "adapter_name_or_path": ADAPTER, "template": "qwen3_nothink",
                            "infer_backend": "huggingface", "trust_remote_code": True},
    "qwen3vl.yaml": {"model_name_or_path": MODEL, "template": "qwen3_vl_nothink", "infer_backend": "huggingface",
                     "trust_remote_code": True},
    "mossvl.yaml": {"model_name_or_path": MODEL, "template": "moss_vl", "infer_backend": "huggingface",
                    "trust_remote_code": True},
    "llama3_vllm.yaml": {"model_name_or_path": MODEL, "template": "llama3", "infer_backend": "vllm",
                         "vllm_enforce_eager": True, "trust_remote_code": True},
    "llama3_sglang.yaml": {"model_name_or_path": MODEL, "template": "llama3", "infer_backend": "sglang",
                           "trust_remote_code": True},
    "deepseek2_lora_sft_kt.yaml": {"model_name_or_path": MODEL, "adapter_name_or_path": ADAPTER,
                                   "template": "deepseek", "infer_backend": "ktransformers", "trust_remote_code": True,
                                   "use_kt": True, "kt_optimize_rule": "DeepSeek-V2-Lite-Chat-sft-amx.yaml",
                                   "cpu_infer": 32, "chunk_size": 8192},
    "deepseek3_kt.yaml": {"model_name_or_path": MODEL, "template": "deepseek", "infer_backend": "ktransformers",
                          "trust_remote_code": True, "use_kt": True,
                          "kt_optimize_rule": "DeepSeek-V3-Chat-sft-amx-multi-gpu.yaml", "cpu_infer": 32,
                          "chunk_size": 8192},
    "deepseek3_lora_sft_kt.yaml": {"model_name_or_path": MODEL, "adapter_name_or_path": ADAPTER,
                                   "template": "deepseek", "infer_backend": "ktransformers", "trust_remote_code": True,
                                   "use_kt": True, "kt_optimize_rule": "DeepSeek-V3-Chat-sft-amx-multi-gpu.yaml",
                                   "cpu_infer": 32, "chunk_size": 8192},
    "qwen3moe_lora_sft_kt.yaml": {"model_name_or_path": MODEL, "adapter_name_or_path": ADAPTER,
                                  "template": "qwen3_nothink", "infer_backend": "ktransformers",
                                  "trust_remote_code": True, "use_kt": True, "kt_optimize_rule": "Qwen3Moe-sft-amx.yaml",
                                  "cpu_infer": 32, "chunk_size": 8192},
}
ENGINE_PACKAGES = {"vllm": "vllm", "sglang": "sglang", "ktransformers": "ktransformers"}

# The keys an LLaMA-Factory user sets beyond those YAMLs (from its docs and scripts: QLoRA inference, vllm_infer.py,
# multimodal limits, training keys left in a copied YAML), with values LLaMA-Factory takes.
MORE_KEYS = {
    "image_max_pixels": 262144, "image_min_pixels": 1024, "video_max_pixels": 16384, "video_fps": 2.0,
    "video_maxlen": 64, "audio_sampling_rate": 16000, "cutoff_len": 2048, "num_beams": 1, "use_fast_tokenizer": True,
    "low_cpu_mem_usage": True, "use_unsloth": False, "enable_liger_kernel": False, "finetuning_type": "lora",
    "export_dir": "models/llama3_lora_sft", "ms_hub_token": "ms-secret", "print_param_status": False,
    "offload_folder": "offload", "model_max_length": 2048, "flash_attn": "auto", "preserve_thinking": False,
    "vllm_config": "{}", "default_system": "You are a helpful assistant.", "enable_thinking": True,
    "do_sample": True, "temperature": 0.95, "top_p": 0.7, "top_k": 50, "max_new_tokens": 8, "repetition_penalty": 1.0,
    "length_penalty": 1.0, "skip_special_tokens": True, "lora_rank": 8, "lora_target": "all", "stage": "sft",
}


@pytest.fixture(scope="module")
def tiny_adapter_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """A LoRA adapter of the tiny model (random B weights, so it changes the model)."""
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, parameter in lora.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.1)
    out = tmp_path_factory.mktemp("adapter") / "lora"
    lora.save_pretrained(out)
    return out


def _settings(example: str, model: Path, adapter: Path) -> dict:
    swap = {MODEL: str(model), ADAPTER: str(adapter)}
    return {key: swap.get(value, value) if isinstance(value, str) else value
            for key, value in EXAMPLES[example].items()}


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_inference_example_validates(example):
    config = ModelConfig.from_dict(_settings(example, Path("model"), Path("adapter")))
    assert config.template == EXAMPLES[example]["template"]
    assert config.ignored == {}


def _distinct(examples: list[str]) -> list:
    """One case per distinct set of keys (llama3.yaml and llama3_full_sft.yaml hold the same ones)."""
    groups: dict[str, list[str]] = {}
    for name in examples:
        groups.setdefault(repr(sorted(EXAMPLES[name].items())), []).append(name)
    return [pytest.param(names[0], id="=".join(names)) for names in groups.values()]


@pytest.mark.parametrize("example", _distinct([name for name, keys in EXAMPLES.items()
                                               if keys["infer_backend"] == "huggingface"]))
def test_transformers_examples_load_and_answer(example, tmp_path, tiny_model_dir, tiny_adapter_dir):
    path = tmp_path / example
    path.write_text(yaml.safe_dump({**_settings(example, tiny_model_dir, tiny_adapter_dir), "do_sample": False,
                                    "max_new_tokens": 3}))
    from lmchat.config import load_yaml

    with ChatModel(load_yaml(path)) as model:
        [response] = model.chat([{"role": "user", "content": "Hi"}])
        assert model.engine_type == "huggingface" and model.engine.can_generate
        assert model.template.name == EXAMPLES[example]["template"]
    assert response.response_length == 3 and response.finish_reason == "length"


@pytest.mark.parametrize("example", [name for name, keys in EXAMPLES.items() if keys["infer_backend"] != "huggingface"])
def test_other_engine_examples_fail_only_on_the_missing_engine(example, monkeypatch):
    backend = EXAMPLES[example]["infer_backend"]
    pytest.importorskip("torch")
    import importlib.util

    if importlib.util.find_spec(ENGINE_PACKAGES[backend]) is not None:
        pytest.skip(f"{backend} is installed here; its GPU tests cover it")
    with pytest.raises(MissingDependencyError, match=f"The {backend} engine needs the Python package"):
        ChatModel(_settings(example, Path("model"), Path("adapter")))


def test_the_issue_keys_are_accepted_and_the_training_ones_kept_aside(tiny_model_dir, caplog):
    config = ModelConfig.from_dict({"model_name_or_path": str(tiny_model_dir), **MORE_KEYS})
    assert (config.image_max_pixels, config.video_maxlen, config.cutoff_len, config.vllm_config) == (262144, 64,
                                                                                                       2048, {})
    assert set(config.ignored) == {"use_fast_tokenizer", "low_cpu_mem_usage", "use_unsloth", "enable_liger_kernel",
                                   "export_dir", "ms_hub_token", "print_param_status", "offload_folder", "lora_rank",
                                   "lora_target"}
    assert config.ignored["ms_hub_token"] == "ms-secret"  # kept as given ...
    with caplog.at_level(logging.WARNING, logger="lmchat.config"):
        with ChatModel({"model_name_or_path": str(tiny_model_dir), **MORE_KEYS, "do_sample": False}) as model:
            [response] = model.chat([{"role": "user", "content": "Hi"}])
    assert response.response_length == 8
    [record] = [r for r in caplog.records if r.name == "lmchat.config"]  # reported once
    line = record.getMessage()
    assert "ms-secret" not in line  # ... never logged
    assert line == (
        "Ignored settings: use_fast_tokenizer, low_cpu_mem_usage (they have no effect with transformers 5: its "
        "tokenizers are always fast, its loading always memory-efficient); use_unsloth, enable_liger_kernel, "
        "print_param_status, lora_rank, lora_target (they only matter to training); export_dir (they only matter to "
        "'llamafactory-cli export'); ms_hub_token (they log in to ModelScope or Modelers, and lmchat downloads from "
        "the Hugging Face Hub); offload_folder (they matter only when weights are offloaded to disk, which lmchat's "
        "engines never do); vllm_config (settings of the vllm engine)."
    )


def test_quantization_is_validated_then_honoured_or_refused_by_each_engine(tiny_model_dir):
    settings = {"model_name_or_path": str(tiny_model_dir), "quantization_bit": 4, "quantization_method": "bnb"}
    config = ModelConfig.from_dict(settings)
    from lmchat.engines.registry import get_engine_class

    review_settings(config, get_engine_class("huggingface"))  # quantized on load (tests/test_hf_quant.py)
    with pytest.raises(ConfigError) as info:
        review_settings(config, get_engine_class("llamacpp"))
    assert str(info.value) == (
        "Weight quantization on load (quantization_bit: 4) is not available for the llamacpp engine yet; leave "
        "quantization_bit out, or load a checkpoint quantized ahead of time."
    )
    assert info.value.param == "quantization_bit"
    with pytest.raises(ConfigError, match="quantization_bit: 4"):
        ChatModel({**settings, "infer_backend": "llamacpp"})  # before any weight is read
    with pytest.raises(ConfigError, match="quantization_bit 4 does not fit quantization_method 'eetq', which takes 8"):
        ModelConfig.from_dict({"quantization_bit": 4, "quantization_method": "eetq"})
    with pytest.raises(ConfigError, match="checkpoints quantized ahead of time"):
        ModelConfig.from_dict({"quantization_bit": 4, "quantization_method": "gptq"})


def test_an_engine_refuses_settings_it_cannot_honour():
    from lmchat.engines.fake import ScriptedEngine

    config = ModelConfig.from_dict({"rope_scaling": "linear", "infer_backend": "fake"})
    with pytest.raises(ConfigError, match=r"The fake engine cannot honour rope_scaling: 'linear'"):
        review_settings(config, ScriptedEngine)
    with pytest.raises(ConfigError, match="flash_attn"):
        ChatModel({"infer_backend": "fake", "flash_attn": "fa2"})


def test_other_engines_settings_and_training_stages_are_reported():
    config = ModelConfig.from_dict({"vllm_maxlen": 2048, "sglang_tp_size": 2, "cpu_infer": 8, "stage": "dpo",
                                    "length_penalty": 1.2, "infer_backend": "huggingface"})
    assert ignored_line(config, "huggingface") == (
        "Ignored settings: cpu_infer (settings of the ktransformers engine); sglang_tp_size (settings of the sglang "
        "engine); vllm_maxlen (settings of the vllm engine); stage: dpo (a training stage: the model chats as it "
        "is); length_penalty (no effect without beam search, as in transformers)."
    )
    assert ignored_line(ModelConfig.from_dict({"vllm_maxlen": 2048, "infer_backend": "vllm"}), "vllm") is None


def test_stage_rm_needs_a_reward_model(tiny_model_dir, tiny_reward_dir):
    with pytest.raises(ConfigError, match="stage: rm asks for a reward model"):
        ChatModel({"model_name_or_path": str(tiny_model_dir), "stage": "rm"})
    with ChatModel({"model_name_or_path": str(tiny_reward_dir), "stage": "rm"}) as model:
        assert not model.engine.can_generate and len(model.get_scores(["a b c"])) == 1


def test_use_kt_selects_ktransformers_and_mode_is_kt_mode():
    config = ModelConfig.from_dict({"use_kt": True, "mode": "long_context"})
    assert (config.infer_backend, config.kt_mode) == ("ktransformers", "long_context")
    with pytest.raises(ConfigError, match="use_kt runs the model with KTransformers; it cannot be combined with "
                                          "infer_backend 'vllm'") as info:
        ModelConfig.from_dict({"use_kt": True, "infer_backend": "vllm"})
    assert info.value.param == "use_kt"


def test_engine_configs_as_json_text_as_vllm_infer_passes_them():
    config = ModelConfig.from_dict({"vllm_config": '{"max_num_seqs": "8", "enable_prefix_caching": "true", '
                                                   '"gpu_memory_utilization": "0.5"}', "sglang_config": "{}"})
    assert config.vllm_config == {"max_num_seqs": 8, "enable_prefix_caching": True, "gpu_memory_utilization": 0.5}
    assert config.sglang_config == {}


@pytest.mark.parametrize(
    ("settings", "line"),
    [
        ({"video_maxlenn": 3}, "Unknown setting 'video_maxlenn'; did you mean 'video_maxlen'? Every setting: "
                               "lmchat --help-config (or docs/configuration.md)."),
        ({"cuttoff_len": 3}, "Unknown setting 'cuttoff_len'; did you mean 'cutoff_len'? Every setting: "
                             "lmchat --help-config (or docs/configuration.md)."),
        ({"quantisation": 4}, "Unknown setting 'quantisation'. Every setting: lmchat --help-config (or "
                              "docs/configuration.md)."),
        ({"template": "qwen2_v"}, "Unknown template 'qwen2_v'; did you mean 'qwen2_vl'? Every template name: "
                                  "lmchat --help-config."),
        ({"template": "qwen3-nothink"}, "Unknown template 'qwen3-nothink'; did you mean 'qwen3_nothink'? Every "
                                        "template name: lmchat --help-config."),
    ],
)
def test_an_unknown_key_or_name_is_one_short_line_with_close_names(settings, line):
    with pytest.raises(ConfigError) as info:
        ModelConfig.from_dict(settings)
    assert str(info.value) == line
    assert info.value.param == next(iter(settings))


def test_an_unknown_template_fails_before_the_model_loads(tmp_path):
    missing_model = str(tmp_path / "no-such-model")
    with pytest.raises(ConfigError, match="Unknown template 'llama5'"):
        ChatModel({"model_name_or_path": missing_model, "template": "llama5"})


def test_cutoff_len_keeps_the_end_of_a_long_prompt(tiny_model_dir):
    with ChatModel({"model_name_or_path": str(tiny_model_dir), "template": "qwen", "cutoff_len": 12,
                    "do_sample": False, "max_new_tokens": 2}) as model:
        prepared = model.prepare([{"role": "user", "content": "word " * 40}])
        full = model.render([{"role": "user", "content": "word " * 40}])
        [response] = model.chat([{"role": "user", "content": "word " * 40}])
    assert len(prepared.prompt_token_ids) == 12 and response.prompt_length == 12
    assert full.endswith(prepared.prompt) and prepared.prompt.endswith("<|im_start|>assistant\n")


def test_rope_scaling_and_flash_attn_reach_the_transformers_model(tiny_model_dir):
    with ChatModel({"model_name_or_path": str(tiny_model_dir), "rope_scaling": "linear", "flash_attn": "disabled",
                    "do_sample": False, "max_new_tokens": 2}) as model:
        hf = model.engine.loaded.model
        assert hf.config.rope_parameters["rope_type"] == "linear" and hf.config.rope_parameters["factor"] == 2.0
        assert hf.config.max_position_embeddings == 1024 and model.engine.info.context_length == 1024
        assert hf.config._attn_implementation == "eager"
        [response] = model.chat([{"role": "user", "content": "Hi"}])
    assert response.response_length == 2
    with ChatModel({"model_name_or_path": str(tiny_model_dir), "rope_scaling": "dynamic", "model_max_length": 2000,
                    "max_new_tokens": 1}) as model:
        parameters = model.engine.loaded.model.config.rope_parameters
        assert (parameters["factor"], parameters["original_max_position_embeddings"]) == (4.0, 512)
        assert model.engine.info.context_length == 2000
    with pytest.raises(ConfigError, match="flash_attn: fa2 needs a CUDA GPU"):
        ChatModel({"model_name_or_path": str(tiny_model_dir), "flash_attn": "fa2", "device": "cpu"})


def test_num_beams_above_one_is_refused_clearly(tiny_model_dir):
    with pytest.raises(ConfigError, match="beam search is not available"):
        ChatModel({"model_name_or_path": str(tiny_model_dir), "num_beams": 4})
    with ChatModel({"infer_backend": "fake"}) as model:
        with pytest.raises(Exception, match="beam search is not available"):
            model.chat([{"role": "user", "content": "Hi"}], num_beams=2)
