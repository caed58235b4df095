"""Native (C++) decode kernels for the transformers engine on the CPU, compiled once per machine.

``decode.cpp`` is built with PyTorch's extension builder (a C++ compiler and ninja) for an instruction-set level,
never for a guessed feature list: on x86-64, ``x86-64-v4`` (AVX-512) or ``x86-64-v3`` (AVX2, FMA), chosen at run
time from what the CPU reports (CPUID, through PyTorch's own detection), so a build made on one machine runs on any
CPU of its level and a CPU without AVX2 is told why the kernels are not used. Elsewhere (aarch64) the build is for
the machine's own CPU and keyed by its features.

The build lives in lmchat's cache under a key made of everything that changes the result (the source, the flags,
torch and where it is installed, Python, the compiler, ninja); the source is copied into the build folder, so two
installs of the same lmchat share one build. One build runs at a time per key, under an ``flock`` that the kernel
releases when its holder dies, so a killed build never blocks the next one; a finished build is imported directly
(no compiler, no ninja, no log line about building). ``make`` builds at setup (``python -m
lmchat.engines.hf.native``, ~40 s on two cores); otherwise the engine builds in a background child process (see
:class:`NativeBuild`) and serves with the Python forward meanwhile; ``native_decode: on`` waits for it instead.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import importlib.util
import logging
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from lmchat.errors import ConfigError
from lmchat.models.cache import cache_root

logger = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("decode.cpp")
# included by SOURCE: hashed and copied with it
HEADERS = tuple(Path(__file__).with_name(name)
                for name in ("quantized.h", "int8_act.h", "int8_act_kernel.inc", "attention.h"))
BASE_FLAGS = ["-O3", "-fopenmp", "-fno-math-errno"]
# The x86-64 micro-architecture levels compiled for, best first: PyTorch's CPU capability (read from CPUID) and the
# features the kernel reports in /proc/cpuinfo that the level needs. Both must agree (ATEN_CPU_CAPABILITY can raise
# PyTorch's answer past the hardware; under an emulator /proc/cpuinfo is the host's).
X86_LEVELS = (
    ("x86-64-v4", "AVX512", {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}),
    ("x86-64-v3", "AVX2", {"avx2", "fma", "bmi1", "bmi2", "f16c", "movbe"}),
)
DONE_MARK = "built.ok"  # written once a build has been imported successfully
LOCK_NAME = ".build.flock"
POLL_SECONDS = 2.0  # how often an engine looks for a build another process is making
_lock = threading.Lock()
_module: ModuleType | None = None


class NativeUnavailable(RuntimeError):
    """The native kernels cannot be built or loaded here; the message says why."""


@functools.cache
def target_flags() -> tuple[str, ...]:
    """The instruction-set flags for this CPU (computed once per process); NativeUnavailable below AVX2."""
    machine = platform.machine()
    if machine in ("x86_64", "AMD64"):
        return (f"-march={_x86_level()}", "-mtune=generic")
    return ("-march=native",)


def _x86_level() -> str:
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    reported = set(_cpu_flags().split())
    ranks = [name for _, name, _ in X86_LEVELS]
    for level, needs_capability, needs_flags in X86_LEVELS:
        if capability in ranks[:ranks.index(needs_capability) + 1] and (not reported or needs_flags <= reported):
            return level
    raise NativeUnavailable(f"the native decode kernels need a CPU with AVX2 and FMA (this one reports {capability})")


def flags() -> list[str]:
    return [*BASE_FLAGS, *target_flags()]


@functools.cache
def build_key() -> str:
    """Everything the compiled module depends on, hashed (once per process)."""
    import torch

    digest = hashlib.sha256(SOURCE.read_bytes())
    for header in HEADERS:
        digest.update(header.name.encode() + b"\0" + header.read_bytes())
    for part in (" ".join(flags()), torch.__version__, str(Path(torch.__file__).parent), sys.version,
                 _tool_identity(_compiler()), _tool_identity("ninja")):
        digest.update(part.encode() + b"\0")
    if "-march=native" in target_flags():
        digest.update(_cpu_flags().encode())
    return digest.hexdigest()[:16]


def _compiler() -> str:
    return os.environ.get("CXX", "c++")


def _tool_identity(tool: str) -> str:
    """A tool's resolved path and the first line of its ``--version`` ("" when it is missing)."""
    path = shutil.which(tool)
    if path is None:
        return ""
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return os.path.realpath(path)
    return f"{os.path.realpath(path)} {(done.stdout or done.stderr).strip().splitlines()[:1]}"


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def module_name() -> str:
    return f"lmchat_decode_{build_key()}"


