"""The native one-token decode step (engines/hf/native) against the Python lean forward and transformers."""

from __future__ import annotations

import logging

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from lmchat import ChatModel
from lmchat.engines.hf import native
from lmchat.engines.hf.lean import LeanDecoder
from lmchat.engines.hf.runner import SlotRunner, enable_native, native_unsupported, pick_runner
from lmchat.errors import ConfigError
from test_hf_lean import CPU, build


@pytest.fixture(scope="module")
def module():
    """The compiled kernels (built here if `make` has not built them yet: ~40 s once per machine)."""
    return native.load()


def decode_rows(runner: SlotRunner, prompts: list[list[int]], steps: int) -> list[torch.Tensor]:
    """Prefill every prompt (rows of different lengths), then greedy one-token steps for all rows together."""
    runner.reserve(len(prompts), 64)
    last = [runner.prefill(row, ids, 0) for row, ids in enumerate(prompts)]
    tokens, positions = [int(x.argmax()) for x in last], [len(ids) for ids in prompts]
    out = []
    for _ in range(steps):
        logits = runner.decode(tokens, positions, [True] * len(prompts))
        out.append(logits)
        tokens, positions = logits.argmax(-1).tolist(), [p + 1 for p in positions]
    runner.release()
    return out


PROMPTS = [[5, 17, 42, 7, 99, 3, 12, 250, 8], [11, 13, 2, 77, 6], [1, 2, 3], [200, 100, 50, 25, 12, 6, 3]]


@pytest.mark.parametrize("kind, overrides", [("llama", {}), ("qwen2", {}), ("mistral", {"sliding_window": None}),
                                             ("llama", {"num_key_value_heads": 4}),
                                             ("llama", {"intermediate_size": 100, "hidden_size": 72,
                                                        "num_attention_heads": 3, "num_key_value_heads": 1})])
@pytest.mark.parametrize("rows, packed", [(1, False), (2, True), (4, True), (3, False)])
def test_native_steps_match_the_python_forward(module, kind, overrides, rows, packed):
    """One row: the GEMV path; more: oneDNN over packed weights, or ATen's linear when they are not packed."""
    model = build(kind, **overrides)
    expected = decode_rows(SlotRunner(model, CPU, LeanDecoder(model, packed=False)), PROMPTS[:rows], 6)
    lean = LeanDecoder(model, packed=packed)
    lean.use_native(module)
    got = decode_rows(SlotRunner(model, CPU, lean), PROMPTS[:rows], 6)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5 * float(b.abs().max()))
        assert a.argmax(-1).tolist() == b.argmax(-1).tolist()


def test_a_rows_logits_do_not_depend_on_the_other_rows(module):
    """From two rows on (packed oneDNN multiplies), bit for bit whatever the batch size and the other rows' lengths;
    alone (GEMVs, another summation order) within rounding, with the same greedy tokens."""
    model = build("qwen2")
    lean = LeanDecoder(model, packed=True)
    lean.use_native(module)
    prompts = PROMPTS + [[9, 8, 7, 6], [3, 1, 4, 1, 5, 9, 2, 6]]
    pair = decode_rows(SlotRunner(model, CPU, lean), prompts[:2], 5)
    for rows in (3, 4, 6):
        together = decode_rows(SlotRunner(model, CPU, lean), prompts[:rows], 5)
        assert all(torch.equal(p[0], t[0]) for p, t in zip(pair, together))
    alone = decode_rows(SlotRunner(model, CPU, lean), prompts[:1], 5)
    for a, p in zip(alone, pair):
        torch.testing.assert_close(a[0], p[0], rtol=0, atol=1e-5 * float(p.abs().max()))
        assert int(a[0].argmax()) == int(p[0].argmax())


