"""Each engine's one mapping function (lmchat's options -> the engine's native form), tested without the engine.

Where the engine's package imports, the mapped dict is also fed to its real option class.
"""

from __future__ import annotations

import importlib.util
import inspect
import subprocess
import sys
from types import SimpleNamespace

import pytest

from lmchat.config.model_config import ModelConfig
from lmchat.engines.ktransformers.sampling import (
    SUPPORTED_OPTIONS,
    to_ktransformers_generate_kwargs,
    to_ktransformers_generation_config,
)
from lmchat.engines.llamacpp.sampling import LLAMA_RANDOM_SEED, to_llamacpp_kwargs
from lmchat.engines.registry import get_engine_class
from lmchat.engines.sglang.sampling import finish_reason as sglang_finish_reason
from lmchat.engines.sglang.sampling import (
    to_sglang_engine_kwargs,
    to_sglang_generate_kwargs,
    to_sglang_sampling_params,
)
from lmchat.engines.events import Finished, TextDelta, TokenLogprob
from lmchat.engines.ktransformers.sampling import piece_finish_reason
from lmchat.engines.sglang.outputs import ChunkReader
from lmchat.engines.vllm.outputs import completion_logprobs, engine_start_error
from lmchat.engines.vllm.sampling import CPU_KV_CACHE_BYTES, vllm_config_dict
from lmchat.engines.vllm.sampling import finish_reason as vllm_finish_reason
from lmchat.engines.vllm.sampling import to_vllm_engine_kwargs, to_vllm_sampling_kwargs
from lmchat.engines.hf_tokenizer import dropped_special_ids, special_among
from lmchat.errors import ConfigError, EngineError, MissingDependencyError
from lmchat.generation.sampling import SamplingParams

FULL = SamplingParams(
    temperature=0.7, top_p=0.9, top_k=40, min_p=0.05, repetition_penalty=1.1, presence_penalty=0.5,
    frequency_penalty=0.25, logit_bias={5: -2.0}, seed=42, stop=("END",), stop_token_ids=(2,), ignore_eos=True,
    skip_special_tokens=False, logprobs=True, top_logprobs=3, min_tokens=4,
)


# --- llama.cpp ------------------------------------------------------------------------------------------
def test_llamacpp_mapping_carries_every_sampler_option():
    assert to_llamacpp_kwargs(FULL) == {
        "temperature": 0.7, "top_k": 40, "top_p": 0.9, "min_p": 0.05, "repeat_penalty": 1.1,
        "frequency_penalty": 0.25, "presence_penalty": 0.5, "logit_bias": {5: -2.0}, "seed": 42,
    }


def test_llamacpp_greedy_and_defaults():
    mapped = to_llamacpp_kwargs(SamplingParams(do_sample=False, temperature=0.8))
    assert mapped["temperature"] == 0.0
    assert mapped["top_k"] == 0 and mapped["top_p"] == 1.0 and mapped["min_p"] == 0.0  # not llama.cpp's 40/0.95/0.05
    assert mapped["logit_bias"] is None and mapped["seed"] == LLAMA_RANDOM_SEED


def test_llamacpp_seed_never_means_random():
    assert to_llamacpp_kwargs(SamplingParams(seed=-1))["seed"] == LLAMA_RANDOM_SEED - 1
    assert to_llamacpp_kwargs(SamplingParams(seed=2**40 + 3))["seed"] == 3


def test_llamacpp_mapping_names_are_create_completion_arguments():
    llama_cpp = pytest.importorskip("llama_cpp")
    names = set(inspect.signature(llama_cpp.Llama.create_completion).parameters)
    assert set(to_llamacpp_kwargs(FULL)) <= names


