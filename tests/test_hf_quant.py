"""Weight-only quantization on load (quantization_bit 8 / 4) in the transformers engine (engines/hf/quant.py and the
native kernels' quantized multiplies)."""

from __future__ import annotations

import asyncio
import json
import math

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from lmchat import ChatModel
from lmchat.config.model_config import ModelConfig
from lmchat.engines.hf import native, quant
from lmchat.engines.hf.lean import LeanDecoder
from lmchat.engines.hf.loading import load_model
from lmchat.engines.hf.quant import QuantizedLinear, QuantizedWeight, quantize_model
from lmchat.engines.hf.runner import SlotRunner, pick_runner
from lmchat.errors import ConfigError
from conftest import ORACLES
from test_hf_lean import CPU, build
from test_hf_lora import MESSAGES, REQUESTS, answer_together, served_config
from test_hf_native import PROMPTS, decode_rows


@pytest.fixture(scope="module")
def module():
    return native.load()


@pytest.fixture
def torch_kernels():
    """PyTorch's own weight-only kernels (and the dequantized fallback) for the test, the native ones after it."""
    previous = quant._kernels
    quant.use_native_kernels(None)
    yield
    quant.use_native_kernels(previous)


def weights(rows: int, width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, width, generator=generator) * 0.05


@pytest.mark.parametrize("bits", [8, 4])
def test_quantization_error_is_at_most_half_a_step(bits):
    weight = weights(48, 96)
    q = QuantizedWeight.quantize(weight, bits)
    error = (q.dequantize() - weight).abs()
    if bits == 8:
        assert q.codes.dtype == torch.int8 and q.codes.shape == (48, 96) and q.scales.shape == (48,)
        bound = q.scales[:, None] / 2
    else:
        assert q.codes.dtype == torch.uint8 and q.codes.shape == (48, 48) and q.scales.shape == (48, 3)
        bound = q.scales.repeat_interleave(32, dim=1) / 2
    assert bool((error <= bound * (1 + 1e-5) + 1e-7).all())
    assert q.shape == (48, 96)
    assert q.num_bytes() < weight.numel() * 4 / (3.5 if bits == 8 else 5)  # int4: 0.5 byte + 8 bytes per 32


@pytest.mark.parametrize("bits", [8, 4])
def test_stacked_rows_equal_the_stacked_weight_quantized(bits):
    parts = [weights(32, 64, seed) for seed in range(3)]
    stacked = QuantizedWeight.cat([QuantizedWeight.quantize(p, bits) for p in parts])
    whole = QuantizedWeight.quantize(torch.cat(parts), bits)
    assert torch.equal(stacked.codes, whole.codes) and torch.equal(stacked.scales, whole.scales)
    middle = stacked.rows(32, 64)
    assert torch.equal(middle.dequantize(), QuantizedWeight.quantize(parts[1], bits).dequantize())
    assert middle.codes.data_ptr() == stacked.codes[32].data_ptr()  # a view


def test_a_width_4_bits_cannot_group_is_refused_naming_the_layer():
    with pytest.raises(ValueError, match="multiple of 32 inputs, not 40"):
        QuantizedWeight.quantize(weights(8, 40), 4)
    model = build("llama", hidden_size=40, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64)
    with pytest.raises(ConfigError, match=r"groups of 32 inputs; model\.layers\.0\.self_attn\.q_proj has 40"):
        quantize_model(model, 4)


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("rows", [1, 3, 5, 9, 12, 40, 130])
def test_native_multiply_equals_the_dequantized_weight(module, bits, rows):
    """Every path: one row (8-wide tiles), a few rows (4-row tiles; an output count no tile divides), the blocked
    GEMM (6 rows on for int4, 10 for int8: one and two vectors of rows) and the float32 copy (128 rows on)."""
    weight = QuantizedWeight.quantize(weights(97, 160), bits)
    x = torch.randn(rows, 160, generator=torch.Generator().manual_seed(1))
    bias = torch.randn(97)
    got = module.qlinear(x, weight.codes, weight.scales, weight.mins, bias)
    expected = (x.double() @ weight.dequantize().double().T + bias.double()).float()
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-5 * float(expected.abs().max()))


