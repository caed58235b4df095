"""``lmchat`` as scripts use it: stdin piped, exact stdout, one error line on stderr and the exit code."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import read_engine_log


def lmchat(*args: str, stdin: str = "", timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("LMCHAT_PLAIN", None)
    return subprocess.run([sys.executable, "-m", "lmchat", *args], input=stdin, capture_output=True, text=True,
                          env=env, timeout=timeout)


def test_each_piped_line_is_answered_then_the_program_exits(fake_script):
    script = fake_script(replies=["First answer.", "Second\nanswer.", "Third."])
    stdin = 'Hi\n\nclear\n"""\nline one\nline two\n"""\nLast\n'
    result = lmchat("chat", "--infer_backend", "fake", "--model_name_or_path", script, stdin=stdin)
    assert (result.stdout, result.stderr, result.returncode) == (
        "First answer.\nSecond\nanswer.\nThird.\n", "History has been removed.\n", 0
    )
    prompts = [event["prompt"] for event in read_engine_log(script) if event["event"] == "request"]
    assert prompts[1] == "<|user|>\nline one\nline two<|end|>\n<|assistant|>\n"


def test_an_error_in_piped_input_is_one_line_and_makes_the_exit_code_non_zero(fake_script):
    script = fake_script(replies=["ok"])
    result = lmchat("chat", "--infer_backend", "fake", "--model_name_or_path", script, stdin="/set top_k=-1\nHi\n")
    assert result.stdout == "ok\n" and result.returncode == 1
    assert result.stderr.startswith("Error: Invalid value for 'top_k'") and result.stderr.count("\n") == 1


def test_score_prints_one_score_per_text(fake_script):
    script = fake_script(reward=True)
    result = lmchat("score", "--infer_backend", "fake", "--model_name_or_path", script,
                    stdin='one two\n\n{"text": "a b c", "id": 1}\n')
    assert (result.stdout, result.stderr, result.returncode) == ("2.0\n3.0\n", "", 0)


@pytest.mark.parametrize(
    ("args", "line", "code"),
    [
        (["chat", "--infer_backend", "fake", "--model_name_or_path", "missing.json"],
         "Error: Fake engine script not found: missing.json", 1),
        (["chat", "--infer_backend", "fake", "--tempreature", "0.3"],
         "Error: Unknown option '--tempreature'; did you mean '--temperature'? Every option: lmchat chat --help; "
         "every setting: lmchat --help-config.", 2),
        (["chat", "--infer_backend", "fake", "--temperature", "hot"],
         "Error: Invalid value for 'temperature': Input should be a valid number, unable to parse string as a "
         "number (got 'hot').", 2),
        (["score", "--infer_backend", "fake", "--input", "no-such-texts.txt"],
         "Error: No such file or directory: no-such-texts.txt", 1),
    ],
)
def test_errors_are_one_line_on_stderr_with_a_non_zero_exit(args, line, code):
    result = lmchat(*args)
    assert (result.stderr, result.stdout, result.returncode) == (line + "\n", "", code)


def test_an_unknown_engine_is_one_line_naming_the_engines():
    result = lmchat("chat", "--infer_backend", "hugingface")
    assert result.stderr == "Error: Unknown infer_backend 'hugingface'; did you mean 'huggingface'?\n"
    assert result.returncode == 2


def test_debug_shows_the_traceback(fake_script):
    result = lmchat("chat", "--debug", "--infer_backend", "fake", "--model_name_or_path", "missing.json")
    assert result.stderr.startswith("Traceback") and result.stderr.endswith("Error: Fake engine script not found: "
                                                                             "missing.json\n")


def test_help_and_python_dash_m():
    result = lmchat("--help")
    assert result.returncode == 0 and "chat" in result.stdout and "score" in result.stdout
    result = lmchat("chat", "--help")
    assert result.returncode == 0 and "--model_name_or_path" in result.stdout and "/regen" in result.stdout


@pytest.mark.slow
def test_make_chat_default_model_loads_with_no_flags(default_model_dir):
    """What `make chat` runs (`lmchat chat`, no flags), answering one piped line greedily."""
    result = lmchat("chat", "--do_sample", "false", "--max_new_tokens", "12", stdin="What is 2+2?\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() and result.stdout.count("\n") >= 1
    # the default model is a GGUF: llama.cpp runs it where `make setup` installed it (lmchat.engines.choice)
    engine = "llama.cpp" if importlib.util.find_spec("llama_cpp") else "transformers"
    assert result.stderr.startswith(f"lmchat: {engine} engine (the default model is a GGUF"), result.stderr


def test_ctrl_c_during_a_piped_answer_aborts_it_and_ends_the_program(fake_script):
    script = fake_script(replies=[" ".join(f"word{i}" for i in range(40))], delay=0.05)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    args = [sys.executable, "-m", "lmchat", "chat", "--infer_backend", "fake", "--model_name_or_path", script]
    with subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env) as process:
        process.stdin.write("Hi\nNever asked\n")
        process.stdin.flush()
        seen = ""
        while "word3" not in seen:
            char = process.stdout.read(1)
            assert char, "the program ended before the answer streamed"
            seen += char
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert (seen + stdout).startswith("word0 word1 word2 word3") and (seen + stdout).count("\n") == 1
    assert stderr == "[answer stopped]\nInterrupted.\n"
    assert [event["event"] for event in read_engine_log(script)] == ["request", "abort"]


def test_image_attaches_media_to_the_next_message_and_they_stay_in_the_history(tmp_path, fake_script):
    from media_files import png_bytes, write

    script = fake_script(media=["image"])
    first, second = write(tmp_path, "a.png", png_bytes((40, 30))), write(tmp_path, "b.png", png_bytes((50, 40)))
    saved = tmp_path / "saved.json"
    stdin = (f"/image {first}\n/image {tmp_path / 'nope.png'}\n/image {second}\nLook\n/video {first}\nAgain\n"
             f"/save {saved}\n/load {saved}\nOnce more\n")
    result = lmchat("chat", "--infer_backend", "fake", "--model_name_or_path", script, stdin=stdin)
    assert result.stdout == ("You said: <image><image>Look [image 40x30] [image 50x40]\n"
                             "You said: Again [image 40x30] [image 50x40]\n"
                             "You said: Once more [image 40x30] [image 50x40]\n")
    assert result.stderr.splitlines() == [
        f"Attached image {first}; it goes with your next message.",
        f"Error: No such image file: {tmp_path / 'nope.png'}.",
        f"Attached image {second}; 2 media go with your next message.",
        "Error: The fake engine with this model does not accept videos.",
        f"Saved 4 messages to {saved}.", f"Loaded 4 messages from {saved}.",
    ]
    assert result.returncode == 1  # two errors on the way
    parts = json.loads(saved.read_text())[0]["content"]
    assert parts == [{"type": "image_url", "image_url": {"url": str(first)}},
                     {"type": "image_url", "image_url": {"url": str(second)}}, {"type": "text", "text": "Look"}]


def test_a_message_that_fails_keeps_its_media_for_the_next_one(tmp_path, fake_script):
    from media_files import png_bytes, write

    script = fake_script(media=["image"], context_length=40)
    image = write(tmp_path, "a.png", png_bytes((40, 30)))
    stdin = f"/image {image}\n{'word ' * 60}\nShort\n"
    result = lmchat("chat", "--infer_backend", "fake", "--model_name_or_path", script, stdin=stdin)
    assert result.stdout == "You said: <image>Short [image 40x30]\n"
    assert "ContextLengthError" in result.stderr or "no room for an answer" in result.stderr
