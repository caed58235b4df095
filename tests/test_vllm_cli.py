"""``lmchat serve`` and ``lmchat infer`` with ``--infer_backend vllm``, end to end on vLLM's CPU backend: a real
server process answered through the official ``openai`` client, and batch inference with a LoRA adapter (vLLM's
``LoRARequest``) checked against the transformers engine with the same adapter. ``make test-vllm`` runs these.
Both processes are launched at the session's first vLLM test (``vllm_cli`` in vllm_support.py).
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm")

import httpx  # noqa: E402
import openai  # noqa: E402
from test_server_support import wait_for  # noqa: E402
from vllm_support import INFER_ROWS  # noqa: E402

from lmchat import ChatModel  # noqa: E402

MESSAGES = [{"role": "user", "content": "Name three colours."}]
START_TIMEOUT = 600  # vLLM starts in ~30 s on a quiet machine; on 2 shared cores, with others starting, minutes


@pytest.fixture(scope="module")
def served(vllm_cli):
    """The base URL of ``lmchat serve --infer_backend vllm``, once it answers /health."""
    server, base_url = vllm_cli["serve"], vllm_cli["base_url"]

    def ready() -> bool:
        if server.process.poll() is not None:
            raise AssertionError(f"lmchat serve exited: {server.output()}")
        try:
            return httpx.get(f"{base_url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(ready, timeout=START_TIMEOUT, interval=0.5)
    return base_url


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=f"{served}/v1", api_key="unused", max_retries=0, timeout=120)


def test_served_chat_equals_the_library_and_streams_the_same(served, client, vllm_model):
    completion = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=8, temperature=0)
    [choice] = completion.choices
    [expected] = vllm_model.chat(MESSAGES, max_new_tokens=8, do_sample=False)  # the same model in this process
    assert choice.message.content == expected.response_text
    assert choice.finish_reason == expected.finish_reason
    assert completion.usage.prompt_tokens == expected.prompt_length
    stream = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=8, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == choice.message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == choice.finish_reason
    assert chunks[-1].usage.completion_tokens == completion.usage.completion_tokens


def test_served_n_seeds_and_logprobs(client):
    options = {"model": "tiny", "messages": MESSAGES, "max_tokens": 6, "temperature": 1.0, "top_p": 1.0, "n": 2}
    first = client.chat.completions.create(seed=11, **options)
    again = client.chat.completions.create(seed=11, **options)
    assert [c.message.content for c in first.choices] == [c.message.content for c in again.choices]
    assert [c.index for c in first.choices] == [0, 1]
    assert first.choices[0].message.content != first.choices[1].message.content  # answer i samples with seed + i
    scored = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=4, logprobs=True,
                                            top_logprobs=2)
    tokens = scored.choices[0].logprobs.content
    assert len(tokens) == scored.usage.completion_tokens
    assert all(t.logprob <= 0 and len(t.top_logprobs) == 2 for t in tokens)
    text = client.completions.create(model="tiny", prompt="The sky is", max_tokens=3)
    assert text.usage.completion_tokens == 3 and text.choices[0].finish_reason == "length"


def test_served_bad_requests_are_400s_and_disconnects_free_the_engine(served, client):
    with pytest.raises(openai.BadRequestError, match="logit_bias"):
        client.chat.completions.create(model="tiny", messages=MESSAGES, logit_bias={"99999999": 1})
    body = {"model": "tiny", "messages": MESSAGES, "stream": True, "max_tokens": 400, "logit_bias": {"2": -100}}
    with httpx.Client(base_url=served, timeout=120) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            next(line for line in response.iter_lines() if line.startswith("data: "))
        running = 'lmchat_requests_running{model_name="tiny"} 0.0'
        wait_for(lambda: running in http.get("/metrics").text, timeout=30)
    assert client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2).usage.completion_tokens == 2


# --- lmchat infer with a LoRA adapter --------------------------------------------------------------------------
def test_infer_with_a_lora_adapter_equals_transformers(vllm_tiny_dir, tiny_lora_dir, vllm_cli):
    infer = vllm_cli["infer"]
    infer.process.wait(timeout=START_TIMEOUT)
    assert infer.process.returncode == 0, infer.output()
    predictions = [json.loads(line)["predict"] for line in vllm_cli["infer_output"].read_text().splitlines()]
    assert len(predictions) == len(INFER_ROWS)
    transformers = {"infer_backend": "huggingface", "native_decode": "off", "model_name_or_path": str(vllm_tiny_dir),
                    "infer_dtype": "float32", "do_sample": False, "max_new_tokens": 8}
    with ChatModel({**transformers, "adapter_name_or_path": str(tiny_lora_dir)}) as merged:
        assert predictions == [merged.chat(row["messages"])[0].response_text for row in INFER_ROWS]
    with ChatModel(transformers) as base:
        assert predictions != [base.chat(row["messages"])[0].response_text for row in INFER_ROWS]  # it mattered