GEMM_ROWS = {4: 6, 8: 10}  # native/quantized.h gemm_rows: from here on the blocked GEMM sums each output over k


@pytest.mark.parametrize("bits", [8, 4])
def test_a_rows_result_does_not_depend_on_the_batch_below_the_gemm(module, bits):
    """Below gemm_rows every row is summed as it is alone (bit for bit); from there on the GEMM sums in another
    order (the same for every batch size it serves), within rounding of the one-row result."""
    weight = QuantizedWeight.quantize(weights(64, 96), bits)
    rows = GEMM_ROWS[bits]
    x = torch.randn(2 * rows, 96, generator=torch.Generator().manual_seed(2))
    alone = torch.cat([module.qlinear(x[i : i + 1], weight.codes, weight.scales, weight.mins, None)
                       for i in range(2 * rows)])
    below = module.qlinear(x[: rows - 1], weight.codes, weight.scales, weight.mins, None)
    assert torch.equal(below, alone[: rows - 1])
    gemm = module.qlinear(x, weight.codes, weight.scales, weight.mins, None)
    assert not torch.equal(gemm, alone)  # it is the GEMM that served them
    torch.testing.assert_close(gemm, alone, rtol=0, atol=1e-5 * float(alone.abs().max()))
    again = module.qlinear(x[:rows], weight.codes, weight.scales, weight.mins, None)
    assert torch.equal(again, gemm[:rows])  # the GEMM's numbers for a row do not depend on its batch size


@pytest.mark.parametrize("bits", [8, 4])
def test_pytorchs_kernels_serve_without_the_native_module(torch_kernels, bits):
    weight = QuantizedWeight.quantize(weights(64, 96), bits)
    x = torch.randn(2, 3, 96, generator=torch.Generator().manual_seed(3))
    expected = x @ weight.dequantize().T
    torch.testing.assert_close(weight.linear(x), expected, rtol=0, atol=1e-5)  # many rows: dequantized
    torch.testing.assert_close(weight.linear(x[:1, :1]), expected[:1, :1], rtol=0, atol=1e-5)  # one: _weight_*pack_mm
    with pytest.raises(ValueError, match="float32 inputs, not torch.bfloat16"):
        weight.linear(x.bfloat16())


@pytest.mark.parametrize("bits", [8, 4])
def test_a_quantized_model_runs_the_same_on_every_runner(module, bits):
    """The lean forward (fused quantized projections), its native step and transformers' own forward on the
    quantized modules give the same greedy tokens; the first step's logits stay close to the float32 model's."""
    model = build("qwen2")  # biases on q/k/v: the fused bias path too
    reference = decode_rows(SlotRunner(model, CPU, LeanDecoder(model)), PROMPTS, 6)
    quantize_model(model, bits)
    linears = [m for m in model.modules() if isinstance(m, QuantizedLinear)]
    assert len(linears) == 2 * 7 + 1 and model.lm_head.quantized.bits == 8
    transformers_forward = decode_rows(SlotRunner(model, CPU), PROMPTS, 6)
    lean = LeanDecoder(model)
    python = decode_rows(SlotRunner(model, CPU, lean), PROMPTS, 6)
    lean.use_native(module)
    native_steps = decode_rows(SlotRunner(model, CPU, lean), PROMPTS, 6)
    for a, b, c in zip(native_steps, python, transformers_forward):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4 * float(b.abs().max()))
        torch.testing.assert_close(b, c, rtol=0, atol=1e-4 * float(c.abs().max()))
        assert a.argmax(-1).tolist() == b.argmax(-1).tolist() == c.argmax(-1).tolist()
    first_step = float((python[0] - reference[0]).abs().max() / reference[0].abs().max())
    assert 0 < first_step < (0.02 if bits == 8 else 0.2)  # quantized, and close (quality: test_default_model_quality)