def test_weights_reach_the_kernel_by_name_and_a_wrong_name_is_refused(module):
    """The kernel takes every weight by its name: a missing or unexpected one is an error naming it."""
    model = build("qwen2")  # q/k/v with biases
    lean = LeanDecoder(model, packed=True)
    layers = [layer.native_weights() for layer in lean.layers]
    assert set(layers[0]) == {"norm1", "qkv", "qkv_bias", "out", "norm2", "gate_up", "down", "qkv_packed",
                              "out_packed", "gate_up_packed", "down_packed"}
    weights = {"embed": lean.embed, "norm": lean.norm, "head": lean.head.weight, "head_packed": lean.head.packed}
    sizes = {"heads": lean.heads, "kv_heads": lean.kv_heads, "head_dim": lean.head_dim,
             "intermediate": lean.intermediate}
    scalars = {"scaling": float(lean.scaling), "eps": float(lean.eps)}
    module.Decoder(layers, weights, sizes, scalars)  # accepted as the lean forward gives them
    renamed = [dict(layer) for layer in layers]
    renamed[1]["gate"] = renamed[1].pop("gate_up")
    with pytest.raises(RuntimeError, match="layer 1 has no weight named 'gate_up'"):
        module.Decoder(renamed, weights, sizes, scalars)
    extra = [dict(layer) for layer in layers]
    extra[0]["q_norm"] = extra[0]["norm1"]
    with pytest.raises(RuntimeError, match="layer 0 has an unknown weight named 'q_norm'"):
        module.Decoder(extra, weights, sizes, scalars)
    with pytest.raises(RuntimeError, match="the model has no weight named 'head'"):
        module.Decoder(layers, {k: v for k, v in weights.items() if k != "head"}, sizes, scalars)
    quantized = [dict(layer) for layer in layers]
    del quantized[0]["down"], quantized[0]["down_packed"]
    quantized[0]["down_codes"] = torch.zeros(lean.layers[0].down.shape, dtype=torch.int8)
    with pytest.raises(RuntimeError, match="layer 0 has no weight named 'down_scales'"):
        module.Decoder(quantized, weights, sizes, scalars)  # a quantized multiply needs its scales
    quantized[0]["down_scales"] = torch.ones(3)
    with pytest.raises(RuntimeError, match="int8 codes take one scale per row"):
        module.Decoder(quantized, weights, sizes, scalars)
    with pytest.raises(RuntimeError, match="no 'intermediate'"):
        module.Decoder(layers, weights, {k: v for k, v in sizes.items() if k != "intermediate"}, scalars)


def test_steps_and_prompt_chunks_go_native(module):
    """Prompt chunks of one row are native calls too (chunk=True: the last token's logits), then the steps."""
    model = build("llama")
    lean = LeanDecoder(model, packed=True)
    lean.use_native(module)
    calls = []
    original = lean.native

    class Counting:
        def step(self, *args, **chunks):
            calls.append((args[0].shape[0], bool(chunks)))
            return original.step(*args, **chunks)

    lean.native = Counting()
    runner = SlotRunner(model, CPU, lean)
    decode_rows(runner, [[i + 1, i + 2, i + 3] for i in range(6)], 2)
    assert calls == [(3, True)] * 6 + [(6, False)] * 2  # six prompts of three tokens, then two steps of six rows
    calls.clear()
    runner.reserve(3, 16)
    runner.prefill_rows([(0, [1, 2, 3], 0), (1, [4, 5], 0), (2, [6, 7, 8, 9], 0)])
    assert calls == [(9, True)]  # three rows' chunks: one call of nine tokens


@pytest.mark.parametrize("kind, overrides", [("qwen2", {}), ("llama", {"num_key_value_heads": 4}),
                                             ("llama", {"intermediate_size": 100, "hidden_size": 72,
                                                        "num_attention_heads": 3, "num_key_value_heads": 1})])
