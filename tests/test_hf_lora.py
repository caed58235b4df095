"""Named LoRA adapters on the transformers engine: requests with different adapters (and none) decoded in one
continuous batch, unmerged, answer as each adapter merged into the weights does (greedy, float32)."""

import asyncio

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from lora_support import edited_copy, make_adapter  # noqa: E402

from lmchat import ChatModel  # noqa: E402
from lmchat.engines.hf import runner as runner_module  # noqa: E402
from lmchat.errors import ConfigError, InvalidRequestError, ModelNotFoundError  # noqa: E402

MESSAGES = [{"role": "system", "content": "You are a terse assistant that answers in few words."},
            {"role": "user", "content": "Tell me something."}]
OTHER = [{"role": "system", "content": "You are a terse assistant that answers in few words."},
         {"role": "user", "content": "Name a colour."}]
GREEDY = {"do_sample": False, "max_new_tokens": 8}
# each request of the mixed batch: (adapter, messages); the same system prompt everywhere, so the worker's prefix
# sharing would hand one adapter's keys/values to another if it did not check the adapter
REQUESTS = [(None, MESSAGES), ("alpha", MESSAGES), ("beta", MESSAGES), ("gamma", MESSAGES), ("alpha", OTHER),
            (None, OTHER), ("gamma", OTHER)]


@pytest.fixture(scope="module")
def merged_answers(tiny_model_dir, tiny_lora_dirs):
    """Each (adapter, messages) answered alone by a model with that adapter merged into its weights."""
    answers = {}
    for name in (None, *tiny_lora_dirs):
        merged = {"adapter_name_or_path": str(tiny_lora_dirs[name])} if name else {}
        with ChatModel({"model_name_or_path": str(tiny_model_dir), "native_decode": "off", **GREEDY,
                        **merged}) as model:
            for messages in (MESSAGES, OTHER):
                answers[name, messages[-1]["content"]] = model.chat(messages)[0].response_text
    return answers


def served_config(tiny_model_dir, tiny_lora_dirs, **settings):
    modules = [f"{name}={path}" for name, path in tiny_lora_dirs.items()]
    return {"model_name_or_path": str(tiny_model_dir), "lora_modules": modules, "max_lora_rank": 8, **GREEDY,
            "native_decode": "off", **settings}


FORWARDS = {  # forward pass -> (settings, what to patch while the model loads)
    "lean": ({}, {}),
    "lean+native": ({"native_decode": "on"}, {}),
    # transformers' own model (not the directly loaded one) for its forward and the sequential fallback
    "transformers": ({"direct_load": "off"}, {"unsupported_reason": lambda model: "a test of transformers' forward"}),
    "sequential": ({"direct_load": "off"}, {"_slot_runner_matches": lambda *args: False}),
}


@pytest.fixture(scope="module", params=list(FORWARDS))
def served(request, tiny_model_dir, tiny_lora_dirs):
    settings, patches = FORWARDS[request.param]
    with pytest.MonkeyPatch.context() as patch:
        for name, value in patches.items():
            patch.setattr(runner_module, name, value)
        model = ChatModel(served_config(tiny_model_dir, tiny_lora_dirs, **settings))
    with model:
        expected = {"lean": "lean", "lean+native": "lean+native", "transformers": "transformers"}.get(request.param)
        runner = model.engine.worker.runner
        assert getattr(runner, "name", None) == expected  # "sequential": the DynamicRunner, which has no name
        yield model


def answer_together(model, requests):
    async def all_at_once():
        return await asyncio.gather(*(model.achat(messages, adapter=adapter) for adapter, messages in requests))

    return [answers[0].response_text for answers in model.run_sync(all_at_once())]


def test_a_mixed_batch_answers_as_each_merged_model(served, merged_answers):
    worker = served.engine.worker
    worker.batch_sizes.clear()
    got = answer_together(served, REQUESTS)
    expected = [merged_answers[adapter, messages[-1]["content"]] for adapter, messages in REQUESTS]
    assert got == expected
    assert max(worker.batch_sizes) >= 5  # decoded together, in one continuous batch
    # the adapters change the answers (so the equality above could fail)
    assert len({merged_answers[name, "Tell me something."] for name in (None, "alpha", "beta", "gamma")}) >= 3


