"""The web chat in a real browser: headless Debian Chromium driven by Playwright, against `python -m lmchat.webui`
served on loopback, with a scripted fake engine (whose log proves what reached the engine) and with a tiny model.

Screenshots of the main states are saved in test-artifacts/webui/.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO, read_engine_log

pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts" / "webui"
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}}]
# The fake engine's default template, plus the tools and the assistant's tool calls, so the log shows they arrived.
TEMPLATE = (
    "{% if tools %}<|tools|>\n{{ tools | tojson }}<|end|>\n{% endif %}"
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}"
    "{% if m['tool_calls'] is defined %}{{ m['tool_calls'] | tojson }}{% endif %}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
COUNTING = " ".join(["Counting:", *(f"n{i}" for i in range(1, 41)), "done. Here is **bold** and code:\n\n"])
SCRIPT = {
    "name": "fake-webui",
    "delay": 0.03,
    "chat_template": TEMPLATE,
    "replies": [
        {"match": "long story", "text": " ".join(f"word{i}" for i in range(300))},
        {"match": "count", "text": COUNTING + "```python\nprint('hello')\n```\n"},
        {"match": "SUNNY-RESULT", "text": "The tool says it is sunny in Paris."},
        "First answer.",
        "Second answer, a different one.",
    ],
}


# --- fixtures ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium, installed by tests/webui_setup.sh when missing."""
    if not CHROMIUM.exists():
        setup = subprocess.run(["sh", str(REPO / "tests" / "webui_setup.sh"), sys.executable],
                               check=False, capture_output=True, text=True, timeout=900)
        if not CHROMIUM.exists():
            pytest.skip(f"Chromium is not installed and could not be installed: {setup.stderr.strip()[-500:]}")
    return str(CHROMIUM)