def test_a_prompt_in_native_chunks_equals_the_python_forward(module, kind, overrides):
    """A prompt fed in chunks after cached positions (the worker's prefill_chunk_tokens) gives the Python
    forward's logits at each chunk's end and leaves the same keys and values for the steps after it."""
    model = build(kind, **overrides)
    prompt = [(13 * i + 5) % 250 + 1 for i in range(23)]
    chunks = [(0, 8), (8, 9), (9, 23)]  # one chunk of a single token: the one-row step at a later position
    results = {}
    for name, native_on in (("python", False), ("native", True)):
        lean = LeanDecoder(model, packed=True)
        if native_on:
            lean.use_native(module)
        runner = SlotRunner(model, CPU, lean)
        runner.reserve(2, 64)
        runner.prefill(0, PROMPTS[1], 0)  # row 0 holds another prompt: the chunks go to row 1 only
        logits = [runner.prefill(1, prompt[a:b], a) for a, b in chunks]
        step = runner.decode([int(logits[-1].argmax())] * 2, [len(PROMPTS[1]), len(prompt)], [True, True])
        results[name] = logits + [step[0], step[1]]
        runner.release()
    for a, b in zip(results["native"], results["python"]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5 * float(b.abs().max()))


@pytest.mark.parametrize("kind", ["qwen2", "llama"])
def test_several_rows_chunks_in_one_native_call_equal_each_chunk_alone(module, kind):
    """prefill_rows: chunks of several rows (new prompts, a prompt's second chunk after its cached positions, a
    one-token chunk) in one call give each chunk's own last logits and the same cache as one chunk at a time:
    the decode step after both agrees."""
    model = build(kind)
    first = [(13 * i + 5) % 250 + 1 for i in range(12)]
    rounds = [[(0, first[:5], 0), (1, PROMPTS[0], 0)],  # two new prompts
              [(0, first[5:], 5), (2, PROMPTS[1], 0), (3, [42], 0)]]  # a second chunk, a new one, one token
    results = {}
    for name in ("alone", "together"):
        lean = LeanDecoder(model, packed=True)
        lean.use_native(module)
        runner = SlotRunner(model, CPU, lean)
        runner.reserve(4, 64)
        logits = []
        for chunks in rounds:
            if name == "together":
                logits.extend(runner.prefill_rows(chunks))
            else:
                logits.extend(runner.prefill(slot, ids, start) for slot, ids, start in chunks)
        lengths = [len(first), len(PROMPTS[0]), len(PROMPTS[1]), 1]
        step = runner.decode([int(x.argmax()) for x in logits[2:]] + [7], lengths, [True] * 4)
        results[name] = logits + list(step)
        runner.release()
    assert len(results["together"]) == len(results["alone"]) == 9
    for a, b in zip(results["together"], results["alone"]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5 * float(b.abs().max()))
        assert int(a.argmax()) == int(b.argmax())


def test_enable_native_checks_against_a_plain_forward_and_keeps_running_rows(module):
    model = build("llama")
    runner = pick_runner(model, CPU, "off")
    runner.reserve(1, 32)
    before = runner.prefill(0, PROMPTS[0], 0)
    assert enable_native(runner, module) and runner.name == "lean+native"
    # the probe ran on a cache of its own: row 0 still holds its prompt, so decoding continues correctly
    step = runner.decode([int(before.argmax())], [len(PROMPTS[0])], [True])[0]
    ids = torch.tensor([PROMPTS[0] + [int(before.argmax())]])
    expected = model(ids).logits[0, -1].detach()
    torch.testing.assert_close(step, expected, rtol=0, atol=1e-4 * float(expected.abs().max()))


def test_a_kernel_that_gets_the_model_wrong_is_not_used(module, caplog):
    model = build("llama")
    runner = pick_runner(model, CPU, "off")

    class Wrong:
        MAX_ROWS = 4

        class Decoder:
            def __init__(self, *args):
                pass

            def step(self, tokens, *args):
                return torch.zeros(tokens.shape[0], model.config.vocab_size)

    with caplog.at_level(logging.INFO):
        assert not enable_native(runner, Wrong)
    assert runner.name == "lean" and runner.forward.native is None


