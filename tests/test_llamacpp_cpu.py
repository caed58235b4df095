"""llama.cpp's CPU backend chosen at run time: every x86-64 variant ships, the best that runs here is loaded."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

llama_cpp = pytest.importorskip("llama_cpp")

from lmchat.engines.llamacpp import cpu_backend  # noqa: E402
from lmchat.errors import EngineError  # noqa: E402

pytestmark = pytest.mark.slow
X86_VARIANTS = {"x64", "sse42", "sandybridge", "haswell", "skylakex", "icelake", "alderlake", "zen4"}


@pytest.fixture(scope="module")
def scores() -> dict[str, int]:
    found = cpu_backend.variants(cpu_backend.library_dir())
    return {name: cpu_backend.score(path) for name, path in found.items()}


def run_chat(**env: str) -> subprocess.CompletedProcess:
    code = ("import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stderr)\n"
            "from lmchat import ChatModel\n"
            "with ChatModel({'infer_backend': 'llamacpp', 'do_sample': False, 'max_new_tokens': 8}) as m:\n"
            "    print(m.chat([{'role': 'user', 'content': 'Say hi'}])[0].response_text)\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


def test_the_build_ships_every_x86_variant_and_links_none_in(scores):
    assert X86_VARIANTS <= set(scores)
    assert not (cpu_backend.library_dir() / "libggml-cpu.so").exists()


def test_each_variant_scores_by_what_this_cpu_can_run(scores):
    flags = cpu_backend.kernel_flags()
    assert scores["x64"] > 0  # runs anywhere
    assert (scores["haswell"] > 0) == ({"avx2", "fma", "f16c", "bmi2"} <= flags)
    assert (scores["skylakex"] > 0) == ({"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"} <= flags)
    assert (scores["alderlake"] > 0) == ({"avx_vnni"} <= flags and {"avx2", "fma", "bmi2"} <= flags)


def test_the_engine_loads_the_best_variant_that_runs_here(scores):
    best = cpu_backend.choose(scores, None)
    assert scores[best] == max(value for name, value in scores.items() if name not in cpu_backend.LEFT_OUT)
    done = run_chat()
    assert done.returncode == 0, done.stderr
    assert f"llama.cpp CPU backend: {best} (chosen for this CPU" in done.stderr
    assert done.stdout.strip()


def test_a_variant_named_by_the_user_is_used_when_it_runs_here():
    done = run_chat(LMCHAT_LLAMACPP_CPU="x64")
    assert done.returncode == 0, done.stderr
    assert "llama.cpp CPU backend: x64" in done.stderr and done.stdout.strip()


def test_a_variant_this_cpu_cannot_run_is_refused_not_crashed(scores):
    unusable = sorted(name for name, value in scores.items() if value == 0)
    if not unusable:
        pytest.skip("this CPU runs every variant the build ships (AMX included)")
    done = run_chat(LMCHAT_LLAMACPP_CPU=unusable[-1])
    assert done.returncode == 1, done.stderr  # a clear error, not SIGILL (-4)
    assert f"LMCHAT_LLAMACPP_CPU={unusable[-1]}: that CPU variant cannot run on this CPU" in done.stderr


def test_choose_leaves_amx_out_unless_named():
    scores = {"x64": 1, "haswell": 30, "sapphirerapids": 90, "icelake": 60}
    assert cpu_backend.choose(scores, None) == "icelake"
    assert cpu_backend.choose(scores, "sapphirerapids") == "sapphirerapids"
    with pytest.raises(EngineError, match="no such CPU variant; it has haswell, icelake, sapphirerapids, x64"):
        cpu_backend.choose(scores, "zen9")
    with pytest.raises(EngineError, match="cannot run on this CPU; these can: haswell, x64"):
        cpu_backend.choose({"x64": 1, "haswell": 30, "skylakex": 0}, "skylakex")
