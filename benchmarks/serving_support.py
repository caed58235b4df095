"""What the benchmark scripts share (no benchmark here): the 64 questions they send, and starting a server."""

from __future__ import annotations

import socket
import subprocess
import time

HOST = "127.0.0.1"
TOPICS = ["the ocean", "volcanoes", "honey bees", "the moon", "trains", "coffee", "chess", "the Roman empire",
          "rainforests", "jazz", "glaciers", "bicycles", "owls", "the printing press", "deserts", "octopuses"]
ASKS = ["Tell me an interesting fact about {}.", "Write a short paragraph about {}.",
        "Why do people find {} fascinating?", "Explain {} to a ten-year-old."]
PROMPTS = [ask.format(topic) for ask in ASKS for topic in TOPICS]  # 64 distinct questions


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 900) -> None:
    """Until ``url``'s /health answers 200; a server that exits first, or is not up in ``timeout`` s, ends the run."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"a server exited while starting: {' '.join(map(str, process.args))}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit(f"{url} did not start within {timeout} s")
