"""Building and caching the native decode kernels: the build key, the lock, portability and quiet loads."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from lmchat import ChatModel  # noqa: E402
from lmchat.engines.hf import native  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def built() -> Path:
    """The real build for this machine (made once by `make`, ~40 s otherwise)."""
    native.load()
    return native.build_dir()


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


def test_the_build_targets_an_instruction_set_level_not_this_machine(built):
    assert "-march=native" not in native.flags()
    assert native.target_flags()[0] in {"-march=x86-64-v3", "-march=x86-64-v4"}


def test_a_cpu_below_avx2_is_told_why():
    done = run_python(
        "from lmchat.engines.hf import native\n"
        "try:\n    native.load()\nexcept native.NativeUnavailable as exc:\n    print(exc)\n",
        ATEN_CPU_CAPABILITY="default")
    assert "need a CPU with AVX2 and FMA (this one reports DEFAULT)" in done.stdout, done.stderr


def test_a_loaded_build_logs_nothing_about_building(built):
    done = run_python("import logging; logging.basicConfig(level=logging.INFO)\n"
                      "from lmchat.engines.hf import native; native.load(); print(native.build_dir())")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(built)
    assert "Building" not in done.stderr
    assert not (built / "lock").exists()


def test_two_installs_of_the_same_lmchat_share_one_build(built, tmp_path):
    """The source is copied into the build folder, so a second install (another path) finds the same build."""
    shutil.copytree(SRC / "lmchat", tmp_path / "lmchat", ignore=shutil.ignore_patterns("__pycache__"))
    done = run_python("from lmchat.engines.hf import native; native.load()\n"
                      "print(native.__file__); print(native.build_dir())", PYTHONPATH=str(tmp_path))
    assert done.returncode == 0, done.stderr
    where, directory = done.stdout.split()
    assert where.startswith(str(tmp_path)) and directory == str(built)
    assert "Building" not in done.stderr


def test_the_key_changes_with_the_compiler_and_ninja(built, tmp_path):
    """Another ninja (or compiler) first on PATH means another build folder, never a rebuild of this one."""
    other = tmp_path / "bin"
    other.mkdir()
    ninja = Path(shutil.which("ninja"))
    copy = other / "ninja"
    shutil.copy(ninja, copy)  # same version, other binary: still another tool as far as the build knows
    done = run_python("from lmchat.engines.hf import native; print(native.build_key())",
                      PATH=f"{other}{os.pathsep}{os.environ['PATH']}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() != native.build_key()
    same = run_python("from lmchat.engines.hf import native; print(native.build_key())")
    assert same.stdout.strip() == native.build_key()


def hold_lock(path: Path) -> subprocess.Popen:
    """Another process holding the build lock (as a build in progress does), until killed."""
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time\n"
        f"handle = open({str(path)!r}, 'a+'); fcntl.flock(handle, fcntl.LOCK_EX)\n"
        "print('held', flush=True); time.sleep(600)\n")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_lock_left_by_a_killed_process_does_not_block(built, tmp_path, monkeypatch):
    """The lock is an flock: the kernel drops it when its holder dies, so a killed build blocks no one."""
    monkeypatch.setenv("LMCHAT_CACHE", str(tmp_path))
    directory = native.build_dir()
    directory.mkdir(parents=True)
    (directory / "lock").write_text("")  # torch's own baton, as a killed torch build leaves it
    holder = hold_lock(directory / ".build.flock")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with native._exclusive(directory / ".build.flock"):  # would wait forever if the dead holder still had it
        pass
    # a build that finds the lock free and the module present imports it (no compile, no stale baton left)
    for item in built.iterdir():
        if item.suffix == ".so" or item.name == native.DONE_MARK:
            shutil.copy(item, directory / item.name)
    done = run_python("from lmchat.engines.hf import native; native.load(); print('ok')", LMCHAT_CACHE=str(tmp_path))
    assert done.stdout.strip() == "ok", done.stderr


def test_the_engine_serves_while_another_process_builds_then_switches(built, tiny_model_dir, tmp_path, monkeypatch):
    """A build in progress elsewhere (its lock held) does not delay serving: the Python forward answers at once;
    once that build is done, the engine switches to the native step (it waits for that build, it starts none)."""
    monkeypatch.setenv("LMCHAT_CACHE", str(tmp_path))
    directory = native.build_dir()
    directory.mkdir(parents=True)
    holder = hold_lock(directory / ".build.flock")
    try:
        config = {"model_name_or_path": str(tiny_model_dir), "do_sample": False, "max_new_tokens": 4}
        with ChatModel(config) as model:
            worker = model.engine.worker
            assert model.chat([{"role": "user", "content": "Hi"}])[0].response_length == 4
            # answered while the other build holds the lock (it would hold it for 10 minutes)
            assert worker.runner.name == "lean" and worker.native_build is not None
            # the other process finishes its build: the module appears, then it releases the lock
            for item in built.iterdir():
                if item.suffix == ".so" or item.name == native.DONE_MARK:
                    shutil.copy(item, directory / item.name)
            worker.native_build.result()  # seen without taking the lock: the engine started no build of its own
            holder.send_signal(signal.SIGTERM)
            holder.wait()
            assert model.chat([{"role": "user", "content": "Hi"}])[0].response_length == 4
            assert worker.runner.name == "lean+native"
    finally:
        holder.kill()
