"""Embeddings, pair scores and the Responses API over real tiny random-weight models (SmolLM2's real tokenizer):
a BERT encoder saved as a sentence-transformers folder (mean pooling, matryoshka sizes), a one-label BERT
cross-encoder, the tiny Llama reward model and the tiny Llama chat model. Every vector and score is checked against
transformers' own forward pass."""

from __future__ import annotations

import json
import math

import pytest
from test_server_support import ThreadServer, assert_error, assert_schema

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

TEXTS = ["The cat sat on the mat.", "Paris is the capital of France.", "hello"]
QUERY = "Where is Paris?"
HIDDEN = 32


def build_bert(out_dir, tokenizer_dir, *, cross_encoder: bool = False):
    """A 2-layer BERT with random weights and SmolLM2's tokenizer; the encoder as a sentence-transformers folder
    (mean pooling, then normalisation), the cross-encoder as a one-label sequence classifier."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertModel

    config = BertConfig(vocab_size=49152, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=1,
                        **({} if cross_encoder else {"matryoshka_dimensions": [8, 16, 32]}))
    with torch.random.fork_rng():
        torch.manual_seed(1)
        model = (BertForSequenceClassification if cross_encoder else BertModel)(config)
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out_dir)
    if not cross_encoder:
        modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                   {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                   {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
        (out_dir / "modules.json").write_text(json.dumps(modules))
        (out_dir / "1_Pooling").mkdir()
        (out_dir / "1_Pooling" / "config.json").write_text(json.dumps({
            "word_embedding_dimension": HIDDEN, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False, "pooling_mode_lasttoken": False}))
    return out_dir


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory, tiny_tokenizer_dir):
    return build_bert(tmp_path_factory.mktemp("bert") / "tiny-bert-embed", tiny_tokenizer_dir)


@pytest.fixture(scope="module")
def encoder_server(encoder_dir):
    with ThreadServer({"model_name_or_path": str(encoder_dir)}, served_model_names=("embed",)) as live:
        yield live


def states(model_dir, text: str, model_class: str = "AutoModel"):
    """The last layer's token states of ``text`` by transformers itself (special tokens as the tokenizer adds)."""
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = getattr(transformers, model_class).from_pretrained(model_dir).eval()
    ids = torch.tensor([tokenizer(text, add_special_tokens=True)["input_ids"]])
    with torch.inference_mode():
        encoder = model.base_model
        return encoder(input_ids=ids).last_hidden_state[0]


def unit(vector):
    return torch.nn.functional.normalize(vector, dim=0).tolist()


def test_mean_pooling_equals_transformers_hidden_states(encoder_server, encoder_dir):
    client = encoder_server.openai()
    result = client.embeddings.create(model="embed", input=TEXTS)
    for item, text in zip(result.data, TEXTS):
        assert len(item.embedding) == HIDDEN
        assert item.embedding == pytest.approx(unit(states(encoder_dir, text).mean(dim=0)), abs=1e-5)
    with encoder_server.http() as http:
        raw = http.post("/v1/embeddings", json={"input": TEXTS[0], "normalize": False}).json()
        assert_schema("CreateEmbeddingResponse", raw)
        assert raw["data"][0]["embedding"] == pytest.approx(states(encoder_dir, TEXTS[0]).mean(dim=0).tolist(),
                                                            abs=1e-5)
        cut = http.post("/v1/embeddings", json={"input": TEXTS[0], "dimensions": 16}).json()["data"][0]["embedding"]
        assert cut == pytest.approx(unit(states(encoder_dir, TEXTS[0]).mean(dim=0)[:16]), abs=1e-5)
        assert math.fsum(x * x for x in cut) == pytest.approx(1.0)
        assert_error(http.post("/v1/embeddings", json={"input": "a", "dimensions": 12}), 400, param="dimensions")
        assert_error(http.post("/v1/embeddings", json={"input": "word " * 80}), 400, param="input")
        cut = http.post("/v1/embeddings", json={"input": "word " * 80, "truncate_prompt_tokens": 10}).json()
        assert cut["usage"]["prompt_tokens"] == 10
        chat = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
        assert "embedding model" in assert_error(chat, 400, param="model")["message"]


def test_an_embedding_model_scores_pairs_by_cosine(encoder_server, encoder_dir):
    with encoder_server.http() as http:
        body = http.post("/v1/score", json={"text_1": QUERY, "text_2": TEXTS}).json()
    query = torch.tensor(unit(states(encoder_dir, QUERY).mean(dim=0)))
    expected = [float(query @ torch.tensor(unit(states(encoder_dir, text).mean(dim=0)))) for text in TEXTS]
    assert [item["score"] for item in body["data"]] == pytest.approx(expected, abs=1e-5)


