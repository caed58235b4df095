"""ggml's CPU backend for llama.cpp, chosen at run time for the CPU it runs on.

lmchat's setup builds llama-cpp-python the way llama.cpp's own releases are built (``GGML_BACKEND_DL`` with
``GGML_CPU_ALL_VARIANTS``): the CPU backend comes as one library per x86-64 feature level (``x64``, ``haswell``,
``skylakex``, ``icelake``, ``alderlake``, ``zen4``, ...) and none is linked in. Before a model loads, this module asks
each variant for its score on this CPU (each library checks CPUID itself and scores 0 where it cannot run), loads
the best, and says which. So a build made on one machine runs correctly on any other, from AVX2 (or less) up.
ggml's check reads CPUID only, not whether the operating system saves the wider registers; the kernel lists a
feature in /proc/cpuinfo only when it does, so a variant needing a feature the kernel does not list is not used.

The AMX variant (``sapphirerapids``) is left out unless asked for: AMX kernels crashed llama.cpp's first decode on
the Sapphire Rapids machines this project runs on. ``LMCHAT_LLAMACPP_CPU=<variant>`` picks one by name (it must
run on this CPU). A llama-cpp-python built the usual way (its CPU backend linked in) is used as it is.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
from pathlib import Path

from lmchat.errors import EngineError

logger = logging.getLogger(__name__)
PREFIX, SUFFIX = "libggml-cpu-", ".so"
LEFT_OUT = frozenset({"sapphirerapids"})  # AMX: only by name
VARIANT_ENV = "LMCHAT_LLAMACPP_CPU"
_AVX2 = {"avx", "avx2", "fma", "f16c", "bmi2", "sse4_2"}
_AVX512 = _AVX2 | {"avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"}
# The /proc/cpuinfo flags each variant's instructions need (ggml/src/CMakeLists.txt, GGML_CPU_ALL_VARIANTS)
KERNEL_FLAGS = {
    "haswell": _AVX2, "alderlake": _AVX2 | {"avx_vnni"}, "skylakex": _AVX512,
    "cannonlake": _AVX512 | {"avx512vbmi"}, "cascadelake": _AVX512 | {"avx512_vnni"},
    "icelake": _AVX512 | {"avx512vbmi", "avx512_vnni"}, "cooperlake": _AVX512 | {"avx512_vnni", "avx512_bf16"},
    "zen4": _AVX512 | {"avx512vbmi", "avx512_vnni", "avx512_bf16"},
    "sapphirerapids": _AVX512 | {"avx512vbmi", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8"},
}
BUILT_IN = "built in"


def library_dir() -> Path:
    import llama_cpp

    return Path(llama_cpp.__file__).resolve().parent / "lib"


def variants(directory: Path) -> dict[str, Path]:
    """The CPU backend variants a build ships, by name (none for a build with the backend linked in)."""
    return {path.name[len(PREFIX):-len(SUFFIX)]: path for path in sorted(directory.glob(f"{PREFIX}*{SUFFIX}"))}


def kernel_flags() -> set[str]:
    """The CPU features the operating system reports (empty where /proc/cpuinfo cannot be read)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return set()
    return next((set(line.split(":", 1)[1].split()) for line in lines if line.startswith("flags")), set())


def score(path: Path) -> int:
    """What the variant's own CPUID check says of this CPU: 0 where it cannot run, higher for a better fit; also 0
    where the kernel does not list a feature the variant needs."""
    reported, name = kernel_flags(), path.name[len(PREFIX):-len(SUFFIX)]
    if reported and not KERNEL_FLAGS.get(name, set()) <= reported:
        return 0
    library = ctypes.CDLL(str(path))
    try:
        function = library.ggml_backend_score
        function.restype = ctypes.c_int
        return int(function())
    finally:
        import _ctypes

        _ctypes.dlclose(library._handle)


def loaded_ggml(directory: Path) -> Path:
    """The libggml that libllama loaded: the file named by its soname (``libggml.so.0``). A wheel cannot hold
    symlinks, so ``libggml.so`` is a copy, and opening it would start a second backend registry that llama.cpp
    never sees."""
    versioned = sorted(directory.glob("libggml.so.*"), key=lambda path: len(path.name))
    return versioned[0] if versioned else directory / "libggml.so"


def choose(scores: dict[str, int], wanted: str | None) -> str:
    """The variant to load: ``wanted`` if it runs here, else the best-scoring one that is not left out."""
    if wanted:
        if wanted not in scores:
            raise EngineError(f"{VARIANT_ENV}={wanted}: this llama.cpp build has no such CPU variant; it has "
                              f"{', '.join(sorted(scores))}.")
        if scores[wanted] <= 0:
            runnable = ", ".join(name for name, value in sorted(scores.items()) if value > 0)
            raise EngineError(f"{VARIANT_ENV}={wanted}: that CPU variant cannot run on this CPU; these can: "
                              f"{runnable}.")
        return wanted
    usable = {name: value for name, value in scores.items() if value > 0 and name not in LEFT_OUT}
    if not usable:
        raise EngineError("No CPU variant of this llama.cpp build runs on this CPU; reinstall llama-cpp-python "
                          "(make setup builds it for every x86-64 CPU).")
    return max(usable, key=lambda name: (usable[name], name))


@functools.cache
def load_cpu_backend() -> str:
    """Load ggml's CPU backend (and any other backend the build ships) once per process; the variant's name."""
    directory = library_dir()
    found = variants(directory)
    if not found:
        return BUILT_IN
    ggml = ctypes.CDLL(str(loaded_ggml(directory)))
    ggml.ggml_backend_load.restype = ctypes.c_void_p
    ggml.ggml_backend_load.argtypes = [ctypes.c_char_p]
    chosen = choose({name: score(path) for name, path in found.items()}, os.environ.get(VARIANT_ENV) or None)
    if not ggml.ggml_backend_load(str(found[chosen]).encode()):
        raise EngineError(f"llama.cpp could not load its CPU backend {found[chosen]}.")
    for other in sorted(directory.glob(f"libggml-*{SUFFIX}")):  # GPU backends of a CUDA/Vulkan/... build
        if not other.name.startswith((PREFIX, "libggml-base")):
            ggml.ggml_backend_load(str(other).encode())
    logger.info("llama.cpp CPU backend: %s (chosen for this CPU from %d variants).", chosen, len(found))
    return chosen