def test_a_kernel_wrong_only_for_one_row_is_not_used(module):
    """The startup check also runs a one-row step: the path most decode steps take."""
    model = build("llama")
    runner = pick_runner(model, CPU, "off")

    class WrongAlone:
        class Decoder(module.Decoder):
            def step(self, tokens, *args):
                logits = super().step(tokens, *args)
                return torch.zeros_like(logits) if tokens.shape[0] == 1 else logits

    assert not enable_native(runner, WrongAlone)
    assert runner.name == "lean" and runner.forward.native is None


def test_models_the_native_step_cannot_run_are_named():
    assert "float32" in native_unsupported(pick_runner(build("llama").to(torch.bfloat16), CPU, "off"))
    assert "Llama-family" in native_unsupported(pick_runner(build("qwen3"), CPU, "off"))


def test_the_engine_uses_the_native_step_and_answers_as_the_python_forward_does(module, tiny_model_dir):
    messages = [{"role": "user", "content": "Name three colours."}]
    answers = {}
    for setting in ("on", "off"):
        config = {"model_name_or_path": str(tiny_model_dir), "do_sample": False, "max_new_tokens": 24,
                  "native_decode": setting}
        with ChatModel(config) as model:
            assert model.engine.worker.runner.name == ("lean+native" if setting == "on" else "lean")
            answers[setting] = [model.chat(messages)[0].response_text for _ in range(2)]
    assert answers["on"] == answers["off"]


def test_native_decode_on_where_it_cannot_run_is_a_clear_error(tiny_model_dir):
    config = {"model_name_or_path": str(tiny_model_dir), "native_decode": "on", "infer_dtype": "bfloat16"}
    with pytest.raises(ConfigError, match="native_decode: on needs float32 weights"):
        ChatModel(config)


def test_auto_builds_in_a_child_process_and_switches_between_steps(module, tiny_model_dir, monkeypatch):
    """The child process finds the kernels already built (a real compile is ~40 s), so this takes seconds."""
    monkeypatch.setattr(native, "is_built", lambda: False)
    assert native.NativeBuild("auto").result() is module
    config = {"model_name_or_path": str(tiny_model_dir), "do_sample": False, "max_new_tokens": 4}
    with ChatModel(config) as model:
        worker = model.engine.worker
        pending = worker.native_build
        assert pending is not None and worker.runner.name == "lean"  # serving with Python while it builds
        assert model.chat([{"role": "user", "content": "Hi"}])[0].response_length == 4
        pending.result()  # the child process is done
        assert model.chat([{"role": "user", "content": "Hi"}])[0].response_length == 4
        assert worker.runner.name == "lean+native" and worker.native_build is None


def test_a_failed_background_build_leaves_the_python_forward(monkeypatch, caplog):
    monkeypatch.setattr(native, "is_built", lambda: False)
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    with caplog.at_level(logging.INFO, logger="lmchat.engines.hf.native"):
        assert native.NativeBuild("auto").result() is None
    assert "a C++ compiler" in caplog.text


def test_native_decode_setting_is_validated():
    with pytest.raises(ConfigError, match="native_decode"):
        ChatModel({"model_name_or_path": "x", "native_decode": "yes"})


def test_prompts_arriving_together_are_prefilled_in_one_native_call(tiny_model_dir):
    """The worker plans the chunks of prompts that arrive together and runs them as one native call (several cache
    rows); the answers equal each request's alone. (A prompt sharing a planned one's prefix waits a step and copies
    it: test_hf_batching.test_shared_prompt_prefixes_are_copied_not_recomputed.)"""
    import asyncio

    questions = [f"Count to {i}, please." for i in range(6)]
    config = {"model_name_or_path": str(tiny_model_dir), "do_sample": False, "max_new_tokens": 6,
              "native_decode": "on"}
    with ChatModel(config) as chat:
        alone = [chat.chat([{"role": "user", "content": q}])[0] for q in questions]
        lean = chat.engine.worker.runner.forward
        original, rows_per_call = lean.native, []

        class Recording:
            def step(self, *args, cache_rows=None, logits_rows=None):
                if cache_rows is not None:
                    rows_per_call.append(len(set(cache_rows.tolist())))
                return original.step(*args, cache_rows=cache_rows, logits_rows=logits_rows)

        lean.native = Recording()

        async def run():
            return await asyncio.gather(*(chat.achat([{"role": "user", "content": q}]) for q in questions))

        together = [answers[0] for answers in chat.run_sync(run())]
        lean.native = original
    assert [(r.response_text, r.response_length) for r in together] == [
        (r.response_text, r.response_length) for r in alone]
    assert max(rows_per_call) >= 2, rows_per_call