# --- vLLM -----------------------------------------------------------------------------------------------
def test_vllm_sampling_mapping():
    mapped = to_vllm_sampling_kwargs(FULL, max_tokens=100)
    assert mapped == {
        "n": 1, "max_tokens": 100, "temperature": 0.7, "top_p": 0.9, "top_k": 40, "min_p": 0.05,
        "repetition_penalty": 1.1, "presence_penalty": 0.5, "frequency_penalty": 0.25, "logit_bias": {5: -2.0},
        "seed": 42, "stop_token_ids": [2], "ignore_eos": True, "skip_special_tokens": False, "logprobs": 3,
        "min_tokens": 4, "bad_words": None, "allowed_token_ids": None,
    }
    assert "stop" not in mapped  # stop strings are the facade's job


def test_vllm_maps_bad_words_allowed_ids_and_the_whole_vocabulary():
    params = SamplingParams(bad_words=["foo bar", "baz"], allowed_token_ids=[3, 5], logprobs=True, top_logprobs=-1,
                            truncate_prompt_tokens=8)
    mapped = to_vllm_sampling_kwargs(params)
    assert mapped["bad_words"] == ["foo bar", "baz"]  # vLLM tokenizes them itself, by the same rule as lmchat
    assert mapped["allowed_token_ids"] == [3, 5] and mapped["logprobs"] == -1
    assert "truncate_prompt_tokens" not in mapped  # the facade cut the prompt already


@pytest.mark.parametrize("name, package", [("huggingface", "torch"), ("llamacpp", "llama_cpp")])
def test_our_engines_honour_the_token_rules(name, package):
    pytest.importorskip(package)
    options = get_engine_class(name).capabilities.sampling_options
    assert {"min_tokens", "bad_words", "allowed_token_ids"} <= options


def test_sglang_refuses_the_token_lists_and_the_whole_vocabulary():
    from lmchat.engines.sglang.sampling import SGLANG_OPTIONS, to_sglang_generate_kwargs
    from lmchat.errors import UnsupportedError

    assert not {"bad_words", "allowed_token_ids"} & SGLANG_OPTIONS and "min_tokens" in SGLANG_OPTIONS
    with pytest.raises(UnsupportedError, match="top_logprobs -1"):
        to_sglang_generate_kwargs(SamplingParams(logprobs=True, top_logprobs=-1))


def test_vllm_sampling_defaults_greedy_and_no_logprobs():
    mapped = to_vllm_sampling_kwargs(SamplingParams(do_sample=False))
    assert mapped["temperature"] == 0.0 and mapped["top_k"] == -1
    assert mapped["logprobs"] is None and mapped["logit_bias"] is None and mapped["seed"] is None
    assert to_vllm_sampling_kwargs(SamplingParams(logprobs=True))["logprobs"] == 0  # the sampled token only


def test_vllm_and_sglang_keep_every_special_token_when_a_parser_reads_some():
    # they keep all special tokens or none: the parsers' tokens (gpt-oss's, Kimi-K2's) switch skipping off
    default = SamplingParams()
    assert to_vllm_sampling_kwargs(default)["skip_special_tokens"] is True
    assert to_vllm_sampling_kwargs(default, 10, ("<|channel|>",))["skip_special_tokens"] is False
    assert to_sglang_sampling_params(default)["skip_special_tokens"] is True
    assert to_sglang_sampling_params(default, 10, ("<|channel|>",))["skip_special_tokens"] is False