def test_pooling_type_setting_overrides_the_folder(encoder_dir):
    from lmchat import ChatModel

    with ChatModel({"model_name_or_path": str(encoder_dir), "pooling_type": "last"}) as model:
        [vector] = model.embed(TEXTS[1], normalize=False).vectors
    assert vector == pytest.approx(states(encoder_dir, TEXTS[1])[-1].tolist(), abs=1e-5)


def test_cross_encoder_scores_equal_its_own_forward(tmp_path, tiny_tokenizer_dir):
    import transformers

    folder = build_bert(tmp_path / "tiny-bert-rerank", tiny_tokenizer_dir, cross_encoder=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    reference = transformers.AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.inference_mode():
        logits = [float(reference(**tokenizer(QUERY, text, return_tensors="pt")).logits[0, 0]) for text in TEXTS]
    with ThreadServer({"model_name_or_path": str(folder)}, served_model_names=("rerank",)) as live, \
            live.http() as http:
        body = http.post("/v1/rerank", json={"model": "rerank", "query": QUERY, "documents": TEXTS}).json()
        by_index = {result["index"]: result["relevance_score"] for result in body["results"]}
        assert [by_index[i] for i in range(3)] == pytest.approx([1 / (1 + math.exp(-x)) for x in logits], abs=1e-5)
        assert [result["index"] for result in body["results"]] == sorted(range(3), key=lambda i: -logits[i])
        raw = http.post("/v1/score", json={"text_1": QUERY, "text_2": TEXTS, "use_activation": False}).json()
        assert [item["score"] for item in raw["data"]] == pytest.approx(logits, abs=1e-5)
        tokens = sum(len(tokenizer(QUERY, text)["input_ids"]) for text in TEXTS)
        assert raw["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] == tokens
        error = assert_error(http.post("/v1/embeddings", json={"input": "a"}), 400, param="model")
        assert "classifier" in error["message"]
        long = {"text_1": QUERY, "text_2": ["short", "word " * 80]}
        error = assert_error(http.post("/v1/score", json=long), 400, param="text_2")
        assert error["message"].startswith("Text pair 1 is") and "truncate_prompt_tokens" in error["message"]
        cut = http.post("/v1/score", json={**long, "truncate_prompt_tokens": -1}).json()
        assert cut["usage"]["prompt_tokens"] == len(tokenizer(QUERY, "short")["input_ids"]) + 64


def test_reward_model_scores_pairs_through_its_head(tiny_reward_dir):
    import transformers

    from lmchat import ChatModel

    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_reward_dir)
    reference = transformers.AutoModelForSequenceClassification.from_pretrained(tiny_reward_dir).eval()
    with torch.inference_mode():
        expected = float(reference(**tokenizer(QUERY, TEXTS[1], return_tensors="pt")).logits[0, 0])
    with ChatModel({"model_name_or_path": str(tiny_reward_dir)}) as model:
        result = model.score_pairs(QUERY, TEXTS[1], use_activation=False)
        assert result.scores == pytest.approx([expected], abs=1e-5)


@pytest.fixture(scope="module")
def chat_server(tiny_model_dir):
    config = {"model_name_or_path": str(tiny_model_dir), "do_sample": False, "max_new_tokens": 8}
    with ThreadServer(config, served_model_names=("tiny",)) as live:
        yield live


def test_a_generative_model_embeds_with_its_last_token(chat_server, tiny_model_dir):
    with chat_server.http() as http:
        body = http.post("/v1/embeddings", json={"input": TEXTS[0]}).json()
        expected = unit(states(tiny_model_dir, TEXTS[0], "AutoModelForCausalLM")[-1])
        assert body["data"][0]["embedding"] == pytest.approx(expected, abs=1e-5)
        error = assert_error(http.post("/v1/score", json={"text_1": "a", "text_2": "b"}), 400, param="model")
        assert "generative model" in error["message"]


def test_responses_streamed_equals_unstreamed_and_json_schema(chat_server):
    client = chat_server.openai()
    response = client.responses.create(model="tiny", input="Name a colour.", max_output_tokens=5)
    events = list(client.responses.create(model="tiny", input="Name a colour.", max_output_tokens=5, stream=True))
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert text == response.output_text == events[-1].response.output_text
    assert events[-1].response.usage.output_tokens == response.usage.output_tokens
    schema = {"type": "object", "properties": {"colour": {"enum": ["red", "blue"]}}, "required": ["colour"],
              "additionalProperties": False}
    structured = client.responses.create(model="tiny", input="Name a colour.", max_output_tokens=40, text={
        "format": {"type": "json_schema", "name": "colour", "schema": schema, "strict": True}})
    assert structured.status == "completed", structured
    assert json.loads(structured.output_text)["colour"] in ("red", "blue")
