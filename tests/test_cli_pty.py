"""``lmchat chat`` driven through a pseudo-terminal, as a person types: exact transcripts with the scripted fake
engine, Ctrl-C and Ctrl-D, prompt_toolkit's multi-line input and history, rich rendering, and a tiny real model.

Exact transcripts use ``--plain`` (plain lines in and out, so the terminal's own echo of what is typed is the only
thing between the program's writes) and ``TERM=dumb``. Lines end with ``\\r\\n`` on a terminal; the transcripts below
are compared after turning those into ``\\n``.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
from pathlib import Path

import pexpect
import pytest
from conftest import read_engine_log

HEADER = (
    "Loading the model...\n"
    "lmchat: chatting with fake-echo (fake engine). Type /help for commands, clear to forget the history, "
    "exit to quit.\n"
)
LONG = " ".join(f"word{i}" for i in range(40))


def spawn(tmp_path: Path, *args: str, term: str = "dumb") -> pexpect.spawn:
    env = dict(os.environ, TERM=term, PYTHONUNBUFFERED="1", LMCHAT_CACHE=str(tmp_path / "cache"),
               PROMPT_TOOLKIT_NO_CPR="1", COLUMNS="100", LINES="30")
    env.pop("LMCHAT_PLAIN", None)
    child = pexpect.spawn(sys.executable, ["-m", "lmchat", "chat", *args], env=env, cwd=str(tmp_path),
                          encoding="utf-8", timeout=30, dimensions=(30, 100))
    child.logfile_read = io.StringIO()
    return child


def converse(child: pexpect.spawn, *messages: str) -> str:
    """Type each message at its prompt, wait for the program to end, return the whole transcript."""
    for message in messages:
        child.expect_exact("User: ")
        child.send(message + "\r")
    return finish(child)


def finish(child: pexpect.spawn) -> str:
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.logfile_read.getvalue()
    return child.logfile_read.getvalue().replace("\r\n", "\n")


def fake_chat(tmp_path: Path, script: str, *args: str, term: str = "dumb") -> pexpect.spawn:
    return spawn(tmp_path, "--infer_backend", "fake", "--model_name_or_path", script, *args, term=term)


def test_clear_and_exit(tmp_path, fake_script):
    script = fake_script(replies=["Hello there!", "Hi again."])
    transcript = converse(fake_chat(tmp_path, script, "--plain"), "Hi", "clear", "Hello?", "exit")
    assert transcript == HEADER + (
        "User: Hi\nAssistant: Hello there!\n"
        "User: clear\nHistory has been removed.\n"
        "User: Hello?\nAssistant: Hi again.\n"
        "User: exit\n"
    )
    prompts = [event["prompt"] for event in read_engine_log(script) if event["event"] == "request"]
    assert prompts[1] == "<|user|>\nHello?<|end|>\n<|assistant|>\n"  # clear really forgot the first exchange


def test_regen_and_undo(tmp_path, fake_script):
    script = fake_script(replies=["First.", "Second.", "Third."])
    transcript = converse(fake_chat(tmp_path, script, "--plain"), "Q1", "/regen", "/undo", "/undo", "/regen",
                          "Q2", "exit")
    assert transcript == HEADER + (
        "User: Q1\nAssistant: First.\n"
        "User: /regen\nAssistant: Second.\n"
        "User: /undo\nDropped the last exchange.\n"
        "User: /undo\nNothing to undo.\n"
        "User: /regen\nNothing to regenerate.\n"
        "User: Q2\nAssistant: Third.\n"
        "User: exit\n"
    )
    prompts = [event["prompt"] for event in read_engine_log(script) if event["event"] == "request"]
    assert prompts == ["<|user|>\nQ1<|end|>\n<|assistant|>\n"] * 2 + ["<|user|>\nQ2<|end|>\n<|assistant|>\n"]


def test_save_then_load(tmp_path, fake_script):
    script = fake_script(replies=["Paris.", "About 2 million."])
    transcript = converse(fake_chat(tmp_path, script, "--plain"), "/system Answer briefly.", "Capital of France?",
                          "/save conv.json", "clear", "/load conv.json", "Population?", "exit")
    assert transcript == HEADER + (
        "User: /system Answer briefly.\nSystem prompt set.\n"
        "User: Capital of France?\nAssistant: Paris.\n"
        "User: /save conv.json\nSaved 3 messages to conv.json.\n"
        "User: clear\nHistory has been removed.\n"
        "User: /load conv.json\nLoaded 3 messages from conv.json.\n"
        "User: Population?\nAssistant: About 2 million.\n"
        "User: exit\n"
    )
    assert json.loads((tmp_path / "conv.json").read_text()) == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
    ]
    last_prompt = [event["prompt"] for event in read_engine_log(script) if event["event"] == "request"][-1]
    assert last_prompt == (
        "<|system|>\nAnswer briefly.<|end|>\n<|user|>\nCapital of France?<|end|>\n<|assistant|>\nParis.<|end|>\n"
        "<|user|>\nPopulation?<|end|>\n<|assistant|>\n"
    )


def test_set_reaches_the_engine_and_a_bad_key_keeps_the_chat_going(tmp_path, fake_script):
    script = fake_script(replies=["One.", "Two."])
    transcript = converse(fake_chat(tmp_path, script, "--plain"), "/set temperature=0.3 seed=7 stop=###",
                          "/set tempreture=1", "/set", "Hi", "/set seed=", "Again", "exit")
    assert transcript == HEADER + (
        "User: /set temperature=0.3 seed=7 stop=###\nSet temperature=0.3, seed=7, stop='###'.\n"
        "User: /set tempreture=1\nError: Unknown generation option 'tempreture'; did you mean 'temperature'?\n"
        "User: /set\nOptions: temperature=0.3 seed=7 stop='###'.\n"
        "User: Hi\nAssistant: One.\n"
        "User: /set seed=\nSet seed reset.\n"
        "User: Again\nAssistant: Two.\n"
        "User: exit\n"
    )
    params = [event["params"] for event in read_engine_log(script) if event["event"] == "request"]
    assert (params[0]["temperature"], params[0]["seed"], params[0]["stop"][0]) == (0.3, 7, "###")
    assert (params[1]["temperature"], params[1]["seed"]) == (0.3, None)


def test_ctrl_c_stops_the_answer_in_the_engine_and_the_chat_goes_on(tmp_path, fake_script):
    script = fake_script(replies=[LONG, "Next answer."], delay=0.05)
    child = fake_chat(tmp_path, script, "--plain")
    child.expect_exact("User: ")
    child.send("Tell me a long story\r")
    child.expect_exact("word3 ")
    child.sendintr()
    child.expect_exact("[answer stopped]")
    transcript = converse(child, "/stats", "And then?", "exit")
    pattern = (r"User: Tell me a long story\nAssistant: (word0 word1 word2 word3[^\n]*?)\^C\n\[answer stopped\]\n"
               r"User: /stats\nLast answer: prompt 8 tokens, answer (\d+) tokens, ")
    match = re.search(pattern, transcript)
    assert match, transcript
    partial = match.group(1)
    assert transcript.endswith("User: And then?\nAssistant: Next answer.\nUser: exit\n")
    events = read_engine_log(script)
    assert [event["event"] for event in events] == ["request", "abort", "request", "finish"]
    assert events[1]["tokens"] < 40
    # The partial answer stays in the conversation (documented choice).
    assert f"<|assistant|>\n{partial.rstrip()}<|end|>\n<|user|>\nAnd then?" in events[2]["prompt"]


@pytest.mark.parametrize("key", ["eof", "intr"])
def test_ctrl_d_or_ctrl_c_at_an_empty_prompt_exits_cleanly(tmp_path, fake_script, key):
    child = fake_chat(tmp_path, fake_script(replies=["x"]), "--plain")
    child.expect_exact("User: ")
    child.sendeof() if key == "eof" else child.sendintr()
    transcript = finish(child)
    assert transcript.endswith(("User: \n", "User: ^C\n"))


def test_prompt_toolkit_multi_line_input_and_history_across_sessions(tmp_path, fake_script):
    script = fake_script(replies=["Noted."])
    child = fake_chat(tmp_path, script)  # TERM=dumb: prompt_toolkit's plain prompt, plain output
    child.expect_exact("User: ")
    child.waitnoecho()  # prompt_toolkit reads keys now
    child.send("first line\x1b\rsecond line\r")  # Esc-Enter (what Alt-Enter sends) inserts a new line
    child.expect_exact("Noted.")
    child.expect_exact("User: ")
    child.waitnoecho()
    child.sendcontrol("c")  # Ctrl-C at an empty prompt quits
    finish(child)
    assert "+first line\n+second line\n" in (tmp_path / "cache" / "chat_history").read_text()

    child = fake_chat(tmp_path, script)  # a new session recalls the message with Up
    child.expect_exact("User: ")
    child.waitnoecho()
    child.send("\x1b[A\r")
    child.expect_exact("Noted.")
    child.expect_exact("User: ")
    child.waitnoecho()
    child.sendcontrol("d")
    finish(child)
    prompts = [event["prompt"] for event in read_engine_log(script) if event["event"] == "request"]
    assert prompts == ["<|user|>\nfirst line\nsecond line<|end|>\n<|assistant|>\n"] * 2


def test_rich_markdown_and_ctrl_c_on_a_real_terminal(tmp_path, fake_script):
    script = fake_script(replies=["Use **bold** and:\n\n```python\nprint('hi')\n```\n", LONG], delay=0.02)
    child = fake_chat(tmp_path, script, term="xterm-256color")
    for message in ("Show me", "Tell me more"):
        child.expect_exact("User:")
        child.waitnoecho()
        child.send(message + "\r")
    child.expect_exact("word3")
    child.sendintr()
    child.expect_exact("[answer stopped]")
    child.expect_exact("User:")
    child.waitnoecho()
    child.send("exit\r")
    transcript = finish(child)
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", transcript)
    assert "Assistant:" in plain and "bold" in plain and "print" in plain
    assert "**bold**" not in plain and "```" not in plain  # rendered as Markdown, not shown raw
    assert "\x1b[1mbold" in transcript
    assert [event["event"] for event in read_engine_log(script)] == ["request", "finish", "request", "abort"]


def test_tiny_real_model_answers_greedily(tmp_path, tiny_model_dir):
    from lmchat import ChatModel

    settings = {"model_name_or_path": str(tiny_model_dir), "do_sample": False, "max_new_tokens": 6}
    with ChatModel(settings) as model:
        [expected] = model.chat([{"role": "user", "content": "Hi"}])
    child = spawn(tmp_path, "--model_name_or_path", str(tiny_model_dir), "--do_sample", "false",
                  "--max_new_tokens", "6", "--plain")
    transcript = converse(child, "Hi", "/stats", "exit")
    assert f"User: Hi\nAssistant: {expected.response_text}\n[answer cut at the token limit]\n" in transcript
    assert re.search(r"Last answer: prompt \d+ tokens, answer 6 tokens", transcript)