def test_only_the_tokenizers_special_tokens_count(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    wanted = ("<|im_start|>", "<tool_call>", "<|channel|>")  # special / plain text / not in the vocabulary
    assert special_among(tokenizer, wanted) == ("<|im_start|>",)
    dropped = dropped_special_ids(tokenizer, wanted)
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") not in dropped
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in dropped
    assert tokenizer.unk_token_id is None or tokenizer.unk_token_id in dropped  # the unknown one's id is not kept


def _config(**args) -> ModelConfig:
    return ModelConfig.from_dict({"model_name_or_path": "org/model", **args})


def test_vllm_engine_kwargs():
    kwargs = to_vllm_engine_kwargs(_config(vllm_maxlen=2048, vllm_gpu_util=0.5, adapter_name_or_path="lora"), 2)
    assert kwargs["model"] == "org/model" and kwargs["tensor_parallel_size"] == 2
    assert kwargs["max_model_len"] == 2048 and kwargs["gpu_memory_utilization"] == 0.5
    assert kwargs["enable_lora"] is True and kwargs["max_lora_rank"] == 32
    assert to_vllm_engine_kwargs(_config(vllm_config={"max_num_seqs": 8}), 0)["max_num_seqs"] == 8
    assert to_vllm_engine_kwargs(_config(), 0)["tensor_parallel_size"] == 1


def test_vllm_enables_lora_for_named_adapters():
    named = to_vllm_engine_kwargs(_config(lora_modules="a=/x,b=/y", max_loras=3, max_lora_rank=16), 0)
    assert named["enable_lora"] is True and named["max_loras"] == 3 and named["max_lora_rank"] == 16
    assert to_vllm_engine_kwargs(_config(lora_modules="a=/x"), 0)["max_lora_rank"] == 32  # vllm_max_lora_rank
    live = to_vllm_engine_kwargs(_config(max_loras=2), 0)  # for live loads only
    assert live["enable_lora"] is True and live["max_loras"] == 2
    assert to_vllm_engine_kwargs(_config(), 0)["enable_lora"] is False
    unmerged = to_vllm_engine_kwargs(_config(adapter_name_or_path="a,b", merge_adapters=False), 0)
    assert unmerged["enable_lora"] is True  # two named adapters, not stacked ones


def test_vllm_rejects_stacked_adapters():
    with pytest.raises(ConfigError, match="one LoRA adapter"):
        to_vllm_engine_kwargs(_config(adapter_name_or_path="a,b"), 1)


def test_vllm_finish_reasons():
    assert [vllm_finish_reason(r) for r in ("stop", "length", "abort", None)] == ["stop", "length", "abort", "stop"]


def test_vllm_config_as_dict_or_json_string():
    assert vllm_config_dict({"max_num_seqs": 8}) == {"max_num_seqs": 8}
    assert vllm_config_dict('{"max_num_seqs": 8, "enable_prefix_caching": false}') == {
        "max_num_seqs": 8, "enable_prefix_caching": False}
    assert vllm_config_dict(None) == vllm_config_dict("") == vllm_config_dict(" ") == {}
    with pytest.raises(ConfigError, match="vllm_config is not valid JSON") as bad:
        vllm_config_dict('{"max_num_seqs": }')
    assert bad.value.param == "vllm_config"
    with pytest.raises(ConfigError, match="mapping of vLLM engine arguments, got list"):
        vllm_config_dict("[1, 2]")


def test_vllm_json_string_config_reaches_the_engine_kwargs():  # a config object that keeps the string as given
    config = SimpleNamespace(**{**_config().model_dump(), "vllm_config": '{"max_num_seqs": 2}'})
    assert to_vllm_engine_kwargs(config, 1)["max_num_seqs"] == 2


def test_vllm_on_cpu_sizes_the_kv_cache_unless_memory_is_chosen(monkeypatch):
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    default = to_vllm_engine_kwargs(_config(), 0)
    assert default["kv_cache_memory_bytes"] == CPU_KV_CACHE_BYTES and "gpu_memory_utilization" not in default
    assert to_vllm_engine_kwargs(_config(), 1)["gpu_memory_utilization"] == 0.7  # a GPU: LLaMA-Factory's default
    chosen = to_vllm_engine_kwargs(_config(vllm_gpu_util=0.3), 0)  # on CPU: the fraction of RAM, as vLLM reads it
    assert chosen["gpu_memory_utilization"] == 0.3 and "kv_cache_memory_bytes" not in chosen
    sized = to_vllm_engine_kwargs(_config(vllm_config={"kv_cache_memory_bytes": 1 << 28}), 0)
    assert sized["kv_cache_memory_bytes"] == 1 << 28
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "3")  # vLLM's own variable wins over lmchat's default
    assert "kv_cache_memory_bytes" not in to_vllm_engine_kwargs(_config(), 0)


