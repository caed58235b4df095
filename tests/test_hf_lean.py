"""The lean Llama-family forward (engines/hf/lean.py) against transformers' own forward on the same slot cache."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from lmchat import ChatModel
from lmchat.engines.hf.lean import LeanDecoder, packed_weights_wanted, unsupported_reason
from lmchat.engines.hf.runner import SlotRunner, pick_runner
from lmchat.errors import ConfigError

CPU = torch.device("cpu")
SMALL = dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=256)


def build(kind: str, **overrides):
    torch.manual_seed(0)
    config_class, model_class = {
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
        "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
        "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM),
    }[kind]
    config = config_class(**{**SMALL, **overrides})
    config._attn_implementation = "sdpa"
    return model_class(config).eval()


def run(runner: SlotRunner) -> list[torch.Tensor]:
    """Two prompts (one prefilled in two chunks), then three batched decode steps: every logits row."""
    first, second = [5, 17, 42, 7, 99, 3, 12, 250, 8], [11, 13, 2, 77, 6]
    runner.reserve(2, 32)
    out = [runner.prefill(0, first[:4], 0), runner.prefill(0, first[4:], 4), runner.prefill(1, second, 0)]
    tokens, positions = [int(out[1].argmax()), int(out[2].argmax())], [len(first), len(second)]
    for _ in range(3):
        logits = runner.decode(tokens, positions, [True, True])
        out.extend(logits)
        tokens, positions = logits.argmax(-1).tolist(), [p + 1 for p in positions]
    runner.release()
    return out


@pytest.mark.parametrize("kind, overrides", [("llama", {}), ("qwen2", {}), ("mistral", {"sliding_window": None}),
                                             ("llama", {"num_key_value_heads": 4})])
def test_lean_forward_gives_transformers_numbers_bit_for_bit(kind, overrides):
    model = build(kind, **overrides)
    expected = run(SlotRunner(model, CPU))
    got = run(SlotRunner(model, CPU, LeanDecoder(model, packed=False)))
    assert all(torch.equal(a, b) for a, b in zip(got, expected))


def test_fused_weights_are_views_and_the_model_still_runs():
    model = build("qwen2")  # q/k/v with biases
    ids = torch.tensor([[4, 8, 15, 16, 23, 42]])
    before = model(ids).logits
    decoder = LeanDecoder(model, packed=False)
    decoder.share_weights()  # what pick_runner does once the lean forward is chosen
    attention = model.model.layers[0].self_attn
    fused = decoder.layers[0].qkv
    assert attention.k_proj.weight.data_ptr() == fused.weight[attention.q_proj.weight.shape[0]:].data_ptr()
    assert attention.q_proj.bias.data_ptr() == fused.bias.data_ptr()
    assert torch.equal(model(ids).logits, before)


def test_packed_weights_stay_close_to_transformers():
    model = build("llama")
    expected = run(SlotRunner(model, CPU))
    decoder = LeanDecoder(model, packed=True)
    assert decoder.head.packed is not None
    got = run(SlotRunner(model, CPU, decoder))
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4 * float(b.abs().max()))


@pytest.mark.parametrize("kind, overrides, reason", [
    ("qwen3", {}, "model type 'qwen3'"),
    ("mistral", {"sliding_window": 16}, "sliding-window"),
    ("llama", {"rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}}, "RoPE"),
    ("llama", {"hidden_act": "gelu"}, "SiLU"),
])
def test_models_the_lean_forward_cannot_run_are_named_and_fall_back(kind, overrides, reason):
    model = build(kind, **overrides)
    assert reason in unsupported_reason(model)
    runner = pick_runner(model, CPU)
    assert getattr(runner, "name", "sequential") != "lean"


def test_pick_runner_takes_the_lean_forward_for_llama():
    model = build("llama")
    runner = pick_runner(model, CPU)
    assert isinstance(runner, SlotRunner) and runner.name == "lean"
    assert runner.forward.packed == packed_weights_wanted(model)
    attention, fused = model.model.layers[1].self_attn, runner.forward.layers[1].qkv
    assert attention.q_proj.weight.data_ptr() == fused.weight.data_ptr()  # chosen: the model shares its weights


def test_a_lean_forward_that_is_not_chosen_leaves_the_model_untouched(monkeypatch):
    """Fusing copies the weights; only the chosen forward re-points the model at them."""
    from lmchat.engines.hf import runner as runner_module

    model = build("llama")
    attention, mlp = model.model.layers[0].self_attn, model.model.layers[0].mlp
    before = [attention.q_proj.weight.data_ptr(), attention.v_proj.weight.data_ptr(), mlp.up_proj.weight.data_ptr()]
    check = runner_module._slot_runner_matches
    monkeypatch.setattr(runner_module, "_slot_runner_matches",  # the lean forward fails its check here
                        lambda m, runner, device: runner.name != "lean" and check(m, runner, device))
    runner = pick_runner(model, CPU)
    assert runner.name == "transformers"
    assert [attention.q_proj.weight.data_ptr(), attention.v_proj.weight.data_ptr(),
            mlp.up_proj.weight.data_ptr()] == before


def test_bfloat16_models_pack_only_where_the_cpu_can_and_still_get_the_lean_forward():
    """oneDNN's bfloat16 packing needs AVX-512 (or AVX-NE-CONVERT); elsewhere the weights stay unpacked."""
    from lmchat.engines.hf import onednn

    model = build("llama").to(torch.bfloat16)
    can_pack = onednn.unsupported_reason(torch.bfloat16) is None
    assert packed_weights_wanted(model, "auto") is can_pack
    runner = pick_runner(model, CPU)
    assert runner.name == "lean" and runner.forward.packed is can_pack