def test_the_runner_check_chooses_the_lean_forward_and_shares_the_quantized_weights(module):
    model = build("llama")
    quantize_model(model, 8)
    runner = pick_runner(model, CPU)
    assert isinstance(runner.forward, LeanDecoder)
    fused = runner.forward.layers[0].qkv.quant
    q_proj = model.model.layers[0].self_attn.q_proj.quantized
    assert q_proj.codes.data_ptr() == fused.codes.data_ptr()  # the model's q_proj is a view of the fused rows
    other = build("qwen3")  # no lean forward (q/k norms): transformers' forward takes the quantized modules
    quantize_model(other, 8)
    runner = pick_runner(other, CPU)
    assert isinstance(runner, SlotRunner) and runner.name == "transformers"  # it passed the runner check


@pytest.mark.parametrize("bits", [8, 4])
def test_chat_model_quantizes_on_load_and_answers_like_transformers_generate(tiny_model_dir, bits, caplog):
    """ChatModel's greedy answer equals transformers' generate on the same quantized model, and it logs what it
    did; the weights take less memory. (With float32 activations, as transformers' modules multiply: int8 ones,
    the default where the CPU has int8 dot products, round each input row and may turn a random model's greedy
    token; their numbers are tested against the Python forward's below.)"""
    caplog.set_level("INFO", logger="lmchat")
    chat = ChatModel({"model_name_or_path": str(tiny_model_dir), "quantization_bit": bits, "temperature": 0,
                      "max_new_tokens": 12, "quantized_activations": "off"})
    try:
        messages = [{"role": "user", "content": "Name three colours."}]
        answer = chat.chat(messages)[0]
        model = chat.engine.loaded.model
        assert quant.is_quantized(model) and f"to {bits} bits" in caplog.text
        prepared = chat.prepare(messages)
        ids = torch.tensor([list(prepared.prompt_token_ids)])
        # the same weights in transformers' own model (the chat loaded them directly into lmchat's modules)
        reference = load_model(ModelConfig.from_dict({"model_name_or_path": str(tiny_model_dir),
                                                      "quantization_bit": bits, "direct_load": "off"})).model
        with torch.inference_mode():
            generated = reference.generate(ids, max_new_tokens=12, do_sample=False, eos_token_id=2, pad_token_id=2)
        expected = chat.engine.loaded.tokenizer.decode(generated[0, ids.shape[1]:], skip_special_tokens=True)
        assert answer.response_text == expected and answer.response_length == 12
        float32 = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        assert quant.model_bytes(model) < 0.9 * quant.model_bytes(float32)  # the float32 embeddings stay
    finally:
        chat.close()


def test_settings_the_cpu_cannot_honour_are_refused(tiny_model_dir):
    base = {"model_name_or_path": str(tiny_model_dir), "quantization_bit": 4}
    for extra, message in [
        ({"quantization_type": "fp4"}, "quantization_type sets bitsandbytes on CUDA"),
        ({"double_quantization": False}, "double_quantization sets bitsandbytes on CUDA"),
        ({"quantization_method": "hqq"}, "quantization_method: hqq is not available on the CPU"),
        ({"infer_dtype": "bfloat16"}, "quantizes a float32 model on the CPU; this one is torch.bfloat16"),
    ]:
        with pytest.raises(ConfigError, match=message) as info:
            ChatModel({**base, **extra})
        assert info.value.param in ("quantization_bit", *extra)
    config = ModelConfig.from_dict(base)
    assert quant.load_options(config, torch.device("cpu")) == {}


def test_a_quantized_model_serves_named_lora_adapters(tiny_model_dir, tiny_lora_dirs):
    """QLoRA-style: the adapters add in float32 over the quantized base; a mixed batch of adapters answers as each
    request alone does."""
    config = {**served_config(tiny_model_dir, tiny_lora_dirs), "quantization_bit": 8, "native_decode": "auto"}
    with ChatModel(config) as chat:
        alone = [chat.chat(messages, adapter=adapter)[0].response_text for adapter, messages in REQUESTS]
        chat.engine.worker.batch_sizes.clear()
        assert answer_together(chat, REQUESTS) == alone
        assert max(chat.engine.worker.batch_sizes) >= 5
        assert len({text for (adapter, messages), text in zip(REQUESTS, alone) if messages is MESSAGES}) >= 3