def _vllm_logprob(logprob, rank, text):
    return SimpleNamespace(logprob=logprob, rank=rank, decoded_token=text)


def test_vllm_logprobs_keep_the_top_alternatives_in_rank_order():
    completion = SimpleNamespace(token_ids=[7, 9], logprobs=[
        {7: _vllm_logprob(-0.5, 2, "b"), 3: _vllm_logprob(-0.1, 1, "a"), 4: _vllm_logprob(-2.0, 3, "c")},
        {9: _vllm_logprob(-0.2, 1, None)},
    ])
    assert completion_logprobs(completion, 2) == (
        TokenLogprob("b", 7, -0.5, (("a", 3, -0.1), ("b", 7, -0.5))), TokenLogprob("", 9, -0.2, (("", 9, -0.2),)))
    assert completion_logprobs(SimpleNamespace(token_ids=[1], logprobs=None), 0) == ()
    everything = completion_logprobs(completion, -1)  # top_logprobs -1: every entry vLLM returned, in rank order
    assert [alt[1] for alt in everything[0].top] == [3, 7, 4]


def test_vllm_start_failures_become_lmchat_errors():
    assert isinstance(engine_start_error(RuntimeError("Engine core initialization failed")), EngineError)
    config_error = engine_start_error(ValueError("max_model_len too large"))
    assert isinstance(config_error, ConfigError) and "max_model_len too large" in str(config_error)


@pytest.mark.vllm
def test_vllm_mapping_builds_real_sampling_params():
    vllm = pytest.importorskip("vllm")
    native = vllm.SamplingParams(**to_vllm_sampling_kwargs(FULL, max_tokens=100))
    assert native.top_k == 40 and native.seed == 42 and native.logprobs == 3 and native.min_tokens == 4
    rules = SamplingParams(bad_words=["foo"], allowed_token_ids=[3, 5])
    native = vllm.SamplingParams(**to_vllm_sampling_kwargs(rules, max_tokens=10))
    assert native.bad_words == ["foo"] and native.allowed_token_ids == [3, 5]


# --- SGLang ---------------------------------------------------------------------------------------------
def test_sglang_sampling_mapping():
    assert to_sglang_sampling_params(FULL, max_new_tokens=100) == {
        "max_new_tokens": 100, "temperature": 0.7, "top_p": 0.9, "top_k": 40, "min_p": 0.05,
        "repetition_penalty": 1.1, "presence_penalty": 0.5, "frequency_penalty": 0.25, "ignore_eos": True,
        "skip_special_tokens": False, "stop_token_ids": [2], "logit_bias": {"5": -2.0}, "sampling_seed": 42,
        "min_new_tokens": 4,
    }
    assert to_sglang_generate_kwargs(FULL) == {"return_logprob": True, "top_logprobs_num": 3,
                                               "return_text_in_logprobs": True}


def test_sglang_defaults_leave_optional_keys_out():
    mapped = to_sglang_sampling_params(SamplingParams(do_sample=False))
    assert mapped["temperature"] == 0.0 and mapped["top_k"] == -1
    assert not {"stop_token_ids", "logit_bias", "sampling_seed"} & set(mapped)
    assert to_sglang_generate_kwargs(SamplingParams()) == {}


def test_sglang_engine_kwargs():
    kwargs = to_sglang_engine_kwargs(_config(sglang_tp_size=-1, adapter_name_or_path="lora"), 4)
    assert kwargs["model_path"] == "org/model" and kwargs["tp_size"] == 4
    assert kwargs["enable_lora"] is True and kwargs["lora_paths"] == ["lmchat-adapter=lora"]
    assert to_sglang_engine_kwargs(_config(sglang_tp_size=2), 4)["tp_size"] == 2
    assert to_sglang_engine_kwargs(_config(sglang_config={"is_embedding": True}), 1)["is_embedding"] is True


