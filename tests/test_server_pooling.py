"""The pooling routes over the fake engine's scripted pooling (a vector counts each token id at ``id % size``; a
pair scores the words its texts share): OpenAI's /v1/embeddings through the official client (which asks for
base64), llama.cpp's /embeddings shape, vLLM's /v1/score and /v1/rerank; assertions ported from vLLM's
tests/entrypoints/pooling and llama.cpp's tools/server/tests/unit/test_embedding.py and test_rerank.py."""

from __future__ import annotations

import base64
import math
import struct

import pytest
from test_server_support import ThreadServer, assert_error, assert_schema, write_script

SIZE = 8
DOCUMENTS = ["the cat sat", "a dog ran far away", "the cat and the dog", "nothing here"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pooling = {"embedding_size": SIZE, "matryoshka_dimensions": [2, 4, 8]}
    script = write_script(tmp_path_factory.mktemp("pooling"), name="fake-embed", pooling=pooling,
                          context_length=16)
    with ThreadServer({"infer_backend": "fake", "model_name_or_path": script}) as live:
        yield live


@pytest.fixture(scope="module")
def http(server):
    with server.http() as client:
        yield client


def raw_vector(server, text: str) -> list[float]:
    vector = [0.0] * SIZE
    for token in server.chat_model.engine.tokenize(text):
        vector[token % SIZE] += 1.0
    return vector


def normalised(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector]


def test_openai_client_embeddings_equal_the_pooled_vectors(server, http):
    client = server.openai()
    texts = ["hello world", "one two three four"]
    result = client.embeddings.create(model="fake-embed", input=texts)  # the client asks for base64 and decodes it
    assert [item.index for item in result.data] == [0, 1]
    for item, text in zip(result.data, texts):
        assert item.embedding == pytest.approx(normalised(raw_vector(server, text)), abs=1e-6)
        assert math.fsum(x * x for x in item.embedding) == pytest.approx(1.0, abs=1e-6)
    tokens = sum(len(server.chat_model.engine.tokenize(text)) for text in texts)
    assert result.usage.prompt_tokens == result.usage.total_tokens == tokens

    body = http.post("/v1/embeddings", json={"input": texts, "encoding_format": "float"}).json()
    assert_schema("CreateEmbeddingResponse", body)
    floats = [item["embedding"] for item in body["data"]]
    encoded = http.post("/v1/embeddings", json={"input": texts, "encoding_format": "base64"}).json()
    for item, vector in zip(encoded["data"], floats):
        raw = base64.b64decode(item["embedding"])
        assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == pytest.approx(vector, abs=1e-7)


def test_input_forms_and_vllm_fields(server, http):
    ids = server.chat_model.engine.tokenize("hello world")
    single = http.post("/v1/embeddings", json={"input": "hello world", "encoding_format": "float"}).json()
    by_ids = http.post("/v1/embeddings", json={"input": ids}).json()
    nested = http.post("/v1/embeddings", json={"input": [ids, ids]}).json()
    assert by_ids["data"][0]["embedding"] == single["data"][0]["embedding"]
    assert [item["embedding"] for item in nested["data"]] == [single["data"][0]["embedding"]] * 2
    raw = http.post("/v1/embeddings", json={"input": "hello world", "normalize": False}).json()
    assert raw["data"][0]["embedding"] == raw_vector(server, "hello world")
    newer = http.post("/v1/embeddings", json={"input": "hello world", "use_activation": False}).json()
    assert newer["data"][0]["embedding"] == raw["data"][0]["embedding"]
    for size in (2, 4):
        cut = http.post("/v1/embeddings", json={"input": "hello world", "dimensions": size}).json()
        assert cut["data"][0]["embedding"] == pytest.approx(normalised(raw_vector(server, "hello world")[:size]))
    long = " ".join(["word"] * 20)
    truncated = http.post("/v1/embeddings", json={"input": long, "truncate_prompt_tokens": 5}).json()
    assert truncated["usage"]["prompt_tokens"] == 5
    whole = http.post("/v1/embeddings", json={"input": long, "truncate_prompt_tokens": -1}).json()
    assert whole["usage"]["prompt_tokens"] == 16  # the context length


def test_embedding_errors(server, http):
    for bad in ([], 123, {"content": "x"}, [1, "a"], [[]], True):
        assert_error(http.post("/v1/embeddings", json={"input": bad}), 400)
    error = assert_error(http.post("/v1/embeddings", json={"input": " ".join(["word"] * 20)}), 400, param="input")
    assert "too large" in error["message"] and "truncate_prompt_tokens" in error["message"]
    assert_error(http.post("/v1/embeddings", json={"input": "a", "dimensions": 3}), 400, param="dimensions")
    assert_error(http.post("/v1/embeddings", json={"input": "a", "encoding_format": "int8"}), 400,
                 param="encoding_format")
    assert_error(http.post("/v1/embeddings", json={"input": [-1]}), 400, param="input[0]")
    assert_error(http.post("/v1/embeddings", json={"input": "a", "normalize": True, "use_activation": False}), 400,
                 param="use_activation")
    assert_error(http.post("/v1/embeddings", json={"input": "", "encoding_format": "float"}), 400, param="input[0]")
    assert_error(http.post("/v1/embeddings", json={"input": "a", "model": "other"}), 404, param="model")


def test_llamacpp_embeddings_shape(server, http):
    body = http.post("/embeddings", json={"content": "hello world"}).json()
    assert body == [{"index": 0, "embedding": [pytest.approx(normalised(raw_vector(server, "hello world")))]}]
    raw = http.post("/embedding", json={"input": ["hello world", "x"], "embd_normalize": -1}).json()
    assert [item["embedding"] for item in raw] == [[raw_vector(server, "hello world")], [raw_vector(server, "x")]]
    assert_error(http.post("/embeddings", json={"input": "a", "content": "b"}), 400, param="input")


def test_score_pairs_as_vllm_pairs_them(http):
    def scores(text_1, text_2, **extra):
        body = http.post("/v1/score", json={"text_1": text_1, "text_2": text_2, **extra}).json()
        assert body["object"] == "list" and [item["index"] for item in body["data"]] == list(range(len(body["data"])))
        assert all(item["object"] == "score" for item in body["data"])
        return [item["score"] for item in body["data"]], body["usage"]

    raw, usage = scores("the cat", DOCUMENTS, use_activation=False)
    assert raw == [2.0, 0.0, 2.0, 0.0]  # words shared with each document
    assert usage["prompt_tokens"] == usage["total_tokens"] == 4 * 2 + 3 + 5 + 5 + 2
    sigmoid, _ = scores("the cat", DOCUMENTS)
    assert sigmoid == pytest.approx([1 / (1 + math.exp(-x)) for x in raw])
    pairwise, _ = scores(["the cat", "a dog"], ["the cat sat", "the cat sat"], use_activation=False)
    assert pairwise == [2.0, 0.0]
    one, _ = scores("a dog", "dog", use_activation=False)
    assert one == [1.0]
    assert_error(http.post("/v1/score", json={"text_1": ["a", "b"], "text_2": ["a", "b", "c"]}), 400,
                 param="text_2")
    assert_error(http.post("/v1/score", json={"text_1": "a", "text_2": []}), 400, param="text_2")
    assert http.post("/score", json={"text_1": "a", "text_2": "a"}).status_code == 200


def test_rerank_orders_documents_by_relevance(http):
    body = http.post("/v1/rerank", json={"query": "the cat and dog", "documents": DOCUMENTS}).json()
    assert [result["index"] for result in body["results"]] == [2, 0, 1, 3]
    scores = [result["relevance_score"] for result in body["results"]]
    assert scores == sorted(scores, reverse=True) and all(0 < score < 1 for score in scores)
    assert body["results"][0]["document"] == {"text": DOCUMENTS[2]}
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] == 4 * 4 + 3 + 5 + 5 + 2
    for top_n, expected in ((None, 4), (0, 4), (2, 2), (99, 4)):
        request = {"query": "the cat", "documents": DOCUMENTS, **({} if top_n is None else {"top_n": top_n})}
        for path in ("/v1/rerank", "/rerank", "/v2/rerank", "/v1/reranking"):
            assert len(http.post(path, json=request).json()["results"]) == expected
    bare = http.post("/v1/rerank", json={"query": "cat", "documents": DOCUMENTS, "return_documents": False}).json()
    assert all("document" not in result for result in bare["results"])
    for documents in ([], None, 123, [1, 2, 3]):
        error = assert_error(http.post("/rerank", json={"query": "x", "documents": documents}), 400)
        assert error["param"].startswith("documents")