def test_a_failing_prefill_of_several_prompts_fails_those_requests_only(tiny_model_dir):
    """If the one call for several prompts' chunks fails, each of those requests ends with an EngineError naming
    the failure, nothing hangs, and the engine serves the next requests."""
    import asyncio

    from lmchat.errors import EngineError

    config = {"model_name_or_path": str(tiny_model_dir), "do_sample": False, "max_new_tokens": 4,
              "native_decode": "on"}
    with ChatModel(config) as chat:
        runner = chat.engine.worker.runner
        original, failed = runner.prefill_rows, []

        def failing(chunks):
            if len(chunks) > 1 and not failed:
                failed.append(len(chunks))
                raise RuntimeError("simulated kernel failure")
            return original(chunks)

        runner.prefill_rows = failing

        async def run(questions):
            return await asyncio.gather(*(chat.achat([{"role": "user", "content": q}]) for q in questions),
                                        return_exceptions=True)

        first = chat.run_sync(run([f"Say {i}." for i in range(4)]))
        second = chat.run_sync(run(["Say yes.", "Say no."]))
        del runner.prefill_rows
    errors = [r for r in first if isinstance(r, EngineError)]
    assert failed and len(errors) == failed[0] and all("simulated kernel failure" in str(e) for e in errors)
    assert all(not isinstance(r, BaseException) for r in first if r not in errors)
    assert all(not isinstance(r, BaseException) and r[0].response_length > 0 for r in second)


@pytest.mark.parametrize("bits", [None, 4])
def test_long_prompt_chunks_of_several_rows_equal_the_python_forward(module, bits):
    """Chunks past the multiplies' large-batch paths (256 + 44 tokens of one row beside a second row's prompt:
    oneDNN over packed weights in float32, the laid-out int8-activation panels at 4 bits) give the Python
    forward's last logits and the same following step."""
    from lmchat.engines.hf import quant
    from lmchat.engines.hf.quant import quantize_model

    model = build("llama", max_position_embeddings=512)
    activations, previous = "float32", quant._kernels
    if bits:
        quantize_model(model, bits)
        quant.use_native_kernels(module)
        activations = "int8" if module.int8_paths() else "float32"
    prompt = [(31 * i + 7) % 250 + 1 for i in range(300)]
    results = {}
    quant.use_activations(activations)
    try:
        for name in ("python", "native"):
            lean = LeanDecoder(model, packed=bits is None)
            if name == "native":
                lean.use_native(module, activations)
            runner = SlotRunner(model, CPU, lean)
            runner.reserve(2, 320)
            chunks = [[(0, prompt[:256], 0)], [(0, prompt[256:], 256), (1, PROMPTS[0], 0)]]
            logits = [row for part in chunks for row in (runner.prefill_rows(part) if name == "native" else
                                                        [runner.prefill(s, ids, a) for s, ids, a in part])]
            step = runner.decode([int(logits[1].argmax()), int(logits[2].argmax())], [300, len(PROMPTS[0])],
                                 [True, True])
            results[name] = logits + list(step)
            runner.release()
    finally:
        quant.use_activations("float32")
        quant.use_native_kernels(previous)
    for a, b in zip(results["native"], results["python"]):
        torch.testing.assert_close(a, b, rtol=0, atol=(2e-2 if bits else 1e-4) * float(b.abs().max()))
