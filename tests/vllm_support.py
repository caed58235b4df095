"""Fixtures of the vLLM tests (a pytest plugin loaded by conftest.py; nothing here imports vllm).

Each vLLM start costs ~30 s of imports in three processes, so the session starts as few as it can and overlaps
them: the in-process engine every in-process test shares (``vllm_model``), and the ``lmchat serve`` and
``lmchat infer`` processes of tests/test_vllm_cli.py, launched in the background together with it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

VLLM_TEST_SETTINGS = {
    "infer_backend": "vllm", "vllm_enforce_eager": True, "vllm_maxlen": 512,
    "vllm_config": {"kv_cache_memory_bytes": 64 << 20},  # ~130k tokens of the tiny model: plenty, and quick
}
LMCHAT = str(Path(sys.executable).parent / "lmchat")  # the console script of the venv running the tests
INFER_ROWS = [{"messages": [{"role": "user", "content": text}]} for text in ("Hi!", "Tell me a joke.", "What is 2+2?")]


def vllm_flags(model_dir: Path, **extra) -> list[str]:
    """``--key value`` flags of the test settings (dicts and booleans as JSON, which the CLI reads as YAML)."""
    settings = {**VLLM_TEST_SETTINGS, "model_name_or_path": str(model_dir), **extra}
    return [part for key, value in settings.items()
            for part in (f"--{key}", json.dumps(value) if isinstance(value, (dict, bool)) else str(value))]


@pytest.fixture(scope="session")
def vllm_tiny_dir(tmp_path_factory, default_model_dir) -> Path:
    """The tiny random Llama with 32-wide attention heads (vLLM's CPU attention has no 16-wide kernel)."""
    from conftest import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama-vllm", default_model_dir, head_dim=32)


@pytest.fixture(scope="session")
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


class Launched:
    """A background process whose output goes to a log file (a pipe nobody reads would fill and block it)."""

    def __init__(self, command: list[str], log_path: Path) -> None:
        self.log = open(log_path, "w+")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()[-5000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


@pytest.fixture(scope="session")
def vllm_cli(vllm_tiny_dir, tiny_lora_dir, tmp_path_factory):
    """``lmchat serve`` (tiny model, port chosen here) and ``lmchat infer`` (tiny model + LoRA adapter over
    INFER_ROWS, float32, greedy), both launched now; tests/test_vllm_cli.py waits for them."""
    pytest.importorskip("vllm")
    from test_server_support import HOST, free_port

    folder = tmp_path_factory.mktemp("vllm-cli")
    rows = folder / "rows.jsonl"
    rows.write_text("".join(json.dumps(row) + "\n" for row in INFER_ROWS))
    infer_flags = vllm_flags(vllm_tiny_dir, adapter_name_or_path=str(tiny_lora_dir), vllm_max_lora_rank=8,
                             infer_dtype="float32", do_sample=False, max_new_tokens=8)
    port = free_port()
    processes = {
        "infer": Launched([LMCHAT, "infer", "--input", str(rows), "--output", str(folder / "out.jsonl"),
                           "--no_progress", *infer_flags], folder / "infer.log"),
        "serve": Launched([LMCHAT, "serve", "--host", HOST, "--port", str(port), "--served-model-name", "tiny",
                           *vllm_flags(vllm_tiny_dir, max_new_tokens=16)], folder / "serve.log"),
    }
    try:
        yield {"base_url": f"http://{HOST}:{port}", "infer_output": folder / "out.jsonl", **processes}
    finally:
        for launched in processes.values():
            launched.stop()


@pytest.fixture(scope="session")
def vllm_model(request, vllm_tiny_dir):
    """One vLLM engine over the tiny model, shared by every in-process test of the session (the CLI processes
    of ``vllm_cli`` start beside it when this session runs tests/test_vllm_cli.py)."""
    pytest.importorskip("vllm")
    from lmchat import ChatModel

    if any(item.nodeid.startswith("tests/test_vllm_cli.py") for item in request.session.items):
        request.getfixturevalue("vllm_cli")

    with ChatModel({**VLLM_TEST_SETTINGS, "model_name_or_path": str(vllm_tiny_dir), "max_new_tokens": 16}) as model:
        yield model