def perplexity(model, ids: list[int]) -> float:
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
    return math.exp(float(torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]))))


@pytest.mark.slow
def test_the_default_model_quantized_keeps_its_perplexity_and_answers(module, default_model_dir):
    """Quality on real text (LLaMA-Factory's alpaca demo answers, 512 tokens): int8 within 2 % of float32's
    perplexity; int4 within 2 % too on this model, whose weights are llama.cpp Q4_1 (the same groups of 32 with a
    scale and a minimum: re-quantizing finds the same codes). The numbers: benchmarks/bench_quant.py."""
    rows = json.loads((ORACLES / "datasets/llamafactory/alpaca_en_demo.json").read_text())
    tokenizer = transformers.AutoTokenizer.from_pretrained(default_model_dir)
    ids = tokenizer("\n\n".join(row["output"] for row in rows[:40])).input_ids[:512]
    results = {}
    for bits in (None, 8, 4):
        model = transformers.AutoModelForCausalLM.from_pretrained(default_model_dir).eval()
        if bits:
            quantize_model(model, bits)
        results[bits] = perplexity(model, ids)
    assert 1 < results[None] < 100
    assert results[8] / results[None] < 1.02 and results[4] / results[None] < 1.02
    assert results[8] != results[None] and results[4] != results[None]


@pytest.mark.slow
def test_the_default_model_keeps_its_gguf_width_unless_told(default_model_dir, caplog):
    """Given as a GGUF (the default model is Q4_1), the weights load at 4 bits on the CPU, logged; a config that
    sets quantization_bit (null: float32) decides; a folder path loads as it is."""
    from lmchat.models.gguf import gguf_weight_bits

    assert gguf_weight_bits(default_model_dir) == 4 and gguf_weight_bits(default_model_dir.parent) is None
    caplog.set_level("INFO", logger="lmchat")
    question = [{"role": "user", "content": "Name the capital of France."}]  # a clear margin (see test_default_model)
    for settings, bits in [({}, 4), ({"quantization_bit": None}, None), ({"quantization_bit": 8}, 8),
                           ({"model_name_or_path": str(default_model_dir)}, None)]:
        with ChatModel({"do_sample": False, "max_new_tokens": 24, **settings}) as chat:
            model = chat.engine.loaded.model
            assert (model.lm_head.quantized.bits if quant.is_quantized(model) else None) == (bits and 8)
            layer = model.model.layers[0].mlp.down_proj
            assert getattr(getattr(layer, "quantized", None), "bits", None) == bits
            assert "Paris" in chat.chat(question)[0].response_text
    assert caplog.text.count("Keeping the 4-bit weights of the GGUF") == 1


# --- int8 activations (quantized_activations: auto; native/int8_act.h) ------------------------------------------
# native/decode.cpp a8_rows: from here on a multiply whose panels are laid out per call takes int8 activations;
# over panels laid out once (the native decoder's weights, qlinear's pack=True) from one row on
A8_ROWS = {4: 4, 8: 12}


