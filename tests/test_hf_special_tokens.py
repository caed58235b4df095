"""Special tokens a parser reads reach it through the transformers engine's detokenizer.

gpt-oss writes its tool calls and reasoning in harmony markup, whose tokens are special tokens; an engine decoding
with ``skip_special_tokens`` (the default) would drop them and the calls would become content. The model here is a
tiny Llama with SmolLM2's tokenizer plus the harmony tokens added as special tokens, trained for a few seconds to
write one harmony answer after one prompt, so the real engine generates it token by token and decodes it.
"""

from __future__ import annotations

import json
import logging

import pytest

torch = pytest.importorskip("torch")

from lmchat import ChatModel  # noqa: E402
from lmchat.parsing.reasoning.harmony import HARMONY_TOKENS  # noqa: E402

# the harmony markers lmchat detects gpt-oss's parsers by (its assistant turns are on a channel)
TEMPLATE = ("{%- if tools -%}<|start|>developer<|message|># Tools: {{ tools | map(attribute='function.name') | join(', ') }}"
            "<|end|>{%- endif -%}{%- for m in messages -%}<|start|>{{ m.role }}{%- if m.role == 'assistant' -%}<|channel|>final"
            "{%- endif -%}<|message|>{{ m.content }}<|end|>{%- endfor -%}"
            "{%- if add_generation_prompt -%}<|start|>assistant{%- endif -%}")
# with the tools in a developer turn, as gpt-oss's own template has them (a template ignoring tools gets the fallback)
PROMPT = "<|start|>developer<|message|># Tools: weather<|end|><|start|>user<|message|>Weather in Paris?<|end|><|start|>assistant"
ASK = [{"role": "user", "content": "Weather in Paris?"}]
# <|im_start|> is one of SmolLM2's own special tokens: no parser reads it, so it is still dropped
ANSWER = ("<|channel|>analysis<|message|>Weather needs a tool.<|end|><|im_start|><|start|>assistant<|channel|>"
          'commentary to=functions.weather <|constrain|>json<|message|>{"city": "Paris"}<|call|>')
TOOLS = [{"type": "function", "function": {"name": "weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}]


def _train(model, ids: list[int], answer_from: int) -> None:
    """Teach the model to write ``ids[answer_from:]`` after ``ids[:answer_from]`` (greedy reproduces it)."""
    inputs = torch.tensor([ids])
    labels = inputs.clone()
    labels[0, :answer_from] = -100
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for step in range(1, 1201):
        loss = model(input_ids=inputs, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0 and _greedy(model, ids[:answer_from], len(ids) - answer_from) == ids[answer_from:]:
            model.eval()
            return
    raise AssertionError(f"the tiny model did not learn its answer (loss {loss.item():.3f})")


@torch.no_grad()
def _greedy(model, prompt: list[int], count: int) -> list[int]:
    model.eval()
    ids = list(prompt)
    for _ in range(count):
        ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    model.train()
    return ids[len(prompt):]


@pytest.fixture(scope="module")
def harmony_model_dir(tmp_path_factory, tiny_tokenizer_dir):
    from tokenizers import AddedToken
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("harmony") / "tiny-harmony"
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    tokenizer.add_tokens([AddedToken(token, special=True, normalized=False) for token in HARMONY_TOKENS],
                         special_tokens=True)
    tokenizer.chat_template = TEMPLATE
    call = tokenizer.convert_tokens_to_ids("<|call|>")
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True, bos_token_id=1,
        eos_token_id=2, pad_token_id=2, initializer_range=0.1,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
        prompt = tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
        answer = tokenizer(ANSWER, add_special_tokens=False)["input_ids"]
        assert answer[-1] == call and tokenizer.decode(answer, skip_special_tokens=True).startswith("analysis")
        _train(model, prompt + answer, len(prompt))
    model.generation_config.eos_token_id = [2, call, tokenizer.convert_tokens_to_ids("<|return|>")]
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _chat_model(model_dir, **settings) -> ChatModel:
    return ChatModel({"model_name_or_path": str(model_dir), "do_sample": False, "max_new_tokens": 80,
                      "native_decode": "off", **settings})


def test_the_engine_keeps_the_harmony_tokens_the_parsers_read(harmony_model_dir):
    with _chat_model(harmony_model_dir) as model:
        prepared = model.prepare(ASK, tools=TOOLS)
        assert prepared.prompt == PROMPT  # the prompt the model was taught to answer
        assert prepared.parsing.keep_special_tokens == HARMONY_TOKENS
        [response] = model.chat(ASK, tools=TOOLS)
        chunks = list(model.stream_chunks(prepared))
    assert response.finish_reason == "tool_calls"
    assert [(call.name, json.loads(call.arguments)) for call in response.tool_calls] == [("weather", {"city": "Paris"})]
    assert (response.content, response.reasoning_text) == (None, "Weather needs a tool.")
    # the raw text has the markup the parsers read, not the special tokens no parser reads
    assert response.response_text == ANSWER.replace("<|im_start|>", "").removesuffix("<|call|>")
    assert "".join(chunk.text for chunk in chunks) == response.response_text
    assert "".join(chunk.reasoning for chunk in chunks) == "Weather needs a tool."
    assert not any(chunk.content for chunk in chunks)


def test_a_users_skip_special_tokens_is_honoured(harmony_model_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="lmchat.chat"), _chat_model(harmony_model_dir,
                                                                              skip_special_tokens=True) as model:
        [dropped] = model.chat(ASK, tools=TOOLS)
    assert not dropped.tool_calls and dropped.finish_reason == "stop"
    assert dropped.response_text == ('analysisWeather needs a tool.assistantcommentary to=functions.weather json'
                                     '{"city": "Paris"}')
    assert "skip_special_tokens is set to true" in caplog.text and "<|channel|>" in caplog.text
    with _chat_model(harmony_model_dir) as model:
        [kept] = model.chat(ASK, tools=TOOLS, skip_special_tokens=False)  # every special token stays
    assert [call.name for call in kept.tool_calls] == ["weather"]
    assert kept.response_text == ANSWER.removesuffix("<|call|>") and kept.content == "<|im_start|>"
