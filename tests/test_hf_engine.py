"""The transformers engine with tiny random-weight models (real SmolLM2 tokenizer and template)."""

import asyncio
import time

import pytest

torch = pytest.importorskip("torch")

from lmchat import ChatModel  # noqa: E402
from lmchat.errors import UnsupportedError  # noqa: E402

MESSAGES = [{"role": "user", "content": "Tell me something."}]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    with ChatModel({"model_name_or_path": str(tiny_model_dir), "do_sample": False, "max_new_tokens": 12}) as model:
        yield model


def reference_greedy(model_dir, prompt_ids, max_new_tokens):
    """transformers' own greedy generate, the oracle for our decode loop."""
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    output = reference.generate(torch.tensor([prompt_ids]), max_new_tokens=max_new_tokens, do_sample=False,
                                eos_token_id=2, pad_token_id=2)
    return output[0, len(prompt_ids):].tolist()


def test_greedy_output_equals_transformers_generate(tiny, tiny_model_dir):
    prepared = tiny.prepare(MESSAGES, max_new_tokens=12)
    [response] = tiny.chat(MESSAGES)
    expected_ids = reference_greedy(tiny_model_dir, list(prepared.prompt_token_ids), 12)
    assert response.response_text == tiny.engine.loaded.tokenizer.decode(expected_ids, skip_special_tokens=True)
    assert response.response_length == 12 and response.finish_reason == "length"
    assert response.prompt_length == len(prepared.prompt_token_ids)
    assert response.response_text.strip()  # a real, non-empty answer


