"""The llama.cpp engine with the embedded SmolLM2 GGUF, checked against llama-cpp-python called directly."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys

import pytest

llama_cpp = pytest.importorskip("llama_cpp")

from lmchat import ChatModel
from lmchat.engines.events import TextDelta
from lmchat.engines.llamacpp.engine import resolve_gguf_path
from lmchat.errors import ConfigError, InvalidRequestError, ModelNotFoundError
from lmchat.models.default import default_gguf_path

pytestmark = pytest.mark.slow
MESSAGES = [{"role": "user", "content": "Write a haiku about the sea."}]
# llama-cpp-python's Llama with the KV cache the engine uses (flash attention, q8_0 keys and values)
DIRECT_SETTINGS = {"n_ctx": 0, "flash_attn": True, "type_k": 8, "type_v": 8, "n_threads": 1, "verbose": False}


@pytest.fixture(scope="module")
def model():
    with ChatModel({"infer_backend": "llamacpp", "do_sample": False, "max_new_tokens": 24}) as chat_model:
        yield chat_model


@pytest.fixture(scope="module")
def direct():
    llm = llama_cpp.Llama(model_path=str(default_gguf_path()), **DIRECT_SETTINGS)
    yield llm
    llm.close()


def test_greedy_answer_equals_llama_cpp_python_called_directly(model, direct):
    prepared = model.prepare(MESSAGES)
    # the haiku ends after 39 tokens with llama.cpp's haswell kernels (AVX2) and 49 with its zen4 ones (AVX-512):
    # the budget leaves room for either, so the answer ends on its own
    [response] = model.chat(MESSAGES, max_new_tokens=96)
    expected = direct.create_completion(list(prepared.prompt_token_ids), max_tokens=96, temperature=0.0)
    assert response.response_text == expected["choices"][0]["text"]
    assert response.finish_reason == expected["choices"][0]["finish_reason"] == "stop"
    assert response.response_length == expected["usage"]["completion_tokens"] + 1  # lmchat counts the <|im_end|>
    assert response.response_text.strip()


def test_model_info_comes_from_the_gguf(model, direct):
    info = model.engine.info
    assert info.chat_template == direct.metadata["tokenizer.chat_template"]
    assert info.special_tokens == {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}
    assert info.context_length == 8192 and model.template.name == "model"


def test_prompt_tokens_are_the_ggufs_own_tokenization(model, direct):
    prepared = model.prepare(MESSAGES)
    assert prepared.prompt.startswith("<|im_start|>system\n")
    assert list(prepared.prompt_token_ids) == direct.tokenize(prepared.prompt.encode(), add_bos=False, special=True)
    assert prepared.prompt_token_ids[0] == 1  # <|im_start|> parsed as the special token, not as text


def test_logprobs_match_the_chosen_tokens(model):
    [response] = model.chat(MESSAGES, logprobs=True, top_logprobs=2, max_new_tokens=4)
    assert len(response.logprobs) == 4
    for entry in response.logprobs:
        assert entry.logprob <= 0 and len(entry.top) == 2
        assert entry.top[0][2] >= entry.logprob  # greedy: the chosen token is the most likely one
        assert entry.top[0][1] == entry.token_id


def test_prompt_logprobs_equal_llama_cpp_pythons_own_logits(model, monkeypatch):
    """The prompt's log-probabilities (echo with logprobs, prompt_logprobs) from the engine's scoring context equal
    the log-softmax of llama-cpp-python's own logits for every position (Llama with logits_all, same KV cache),
    over a prompt longer than one of the scorer's chunks (made small here: the scorer is made at this first call)."""
    import numpy as np

    from lmchat.engines.llamacpp import prompt_scoring

    monkeypatch.setattr(prompt_scoring, "CHUNK", 32)
    text = " ".join(f"The sea number {i} is calm." for i in range(10))
    ids = model.engine.tokenize(text)
    assert len(ids) > 2 * 32
    got = model.run_sync(model.engine.prompt_logprobs(ids, 2))
    llm = llama_cpp.Llama(model_path=str(default_gguf_path()), logits_all=True, n_batch=32, n_ubatch=32,
                          **{**DIRECT_SETTINGS, "n_ctx": 1024})  # its scores array holds n_ctx rows of the vocabulary
    try:
        llm.eval(ids)
        logits = np.asarray(llm.scores[:len(ids)], dtype=np.float64)
    finally:
        llm.close()
    logprobs = logits - logits.max(axis=1, keepdims=True)
    logprobs -= np.log(np.exp(logprobs).sum(axis=1, keepdims=True))
    assert got[0] is None and len(got) == len(ids)
    for position, token in enumerate(got[1:]):
        expected = logprobs[position]
        assert token.token_id == ids[position + 1]
        assert token.logprob == pytest.approx(expected[token.token_id], abs=1e-3)
        assert token.rank == int((expected > expected[token.token_id]).sum()) + 1 or token.rank > 100
        assert [alt[1] for alt in token.top][:1] == [int(np.argmax(expected))]
    with pytest.raises(Exception, match="context holds"):
        model.run_sync(model.engine.prompt_logprobs(ids * (model.engine.info.context_length // len(ids) + 1), 0))


def test_path_resolution():
    assert resolve_gguf_path(None) == default_gguf_path()
    assert resolve_gguf_path(str(default_gguf_path().parent)) == default_gguf_path()
    with pytest.raises(ModelNotFoundError, match="GGUF file not found"):
        resolve_gguf_path("/nonexistent/model.gguf")


def test_lora_adapters_are_refused_with_advice(tmp_path):
    with pytest.raises(ConfigError, match="llamacpp engine does not apply LoRA adapters; merge them into the model"):
        ChatModel({"infer_backend": "llamacpp", "adapter_name_or_path": str(tmp_path)})


@pytest.mark.parametrize(("settings", "message"), [
    ({"prefill_block": 32}, "prefill_block is not a setting of the llamacpp engine: prompts are now reused at any"),
    ({"n_parallel": 4}, "n_parallel is not a setting of the llamacpp engine: use max_batch_size"),
    ({"n_batch": 0}, "n_batch: Input should be greater than or equal to 1 (got 0)"),
    ({"type_k": "q3"}, "type_k: Input should be"),
    ({"flash_attn": False}, "type_v q8_0 (a quantized V cache) needs flash_attn: true"),
    ({"n_thread": 2}, "unknown key 'n_thread'"),
])
def test_bad_llamacpp_settings_are_refused_with_what_to_do(settings, message):
    with pytest.raises(ConfigError) as caught:
        ChatModel({"infer_backend": "llamacpp", "llamacpp_config": settings})
    assert message in str(caught.value)


def test_more_sequences_than_one_decode_holds_is_refused():
    with pytest.raises(ConfigError, match="max_batch_size 64 is more than the llamacpp engine can decode at once"):
        ChatModel({"infer_backend": "llamacpp", "max_batch_size": 64, "llamacpp_config": {"n_batch": 32}})


@pytest.mark.parametrize(("value", "expected"), [("1", 1), ("3", 3), ("", None), ("0", None), ("two", None)])
def test_default_threads_follow_omp_num_threads_else_physical_cores(monkeypatch, value, expected):
    from lmchat.engines.llamacpp import settings

    monkeypatch.setenv("OMP_NUM_THREADS", value)
    assert settings.default_threads() == (expected if expected is not None else settings.physical_cores())
    assert 1 <= settings.physical_cores() <= (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                              else os.cpu_count())


PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 150}},
          "required": ["name", "age"], "additionalProperties": False}


