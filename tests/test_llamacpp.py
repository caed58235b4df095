"""The llama.cpp engine with the embedded SmolLM2 GGUF, checked against llama-cpp-python called directly."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

llama_cpp = pytest.importorskip("llama_cpp")

from lmchat import ChatModel
from lmchat.engines.llamacpp.engine import DEFAULT_LLAMA_SETTINGS, resolve_gguf_path
from lmchat.errors import ConfigError, InvalidRequestError, ModelNotFoundError
from lmchat.models.default import default_gguf_path

pytestmark = pytest.mark.slow
MESSAGES = [{"role": "user", "content": "Write a haiku about the sea."}]


@pytest.fixture(scope="module")
def model():
    with ChatModel({"infer_backend": "llamacpp", "do_sample": False, "max_new_tokens": 24}) as chat_model:
        yield chat_model


@pytest.fixture(scope="module")
def direct():
    llm = llama_cpp.Llama(model_path=str(default_gguf_path()), **DEFAULT_LLAMA_SETTINGS)
    yield llm
    llm.close()


def test_greedy_answer_equals_llama_cpp_python_called_directly(model, direct):
    prepared = model.prepare(MESSAGES)
    [response] = model.chat(MESSAGES, max_new_tokens=48)  # the haiku takes 39 tokens (llama-cpp-python 0.3.36)
    expected = direct.create_completion(list(prepared.prompt_token_ids), max_tokens=48, temperature=0.0)
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


def test_concurrent_requests_are_serialised_not_mixed(model):
    prompts = [[{"role": "user", "content": text}] for text in ("Name a fruit.", "Count to five.", "Say hello.")]
    sequential = [model.chat(messages)[0].response_text for messages in prompts]

    async def together():
        answers = await asyncio.gather(*(model.achat(messages) for messages in prompts))
        return [answer[0].response_text for answer in answers]

    assert model._loop.run(together()) == sequential


def test_logprobs_match_the_chosen_tokens(model):
    [response] = model.chat(MESSAGES, logprobs=True, top_logprobs=2, max_new_tokens=4)
    assert len(response.logprobs) == 4
    for entry in response.logprobs:
        assert entry.logprob <= 0 and len(entry.top) == 2
        assert entry.top[0][2] >= entry.logprob  # greedy: the chosen token is the most likely one
        assert entry.top[0][1] == entry.token_id


def test_path_resolution():
    assert resolve_gguf_path(None) == default_gguf_path()
    assert resolve_gguf_path(str(default_gguf_path().parent)) == default_gguf_path()
    with pytest.raises(ModelNotFoundError, match="GGUF file not found"):
        resolve_gguf_path("/nonexistent/model.gguf")


def test_lora_adapters_are_refused_with_advice(tmp_path):
    with pytest.raises(ConfigError, match="does not apply LoRA adapters; merge them into the model"):
        ChatModel({"infer_backend": "llamacpp", "adapter_name_or_path": str(tmp_path)})


def _greedy(config: dict, conversation: list[list[dict]]) -> tuple[list[str], list[int]]:
    """Answers of a multi-turn chat (each turn appends the previous answer) and the tokens each prefill reused."""
    answers, reused, messages = [], [], []
    with ChatModel({"infer_backend": "llamacpp", "do_sample": False, "max_new_tokens": 40, **config}) as chat_model:
        for turn in conversation:
            messages = [*messages, *turn]
            [response] = chat_model.chat(messages)
            answers.append(response.response_text)
            reused.append(chat_model.engine.prompt_cache.reused)
            messages.append({"role": "assistant", "content": response.response_text})
    return answers, reused


def test_prompt_blocks_are_reused_without_changing_any_answer():
    turns = [[{"role": "user", "content": "Write a long story about a cat who learns to sail."}],
             [{"role": "user", "content": "Now give the cat a friend."}],
             [{"role": "user", "content": "Now give the cat a friend."}]]
    with_reuse, reused = _greedy({}, turns)
    without_reuse, nothing = _greedy({"llamacpp_config": {"reuse_prefix": False}}, turns)
    assert with_reuse == without_reuse  # bit-identical prefills: the same greedy answers
    assert reused[0] == 0 and nothing == [0, 0, 0]
    # later turns reuse every whole 32-token block of the previous prompt (not the answer decoded token by token)
    assert all(count >= 32 and count % 32 == 0 for count in reused[1:]), reused


def test_identical_requests_reuse_the_prompt_and_answer_alike(model):
    first = model.chat(MESSAGES)[0].response_text
    second = model.chat(MESSAGES)[0].response_text
    prompt_tokens = len(model.prepare(MESSAGES).prompt_token_ids)
    assert model.engine.prompt_cache.reused == (prompt_tokens - 1) // 32 * 32 > 0
    assert first == second


@pytest.mark.parametrize("block", [0, -3, "32", True])
def test_bad_prefill_block_is_refused(block):
    with pytest.raises(InvalidRequestError, match="prefill_block must be a positive whole number"):
        ChatModel({"infer_backend": "llamacpp", "llamacpp_config": {"prefill_block": block}})


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