@pytest.fixture(scope="module")  # sync Playwright holds a running event loop in this thread: end it with this file
def browser(chromium):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A fresh browser context per test: its own localStorage, so each test starts with an empty chat."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.set_default_timeout(20_000)
    yield context.new_page()
    context.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_webui(model_flags: list[str], workdir: Path, timeout: float = 120):
    """``python -m lmchat.webui`` in a subprocess on a free loopback port; returns (process, url)."""
    port = _free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_TEMP_DIR": str(workdir / "gradio")}
    with open(workdir / "server.log", "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "lmchat.webui", *model_flags, "--port", str(port)],
                                   stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            urllib.request.urlopen(url, timeout=2)
            return process, url
        except OSError:
            time.sleep(0.3)
    stop_webui(process)
    pytest.fail(f"the web UI did not start:\n{(workdir / 'server.log').read_text()[-3000:]}")


def stop_webui(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def fake_webui(tmp_path_factory, chromium):
    """(url, script path) of a web UI over the scripted fake engine."""
    workdir = tmp_path_factory.mktemp("webui-fake")
    script = workdir / "script.json"
    script.write_text(json.dumps({**SCRIPT, "log": str(workdir / "engine-log.jsonl")}))
    process, url = start_webui(["--infer_backend", "fake", "--model_name_or_path", str(script)], workdir)
    yield url, str(script)
    stop_webui(process)


# --- page helpers -----------------------------------------------------------------------------------------
def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def open_chat(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("#lmchat-input textarea")


def send(page, text: str) -> None:
    page.fill("#lmchat-input textarea", text)
    page.press("#lmchat-input textarea", "Enter")


def wait_idle(page) -> None:
    """Wait until the answer is over: the message box is enabled again."""
    page.wait_for_timeout(200)
    expect(page.locator("#lmchat-input textarea")).to_be_enabled()


def bots(page):
    return page.locator('#lmchat-chat [data-testid="bot"]')


def users(page):
    return page.locator('#lmchat-chat [data-testid="user"]')


def requests(script: str) -> list[dict]:
    return [event for event in read_engine_log(script) if event["event"] == "request"]


def set_number(page, elem_id: str, value: str) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(value)
    box.press("Enter")
    box.blur()


def download(page, path: Path) -> dict:
    with page.expect_download() as info:
        page.click("#lmchat-download")
    info.value.save_as(path)
    return json.loads(path.read_text())


def upload_conversation(page, path: Path) -> None:
    page.set_input_files('input[data-testid="Upload JSON-upload-button"]', str(path))


def type_tools(page, tools_json: str) -> None:
    page.click("#lmchat-tools-accordion button, #lmchat-tools-accordion .label-wrap")
    editor = page.locator("#lmchat-tools .cm-content")
    editor.click()
    page.keyboard.insert_text(tools_json)
    editor.blur()


# --- tests: fake engine -----------------------------------------------------------------------------------
def test_question_streams_a_markdown_answer_with_stats(page, fake_webui):
    url, script = fake_webui
    open_chat(page, url)
    expect(page.locator("#lmchat-header")).to_contain_text("fake-webui")
    expect(page.locator("#lmchat-header")).to_contain_text("fake")
    send(page, "please count for me")
    seen = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "done." not in (seen[-1] if seen else ""):
        if bots(page).count():
            text = bots(page).last.inner_text()
            if text and (not seen or seen[-1] != text):
                seen.append(text)
        if len(seen) == 2:
            shot(page, "01-streaming")
        time.sleep(0.03)
    wait_idle(page)
    assert any("Counting" in text and "done." not in text for text in seen), f"no partial answer seen: {seen}"
    answer = bots(page).last
    expect(answer).to_contain_text("n40 done.")
    expect(answer.locator("strong")).to_have_text("bold")
    expect(answer.locator("pre code")).to_contain_text("print('hello')")
    assert answer.locator("pre code span").count() > 0, "the code block is not highlighted"
    expect(page.locator("#lmchat-stats")).to_contain_text("tokens/s")
    expect(page.locator("#lmchat-stats")).to_contain_text("finish: stop")
    shot(page, "02-answer")
    assert "please count for me" in requests(script)[-1]["prompt"]


def test_stop_aborts_the_answer_in_the_engine(page, fake_webui):
    url, script = fake_webui
    open_chat(page, url)
    send(page, "tell me a long story")
    expect(bots(page).last).to_contain_text("word5")
    page.click("#lmchat-stop")
    wait_idle(page)
    request_id = requests(script)[-1]["request_id"]
    events = [event for event in read_engine_log(script) if event["request_id"] == request_id]
    assert [event["event"] for event in events] == ["request", "abort"]
    assert events[-1]["tokens"] < 300
    expect(page.locator("#lmchat-stats")).to_contain_text("finish: abort")
    assert not page.locator("#lmchat-stats").inner_text().startswith("Last answer: 0 tokens")
    assert "word299" not in bots(page).last.inner_text()
    shot(page, "03-stopped")


def test_regenerate_edit_and_undo_the_last_turn(page, fake_webui):
    url, script = fake_webui
    open_chat(page, url)
    send(page, "hi")
    wait_idle(page)
    first = bots(page).last.inner_text()
    page.click("#lmchat-regenerate")
    wait_idle(page)
    expect(bots(page)).to_have_count(1)
    second = bots(page).last.inner_text()
    assert first != second and {first, second} == {"First answer.", "Second answer, a different one."}
    assert requests(script)[-1]["prompt"] == requests(script)[-2]["prompt"]
    shot(page, "04-regenerated")

    users(page).last.hover()
    page.locator('#lmchat-chat button[aria-label="Edit"]').last.click()
    page.locator("#lmchat-chat textarea.edit-textarea").fill("hi again")
    page.locator('#lmchat-chat button[aria-label="Submit"]').click()
    wait_idle(page)
    expect(users(page).last).to_have_text("hi again")
    expect(bots(page)).to_have_count(1)
    assert requests(script)[-1]["prompt"].endswith("<|user|>\nhi again<|end|>\n<|assistant|>\n")

    page.click("#lmchat-undo")
    expect(users(page)).to_have_count(0)
    expect(page.locator("#lmchat-input textarea")).to_have_value("hi again")


def test_sliders_seed_and_system_prompt_reach_the_engine(page, fake_webui):
    url, script = fake_webui
    open_chat(page, url)
    set_number(page, "lmchat-temperature", "0.3")
    set_number(page, "lmchat-top-p", "0.5")
    set_number(page, "lmchat-top-k", "7")
    set_number(page, "lmchat-max-new-tokens", "33")
    page.fill("#lmchat-seed textarea, #lmchat-seed input", "1234")
    page.fill("#lmchat-system textarea", "Be brief.")
    shot(page, "05-controls")
    send(page, "hello with settings")
    wait_idle(page)
    request = requests(script)[-1]
    params = request["params"]
    assert (params["temperature"], params["top_p"], params["top_k"]) == (0.3, 0.5, 7)
    assert (params["max_new_tokens"], params["seed"]) == (33, 1234)
    assert request["prompt"].startswith("<|system|>\nBe brief.<|end|>\n<|user|>\nhello with settings")

    page.fill("#lmchat-seed textarea, #lmchat-seed input", "abc")
    send(page, "and again")
    wait_idle(page)
    expect(bots(page).last).to_contain_text("The seed must be a whole number")


def test_two_images_in_one_turn_are_shown_and_the_rejection_is_readable(page, fake_webui, tmp_path):
    from PIL import Image

    url, _ = fake_webui
    paths = []
    for name, colour in (("red.png", (200, 30, 30)), ("blue.png", (30, 30, 200))):
        Image.new("RGB", (96, 64), colour).save(tmp_path / name)
        paths.append(str(tmp_path / name))
    open_chat(page, url)
    page.set_input_files("#lmchat-input input[type=file]", paths)
    page.fill("#lmchat-input textarea", "what is in these two pictures?")
    page.press("#lmchat-input textarea", "Enter")
    wait_idle(page)
    expect(page.locator('#lmchat-chat [data-testid="user"] img')).to_have_count(2)
    expect(bots(page).last).to_contain_text("does not accept images")
    shot(page, "06-two-images")


def test_tools_reach_the_engine_and_the_conversation_survives_reload_download_and_upload(page, fake_webui, tmp_path):
    url, script = fake_webui
    open_chat(page, url)
    type_tools(page, json.dumps(TOOLS))
    page.fill("#lmchat-system textarea", "You can call tools.")
    send(page, "what is the weather in Paris?")
    wait_idle(page)
    assert '"name": "get_weather"' in requests(script)[-1]["prompt"]

    page.reload()
    page.wait_for_selector("#lmchat-input textarea")
    expect(users(page)).to_have_count(1)
    expect(users(page).last).to_have_text("what is the weather in Paris?")
    expect(page.locator("#lmchat-system textarea")).to_have_value("You can call tools.")
    shot(page, "07-after-reload")

    saved = download(page, tmp_path / "conversation.json")
    assert saved["messages"][0] == {"role": "system", "content": "You can call tools."}
    assert [m["role"] for m in saved["messages"]] == ["system", "user", "assistant"]
    assert saved["tools"] == TOOLS

    page.click("#lmchat-clear")
    page.fill("#lmchat-system textarea", "")
    expect(users(page)).to_have_count(0)
    upload_conversation(page, tmp_path / "conversation.json")
    expect(users(page)).to_have_count(1)
    expect(page.locator("#lmchat-system textarea")).to_have_value("You can call tools.")
    send(page, "and tomorrow?")
    wait_idle(page)
    prompt = requests(script)[-1]["prompt"]
    assert '"name": "get_weather"' in prompt and "<|system|>\nYou can call tools." in prompt
    assert "what is the weather in Paris?" in prompt


def test_tool_calls_show_as_blocks_and_tool_results_are_sent_as_tool_messages(page, fake_webui, tmp_path):
    url, script = fake_webui
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    conversation = {"messages": [
        {"role": "user", "content": "what is the weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
    ], "tools": TOOLS}
    (tmp_path / "tool-call.json").write_text(json.dumps(conversation))
    open_chat(page, url)
    upload_conversation(page, tmp_path / "tool-call.json")
    expect(page.locator("#lmchat-chat")).to_contain_text("Tool call: get_weather")
    expect(page.locator("#lmchat-chat")).to_contain_text('"city": "Paris"')  # the block starts open
    page.click("#lmchat-tool-result button, #lmchat-tool-result .label-wrap")
    page.fill("#lmchat-tool-result textarea", "SUNNY-RESULT 22C")
    page.click("#lmchat-tool-send")
    wait_idle(page)
    expect(bots(page).last).to_contain_text("The tool says it is sunny in Paris.")
    expect(page.locator("#lmchat-chat")).to_contain_text("Tool result: get_weather")
    prompt = requests(script)[-1]["prompt"]
    assert "<|tool|>\nSUNNY-RESULT 22C<|end|>" in prompt and '"get_weather"' in prompt
    shot(page, "08-tool-call-and-result")
    saved = download(page, tmp_path / "after.json")
    assert saved["messages"][2] == {"role": "tool", "tool_call_id": "call_1", "name": "get_weather",
                                    "content": "SUNNY-RESULT 22C"}


def test_username_and_password_guard_the_page(page, tmp_path, chromium, monkeypatch):
    monkeypatch.setenv("LMCHAT_WEBUI_PASSWORD", "s3cret")
    flags = ["--infer_backend", "fake", "--username", "ann"]
    process, url = start_webui(flags, tmp_path)
    try:
        page.goto(url)
        page.fill('input[data-testid="textbox"]', "ann")
        page.fill('input[data-testid="password"]', "wrong")
        page.click("button.primary")
        expect(page.locator("body")).to_contain_text("Incorrect")
        page.fill('input[data-testid="textbox"]', "ann")
        page.fill('input[data-testid="password"]', "s3cret")
        page.click("button.primary")
        page.wait_for_selector("#lmchat-input textarea")
        send(page, "hello")
        expect(bots(page).last).to_contain_text("You said: hello")
    finally:
        stop_webui(process)


# --- test: a real tiny model ------------------------------------------------------------------------------
@pytest.mark.timeout(900)
def test_tiny_model_answers_in_the_browser(page, tiny_model_dir, tmp_path, chromium):
    pytest.importorskip("torch")
    flags = ["--model_name_or_path", str(tiny_model_dir), "--device", "cpu", "--max_new_tokens", "12"]
    process, url = start_webui(flags, tmp_path, timeout=300)
    try:
        open_chat(page, url)
        expect(page.locator("#lmchat-header")).to_contain_text("huggingface")
        send(page, "Hello, who are you?")
        wait_idle(page)
        expect(page.locator("#lmchat-stats")).to_contain_text("tokens/s")
        assert bots(page).count() == 1
        shot(page, "09-tiny-model")
    finally:
        stop_webui(process)


@pytest.fixture(scope="module")
def media_webui(tmp_path_factory, chromium):
    """A web UI over the fake engine that takes images (it answers with the size of each image it got)."""
    workdir = tmp_path_factory.mktemp("webui-media")
    script = workdir / "script.json"
    script.write_text(json.dumps({"name": "fake-media", "chat_template": TEMPLATE, "media": ["image"],
                                  "log": str(workdir / "engine-log.jsonl")}))
    process, url = start_webui(["--infer_backend", "fake", "--model_name_or_path", str(script)], workdir)
    yield url
    stop_webui(process)


def test_uploaded_images_reach_the_model_decoded(page, media_webui, tmp_path):
    from PIL import Image

    paths = []
    for name, size in (("wide.png", (96, 64)), ("tall.png", (40, 80))):
        Image.new("RGB", size, (200, 30, 30)).save(tmp_path / name)
        paths.append(str(tmp_path / name))
    open_chat(page, media_webui)
    page.set_input_files("#lmchat-input input[type=file]", paths)
    send(page, "what are these?")
    wait_idle(page)
    expect(page.locator('#lmchat-chat [data-testid="user"] img')).to_have_count(2)
    expect(bots(page).last).to_contain_text("[image 96x64] [image 40x80]")
    shot(page, "12-images-reach-the-model")


def test_the_adapter_dropdown_chooses_the_lora_adapter(page, tiny_model_dir, tiny_lora_dirs, tmp_path, chromium):
    pytest.importorskip("torch")
    from lmchat import ChatModel

    settings = {"model_name_or_path": str(tiny_model_dir), "max_new_tokens": 12, "do_sample": False,
                "lora_modules": f"alpha={tiny_lora_dirs['alpha']}"}
    question = [{"role": "user", "content": "Hello, who are you?"}]
    with ChatModel(settings) as model:
        expected = model.chat(question, adapter="alpha")[0].response_text
        assert expected != model.chat(question)[0].response_text
    flags = [f"--{key}={value}" for key, value in settings.items()]
    process, url = start_webui(flags, tmp_path, timeout=300)
    try:
        open_chat(page, url)
        page.click("#lmchat-adapter input")
        page.locator('[role="option"]', has_text="alpha").click()
        send(page, question[0]["content"])
        wait_idle(page)
        conversation = download(page, tmp_path / "conversation.json")
        assert conversation["messages"][-1]["content"] == expected
    finally:
        stop_webui(process)
