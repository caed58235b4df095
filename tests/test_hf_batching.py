"""Continuous batching in the transformers engine: concurrent requests share one model and one batched KV cache.

Timing-free: the worker records how many sequences each decode step ran (``worker.batch_sizes``), which proves that
requests were batched, joined running ones, and waited when the batch or the KV-cache budget was full.
"""

import asyncio

import pytest

torch = pytest.importorskip("torch")

from lmchat import ChatModel
from lmchat.engines.hf.runner import DynamicRunner, SlotRunner
from lmchat.engines.hf.scheduler import Scheduler
from lmchat.errors import ContextLengthError

QUESTIONS = ["Hi", "Tell me something.", "What is the capital of France, and why is it famous?",
             "Write a haiku about the sea, the wind and a small boat far from home.", "2+2?"]
LENGTHS = [7, 19, 12, 25, 16]
SAMPLE = {"do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": 0}


def ask(question: str) -> list[dict]:
    return [{"role": "user", "content": question}]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    with ChatModel({"model_name_or_path": str(tiny_model_dir), "do_sample": False, "max_new_tokens": 12}) as model:
        yield model


@pytest.fixture
def worker(tiny):
    """The tiny model's worker, its limits restored after each test."""
    worker = tiny.engine.worker
    limits = (worker.scheduler.max_batch_size, worker.scheduler.kv_cache_tokens, worker.prefill_chunk_tokens)
    worker.batch_sizes.clear()
    yield worker
    worker.scheduler.max_batch_size, worker.scheduler.kv_cache_tokens, worker.prefill_chunk_tokens = limits


def solo(model, requests):
    """Each request alone, one after the other."""
    return [model.chat(ask(q), **options)[0] for q, options in requests]


def together(model, requests):
    async def run():
        return await asyncio.gather(*(model.achat(ask(q), **options) for q, options in requests))

    return [answers[0] for answers in asyncio.run(run())]


def summary(responses):
    return [(r.response_text, r.response_length, r.finish_reason) for r in responses]


def test_the_batched_slot_runner_drives_the_model(tiny, worker):
    """One forward pass decodes every running request, over the slot KV cache (the sequential fallback keeps no
    slot cache and steps one row at a time)."""
    assert isinstance(worker.runner, SlotRunner)
    worker.peak_cache_bytes = 0
    together(tiny, [(q, {"max_new_tokens": 6}) for q in QUESTIONS[:3]])
    assert max(worker.batch_sizes) == 3
    config = tiny.engine.loaded.model.config
    longest = max(tiny.prepare(ask(q)).prompt_tokens for q in QUESTIONS[:3]) + 6
    head_dim = config.hidden_size // config.num_attention_heads
    per_position = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * 4  # keys + values, fp32
    assert worker.peak_cache_bytes >= 3 * longest * per_position  # all three rows held in the slot cache


def test_concurrent_greedy_requests_give_their_solo_outputs(tiny, worker):
    requests = [(q, {"max_new_tokens": n}) for q, n in zip(QUESTIONS, LENGTHS)]
    alone = solo(tiny, requests)
    assert max(worker.batch_sizes) == 1
    worker.batch_sizes.clear()
    batched = together(tiny, requests)
    assert summary(batched) == summary(alone)
    assert [r.response_length for r in batched] == LENGTHS  # every request kept its own limit
    assert max(worker.batch_sizes) == len(requests)


def test_requests_join_a_running_batch(tiny, worker):
    long_request, others = ("Tell me a long story.", {"max_new_tokens": 300, "ignore_eos": True}), \
        [(q, {"max_new_tokens": n}) for q, n in zip(QUESTIONS[:3], LENGTHS[:3])]
    [long_alone] = solo(tiny, [long_request])
    alone = solo(tiny, others)
    worker.batch_sizes.clear()

    async def run():
        pieces = []
        stream = tiny.astream_chat(ask(long_request[0]), **long_request[1])
        pieces.append(await anext(stream))  # the long request is running ...
        joined = asyncio.gather(*(tiny.achat(ask(q), **options) for q, options in others))  # ... when these join
        pieces.extend([piece async for piece in stream])
        return "".join(pieces), [answers[0] for answers in await joined]

    long_text, batched = asyncio.run(run())
    sizes = list(worker.batch_sizes)
    assert long_text == long_alone.response_text
    assert summary(batched) == summary(alone)
    assert sizes[0] == 1 and max(sizes) == 1 + len(others) and sizes[-1] == 1  # alone, joined, alone again


def test_aborting_one_request_leaves_the_others_correct(tiny, worker):
    requests = [(q, {"max_new_tokens": n}) for q, n in zip(QUESTIONS[:3], LENGTHS[:3])]
    alone = solo(tiny, requests)

    async def run():
        async def abandon():
            stream = tiny.astream_chat(ask("Count to a thousand."), max_new_tokens=300, ignore_eos=True)
            await anext(stream)
            await anext(stream)
            await stream.aclose()

        others = asyncio.gather(*(tiny.achat(ask(q), **options) for q, options in requests))
        await abandon()
        return [answers[0] for answers in await others]

    batched = asyncio.run(run())
    assert summary(batched) == summary(alone)
    reasons = {reason for _, reason, _ in worker.finished}
    assert "abort" in reasons and worker.num_active == 0


