"""vLLM's sampling and logprob fields honoured by real engines: the transformers engine (tiny random-weight Llama,
SmolLM2's real tokenizer) on a real loopback server, and the llama.cpp engine (the embedded SmolLM2 GGUF, ``slow``).

``min_tokens``, ``bad_words``, ``allowed_token_ids``, ``top_logprobs: -1``, ``prompt_logprobs``,
``return_tokens_as_token_ids``, ``usage.prompt_tokens_details.cached_tokens`` and ``suffix`` (a tiny model whose
vocabulary has StarCoder's fill-in-the-middle tokens). Ports of assertions of vLLM's tests (v1/sample/test_sampling_
params_e2e: min_tokens, bad_words, allowed_token_ids; entrypoints/openai/test_return_tokens_as_ids: the ids decode
to the text; test_prompt_logprobs' ranks) against lmchat. Greedy decoding throughout: every answer is the model's
argmax under the rules, so the plain answer tells which tokens the rules must change.
"""

from __future__ import annotations

import math

import pytest
from test_server_support import ThreadServer, assert_error

from lmchat.generation.token_rules import bad_words_token_ids

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

EOS = 2  # SmolLM2's <|im_end|>: the tiny model's end of turn
MESSAGES = [{"role": "user", "content": "Name a colour."}]
PROMPT = "The quick brown fox jumps over the lazy dog"
FIM = ("<fim_prefix>", "<fim_suffix>", "<fim_middle>")


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    config = {"model_name_or_path": str(tiny_model_dir), "do_sample": False, "max_new_tokens": 6}
    with ThreadServer(config, served_model_names=("tiny",)) as live:
        yield live


@pytest.fixture(scope="module")
def client(server):
    return server.openai()


@pytest.fixture
def http(server):
    with server.http() as client:
        yield client


def answer_ids(client, **extra) -> tuple[list[int], object]:
    """The chat answer's token ids (named by id: vLLM's return_tokens_as_token_ids) and its choice."""
    body = extra.pop("extra_body", {})
    chat = client.chat.completions.create(model="tiny", messages=MESSAGES, logprobs=True, **extra,
                                          extra_body={"return_tokens_as_token_ids": True, **body})
    tokens = chat.choices[0].logprobs.content
    return [int(token.token.removeprefix("token_id:")) for token in tokens], chat


def word_of(engine, ids: list[int], length: int) -> tuple[str, tuple[tuple[int, ...], ...]]:
    """A word of ``length`` tokens in the answer ``ids`` that tokenizes back to tokens found there (a random model
    writes tokens that may spell another tokenization), and the token sequences banning it bans."""
    for start in range(len(ids) - length + 1):
        word = engine.detokenize(ids[start:start + length])
        banned = bad_words_token_ids([word], engine.tokenize) if word.strip() else ()
        if any(len(sequence) == length and contains(ids, sequence) for sequence in banned):
            return word, banned
    raise AssertionError(f"no {length}-token word of the answer {ids} tokenizes back to its tokens")


def contains(ids: list[int], sequence: tuple[int, ...]) -> bool:
    return any(tuple(ids[i:i + len(sequence)]) == sequence for i in range(len(ids) - len(sequence) + 1))


# --- min_tokens -------------------------------------------------------------------------------------------------
def test_min_tokens_holds_back_the_end_of_turn(client):
    biased = {"logit_bias": {str(EOS): 100}}  # the end of turn at once, unless held back
    plain = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=8, **biased)
    assert (plain.usage.completion_tokens, plain.choices[0].finish_reason) == (1, "stop")
    held = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=8, **biased,
                                          extra_body={"min_tokens": 4})
    assert (held.usage.completion_tokens, held.choices[0].finish_reason) == (5, "stop")  # 4 tokens, then EOS
    text = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=8, **biased,
                                     extra_body={"min_tokens": 3, "stop_token_ids": [EOS]})
    assert (text.usage.completion_tokens, text.choices[0].finish_reason) == (4, "stop")


def test_min_tokens_defers_stop_strings(server, client):
    ids, plain = answer_ids(client, max_tokens=6)
    first = server.chat_model.engine.detokenize(ids[:1])
    assert first.strip()  # the greedy answer's first token is a word
    stopped = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=6, stop=[first])
    assert stopped.usage.completion_tokens == 1 and stopped.choices[0].message.content == ""
    later = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=6, stop=[first],
                                           extra_body={"min_tokens": 3})
    assert later.usage.completion_tokens >= 3
    assert later.choices[0].message.content.startswith(plain.choices[0].message.content[:len(first)])


