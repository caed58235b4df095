"""llama.cpp's and vLLM's routes and fields over a real tiny transformers model (SmolLM2's real tokenizer and
template, random weights, greedy), where token ids and log-probabilities matter: vLLM's /tokenize
(add_special_tokens, return_token_strs, continue_final_message), llama.cpp's /tokenize with pieces, native
/completion with n_probs and token prompts, and /v1/completions with token-id prompts and batches."""

from __future__ import annotations

import pytest
from test_server_support import ThreadServer, assert_error

pytest.importorskip("torch")
pytest.importorskip("transformers")

STORY = [{"role": "user", "content": "Tell me a story."}, {"role": "assistant", "content": "Once upon a time"}]


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    config = {"model_name_or_path": str(tiny_model_dir), "do_sample": False, "max_new_tokens": 6}
    with ThreadServer(config, served_model_names=("tiny",)) as live:
        yield live


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture
def http(server):
    with server.http() as client:
        yield client


def test_vllm_tokenize_shapes(http, tokenizer):
    text = "Hello world, how are you?"
    plain = http.post("/tokenize", json={"prompt": text, "return_token_strs": True}).json()
    assert plain["tokens"] == tokenizer(text)["input_ids"]  # vLLM: special tokens added for a prompt by default
    assert plain["token_strs"] == tokenizer.convert_ids_to_tokens(plain["tokens"])
    assert plain["count"] == len(plain["tokens"]) and plain["max_model_len"] == 512
    bare = http.post("/tokenize", json={"prompt": text, "add_special_tokens": False}).json()
    assert bare["tokens"] == tokenizer(text, add_special_tokens=False)["input_ids"]
    rendered = tokenizer.apply_chat_template(STORY, tokenize=False, continue_final_message=True)
    continued = http.post("/tokenize", json={"messages": STORY, "continue_final_message": True,
                                             "add_generation_prompt": False}).json()
    assert continued["tokens"] == tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert rendered.endswith("Once upon a time")
    with_prompt = tokenizer.apply_chat_template(STORY[:1], tokenize=False, add_generation_prompt=True)
    chat = http.post("/tokenize", json={"messages": STORY[:1]}).json()
    assert chat["tokens"] == tokenizer(with_prompt, add_special_tokens=False)["input_ids"]


def test_llamacpp_tokenize_with_pieces(http, tokenizer):
    text = "What is the capital of France?"
    body = http.post("/tokenize", json={"content": text, "with_pieces": True}).json()
    assert [piece["id"] for piece in body["tokens"]] == tokenizer(text, add_special_tokens=False)["input_ids"]
    assert "".join(piece["piece"] for piece in body["tokens"]) == text
    assert http.post("/detokenize", json={"tokens": [piece["id"] for piece in body["tokens"]]}).json()[
        "content"] == text


def test_continue_final_message_prompt_counts(server, http, tokenizer):
    rendered = tokenizer.apply_chat_template(STORY, tokenize=False, continue_final_message=True)
    answer = http.post("/v1/chat/completions", json={"model": "tiny", "messages": STORY, "max_tokens": 2,
                                                     "continue_final_message": True,
                                                     "add_generation_prompt": False}).json()
    assert answer["usage"]["prompt_tokens"] == len(tokenizer(rendered, add_special_tokens=False)["input_ids"])


def test_native_completion_n_probs_greedy(http):
    body = http.post("/completion", json={"prompt": "I believe the meaning of life is", "n_probs": 3,
                                          "temperature": 0.0, "n_predict": 5, "ignore_eos": True}).json()
    probabilities = body["completion_probabilities"]
    assert len(probabilities) == 5 == body["timings"]["predicted_n"]
    for token in probabilities:
        assert token["id"] >= 0 and type(token["token"]) is str and token["logprob"] <= 0.0
        assert type(token["bytes"]) is list and len(token["top_logprobs"]) == 3
        assert token["top_logprobs"][0]["logprob"] == pytest.approx(token["logprob"])  # greedy: the top token
        assert token["top_logprobs"][0]["id"] == token["id"]
        for alternative in token["top_logprobs"]:
            assert alternative["logprob"] <= 0.0 and type(alternative["bytes"]) is list
    assert "".join(token["token"] for token in probabilities) == body["content"]
    _, events = _stream(http, {"prompt": "I believe the meaning of life is", "n_probs": 3, "temperature": 0.0,
                               "n_predict": 5, "ignore_eos": True, "stream": True})
    streamed = [token for event in events if not event["stop"] for token in event["completion_probabilities"]]
    assert [token["id"] for token in streamed] == [token["id"] for token in probabilities]


def test_token_id_prompts_equal_text_prompts(server, http, tokenizer):
    text = "The sky is"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    from_text = http.post("/completion", json={"prompt": text, "n_predict": 4, "return_tokens": True}).json()
    from_ids = http.post("/completion", json={"prompt": ids, "n_predict": 4, "return_tokens": True}).json()
    assert from_ids["content"] == from_text["content"] and from_ids["tokens"] == from_text["tokens"]
    assert from_ids["tokens_evaluated"] == len(ids)
    client = server.openai()
    openai_text = client.completions.create(model="tiny", prompt=text, max_tokens=4)
    batch = client.completions.create(model="tiny", prompt=[ids, ids], max_tokens=4)
    assert [choice.text for choice in batch.choices] == [openai_text.choices[0].text] * 2
    assert openai_text.choices[0].text == from_text["content"]
    assert batch.usage.prompt_tokens == 2 * len(ids)
    assert_error(http.post("/v1/completions", json={"prompt": [10**8], "max_tokens": 1}), 400, param="prompt")


def _stream(http, body):
    from test_server_support import stream_post

    return stream_post(http, "/completion", body)


def test_echo_logprobs_are_the_models(server, tiny_model_dir, tokenizer):
    """What lm-evaluation-harness's loglikelihood requests send (token-id prompts, echo, logprobs, max_tokens 1):
    each prompt token's log-probability equals the model's own, computed here with transformers."""
    import torch
    from transformers import AutoModelForCausalLM

    text = "The quick brown fox jumps"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    client = server.openai()
    answer = client.completions.create(model="tiny", prompt=[ids, ids[:3]], max_tokens=1, echo=True, logprobs=2,
                                       temperature=0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.inference_mode():
        expected = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
    full, short = answer.choices
    assert full.text.startswith(text) and short.text.startswith(tokenizer.decode(ids[:3]))
    logprobs = full.logprobs
    assert len(logprobs.tokens) == len(ids) + 1 and logprobs.token_logprobs[0] is None
    assert logprobs.top_logprobs[0] is None
    for position in range(1, len(ids)):
        assert logprobs.token_logprobs[position] == pytest.approx(float(expected[position - 1, ids[position]]),
                                                                  abs=1e-4)
        assert len(logprobs.top_logprobs[position]) == 2
    greedy_next = int(expected[-1].argmax())
    assert logprobs.tokens[-1] == tokenizer.decode([greedy_next])
    assert logprobs.token_logprobs[-1] == pytest.approx(float(expected[-1, greedy_next]), abs=1e-4)
    assert short.logprobs.token_logprobs[1:3] == pytest.approx(logprobs.token_logprobs[1:3], abs=1e-4)
    assert logprobs.text_offset[:2] == [0, len(logprobs.tokens[0])]
