"""A real two-node Ray cluster on this machine for the Ray tests (no tests here).

A head node (``ray start --head``) and a second node (``ray start --address ...``) run as their own process groups,
with few CPUs and a small object store (the machine is shared). Their worker processes import this checkout's
lmchat (PYTHONPATH). Stopping kills exactly those two process groups, never other Ray clusters on the machine
(``ray stop`` would stop every Ray on the machine). The cluster uses token authentication with a token of its own
(Ray's ports listen on every interface); the test process joins with the same token, through its environment,
which the CLI subprocesses inherit.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RAY_BIN = Path(os.environ.get("LMCHAT_RAY_BIN", Path(os.sys.executable).with_name("ray")))
NODE_CPUS = 2
OBJECT_STORE_BYTES = 100 * 1024 * 1024
START_TIMEOUT = 240
# Ray reads its authentication settings once per process, when it is first used: they are set here, when
# conftest imports this module, before any test imports ray.
RAY_AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
os.environ.update(RAY_AUTH)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RayCluster:
    """``start()`` brings up the two nodes and connects this process as a driver; ``stop()`` ends them."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="lmray-", dir="/tmp"))  # short: Ray's socket paths are long
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: list[subprocess.Popen] = []
        self.env: dict[str, str] = {
            **os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])),
            "RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "1", "TOKENIZERS_PARALLELISM": "false",
        }
        self.env.pop("RAY_ADDRESS", None)
        self.env.update(RAY_AUTH)

    def start(self) -> RayCluster:
        common = [f"--num-cpus={NODE_CPUS}", f"--object-store-memory={OBJECT_STORE_BYTES}", "--disable-usage-stats",
                  f"--temp-dir={self.root}", "--node-ip-address=127.0.0.1", "--block",
                  f"--dashboard-agent-listen-port={free_port()}"]
        self._node("head", ["--head", f"--port={self.port}", "--include-dashboard=false",
                            f"--ray-client-server-port={free_port()}", *common])
        self._node("worker", [f"--address={self.address}", *common])
        import ray

        ray.init(address=self.address, logging_level="WARNING")
        deadline = time.monotonic() + START_TIMEOUT
        while sum(node["Alive"] for node in ray.nodes()) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the second Ray node did not join; see {self.root}")
            time.sleep(0.5)
        return self

    def _node(self, name: str, args: list[str], attempts: int = 3) -> None:
        """Start one node. ``ray start`` gives a raylet 30 s to register (a fixed limit in Ray), which a loaded
        machine can miss: then the node is started again."""
        for attempt in range(1, attempts + 1):
            path = self.root / f"{name}-{attempt}.log"
            with path.open("wb") as log:
                process = subprocess.Popen([str(RAY_BIN), "start", *args], stdout=log, stderr=subprocess.STDOUT,
                                           env=self.env, start_new_session=True)
            self.nodes.append(process)
            deadline = time.monotonic() + START_TIMEOUT
            while b"Ray runtime started" not in path.read_bytes():
                if process.poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            else:
                return
            if attempt == attempts:
                raise RuntimeError(f"ray start ({name}) failed:\n{path.read_text()[-3000:]}")
            _signal_group(process.pid, signal.SIGKILL)
            time.sleep(2)

    def node_pids(self) -> set[int]:
        """Every live process of this cluster: its two process groups and their children (Ray's workers run in
        process groups of their own)."""
        import psutil

        groups = {node.pid for node in self.nodes}  # start_new_session: each node's group id is its pid
        pids: set[int] = set()
        for process in psutil.process_iter():
            try:
                if os.getpgid(process.pid) in groups:
                    pids.add(process.pid)
                    pids.update(child.pid for child in process.children(recursive=True))
            except (ProcessLookupError, psutil.Error):
                continue
        return pids

    def worker_pids(self, marker: str) -> list[int]:
        """Processes of this cluster whose title contains ``marker`` (Ray names actors ``ray::Class...``)."""
        import psutil

        found = []
        for pid in sorted(self.node_pids()):
            try:
                if marker in " ".join(psutil.Process(pid).cmdline()):
                    found.append(pid)
            except psutil.Error:
                continue
        return found

    def stop(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        pids = self.node_pids()
        for node in self.nodes:
            _signal_group(node.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while (pids := {pid for pid in pids if _alive(pid)}) and time.monotonic() < deadline:
            time.sleep(0.3)
        for pid in pids:  # raylets drain slowly on SIGTERM; these are ours, by id
            _signal(pid, signal.SIGKILL)
        for node in self.nodes:
            node.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="session")
def ray_cluster():
    """One cluster for the whole session (batch and serving tests share it)."""
    pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    cluster = RayCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


class ServeProcess:
    """``python -m lmchat.server --ray-address CLUSTER ...`` as a subprocess: ``start()`` waits for its "Serving"
    line (every replica up), ``stop()`` sends SIGINT and waits for exit status 0."""

    def __init__(self, cluster: RayCluster, *flags: str) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = cluster.root / f"serve-{self.port}.log"
        self.command = [os.sys.executable, "-m", "lmchat.server", "--ray-address", cluster.address,
                        "--port", str(self.port), *flags]
        self.env = cluster.env
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 400) -> ServeProcess:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + timeout
        while "lmchat.server: Serving" not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                raise RuntimeError(f"lmchat serve on Ray did not start:\n{self.log()[-4000:]}")
            time.sleep(0.5)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 120) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