def test_sglang_finish_reasons():
    assert sglang_finish_reason({"finish_reason": None}) is None
    assert sglang_finish_reason({"finish_reason": {"type": "length", "length": 5}}) == "length"
    assert sglang_finish_reason({"finish_reason": {"type": "stop", "matched": 2}}) == "stop"
    assert sglang_finish_reason({"finish_reason": {"type": "abort"}}) == "abort"


def test_sglang_mapping_builds_real_sampling_params():
    pytest.importorskip("sglang")
    from sglang.srt.sampling.sampling_params import SamplingParams as SGLangSamplingParams

    native = SGLangSamplingParams(**to_sglang_sampling_params(FULL, 100))
    native.verify(vocab_size=49152)


def _chunk(text, completion_tokens, finish=None, **meta):
    return {"text": text, "meta_info": {"completion_tokens": completion_tokens, "prompt_tokens": 5,
                                        "finish_reason": finish, **meta}}


def test_sglang_cumulative_chunks_become_deltas():
    reader = ChunkReader(prompt_tokens=5, incremental=False, logprobs=False)
    events = [event for chunk in (_chunk("Hel", 1), _chunk("Hello", 2), _chunk("Hello", 2),
                                  _chunk("Hello!", 3, {"type": "stop", "matched": 2}))
              for event in reader.read(chunk)]
    assert events == [TextDelta("Hel", 1), TextDelta("lo", 1), TextDelta("!", 1), Finished("stop", 5, 3, 2)]
    assert reader.finished


def test_sglang_incremental_chunks_and_logprobs():
    reader = ChunkReader(prompt_tokens=5, incremental=True, logprobs=True, stop_text=lambda token: token)
    first = _chunk("Hi", 1, output_token_logprobs=[(-0.1, 11, "Hi")], output_top_logprobs=[[(-0.1, 11, "Hi")]])
    last = _chunk(" there", 2, {"type": "length", "length": 2}, output_token_logprobs=[(-0.3, 12, " there")],
                  output_top_logprobs=[[(-0.3, 12, " there"), (-1.0, 13, " you")]])
    assert reader.read(first) == [TextDelta("Hi", 1, logprobs=(TokenLogprob("Hi", 11, -0.1, (("Hi", 11, -0.1),)),))]
    there = TokenLogprob(" there", 12, -0.3, ((" there", 12, -0.3), (" you", 13, -1.0)))
    assert reader.read(last) == [TextDelta(" there", 1, logprobs=(there,)), Finished("length", 5, 2, None)]


def test_sglang_reports_the_prompt_tokens_its_cache_reused():
    reader = ChunkReader(prompt_tokens=5, incremental=True, logprobs=False)
    [*_, finished] = reader.read(_chunk("Hi", 1, {"type": "length", "length": 1}, cached_tokens=4))
    assert finished == Finished("length", 5, 1, None, cached_tokens=4)


def test_sglang_cumulative_logprobs_are_sent_once():
    reader = ChunkReader(prompt_tokens=5, incremental=False, logprobs=True)
    one = [(-0.1, 11, "a")]
    reader.read(_chunk("a", 1, output_token_logprobs=one))
    [delta] = reader.read(_chunk("ab", 2, output_token_logprobs=[*one, (-0.2, 12, "b")]))
    assert [lp.token_id for lp in delta.logprobs] == [12]


