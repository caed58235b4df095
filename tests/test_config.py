"""ModelConfig: LLaMA-Factory's keys, clear errors for unknown keys and bad values, command-line sources."""

import subprocess
import sys

import pytest

from lmchat.config import ModelConfig, args_from_command_line, parse_flags
from lmchat.errors import ConfigError


def test_llamafactory_keys_are_accepted():
    config = ModelConfig.from_dict({
        "model_name_or_path": "org/model", "adapter_name_or_path": "a, b", "template": "chatml",
        "infer_backend": "hf", "infer_dtype": "bfloat16", "trust_remote_code": True, "default_system": "Be brief.",
        "enable_thinking": False, "do_sample": False, "temperature": 0.5, "top_p": 0.9, "top_k": 10,
        "max_new_tokens": 32, "max_length": 256, "repetition_penalty": 1.1, "length_penalty": 1.0,
        "skip_special_tokens": False, "finetuning_type": "lora",
    })
    assert config.adapter_name_or_path == ["a", "b"]
    assert config.infer_backend == "huggingface"
    assert config.generation_defaults()["temperature"] == 0.5


def test_unknown_key_names_the_closest_valid_one():
    with pytest.raises(ConfigError, match="Unknown setting 'model_name_or_pth'; did you mean 'model_name_or_path'"):
        ModelConfig.from_dict({"model_name_or_pth": "x"})


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("infer_dtype", "fp8", r"Invalid value for 'infer_dtype'.*'auto', 'float32', 'float16' or 'bfloat16'"),
        ("temperature", -1, r"Invalid value for 'temperature'.*greater than or equal to 0"),
        ("top_p", 1.5, r"Invalid value for 'top_p'.*less than or equal to 1"),
        ("num_beams", 2, r"Invalid value for 'num_beams': beam search is not available.*use num_beams 1"),
        ("quantization_bit", 3, r"Invalid settings: quantization_bit 3 does not fit quantization_method 'bnb', "
                                r"which takes 4/8"),
        ("vllm_config", "[1, 2]", r"Invalid value for 'vllm_config': expected a JSON object"),
    ],
)
def test_bad_value_names_the_key_and_what_is_allowed(key, value, expected):
    with pytest.raises(ConfigError, match=expected) as info:
        ModelConfig.from_dict({key: value})
    assert info.value.param == key


def test_flags_override_the_yaml_file(tmp_path):
    path = tmp_path / "infer.yaml"
    path.write_text("model_name_or_path: some/model\ntemplate: llama3\ninfer_backend: huggingface\n")
    args = parse_flags([str(path), "--template", "chatml", "--temperature=0.3", "--do_sample", "false"])
    assert args == {"model_name_or_path": "some/model", "template": "chatml", "infer_backend": "huggingface",
                    "temperature": 0.3, "do_sample": False}


def test_llamafactory_key_value_overrides(tmp_path):
    path = tmp_path / "llama3.yaml"
    path.write_text("model_name_or_path: some/model\ntemplate: llama3\n")
    assert parse_flags([str(path), "infer_backend=vllm", "temperature=0.3", "--top_p", "0.5", "do_sample=false"]) == {
        "model_name_or_path": "some/model", "template": "llama3", "infer_backend": "vllm", "temperature": 0.3,
        "top_p": 0.5, "do_sample": False}
    assert parse_flags(["template=qwen", "--default_system", "a=b"]) == {"template": "qwen", "default_system": "a=b"}


def test_args_none_reads_the_command_line(tmp_path, monkeypatch):
    path = tmp_path / "infer.yaml"
    path.write_text("template: qwen\n")
    monkeypatch.setattr(sys, "argv", ["prog", str(path), "--max_new_tokens", "7"])
    assert args_from_command_line() == {"template": "qwen", "max_new_tokens": 7}


def test_bad_command_line_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="Config file not found"):
        parse_flags([str(tmp_path / "missing.yaml")])
    with pytest.raises(ConfigError, match="Expected a --key flag or key=value, got 'extra'"):
        parse_flags(["--template", "chatml", "extra", "oops"])


def test_import_lmchat_imports_no_torch_and_no_engine():
    code = "import sys, lmchat; lmchat.ModelConfig; print(sorted(m for m in ('torch','transformers','vllm') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- named LoRA adapters -------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [
    ["a=/x", "b=/y"], "a=/x, b=/y", {"a": "/x", "b": "/y"},
    ['{"name": "a", "path": "/x"}', "b=/y"], [{"name": "a", "path": "/x", "base_model_name": "m"}, "b=/y"],
])
def test_lora_modules_take_vllms_forms(value):
    assert ModelConfig.from_dict({"lora_modules": value}).lora_modules == {"a": "/x", "b": "/y"}


@pytest.mark.parametrize("value, message", [
    (["a=/x", "a=/y"], "adapter name 'a' is given twice"),
    (["a"], "entries are name=path"),
    (["=/x"], "adapter name '' must be"),
    (["a b=/x"], "adapter name 'a b' must be"),
    (["a="], "adapter 'a' needs a path"),
])
def test_bad_lora_modules_are_refused_naming_the_setting(value, message):
    with pytest.raises(ConfigError, match=f"lora_modules.*{message}"):
        ModelConfig.from_dict({"lora_modules": value})


def test_adapter_name_or_path_merges_unless_asked_otherwise():
    from lmchat.config.adapters import merged_adapters, named_adapters

    merged = ModelConfig.from_dict({"adapter_name_or_path": "/a/one,/b/two/"})
    assert merged_adapters(merged) == ["/a/one", "/b/two/"] and named_adapters(merged) == {}
    served = ModelConfig.from_dict({"adapter_name_or_path": "/a/one,/b/two/", "merge_adapters": False,
                                    "lora_modules": ["x=/c"]})
    assert merged_adapters(served) == [] and named_adapters(served) == {"x": "/c", "one": "/a/one", "two": "/b/two/"}
    with pytest.raises(ConfigError, match="'one' .*is given twice"):
        ModelConfig.from_dict({"adapter_name_or_path": "/a/one", "merge_adapters": False, "lora_modules": "one=/c"})


def test_more_named_adapters_than_max_loras_is_refused():
    with pytest.raises(ConfigError, match="3 named adapters are more than max_loras \\(2\\)"):
        ModelConfig.from_dict({"lora_modules": "a=/x,b=/y,c=/z", "max_loras": 2})


def test_lora_modules_flag_takes_several_entries_as_vllm_does():
    from lmchat.cli.main import build_parser
    from lmchat.cli.options import model_args, normalise_flags

    argv = ["serve", "--lora-modules", "a=/x", "b=/y", "do_sample=false", "--max-lora-rank", "16"]
    parser = build_parser("serve")
    args, extras = parser.parse_known_args(normalise_flags(argv, parser.subcommands["serve"]))
    assert extras == []
    settings = model_args(args)
    assert settings["lora_modules"] == ["a=/x", "b=/y"] and settings["do_sample"] == "false"
    config = ModelConfig.from_dict(settings)
    assert config.lora_modules == {"a": "/x", "b": "/y"} and config.max_lora_rank == 16
