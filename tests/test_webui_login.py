"""The web chat's login is throttled: a real Gradio app with --username/--password, on a loopback port."""

from __future__ import annotations

import socket
import time

import pytest

gr = pytest.importorskip("gradio")
httpx = pytest.importorskip("httpx")

from lmchat.webui.cli import login_protection  # noqa: E402
from lmchat.webui.login import LoginThrottle  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def page():
    with gr.Blocks() as blocks:
        gr.Markdown("hello")
    port = _free_port()
    blocks.launch(server_name="127.0.0.1", server_port=port, auth=("ann", "sécret"), prevent_thread_lock=True,
                  quiet=True, ssr_mode=False, app_kwargs=login_protection(("ann", "sécret")))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        blocks.close()


def _login(base: str, password: str) -> httpx.Response:
    return httpx.post(f"{base}/login", data={"username": "ann", "password": password}, timeout=30)


def test_failed_logins_are_throttled_then_a_right_password_gets_in(page):
    began = time.monotonic()
    statuses = [_login(page, f"wrong-{i}").status_code for i in range(30)]
    elapsed = time.monotonic() - began
    assert statuses[:5] == [400] * 5 and statuses[5] == 429  # five free attempts, then a wait
    assert set(statuses) == {400, 429}
    # while locked (1 s, then 2, 4, ...) attempts never reach the password check
    assert statuses.count(400) <= 5 + max(1, int(elapsed).bit_length())
    # a fresh lock, so that the right password below meets it however slowly the 30 attempts ran: wait out the
    # current one, then one more failure counts (the 7th or later: locked for 2 s or more)
    while _login(page, "wrong-last").status_code != 400:
        time.sleep(0.2)
    locked = _login(page, "sécret")
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) >= 1  # even the right one, for now
    assert "Too many failed logins" in locked.json()["detail"]
    time.sleep(float(locked.headers["retry-after"]) + 0.2)
    assert _login(page, "sécret").status_code == 200
    assert _login(page, "wrong-again").status_code == 400  # a success clears the count


def test_the_back_off_doubles_per_failure_up_to_its_cap():
    now = {"t": 0.0}
    throttle = LoginThrottle(free_attempts=2, base_delay_s=1, max_delay_s=8, clock=lambda: now["t"])
    waits = []
    for _ in range(8):
        throttle.failed("10.0.0.1")
        waits.append(throttle.wait_s("10.0.0.1"))
    assert waits == [0, 1, 2, 4, 8, 8, 8, 8]
    assert throttle.wait_s("10.0.0.2") == 0  # per client
    now["t"] = 100.0
    assert throttle.wait_s("10.0.0.1") == 0
    throttle.succeeded("10.0.0.1")
    throttle.failed("10.0.0.1")
    assert throttle.wait_s("10.0.0.1") == 0