def test_waiting_queue_bounds_the_batch(tiny, worker):
    requests = [(q, {"max_new_tokens": n}) for q, n in zip(QUESTIONS, LENGTHS)]
    alone = solo(tiny, requests)
    worker.scheduler.max_batch_size = 2
    worker.batch_sizes.clear()
    batched = together(tiny, requests)
    assert summary(batched) == summary(alone)
    assert max(worker.batch_sizes) == 2


def test_seeded_samples_in_a_batch_reproduce_their_solo_samples(tiny, worker):
    requests = [(q, dict(SAMPLE, seed=seed, max_new_tokens=n)) for q, seed, n in zip(QUESTIONS, range(5), LENGTHS)]
    requests.append((QUESTIONS[0], dict(SAMPLE, seed=99, max_new_tokens=9, frequency_penalty=1.0)))
    alone = solo(tiny, requests)
    batched = together(tiny, requests)
    assert summary(batched) == summary(alone)
    assert max(worker.batch_sizes) == len(requests)


def test_requests_beyond_the_kv_cache_budget_wait(tiny, worker):
    requests = [(q, {"max_new_tokens": 20}) for q in QUESTIONS[:4]]
    alone = solo(tiny, requests)
    longest = max(r.prompt_length for r in alone) + 20
    worker.scheduler.kv_cache_tokens = 2 * longest  # room for two reservations, never three
    worker.batch_sizes.clear()
    batched = together(tiny, requests)
    assert summary(batched) == summary(alone)
    assert max(worker.batch_sizes) == 2


def test_a_prompt_larger_than_the_kv_cache_is_refused(tiny, worker):
    worker.scheduler.kv_cache_tokens = 8
    with pytest.raises(ContextLengthError, match="kv_cache_tokens"):
        tiny.chat(ask("Tell me something."))
    worker.scheduler.kv_cache_tokens = 10_000
    assert tiny.chat(ask("Hi"))[0].response_length == 12


def test_shared_prompt_prefixes_are_copied_not_recomputed(tiny, worker):
    """Every request shares the system prompt; batched prefill copies it and still matches solo outputs."""
    requests = [(q, {"max_new_tokens": 10, "system": "You are a terse assistant who answers in one line."})
                for q in QUESTIONS]
    alone = [tiny.chat(ask(q), **options)[0] for q, options in requests]
    copied = []
    original = worker.runner.copy_prefix
    worker.runner.copy_prefix = lambda source, target, length: copied.append(length) or original(source, target,
                                                                                                   length)
    try:
        batched = together(tiny, requests)
    finally:
        del worker.runner.copy_prefix
    assert summary(batched) == summary(alone)
    assert len(copied) >= len(requests) - 1 and min(copied) > 10


def test_the_sequential_fallback_runner_gives_the_same_outputs(tiny_model_dir):
    """Models the slot cache cannot drive fall back to one DynamicCache per sequence; same answers, same events.
    (transformers' own model: the fallback steps its DynamicCache, which a directly loaded model has none of.)"""
    requests = [(q, {"max_new_tokens": n}) for q, n in zip(QUESTIONS[:3], LENGTHS[:3])]
    with ChatModel({"model_name_or_path": str(tiny_model_dir), "do_sample": False, "max_new_tokens": 12,
                    "direct_load": "off"}) as tiny:
        worker = tiny.engine.worker
        alone = solo(tiny, requests)
        worker.runner = DynamicRunner(worker.model, tiny.engine.loaded.device)  # the worker is idle between calls
        batched = together(tiny, requests)
    assert summary(batched) == summary(alone)


# --- the scheduler alone (no torch) -------------------------------------------------------------------------
class FakeSequence:
    def __init__(self, name, prompt_tokens, budget):
        self.request_id, self.prompt_tokens, self.budget, self.slot = name, prompt_tokens, budget, -1

    @property
    def need(self):
        return self.prompt_tokens + self.budget


def test_scheduler_admits_in_order_within_slots_and_budget_and_keeps_slots_dense():
    scheduler = Scheduler(max_batch_size=3, kv_cache_tokens=100)
    a, b, c, d = (FakeSequence(name, 10, 20) for name in "abcd")
    big = FakeSequence("big", 10, 500)
    for sequence in (a, b, big, c, d):
        assert scheduler.add(sequence)
    assert big.budget == 90  # cut to what the whole cache holds
    assert [scheduler.admit(), scheduler.admit(), scheduler.admit()] == [a, b, None]  # big waits: 3 x 100 > 100
    assert scheduler.remove(a) == (b, 1) and (b.slot, scheduler.running) == (0, [b])
    assert scheduler.admit() is None  # 2 x 100 > 100
    scheduler.remove(b)
    assert scheduler.admit() is big and scheduler.admit() is None  # first come, first served: c waits behind big
    assert not scheduler.add(FakeSequence("huge", 100, 1))


@pytest.mark.slow
def test_default_model_batched_greedy_equals_solo(default_model_dir):
    """The real SmolLM2-135M-Instruct in fp32: batching changes float summation order, not these outputs."""
    requests = [(q, {"max_new_tokens": n}) for q, n in zip(QUESTIONS[:3], (12, 20, 16))]
    with ChatModel({"model_name_or_path": str(default_model_dir), "do_sample": False}) as model:
        assert isinstance(model.engine.worker.runner, SlotRunner)
        alone = solo(model, requests)
        batched = together(model, requests)
    assert summary(batched) == summary(alone)