# --- KTransformers --------------------------------------------------------------------------------------
def test_ktransformers_generation_config():
    assert to_ktransformers_generation_config(SamplingParams(do_sample=False)) == {"do_sample": False}
    assert to_ktransformers_generation_config(SamplingParams(temperature=0.7, top_p=0.9, top_k=40)) == {
        "do_sample": True, "temperature": 0.7, "top_p": 0.9, "top_k": 40,
    }
    settings = {"kt_use_cuda_graph": False, "kt_mode": "normal", "kt_force_think": False, "chunk_size": 512}
    assert to_ktransformers_generate_kwargs(settings, 64) == {
        "max_new_tokens": 64, "use_cuda_graph": False, "mode": "normal", "force_think": False, "chunk_size": 512,
    }


def test_ktransformers_finish_reasons():
    assert piece_finish_reason(aborted=True, generated=64, budget=64) == "abort"
    assert piece_finish_reason(aborted=False, generated=64, budget=64) == "length"
    assert piece_finish_reason(aborted=False, generated=10, budget=64) == "stop"


def test_ktransformers_settings_are_llamafactory_keys_overridden_by_the_engine_mapping():
    from lmchat.config import ModelConfig
    from lmchat.engines.ktransformers.sampling import kt_settings

    config = ModelConfig.from_dict({"use_kt": True, "kt_optimize_rule": "rules.yaml", "cpu_infer": 16,
                                    "chunk_size": 4096, "mode": "long_context",
                                    "ktransformers_config": '{"gguf_path": "weights/", "chunk_size": 1024}'})
    assert config.infer_backend == "ktransformers"
    assert kt_settings(config) == {
        "gguf_path": "weights/", "kt_optimize_rule": "rules.yaml", "cpu_infer": 16, "chunk_size": 1024,
        "kt_maxlen": 4096, "kt_use_cuda_graph": True, "kt_mode": "long_context", "kt_force_think": False,
    }


def test_ktransformers_declares_only_what_it_honours():
    assert "seed" not in SUPPORTED_OPTIONS and "logprobs" not in SUPPORTED_OPTIONS
    assert set(to_ktransformers_generation_config(SamplingParams())) - {"do_sample"} <= SUPPORTED_OPTIONS


# --- registry -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["vllm", "sglang", "ktransformers", "llamacpp"])
def test_missing_engine_package_names_the_install_command(name):
    module = {"llamacpp": "llama_cpp"}.get(name, name)
    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed here")
    with pytest.raises(MissingDependencyError, match=rf"pip install 'lmchat\[{name}\]'"):
        get_engine_class(name)


def test_llama_cpp_alias_selects_the_llamacpp_engine():
    assert _config(infer_backend="llama.cpp").infer_backend == "llamacpp"


