"""``lmchat serve`` and ``lmchat infer`` with ``--infer_backend vllm``, end to end on vLLM's CPU backend: a real
server process answered through the official ``openai`` client, and batch inference with a LoRA adapter (vLLM's
``LoRARequest``) checked against the transformers engine with the same adapter. ``make test-vllm`` runs these.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm")

import httpx  # noqa: E402
import openai  # noqa: E402
from conftest import VLLM_TEST_SETTINGS  # noqa: E402
from test_server_support import HOST, free_port, wait_for  # noqa: E402

from lmchat import ChatModel  # noqa: E402

LMCHAT = str(Path(sys.executable).parent / "lmchat")  # the console script of the venv running the tests
MESSAGES = [{"role": "user", "content": "Name three colours."}]
START_TIMEOUT = 300  # vLLM starts in ~30 s on a quiet machine; a loaded 2-core one takes minutes


def vllm_flags(model_dir: Path, **extra: str) -> list[str]:
    settings = {**VLLM_TEST_SETTINGS, "model_name_or_path": str(model_dir), **extra}
    return [part for key, value in settings.items()
            for part in (f"--{key}", json.dumps(value) if isinstance(value, (dict, bool)) else str(value))]


# --- the two processes, started together (each vLLM start takes ~30 s on a quiet machine) -------------------
ROWS = [{"messages": [{"role": "user", "content": text}]} for text in ("Hi!", "Tell me a joke.", "What is 2+2?")]


@pytest.fixture(scope="module")
def tiny_lora_dir(vllm_tiny_dir, tmp_path_factory) -> Path:
    """A rank-8 PEFT LoRA adapter with random (non-zero) weights on every projection of the tiny model."""
    peft = pytest.importorskip("peft")
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("lora") / "tiny-lora"
    with torch.random.fork_rng():
        torch.manual_seed(1)
        model = AutoModelForCausalLM.from_pretrained(vllm_tiny_dir, dtype=torch.float32)
        config = peft.LoraConfig(r=8, lora_alpha=16, init_lora_weights=False, target_modules=[
            "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
        peft.get_peft_model(model, config).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def infer_run(vllm_tiny_dir, tiny_lora_dir, tmp_path_factory):
    """``lmchat infer --infer_backend vllm`` with the LoRA adapter over ROWS, started in the background."""
    folder = tmp_path_factory.mktemp("infer")
    rows, out = folder / "rows.jsonl", folder / "out.jsonl"
    rows.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    command = [LMCHAT, "infer", "--input", str(rows), "--output", str(out), "--no_progress",
               *vllm_flags(vllm_tiny_dir, adapter_name_or_path=str(tiny_lora_dir), vllm_max_lora_rank=8,
                           infer_dtype="float32", do_sample=False, max_new_tokens=8)]
    with open(folder / "log.txt", "w+") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        yield process, out, log
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def served(vllm_tiny_dir, infer_run, tmp_path_factory):
    """``lmchat serve --infer_backend vllm`` on a loopback port (while ``lmchat infer`` starts beside it)."""
    port = free_port()
    command = [LMCHAT, "serve", "--host", HOST, "--port", str(port), "--served-model-name", "tiny",
               *vllm_flags(vllm_tiny_dir, max_new_tokens=16)]
    log = open(tmp_path_factory.mktemp("serve") / "log.txt", "w+")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://{HOST}:{port}"

    def ready() -> bool:
        if process.poll() is not None:
            log.seek(0)
            raise AssertionError(f"lmchat serve exited: {log.read()[-5000:]}")
        try:
            return httpx.get(f"{base_url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, timeout=START_TIMEOUT, interval=0.5)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


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
def test_infer_with_a_lora_adapter_equals_transformers(vllm_tiny_dir, tiny_lora_dir, infer_run):
    process, out, log = infer_run
    process.wait(timeout=START_TIMEOUT + 120)
    log.seek(0)
    assert process.returncode == 0, log.read()[-5000:]
    predictions = [json.loads(line)["predict"] for line in out.read_text().splitlines()]
    assert len(predictions) == len(ROWS)
    transformers = {"infer_backend": "huggingface", "native_decode": "off", "model_name_or_path": str(vllm_tiny_dir),
                    "infer_dtype": "float32", "do_sample": False, "max_new_tokens": 8}
    with ChatModel({**transformers, "adapter_name_or_path": str(tiny_lora_dir)}) as merged:
        assert predictions == [merged.chat(row["messages"])[0].response_text for row in ROWS]
    with ChatModel(transformers) as base:
        assert predictions != [base.chat(row["messages"])[0].response_text for row in ROWS]  # the adapter mattered