def build_dir() -> Path:
    return cache_root() / "native" / build_key()


def is_built() -> bool:
    """Whether a finished module for this machine is in the cache (loading it then takes well under a second)."""
    try:
        return (build_dir() / DONE_MARK).exists()
    except NativeUnavailable:
        return False


def load() -> ModuleType:
    """Build (once per machine) and import the native module; :class:`NativeUnavailable` says why not."""
    global _module
    with _lock:
        if _module is None:
            _module = _load_or_build()
        return _module


def _load_or_build() -> ModuleType:
    missing = _missing_tools()
    if missing:
        raise NativeUnavailable(f"building the native decode kernels needs {missing}")
    if is_built():
        return _import_built()
    directory = build_dir()
    directory.mkdir(parents=True, exist_ok=True)
    with _exclusive(directory / LOCK_NAME):
        if is_built():  # another process built it while we waited
            return _import_built()
        module = _compile(directory)
        (directory / DONE_MARK).write_text(module_name() + "\n")
        return module


def _import_built() -> ModuleType:
    import torch  # noqa: F401 - the module links against the libtorch this loads

    path = next(build_dir().glob(f"{module_name()}*.so"), None)
    if path is None:
        raise NativeUnavailable(f"the build in {build_dir()} has no module (remove the folder to rebuild)")
    spec = importlib.util.spec_from_file_location(module_name(), path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as exc:
        raise NativeUnavailable(f"the native decode kernels in {path} do not load: {exc}") from exc
    return module


def build_in_progress() -> bool:
    """Whether another process holds the build lock now (a build is running there)."""
    directory = build_dir()
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK_NAME, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """One holder at a time across processes; the kernel drops the lock when its holder exits or is killed."""
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _compile(directory: Path) -> ModuleType:
    from torch.utils.cpp_extension import load as load_extension

    (directory / "lock").unlink(missing_ok=True)  # torch's own build baton: under our lock, any such file is stale
    source = directory / SOURCE.name
    shutil.copyfile(SOURCE, source)  # the same path for every install: the build command does not change with it
    for header in HEADERS:
        shutil.copyfile(header, directory / header.name)
    logger.info("Building the native decode kernels into %s (once per machine, ~40 s).", directory)
    try:
        return load_extension(name=module_name(), sources=[str(source)], extra_cflags=flags(),
                              extra_ldflags=["-fopenmp"], build_directory=str(directory), verbose=False)
    except Exception as exc:  # noqa: BLE001 - compiler errors come in many types; the message is what matters
        raise NativeUnavailable(f"the native decode kernels failed to build: {exc}") from exc


def _missing_tools() -> str | None:
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64", "aarch64"):
        return f"Linux on x86-64 or aarch64 (this is {platform.system()} on {platform.machine()})"
    target_flags()  # NativeUnavailable on a CPU below the lowest level
    if shutil.which(_compiler()) is None:
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

    * ``on``: built now (or waited for, when another process is building it); a failure is a
      :class:`~lmchat.errors.ConfigError`;
    * ``auto``: loaded now when already built, else built by a child process that a background thread waits for
      (the engine serves with the Python forward meanwhile and switches between two steps once :attr:`done`);
      when another process holds the build lock, the child waits for it, the engine does not.
    """

    def __init__(self, setting: str = "auto") -> None:
        self._future: Future[ModuleType | None] = Future()
        if setting == "on" or is_built():
            self._resolve(strict=setting == "on")
        else:
            threading.Thread(target=self._build_in_background, name="lmchat-native-build", daemon=True).start()

    def _build_in_background(self) -> None:
        """Wait for a build another process is making, else compile in a child process: it finishes (and releases
        its lock) even if this process exits first."""
        try:
            while not is_built() and build_in_progress():
                time.sleep(POLL_SECONDS)
        except (OSError, NativeUnavailable):
            pass  # the child below reports why
        if is_built():
            return self._resolve()
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