def rounded_rows(x: torch.Tensor) -> torch.Tensor:
    """x as the kernels round it: per row and group of 32 inputs, symmetric int8 (scale = max |x| / 127)."""
    rows, width = x.shape
    padded = torch.zeros(rows, -(-width // 32) * 32)
    padded[:, :width] = x
    groups = padded.reshape(rows, -1, 32)
    top = groups.abs().amax(-1, keepdim=True)
    codes = torch.round(groups * torch.where(top > 0, 127 / top, torch.zeros_like(top)))
    return (codes * (top / 127)).reshape(rows, -1)[:, :width]


def int8_paths(module) -> list[str]:
    paths = module.int8_paths()
    assert paths, "this x86-64 CPU has AVX2: the plain int8 path at least"
    return paths


@pytest.mark.parametrize("bits, width", [(4, 160), (8, 160), (8, 100)])  # 100: a last group of 4 inputs
@pytest.mark.parametrize("rows", [1, 2, 4, 5, 12, 13, 40, 130])
def test_int8_activations_multiply_the_rounded_rows_exactly(module, bits, width, rows):
    """Every int8 path (VNNI, plain) equals the float64 product of the rounded rows with the dequantized weight
    (the int32 dot products are exact), for tails of every micro-kernel height and a panel past the last output;
    it differs from float32 activations by the rounding only. Over panels laid out once (the decoder's) from one
    row on, laid out per call from A8_ROWS on, the same numbers (int8 weights: offset by 128 on the VNNI paths,
    |w| times x with w's sign on the plain ones)."""
    weight = QuantizedWeight.quantize(weights(97, width), bits)
    x = torch.randn(rows, width, generator=torch.Generator().manual_seed(4))
    bias = torch.randn(97)
    float32 = module.qlinear(x, weight.codes, weight.scales, weight.mins, bias)
    expected = (rounded_rows(x).double() @ weight.dequantize().double().T + bias.double()).float()
    paths = int8_paths(module)
    for path in paths + ["int8"]:  # "int8": this CPU's best path
        per_call = module.qlinear(x, weight.codes, weight.scales, weight.mins, bias, path)
        packed = module.qlinear(x, weight.codes, weight.scales, weight.mins, bias, path, pack=True)
        torch.testing.assert_close(packed, expected, rtol=0, atol=1e-6 * float(expected.abs().max()))
        assert not torch.equal(packed, float32)
        assert float((packed - float32).abs().max()) < 0.02 * float(float32.abs().max())
        # laid out per call: float32 activations below A8_ROWS, else the laid-out panels' numbers bit for bit
        assert torch.equal(per_call, float32 if rows < A8_ROWS[bits] else packed), path


@pytest.mark.parametrize("bits", [8, 4])
def test_int8_activations_give_a_row_the_same_numbers_in_any_batch(module, bits):
    """Each row is rounded on its own and summed in one order: from a8_rows on, its outputs do not depend on the
    other rows of the batch, bit for bit (so a stream's tokens do not change with the load, within that regime)."""
    weight = QuantizedWeight.quantize(weights(64, 96), bits)
    x = torch.randn(40, 96, generator=torch.Generator().manual_seed(5))
    whole = module.qlinear(x, weight.codes, weight.scales, weight.mins, None, "int8")
    for start, stop in [(0, A8_ROWS[bits]), (3, 3 + A8_ROWS[bits] + 7), (9, 40)]:
        part = module.qlinear(x[start:stop], weight.codes, weight.scales, weight.mins, None, "int8")
        assert torch.equal(part, whole[start:stop]), (start, stop)


def test_an_unknown_activation_name_is_refused(module):
    weight = QuantizedWeight.quantize(weights(8, 32), 4)
    with pytest.raises(RuntimeError, match="activations are float32, int8, int8-vnni or int8-plain, not 'int4'"):
        module.qlinear(torch.randn(4, 32), weight.codes, weight.scales, weight.mins, None, "int4")


def last_prompt_logits(runner: SlotRunner, prompts: list[list[int]], activations: str) -> torch.Tensor:
    quant.use_activations(activations)
    try:
        runner.reserve(len(prompts), 64)
        return torch.stack([runner.prefill(row, ids, 0) for row, ids in enumerate(prompts)])
    finally:
        runner.release()
        quant.use_activations("float32")


@pytest.mark.parametrize("bits", [8, 4])
def test_the_native_step_with_int8_activations_equals_the_python_forward_with_them(module, bits):
    """The lean forward's Python path (quantized modules, this thread's activations) and the native step give the
    same batched logits with int8 activations, up to the rounding of an activation code; both stay close to float32
    activations. The native one-row step takes them too."""
    model = build("qwen2")
    quantize_model(model, bits)
    lean = LeanDecoder(model)
    # prompts and batches of a8_rows rows at least (the output head's 8 bits' too), so that prefill and decode
    # steps take int8 activations in every multiply on the Python side (panels laid out per call) as well
    most = max(A8_ROWS.values())
    prompts = [[(7 * row + 3 * i) % 250 + 1 for i in range(most + row)] for row in range(most)]
    previous = quant._kernels
    quant.use_native_kernels(module)
    try:
        float32 = decode_rows(SlotRunner(model, CPU, lean), prompts, 4)
        lean.use_native(module, "float32")
        alone_float32 = decode_rows(SlotRunner(model, CPU, lean), prompts[:1], 4)
        quant.use_activations("int8")
        python = decode_rows(SlotRunner(model, CPU, lean), prompts, 4)
        lean.use_native(module, "int8")
        native_steps = decode_rows(SlotRunner(model, CPU, lean), prompts, 4)
        alone = decode_rows(SlotRunner(model, CPU, lean), prompts[:1], 4)
        # the first step's inputs are the prompts' greedy tokens, which may differ: compare the prompts' own logits
        first = [last_prompt_logits(SlotRunner(model, CPU, lean), prompts, a8) for a8 in ("int8", "float32")]
    finally:
        quant.use_activations("float32")
        quant.use_native_kernels(previous)
    # the decoder laid out its int8 kernels' panels once: a second copy of the codes, scales (and minimums)
    weights = sum(m.quantized.num_bytes() for m in model.modules() if isinstance(m, QuantizedLinear))
    assert weights <= lean.native.packed_bytes <= 1.5 * weights, (lean.native.packed_bytes, weights)
    for a, b in zip(native_steps, python):
        # the two forwards' float rounding differs (1e-6); rounding to int8 can turn that into one code step of an
        # activation here and there, so the logits agree to 1e-2 of their scale, not 1e-6 (on the AVX2 build: 2e-3)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-2 * float(b.abs().max()))
    assert not torch.equal(python[0], float32[0])  # int8 activations did serve
    # one row alone (the one-row step, over the laid-out panels) takes int8 activations too: the batch's numbers
    # for that row up to the float rounding of the work between the multiplies, not float32 activations' numbers
    for a, together, a_float32 in zip(alone, native_steps, alone_float32):
        torch.testing.assert_close(a[0], together[0], rtol=0, atol=1e-2 * float(together[0].abs().max()))
        assert not torch.equal(a[0], a_float32[0])
        torch.testing.assert_close(a[0], a_float32[0], rtol=0, atol=0.05 * float(a_float32[0].abs().max()))
    torch.testing.assert_close(first[0], first[1], rtol=0, atol=0.05 * float(first[1].abs().max()))


def test_quantized_activations_auto_serves_batches_with_int8_and_off_keeps_float32(tiny_model_dir, caplog):
    """The engine takes int8 activations where the CPU has int8 dot products (logged, in describe) and passes its
    runner checks with them (the native step in use); 16 streams batched answer in full, close to float32's.
    ``off`` keeps float32 activations everywhere."""
    caplog.set_level("INFO", logger="lmchat")
    requests = [[{"role": "user", "content": f"Count to {i}."}] for i in range(16)]

    async def together(chat):
        return await asyncio.gather(*(chat.achat(messages) for messages in requests))

    answers = {}
    for setting in ("auto", "off"):
        config = {"model_name_or_path": str(tiny_model_dir), "quantization_bit": 4, "quantized_activations": setting,
                  "temperature": 0, "max_new_tokens": 8, "native_decode": "on"}
        with ChatModel(config) as chat:
            described = chat.engine.describe()
            assert ("x int8 activations" in described) == (setting == "auto"), described
            assert chat.engine.worker.runner.name == "lean+native"
            chat.engine.worker.batch_sizes.clear()
            answers[setting] = [r[0] for r in chat.run_sync(together(chat))]
            assert max(chat.engine.worker.batch_sizes) >= 12  # batched: int8 activations where auto
            assert all(r.response_length == 8 for r in answers[setting])
    assert caplog.text.count("take int8 activations") == 1