def test_a_json_schema_answer_parses_and_is_valid_streamed_and_not(model):
    """The llguidance mask written into llama.cpp's logits: the default GGUF's answer, greedy and sampled."""
    jsonschema = pytest.importorskip("jsonschema")
    pytest.importorskip("llguidance")
    ask = [{"role": "user", "content": "Describe a cat named Tom as a JSON object."}]  # unconstrained: ```json ...
    form = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    [greedy] = model.chat(ask, response_format=form, max_new_tokens=64)
    assert greedy.finish_reason == "stop", greedy.response_text
    jsonschema.validate(json.loads(greedy.response_text), PERSON)
    prepared = model.prepare(ask, response_format=form, max_new_tokens=64)
    assert "".join(chunk.text for chunk in model.stream_chunks(prepared)) == greedy.response_text
    for seed in (1, 2):
        [sampled] = model.chat(ask, json_schema=PERSON, do_sample=True, temperature=1.0, seed=seed,
                               max_new_tokens=64)
        assert sampled.finish_reason == "stop", sampled.response_text
        jsonschema.validate(json.loads(sampled.response_text), PERSON)
    [code] = model.chat(ask, grammar='root ::= [A-Z] [0-9] [0-9]', max_new_tokens=8)
    assert re.fullmatch("[A-Z][0-9]{2}", code.response_text) and code.finish_reason == "stop"


@pytest.mark.parametrize("kind", ["images", "videos", "audios"])
def test_media_are_refused_naming_the_missing_mmproj(model, kind):
    """No mmproj/mtmd wiring yet: media are refused before any fetch, saying what is missing and what to use."""
    from lmchat.errors import UnsupportedError

    with pytest.raises(UnsupportedError, match="mmproj") as error:
        model.chat(MESSAGES, **{kind: ["http://example.invalid/never-fetched"]})
    assert error.value.param == kind and "infer_backend huggingface" in error.value.message