# --- bad_words and allowed_token_ids --------------------------------------------------------------------------
def test_bad_words_are_never_completed(server, client):
    engine = server.chat_model.engine
    ids, _ = answer_ids(client, max_tokens=8)
    for length in (1, 2):  # a one-token and a two-token word of the plain answer
        word, banned = word_of(engine, ids, length)
        new_ids, _ = answer_ids(client, max_tokens=8, extra_body={"bad_words": [word]})
        assert not any(contains(new_ids, sequence) for sequence in banned), (word, new_ids)
        assert new_ids != ids


def test_allowed_token_ids_are_the_only_ones_sampled(client, http):
    ids, _ = answer_ids(client, max_tokens=6)
    allowed = sorted({ids[2], ids[4], 1234})  # the end of turn is not among them: the answer runs to its limit
    new_ids, chat = answer_ids(client, max_tokens=6, extra_body={"allowed_token_ids": allowed})
    assert set(new_ids) <= set(allowed) and len(new_ids) == 6 and chat.choices[0].finish_reason == "length"
    error = assert_error(http.post("/v1/chat/completions", json={"messages": MESSAGES, "allowed_token_ids": [49152]}),
                         400, param="allowed_token_ids")
    assert "0 to 49151" in error["message"]


# --- logprobs ---------------------------------------------------------------------------------------------------
def test_top_logprobs_minus_one_is_the_whole_vocabulary(http):
    body = http.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 1, "logprobs": True,
                                                    "top_logprobs": -1}).json()
    [token] = body["choices"][0]["logprobs"]["content"]
    alternatives = [entry["logprob"] for entry in token["top_logprobs"]]
    assert len(alternatives) == 49152 and alternatives == sorted(alternatives, reverse=True)
    assert math.isclose(sum(math.exp(value) for value in alternatives), 1.0, rel_tol=1e-3)
    assert token["logprob"] == alternatives[0]  # greedy: the likeliest token


def test_prompt_logprobs_ranks_and_values(server, client):
    prompt_ids = server.chat_model.engine.tokenize(PROMPT)
    completion = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=1, echo=True, logprobs=2,
                                           extra_body={"prompt_logprobs": 2})
    [choice] = completion.choices
    entries, echoed = choice.prompt_logprobs, choice.logprobs.token_logprobs
    assert len(entries) == len(prompt_ids) and entries[0] is None and echoed[0] is None
    for position, (token_id, entry) in enumerate(zip(prompt_ids[1:], entries[1:]), 1):
        own = entry[str(token_id)]
        assert own["rank"] >= 1 and math.isclose(own["logprob"], echoed[position], abs_tol=1e-5)
        ranked = sorted(entry.values(), key=lambda value: value["rank"])
        assert [value["rank"] for value in ranked][:2] == [1, 2] and len(entry) <= 3
        assert all(value["logprob"] <= ranked[0]["logprob"] for value in entry.values())
        assert (own["rank"] == 1) == (own["logprob"] == ranked[0]["logprob"])
    chat = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=1,
                                          extra_body={"prompt_logprobs": 0})
    assert len(chat.prompt_logprobs) == chat.usage.prompt_tokens and chat.prompt_logprobs[0] is None


def test_return_tokens_as_token_ids_decode_to_the_text(server, client):
    completion = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=5, logprobs=1,
                                           extra_body={"return_tokens_as_token_ids": True})
    [choice] = completion.choices
    ids = [int(name.removeprefix("token_id:")) for name in choice.logprobs.tokens]
    assert len(ids) == 5 and server.chat_model.engine.detokenize(ids) == choice.text


# --- usage.prompt_tokens_details ------------------------------------------------------------------------------
def test_cached_tokens_count_the_prefix_shared_with_a_running_request(server, client):
    prompt_tokens = len(server.chat_model.engine.tokenize(PROMPT))
    # prompt 1 joins once prompt 0 is running (its first token is out) and copies its keys/values
    both = client.completions.create(model="tiny", prompt=[PROMPT, PROMPT], max_tokens=40,
                                     extra_body={"ignore_eos": True})
    assert both.usage.prompt_tokens == 2 * prompt_tokens
    assert both.usage.prompt_tokens_details.cached_tokens == prompt_tokens - 1  # the last token is computed
    alone = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=1)
    assert alone.usage.prompt_tokens_details.cached_tokens == 0  # nothing running to share with


