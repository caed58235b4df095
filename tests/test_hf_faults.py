"""Faults inside the transformers engine (tiny random-weight model): a request whose sampling fails ends alone with
a clear error; options at the edge of their range never break the sampler; a worker thread that dies is reported
by ``check_health`` and every request fails at once instead of hanging."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

torch = pytest.importorskip("torch")

from lmchat import ChatModel  # noqa: E402
from lmchat.engines.hf.sampler import apply_penalties, choose_token, make_generator  # noqa: E402
from lmchat.errors import EngineDeadError, EngineError  # noqa: E402
from lmchat.generation.sampling import SamplingParams  # noqa: E402

MESSAGES = [{"role": "user", "content": "Tell me about the sea."}]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    with ChatModel({"model_name_or_path": str(tiny_model_dir), "max_new_tokens": 16}) as model:
        yield model


def _unchecked(prepared, **options):
    """``prepared`` with sampling options that skipped validation (what a bug or a new front end could let in)."""
    params = SamplingParams.model_construct(**{**prepared.params.model_dump(), **options})
    return dataclasses.replace(prepared, params=params)


@pytest.mark.parametrize("options", [
    {"top_p": 5e-324, "temperature": 1.0, "seed": 3},
    {"temperature": 1e-30, "seed": 3},
    {"repetition_penalty": 9e-38, "temperature": 1.0, "seed": 3},  # refused by validation; the engine survives it
    {"repetition_penalty": 1e38, "temperature": 1.0, "seed": 3},
    {"temperature": 2.0, "top_p": 1.0, "min_p": 1.0, "seed": 3},
])
def test_edge_options_always_give_an_answer(tiny, options):
    prepared = _unchecked(tiny.prepare(MESSAGES, max_new_tokens=16), **options)
    [answer] = tiny.run_sync(tiny.agenerate(prepared))
    assert answer.finish_reason in ("length", "stop") and answer.response_length >= 1


def test_tiny_temperatures_and_top_p_decode_like_greedy(tiny):
    [greedy] = tiny.chat(MESSAGES, do_sample=False)
    [cold] = tiny.chat(MESSAGES, temperature=1e-30, seed=1)
    [narrow] = tiny.chat(MESSAGES, temperature=1.0, top_p=5e-324, seed=1)
    assert greedy.response_text == cold.response_text == narrow.response_text


def test_the_sampler_never_sees_nan_or_inf():
    logits = torch.tensor([1.0, float("nan"), 3.0, float("inf"), -float("inf")])
    params = SamplingParams(temperature=1.0)
    penalised = apply_penalties(logits, params, torch.tensor([], dtype=torch.long), None)
    assert torch.isnan(penalised).sum() == 0 and not torch.isposinf(penalised).any()
    assert choose_token(penalised, params, make_generator(0)) == 3  # the +inf logit, now the largest float
    nothing = torch.full((4,), float("nan"))
    assert choose_token(apply_penalties(nothing, params, torch.tensor([0]), None), params, make_generator(0)) in range(4)


def test_a_request_whose_sampling_fails_ends_alone(tiny):
    good = tiny.prepare(MESSAGES, max_new_tokens=24, do_sample=False)
    bad = _unchecked(tiny.prepare(MESSAGES, max_new_tokens=24), top_k=-5, temperature=1.0)  # torch.topk raises

    async def both():
        return await asyncio.gather(tiny.agenerate(good), tiny.agenerate(bad), return_exceptions=True)

    good_answers, failure = tiny.run_sync(both())
    assert isinstance(failure, EngineError) and "other requests go on" in failure.message
    assert "Traceback" not in failure.message
    assert good_answers[0].response_length == 24
    [after] = tiny.chat(MESSAGES, max_new_tokens=4)  # the engine still serves
    assert after.response_length == 4
    assert tiny.engine.worker.num_active == 0
    tiny.check_health()


def test_a_dead_worker_fails_every_request_at_once(tiny_model_dir):
    with ChatModel({"model_name_or_path": str(tiny_model_dir), "max_new_tokens": 200}) as model:
        worker = model.engine.worker
        stream = model.stream_chat(MESSAGES, max_new_tokens=200)
        next(stream)

        def broken() -> None:  # a bug in the worker's bookkeeping, outside every per-request guard
            raise RuntimeError("injected fault")

        worker._drop_aborted = broken
        with pytest.raises(EngineDeadError, match="injected fault"):
            list(stream)  # the request in flight ends with the error instead of hanging
        with pytest.raises(EngineDeadError, match="restart lmchat"):
            model.check_health()
        began = time.monotonic()
        with pytest.raises(EngineDeadError):
            model.chat(MESSAGES, max_new_tokens=4)
        with pytest.raises(EngineDeadError):
            model.run_sync(model.engine.score(["x"]))
        assert time.monotonic() - began < 2