def test_prompt_is_the_models_own_template_as_transformers_renders_it(tiny):
    tokenizer = tiny.engine.loaded.tokenizer
    conversation = [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"}]
    expected = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    assert tiny.prepare(conversation).prompt == expected


def test_streamed_equals_non_streamed_and_sync_equals_async(tiny):
    [whole] = tiny.chat(MESSAGES)
    pieces = list(tiny.stream_chat(MESSAGES))

    async def run_async():
        [answer] = await tiny.achat(MESSAGES)
        return answer, [piece async for piece in tiny.astream_chat(MESSAGES)]

    answer, async_pieces = asyncio.run(run_async())
    assert len(pieces) > 3
    assert "".join(pieces) == whole.response_text == answer.response_text == "".join(async_pieces)


def test_stop_string_is_honoured_and_trimmed(tiny):
    [whole] = tiny.chat(MESSAGES)
    words = whole.response_text.split()
    stop = words[2]
    [stopped] = tiny.chat(MESSAGES, stop=[stop])
    assert stopped.finish_reason == "stop"
    assert stopped.response_text == whole.response_text[: whole.response_text.index(stop)]
    assert stopped.response_length < whole.response_length


def test_same_seed_same_sample_different_seeds_differ(tiny):
    sample = dict(do_sample=True, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=10)
    a = tiny.chat(MESSAGES, seed=1234, **sample)[0].response_text
    b = tiny.chat(MESSAGES, seed=1234, **sample)[0].response_text
    c = tiny.chat(MESSAGES, seed=4321, **sample)[0].response_text
    assert a == b
    assert a != c


def test_seed_does_not_touch_the_global_generator(tiny):
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    tiny.chat(MESSAGES, seed=99, do_sample=True, temperature=1.0, max_new_tokens=3)
    assert torch.equal(torch.rand(3), expected)


def test_n_answers_with_seeds_are_distinct_samples(tiny):
    responses = tiny.chat(MESSAGES, n=3, seed=5, do_sample=True, temperature=1.0, top_k=0, top_p=1.0)
    assert [r.index for r in responses] == [0, 1, 2]
    assert len({r.response_text for r in responses}) == 3
    assert tiny.chat(MESSAGES, n=1, seed=6, do_sample=True, temperature=1.0, top_k=0, top_p=1.0)[0].response_text \
        == responses[1].response_text


def test_penalties_change_the_output(tiny):
    [plain] = tiny.chat(MESSAGES, max_new_tokens=20)
    [penalised] = tiny.chat(MESSAGES, max_new_tokens=20, frequency_penalty=2.0, presence_penalty=2.0)
    first_token = tiny.engine.tokenize(plain.response_text)[0]
    [biased] = tiny.chat(MESSAGES, max_new_tokens=3, logit_bias={first_token: -100.0})
    assert penalised.response_text != plain.response_text
    assert tiny.engine.tokenize(biased.response_text)[0] != first_token


def test_logprobs_are_log_probabilities_of_the_chosen_tokens(tiny):
    [response] = tiny.chat(MESSAGES, max_new_tokens=4, logprobs=True, top_logprobs=2)
    assert len(response.logprobs) == 4
    for entry in response.logprobs:
        assert entry.logprob <= 0
        assert entry.top[0][2] == pytest.approx(entry.logprob)  # greedy: the chosen token is the most likely


def test_closing_a_stream_stops_generation_at_the_next_step(tiny):
    stream = tiny.stream_chat(MESSAGES, max_new_tokens=400)
    next(stream)
    stream.close()
    worker = tiny.engine.worker
    deadline = time.time() + 5
    while worker.num_active and time.time() < deadline:
        time.sleep(0.01)
    request_id, reason, generated = worker.finished[-1]
    assert (worker.num_active, reason) == (0, "abort")
    assert generated < 50


def test_chat_on_generative_model_refuses_get_scores(tiny):
    with pytest.raises(UnsupportedError, match="generative model; get_scores needs a reward model"):
        tiny.get_scores(["hello"])


def test_lora_adapter_changes_the_output(tiny, tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lora = LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        get_peft_model(base, lora).save_pretrained(tmp_path / "adapter")
    args = {"model_name_or_path": str(tiny_model_dir), "adapter_name_or_path": str(tmp_path / "adapter"),
            "do_sample": False, "max_new_tokens": 12}
    with ChatModel(args) as adapted:
        assert adapted.chat(MESSAGES)[0].response_text != tiny.chat(MESSAGES)[0].response_text


def direct_last_token_forward(model_dir, text, kind):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    ids = torch.tensor([AutoTokenizer.from_pretrained(model_dir)(text, add_special_tokens=False)["input_ids"]])
    if kind == "reward":
        return float(AutoModelForSequenceClassification.from_pretrained(model_dir)(ids).logits[0, 0])
    from safetensors.torch import load_file

    head = load_file(str(model_dir / "value_head.safetensors"))
    hidden = AutoModelForCausalLM.from_pretrained(model_dir)(ids, output_hidden_states=True).hidden_states[-1]
    return float(hidden[0, -1] @ head["v_head.summary.weight"][0] + head["v_head.summary.bias"][0])


@pytest.mark.parametrize("kind", ["reward", "value_head"])
def test_reward_scores_equal_a_direct_forward_pass(kind, tiny_reward_dir, tiny_value_head_dir):
    model_dir = tiny_reward_dir if kind == "reward" else tiny_value_head_dir
    texts = ["<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>", "A short text", "x y z " * 9]
    with ChatModel({"model_name_or_path": str(model_dir)}) as model:
        scores = model.get_scores(texts)
        with pytest.raises(UnsupportedError, match="is a reward model: use get_scores"):
            model.chat(MESSAGES)
    expected = [direct_last_token_forward(model_dir, text, kind) for text in texts]
    assert scores == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert len(set(scores)) == 3


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("someorg/some-model", r"Cannot load model 'someorg/some-model': We couldn't connect"),
        ("./no-such-folder", r"not a folder, a \.gguf file or a hub id"),
        ("missing.gguf", r"GGUF file not found: missing\.gguf"),
    ],
)
def test_missing_models_fail_with_a_clear_error(path, message, monkeypatch):
    from lmchat.errors import ModelNotFoundError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a hub id goes through the real from_pretrained path, offline
    with pytest.raises(ModelNotFoundError, match=message):
        ChatModel({"model_name_or_path": path})