def test_packed_multiplies_need_a_checked_torch(monkeypatch):
    """The private oneDNN ops are used only on the torch releases they were checked on."""
    from lmchat.engines.hf import onednn

    assert onednn.unsupported_reason() is None  # this torch: checked, and the probe multiply matches F.linear
    monkeypatch.setattr(torch, "__version__", "2.99.0+cpu")
    reason = onednn.unsupported_reason()
    assert "torch 2.13" in reason and "this is torch 2.99.0" in reason
    model = build("llama")
    assert packed_weights_wanted(model, "auto") is False
    with pytest.raises(ConfigError, match="packed_weights: on needs torch 2.13"):
        packed_weights_wanted(model, "on")


def test_the_engine_serves_llama_models_through_the_lean_forward(tiny_model_dir):
    config = {"model_name_or_path": str(tiny_model_dir), "do_sample": False, "max_new_tokens": 6,
              "native_decode": "off"}  # tests/test_hf_native.py covers the native one-token step
    with ChatModel(config) as model:
        assert model.engine.worker.runner.name == "lean"
        [response] = model.chat([{"role": "user", "content": "Hi"}])
        assert response.response_length == 6


@pytest.mark.parametrize("setting, packed", [("off", False), ("on", True), ("auto", True)])
def test_packed_weights_setting_reaches_the_runner(tiny_model_dir, setting, packed):
    config = {"model_name_or_path": str(tiny_model_dir), "packed_weights": setting, "max_new_tokens": 3}
    with ChatModel(config) as model:
        assert model.engine.worker.runner.forward.packed is packed
        assert model.chat([{"role": "user", "content": "Hi"}])[0].response_length == 3


def test_packed_weights_on_where_packing_is_impossible_is_a_clear_error():
    model = build("llama").to(torch.float16)
    with pytest.raises(ConfigError, match="packed_weights: on needs float32 or bfloat16 weights"):
        packed_weights_wanted(model, "on")
    assert packed_weights_wanted(model, "auto") is False


def test_unknown_packed_weights_value_names_the_choices():
    with pytest.raises(ConfigError, match="packed_weights"):
        ChatModel({"model_name_or_path": "x", "packed_weights": "yes"})