def test_import_lmchat_loads_no_engine():
    code = ("import sys, lmchat; bad = {'llama_cpp', 'vllm', 'sglang', 'ktransformers', 'torch'} & set(sys.modules);"
            "print(sorted(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_mapping_modules_need_no_engine_package():
    code = ("import sys; import lmchat.engines.vllm.sampling, lmchat.engines.vllm.outputs, "
            "lmchat.engines.sglang.sampling, lmchat.engines.sglang.outputs, "
            "lmchat.engines.ktransformers.sampling, lmchat.engines.llamacpp.sampling;"
            "print(sorted({'llama_cpp', 'vllm', 'sglang', 'ktransformers', 'torch'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_engine_kwargs_read_plain_attributes():  # any object with ModelConfig's attributes will do
    config = SimpleNamespace(**_config().model_dump())
    assert to_vllm_engine_kwargs(config, 1)["model"] == "org/model"
    assert to_sglang_engine_kwargs(config, 1)["model_path"] == "org/model"


@pytest.mark.parametrize("name, label", [("huggingface", "transformers"), ("llamacpp", "llamacpp")])
def test_an_engine_not_started_says_so_by_name(name, label):
    from lmchat.errors import EngineClosedError

    pytest.importorskip({"huggingface": "torch", "llamacpp": "llama_cpp"}[name])
    engine = get_engine_class(name)(_config())
    with pytest.raises(EngineClosedError, match=f"^The {label} engine is not started"):
        engine.info


def test_vllm_reasoning_ended_per_request():
    """vLLM's ``reasoning_ended`` for each reasoning gate, and the gates the started parser cannot honour."""
    from lmchat.engines.vllm.reasoning import ReasoningSetup
    from lmchat.errors import UnsupportedError
    from lmchat.structured.constraint import Constraint, ReasoningGate

    choice = Constraint(kind="choice", choices=("a", "b"), param="guided_choice")

    def gated(**gate):
        return choice.model_copy(update={"reasoning": ReasoningGate(**gate)})

    opened = gated(end_markers=("</think>",), in_reasoning=True)
    optional = gated(end_markers=("</think>",), start_markers=("<think>",))
    started = ReasoningSetup("qwen3", ("</think>",))
    assert [started.reasoning_ended(c) for c in (None, choice, opened, optional)] == [None, True, False, None]
    assert ReasoningSetup("deepseek_r1", None).reasoning_ended(opened) is False  # the user's own parser: trusted
    none = ReasoningSetup(why_not="the template has no reasoning parser")
    assert none.reasoning_ended(choice) is None  # no reasoner at all: vLLM constrains from the first token anyway
    with pytest.raises(UnsupportedError, match="guided_choice constrains a reasoning model's answer after its "
                       "reasoning, which the vllm engine cannot do here: the template has no reasoning parser"):
        none.reasoning_ended(opened)
    with pytest.raises(UnsupportedError, match="ends its reasoning with </seed:think>.*started for the template's "
                       "parser 'qwen3'"):
        started.reasoning_ended(gated(end_markers=("</seed:think>",), in_reasoning=True))


def test_vllm_reasoning_setup_keeps_the_users_parser_and_adds_none_without_one():
    from lmchat.engines.vllm.reasoning import ReasoningSetup, reasoning_setup

    kwargs = {"structured_outputs_config": {"reasoning_parser": "deepseek_r1", "disable_any_whitespace": True}}
    assert reasoning_setup(SimpleNamespace(template=None), kwargs) == ReasoningSetup("deepseek_r1", None)
    assert kwargs["structured_outputs_config"]["reasoning_parser"] == "deepseek_r1"
    plain = {}  # a named template without a reasoning parser: vLLM's structured outputs start without one
    setup = reasoning_setup(SimpleNamespace(template="llama3", tool_format=None), plain)
    assert setup.vllm_parser is None and "structured_outputs_config" not in plain


def test_vllm_multi_modal_data_of_decoded_media():
    """lmchat's decoded media as vLLM's ``multi_modal_data``: video frames stacked with metadata that tells vLLM's
    processor not to sample them again, audio with its rate."""
    np = pytest.importorskip("numpy")
    image_module = pytest.importorskip("PIL.Image")
    from lmchat.chat.messages import Media
    from lmchat.engines.vllm.media import multi_modal_data
    from lmchat.media.audio import AudioClip
    from lmchat.media.video import VideoClip

    image = image_module.new("RGB", (8, 6), "red")
    frames = tuple(image_module.new("RGB", (8, 6), (10 * i, 0, 0)) for i in range(3))
    clip = VideoClip(frames=frames, duration_s=1.5, fps=2.0, frame_indices=(0, 10, 20), source_fps=20.0)
    audio = AudioClip(np.zeros(1600, dtype="float32"), 16000)
    data = multi_modal_data(Media((image,), (clip,), (audio,)))
    assert data["image"] == [image]
    [(array, metadata)] = data["video"]
    assert array.shape == (3, 6, 8, 3) and array[2, 0, 0, 0] == 20
    assert metadata == {"total_num_frames": 3, "fps": 2.0, "duration": 1.5, "frames_indices": [0, 1, 2],
                        "do_sample_frames": False}
    [(waveform, rate)] = data["audio"]
    assert waveform is audio.waveform and rate == 16000.0
    assert multi_modal_data(Media()) == {}