def test_adapters_are_listed_with_their_rank(served, tiny_lora_dirs):
    assert [(a.name, a.path, a.rank) for a in served.adapters] == [
        ("alpha", str(tiny_lora_dirs["alpha"]), 4), ("beta", str(tiny_lora_dirs["beta"]), 8),
        ("gamma", str(tiny_lora_dirs["gamma"]), 2)]


def test_an_unknown_adapter_is_refused_before_any_work(served):
    with pytest.raises(ModelNotFoundError, match="'delta' is not a loaded LoRA adapter \\(loaded: alpha, beta, gamma"):
        served.chat(MESSAGES, adapter="delta")


@pytest.fixture(scope="module")
def model(tiny_model_dir, tiny_lora_dirs):
    with ChatModel(served_config(tiny_model_dir, tiny_lora_dirs)) as model:
        yield model


def test_a_raw_completion_takes_an_adapter(model, merged_answers):
    prepared = model.prepare_completion("Once upon a time", adapter="beta", max_new_tokens=6)
    assert prepared.adapter == "beta" and prepared.requests()[0].adapter == "beta"
    base = model.prepare_completion("Once upon a time", max_new_tokens=6)
    beta, plain = (model.run_sync(model.agenerate(p))[0].response_text for p in (prepared, base))
    assert beta != plain


def test_unloading_waits_for_the_requests_using_the_adapter(model, tiny_lora_dirs):
    model.load_adapter("alpha2", str(tiny_lora_dirs["alpha"]))
    assert model.chat(MESSAGES, adapter="alpha2")[0].response_text == model.chat(MESSAGES, adapter="alpha")[0].response_text

    async def scenario():
        prepared = await model.aprepare(MESSAGES, adapter="alpha2", max_new_tokens=12, ignore_eos=True)
        stream = model.astream_chunks(prepared)
        chunks = [await stream.__anext__()]
        unload = asyncio.create_task(model.aunload_adapter("alpha2"))
        await asyncio.sleep(0)  # the unload starts: it refuses new requests for alpha2 at once
        with pytest.raises(ModelNotFoundError, match="being unloaded"):
            await model.aprepare(MESSAGES, adapter="alpha2")
        done_while_streaming = []
        async for chunk in stream:
            chunks.append(chunk)
            done_while_streaming.append(unload.done())
        await unload
        return chunks, done_while_streaming

    chunks, done_while_streaming = model.run_sync(scenario())
    assert chunks[-1].finish_reason == "length" and chunks[-1].completion_tokens == 12  # not cut short
    assert not any(done_while_streaming)
    assert "alpha2" not in [a.name for a in model.adapters]
    with pytest.raises(ModelNotFoundError, match="not a loaded LoRA adapter"):
        model.chat(MESSAGES, adapter="alpha2")


def test_a_bad_adapter_is_refused_and_changes_nothing(model, tiny_model_dir, tiny_lora_dirs, tmp_path):
    before = [a.name for a in model.adapters]
    answer = model.chat(MESSAGES, adapter="beta")[0].response_text
    dora = edited_copy(tiny_lora_dirs["alpha"], tmp_path / "dora", use_dora=True)
    wide = make_adapter(tiny_model_dir, tmp_path / "wide", 16, 16, ["q_proj"])
    cases = {str(tmp_path / "missing"): "no such folder", str(dora): "DoRA is not applied per request",
             str(wide): "rank 16 .* is above max_lora_rank \\(8\\)", str(tmp_path): "no adapter_config.json"}
    for path, why in cases.items():
        with pytest.raises(InvalidRequestError, match=why) as error:
            model.load_adapter("broken", path)
        assert error.value.param == "lora_path"
    with pytest.raises(InvalidRequestError, match="already loaded") as error:
        model.load_adapter("beta", str(tiny_lora_dirs["alpha"]))
    assert error.value.param == "lora_name"
    assert [a.name for a in model.adapters] == before
    assert model.chat(MESSAGES, adapter="beta")[0].response_text == answer