def test_rerank_in_tei_shape_as_llamacpp_takes_it(http):
    for top_n, expected in ((None, 4), (2, 2), (99, 4)):
        body = {"query": "the cat and dog", "texts": DOCUMENTS, **({} if top_n is None else {"top_n": top_n})}
        results = http.post("/rerank", json=body).json()
        assert [item["index"] for item in results] == [2, 0, 1, 3][:expected]
        assert all(set(item) == {"index", "score"} for item in results)
    raw = http.post("/rerank", json={"query": "the cat", "texts": DOCUMENTS, "raw_scores": True,
                                     "return_text": True}).json()
    assert raw[0] == {"index": 0, "score": 2.0, "text": DOCUMENTS[0]}
    assert_error(http.post("/rerank", json={"query": "x", "texts": []}), 400, param="texts")


def test_an_engine_without_pooling_says_why(tmp_path):
    script = write_script(tmp_path, name="fake-chat")
    with ThreadServer({"infer_backend": "fake", "model_name_or_path": script}) as live, live.http() as http:
        error = assert_error(http.post("/v1/embeddings", json={"input": "a"}), 400, param="model")
        assert "cannot compute embeddings" in error["message"]
        error = assert_error(http.post("/v1/rerank", json={"query": "a", "documents": ["b"]}), 400, param="model")
        assert "cannot score text pairs" in error["message"]


def test_library_embed_and_score_pairs(server):
    model = server.chat_model
    result = model.embed(["hello world"], normalize=False)
    assert result.vectors == [raw_vector(server, "hello world")] and result.prompt_tokens == 2
    assert model.score_pairs("a dog", ["dog", "cat"], use_activation=False).scores == [1.0, 0.0]


def test_invocations_dispatch_embeddings_rerank_and_score_bodies(http):
    """SageMaker's /invocations (vLLM's dispatch): the same answers as the pooling routes themselves."""
    embed = {"input": ["hello world"], "encoding_format": "float"}
    assert http.post("/invocations", json=embed).json()["data"] == \
        http.post("/v1/embeddings", json=embed).json()["data"]
    rerank = {"query": "the cat", "documents": DOCUMENTS, "top_n": 2}
    assert http.post("/invocations", json=rerank).json()["results"] == \
        http.post("/v1/rerank", json=rerank).json()["results"]
    score = {"text_1": "the cat", "text_2": DOCUMENTS[:2]}
    assert http.post("/invocations", json=score).json()["data"] == http.post("/v1/score", json=score).json()["data"]
    refused = http.post("/invocations", json={"query": "only a query"})
    assert refused.status_code == 400 and "'query' and 'documents'" in refused.json()["error"]["message"]