# --- suffix: fill in the middle --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fim_model_dir(tmp_path_factory, tiny_tokenizer_dir):
    """A tiny Llama whose tokenizer has StarCoder's fill-in-the-middle special tokens."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("fim") / "tiny-fim"
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": list(FIM)})
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_suffix_fills_the_middle_in_the_models_fim_format(fim_model_dir, http):
    error = assert_error(http.post("/v1/completions", json={"prompt": "def f(", "suffix": "return x"}), 400,
                         param="suffix")  # SmolLM2's vocabulary has no FIM tokens
    assert "no fill-in-the-middle tokens" in error["message"]
    config = {"model_name_or_path": str(fim_model_dir), "do_sample": False, "max_new_tokens": 3}
    with ThreadServer(config, served_model_names=("fim",)) as live:
        prepared = live.chat_model.prepare_completion("def f(", suffix="    return x")
        assert prepared.prompt == "<fim_prefix>def f(<fim_suffix>    return x<fim_middle>"
        marker_ids = [live.chat_model.engine.tokenize(marker)[0] for marker in FIM]
        assert prepared.prompt_token_ids[0] == marker_ids[0] and prepared.prompt_token_ids[-1] == marker_ids[2]
        completion = live.openai().completions.create(model="fim", prompt="def f(", suffix="    return x",
                                                      max_tokens=3)
        assert completion.usage.prompt_tokens == len(prepared.prompt_token_ids)
        assert completion.choices[0].finish_reason in ("stop", "length")


# --- the llama.cpp engine (the embedded SmolLM2 GGUF) -----------------------------------------------------------
@pytest.fixture(scope="module")
def llamacpp():
    pytest.importorskip("llama_cpp")
    config = {"infer_backend": "llamacpp", "do_sample": False, "max_new_tokens": 6}
    with ThreadServer(config, served_model_names=("gguf",)) as live:
        yield live


@pytest.mark.slow
def test_llamacpp_min_tokens_bad_words_and_allowed_ids(llamacpp):
    model = llamacpp.chat_model
    biased = {"logit_bias": {EOS: 100}, "max_new_tokens": 8}
    assert model.chat(MESSAGES, **biased)[0].response_length == 1
    [held] = model.chat(MESSAGES, min_tokens=4, **biased)
    assert (held.response_length, held.finish_reason) == (5, "stop")
    [plain] = model.chat(MESSAGES, logprobs=True)
    ids = [token.token_id for token in plain.logprobs]
    word, banned = word_of(model.engine, ids, 2)
    [avoided] = model.chat(MESSAGES, logprobs=True, bad_words=[word])
    assert not any(contains([t.token_id for t in avoided.logprobs], sequence) for sequence in banned)
    allowed = sorted({ids[0], ids[3], 1234})
    [only] = model.chat(MESSAGES, logprobs=True, allowed_token_ids=allowed)
    assert {t.token_id for t in only.logprobs} <= set(allowed) and only.finish_reason == "length"


@pytest.mark.slow
def test_llamacpp_cached_tokens_whole_vocabulary_and_no_prompt_logprobs(llamacpp):
    model = llamacpp.chat_model
    conversation = [{"role": "user", "content": PROMPT}]
    model.chat(conversation, max_new_tokens=1)
    [again] = model.chat(conversation, max_new_tokens=1)  # its cells stayed as a cached prompt
    assert again.cached_tokens == again.prompt_length - 1
    [one] = model.chat(MESSAGES, max_new_tokens=1, logprobs=True, top_logprobs=-1)
    [token] = one.logprobs
    assert len(token.top) == model.engine.info.vocab_size and token.top[0][1] == token.token_id
    with llamacpp.http() as http:
        assert_error(http.post("/v1/completions", json={"prompt": "a", "prompt_logprobs": 1}), 400,
                     param="prompt_logprobs")
        usage = http.post("/v1/chat/completions", json={"messages": conversation, "max_tokens": 1}).json()["usage"]
        assert usage["prompt_tokens_details"]["cached_tokens"] == usage["prompt_tokens"] - 1
        native = [http.post("/completion", json={"prompt": PROMPT, "n_predict": 1}).json() for _ in range(2)]
        timings = native[1]["timings"]  # llama-server's split: cells reused, tokens computed
        assert (timings["cache_n"], timings["prompt_n"]) == (native[1]["tokens_evaluated"] - 1, 1)
