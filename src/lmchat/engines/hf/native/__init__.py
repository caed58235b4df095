"""Native (C++) decode kernels for the transformers engine on the CPU, compiled on first use.

``decode.cpp`` is built with PyTorch's extension builder (a C++ compiler and ninja), for this machine's CPU
(``-march=native``), into lmchat's cache, keyed by the source, the torch version and the CPU's features: a second
process loads the finished module in about a second. Building takes ~40 s on a 2-core machine; ``make`` does it
at setup (``python -m lmchat.engines.hf.native``), and otherwise the engine runs that command in the background
the first time (see :class:`NativeBuild`); ``native_decode: on`` waits for it instead.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from types import ModuleType

from lmchat.errors import ConfigError
from lmchat.models.cache import cache_root

logger = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("decode.cpp")
FLAGS = ["-O3", "-march=native", "-fopenmp", "-fno-math-errno"]
STALE_LOCK_SECONDS = 600  # a build lock this old was left by a killed build
_lock = threading.Lock()
_module: ModuleType | None = None


class NativeUnavailable(RuntimeError):
    """The native kernels cannot be built or loaded here; the message says why."""


@functools.cache
def build_key() -> str:
    """What the compiled module depends on: the source, the flags, torch, and the CPU it is tuned for (computed
    once per process)."""
    import torch

    digest = hashlib.sha256(SOURCE.read_bytes())
    digest.update(" ".join(FLAGS).encode())
    digest.update(torch.__version__.encode())
    digest.update(platform.python_version().encode())
    digest.update(_cpu_flags().encode())
    return digest.hexdigest()[:16]


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor()


def build_dir() -> Path:
    return cache_root() / "native" / build_key()


def is_built() -> bool:
    """Whether a compiled module for this machine is already in the cache (loading it is then quick)."""
    return any(build_dir().glob("lmchat_decode_*.so"))


def load() -> ModuleType:
    """Build (once per machine) and import the native module; :class:`NativeUnavailable` says why not."""
    global _module
    with _lock:
        if _module is None:
            _module = _build()
        return _module


def _build() -> ModuleType:
    missing = _missing_tools()
    if missing:
        raise NativeUnavailable(f"building the native decode kernels needs {missing}")
    from torch.utils.cpp_extension import load as load_extension

    directory = build_dir()
    directory.mkdir(parents=True, exist_ok=True)
    lock = directory / "lock"  # torch's build lock; a killed build leaves it behind and later builds would wait
    if lock.exists() and time.time() - lock.stat().st_mtime > STALE_LOCK_SECONDS:
        lock.unlink(missing_ok=True)
    logger.info("Building the native decode kernels into %s (once per machine, ~40 s).", directory)
    try:
        return load_extension(name=f"lmchat_decode_{build_key()}", sources=[str(SOURCE)], extra_cflags=FLAGS,
                              extra_ldflags=["-fopenmp"], build_directory=str(directory), verbose=False)
    except Exception as exc:  # noqa: BLE001 - compiler errors come in many types; the message is what matters
        raise NativeUnavailable(f"the native decode kernels failed to build: {exc}") from exc


def _missing_tools() -> str | None:
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64", "aarch64"):
        return f"Linux on x86-64 or aarch64 (this is {platform.system()} on {platform.machine()})"
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        return "a C++ compiler (c++ or $CXX)"
    if shutil.which("ninja") is None:
        try:
            import ninja  # the PyPI wheel, installed with lmchat[hf]; its binary may not be on PATH

            os.environ["PATH"] = f"{ninja.BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}"
        except ImportError:
            return "ninja (pip install ninja)"
    return None


class NativeBuild:
    """The native module for one engine, by its ``native_decode`` setting (``auto`` or ``on``):

    * ``on``: built now; a failure is a :class:`~lmchat.errors.ConfigError`;
    * ``auto``: loaded now when already built, else built by a child process that a background thread waits for
      (the engine serves with the Python forward meanwhile and switches between two steps once :attr:`done`).
    """

    def __init__(self, setting: str = "auto") -> None:
        self._future: Future[ModuleType | None] = Future()
        if setting == "on" or is_built():
            self._resolve(strict=setting == "on")
        else:
            threading.Thread(target=self._build_in_background, name="lmchat-native-build", daemon=True).start()

    def _build_in_background(self) -> None:
        """Compile in a child process: it finishes (and releases its lock) even if this process exits first."""
        package_root = str(Path(__file__).resolve().parents[4])  # where `lmchat` imports from, installed or not
        path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
        done = subprocess.run([sys.executable, "-m", __name__], capture_output=True, text=True, check=False,
                              env={**os.environ, "PYTHONPATH": path})
        if done.returncode != 0:
            reason = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            logger.info("Native decode kernels not used: %s", reason[0])
            self._future.set_result(None)
            return
        self._resolve()

    def _resolve(self, strict: bool = False) -> None:
        try:
            module = load()
        except NativeUnavailable as exc:
            if strict:
                raise ConfigError(f"native_decode: on, but {exc}. Use native_decode: auto or off.") from exc
            logger.info("Native decode kernels not used: %s.", exc)
            module = None
        self._future.set_result(module)

    @property
    def done(self) -> bool:
        return self._future.done()

    def result(self) -> ModuleType | None:
        """The module, or None if it could not be built (waits for the build)."""
        return self._future.result()