def test_an_adapter_of_another_model_is_refused(model, tiny_lora_dirs, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = edited_copy(tiny_lora_dirs["alpha"], tmp_path / "other")
    state = load_file(str(folder / "adapter_model.safetensors"))
    state = {key: torch.zeros(value.shape[0], 32) if "lora_A" in key else value for key, value in state.items()}
    save_file(state, str(folder / "adapter_model.safetensors"))
    with pytest.raises(InvalidRequestError, match="do not fit its \\[64, 64\\] weight"):
        model.load_adapter("other", str(folder))


def test_merge_adapters_false_serves_the_folders_by_name(tiny_model_dir, tiny_lora_dirs, merged_answers):
    config = {"model_name_or_path": str(tiny_model_dir), "adapter_name_or_path": str(tiny_lora_dirs["gamma"]),
              "merge_adapters": False, "native_decode": "off", **GREEDY}
    with ChatModel(config) as model:
        assert [a.name for a in model.adapters] == ["gamma"]
        assert model.chat(MESSAGES)[0].response_text == merged_answers[None, "Tell me something."]
        assert model.chat(MESSAGES, adapter="gamma")[0].response_text == merged_answers["gamma", "Tell me something."]


def test_a_configured_adapter_that_cannot_load_fails_the_start(tiny_model_dir, tmp_path):
    config = {"model_name_or_path": str(tiny_model_dir), "lora_modules": [f"x={tmp_path}"], "native_decode": "off"}
    with pytest.raises(ConfigError, match="Adapter 'x'.*no adapter_config.json") as error:
        ChatModel(config)
    assert error.value.param == "lora_modules"


def test_batch_rows_choose_their_adapter(model, tmp_path):
    import json

    from lmchat.batch import BatchOptions, run_batch
    from lmchat.batch.sampler import as_rows

    records = [{"instruction": "Tell me something.", "adapter": "beta"}, {"instruction": "Tell me something."},
               {"instruction": "Name a colour.", "adapter": "gamma"}]
    output = tmp_path / "out.jsonl"
    run_batch(as_rows(records), model, BatchOptions(output=str(output), concurrency=3, progress=False,
                                                    adapter="alpha"))
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    for record, line in zip(records, lines):
        messages = [{"role": "user", "content": record["instruction"]}]
        adapter = record.get("adapter", "alpha")  # the run's adapter answers rows without their own
        assert line["predict"] == model.chat(messages, adapter=adapter)[0].response_text
    batch_rows = as_rows([{"custom_id": "a", "body": {"model": "gamma", "messages": MESSAGES}},
                          {"custom_id": "b", "body": {"model": "the-base-model", "messages": MESSAGES}}])
    run_batch(batch_rows, model, BatchOptions(output=str(tmp_path / "batch.jsonl"), progress=False))
    lines = [json.loads(line) for line in (tmp_path / "batch.jsonl").read_text().splitlines()]
    contents = [line["response"]["body"]["choices"][0]["message"]["content"] for line in lines]
    assert contents == [model.chat(MESSAGES, adapter="gamma")[0].content, model.chat(MESSAGES)[0].content]


def test_one_token_steps_with_adapter_rows_stay_native(tiny_model_dir, tiny_lora_dirs, merged_answers):
    """The native step applies each row's adapter itself (no fall back to the Python forward): mixed adapter
    rows in one native call, answers equal to each merged model's."""
    with ChatModel(served_config(tiny_model_dir, tiny_lora_dirs, native_decode="on")) as model:
        lean = model.engine.worker.runner.forward
        assert lean.native_lora
        original, slots_seen = lean.native, []

        class Recording:
            def set_lora(self, *args):
                original.set_lora(*args)

            def step(self, *args, **chunks):  # chunks: the prompts of base-model rows (cache_rows, logits_rows)
                slots_seen.append(args[-1].tolist())
                return original.step(*args, **chunks)

        lean.native = Recording()
        lean.sync_native_lora()
        got = answer_together(model, REQUESTS)
    assert got == [merged_answers[adapter, messages[-1]["content"]] for adapter, messages in REQUESTS]
    assert any(len(set(slots) - {0}) >= 2 and 0 in slots for slots in slots_seen)  # base and two adapters at once