def test_special_tokens_vocabulary_and_token_prompts_match_llama_cpp(model, direct):
    """What the compat routes rely on: add_special_tokens adds what llama.cpp's own tokenizer adds, the vocabulary
    size, and a token-id completion prompt reaching llama.cpp as those very ids."""
    text = "The sky is"
    assert model.engine.tokenize(text, add_special_tokens=True) == direct.tokenize(text.encode(), add_bos=True,
                                                                                     special=True)
    assert model.engine.info.vocab_size == direct.n_vocab()
    ids = direct.tokenize(text.encode(), add_bos=False, special=True)
    prepared = model.prepare_completion(ids, max_new_tokens=5)
    assert prepared.prompt_token_ids == tuple(ids) and prepared.prompt == text
    [answer] = model.run_sync(model.agenerate(prepared))
    expected = direct.create_completion(ids, max_tokens=5, temperature=0.0)
    assert answer.response_text == expected["choices"][0]["text"]
    with pytest.raises(InvalidRequestError, match="vocabulary"):
        model.prepare_completion([direct.n_vocab()])


def _forced_text(model, token: str, keep: tuple[str, ...], **options) -> str:
    """The text of three answer tokens all forced (by a logit bias) to the special token ``token``, as the engine
    decodes it for a request whose parsers read the special tokens ``keep``."""
    [token_id] = model.engine.tokenize(token)
    prepared = model.prepare(MESSAGES, logit_bias={token_id: 100.0}, max_new_tokens=3, **options)
    [request] = [dataclasses.replace(request, keep_special_tokens=keep) for request in prepared.requests()]

    async def run():
        return "".join([event.text async for event in model.engine.generate(request) if isinstance(event, TextDelta)])

    return model._loop.run(run())


def test_special_tokens_a_parser_reads_stay_in_the_text(model):
    # <|im_start|> is a control token of SmolLM2's GGUF: dropped by default, kept when a parser reads it
    assert _forced_text(model, "<|im_start|>", ()) == ""
    assert _forced_text(model, "<|im_start|>", ("<|im_start|>", "<|not_in_the_vocabulary|>")) == "<|im_start|>" * 3
    assert _forced_text(model, "<|im_start|>", ("<|endoftext|>",)) == ""  # only the tokens named are kept
    assert _forced_text(model, "<|im_start|>", (), skip_special_tokens=False) == "<|im_start|>" * 3


def test_named_lora_adapters_are_refused_clearly(tmp_path):
    """llama.cpp applies adapters to a whole context, and this engine batches every sequence in one context: no
    per-request adapters (docs/engines.md), refused before the model loads."""
    gguf = str(default_gguf_path())
    with pytest.raises(ConfigError, match="llamacpp engine does not serve named LoRA adapters") as error:
        ChatModel({"infer_backend": "llamacpp", "model_name_or_path": gguf, "lora_modules": f"a={tmp_path}"})
    assert error.value.param == "lora_modules"
    with pytest.raises(ConfigError, match="merge_adapters"):
        ChatModel({"infer_backend": "llamacpp", "model_name_or_path": gguf, "adapter_name_or_path": str(tmp_path),
                   "merge_adapters": False})


NATIVE_LOG_SCRIPT = """
import json, logging, sys
records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append([record.levelname, record.getMessage()])
log = logging.getLogger("lmchat.engines.llamacpp.native")
log.setLevel(logging.DEBUG)
log.addHandler(Keep())
log.propagate = False
from lmchat import ChatModel
settings = {"infer_backend": "llamacpp", "max_new_tokens": 2, "do_sample": False}
if sys.argv[1] == "verbose":
    settings["llamacpp_config"] = {"verbose": True}
with ChatModel(settings) as model:
    model.chat([{"role": "user", "content": "Hi"}])
print(json.dumps(records))
"""


@pytest.mark.parametrize("mode", ["quiet", "verbose"])
def test_llama_cpps_own_log_lines_reach_the_logger_at_their_level_or_stderr_when_verbose(mode):
    """llama.cpp's chatter (the CPU backend's load line, the model loader's dump, the unified cache's known-false
    n_ctx_seq warning) goes to the logger as debug, whole lines; with verbose every line goes to stderr."""
    done = subprocess.run([sys.executable, "-c", NATIVE_LOG_SCRIPT, mode], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    records = json.loads(done.stdout.strip().splitlines()[-1])
    if mode == "verbose":
        assert records == []
        assert "load_backend: loaded CPU backend" in done.stderr and "llama_model_loader: " in done.stderr
        return
    assert "llama" not in done.stderr, done.stderr
    assert {level for level, _ in records} == {"DEBUG"}
    messages = [message for _, message in records]
    assert all(message.startswith("llama.cpp: ") and "\n" not in message for message in messages)
    assert any(message.startswith("llama.cpp: load_backend: loaded CPU backend from ") for message in messages)
    assert any("n_ctx_seq" in message and "n_ctx_train" in message for message in messages)
