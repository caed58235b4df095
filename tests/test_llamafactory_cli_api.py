"""LLaMA-Factory's command lines, environment variables, Python scripts and API clients work against lmchat.

The scripts in ``llamafactory_scripts/`` are written as LLaMA-Factory users write theirs (its run_chat loop, its
end-to-end chat checks, its ``scripts/api_example`` clients); only their import names lmchat. They run as
subprocesses against the real ``lmchat`` command and a real server on loopback, through the official openai client.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import read_engine_log
from lmchat.cli.main import build_parser, main
from lmchat.cli.options import model_args, normalise_flags
from lmchat.cli.settings_help import settings_reference
from lmchat.config.model_config import public_fields
from lmchat.templates.registry import template_names

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "tests" / "llamafactory_scripts"
LF_DIR = REPO.parent / "shared" / "oracles" / "datasets" / "llamafactory"
GPA_CALL = ('<tool_call>\n{"name": "calculate_gpa", "arguments": {"grades": ["A", "A", "B", "C"], '
            '"hours": [3, 4, 3, 2]}}\n</tool_call>')
GPA_TEXT = "Based on the grades and credit hours you provided, your Grade Point Average (GPA) is 3.42."


def run(*command: str, env: dict | None = None, stdin: str = "", timeout: float = 300) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    for name in ("API_HOST", "API_PORT", "API_KEY", "API_MODEL_NAME", "LMCHAT_API_KEY"):
        if env is None or name not in env:
            environ.pop(name, None)
    return subprocess.run(command, input=stdin, capture_output=True, text=True, env=environ, timeout=timeout,
                          cwd=REPO)


def parse(*argv: str) -> argparse.Namespace:
    parser = build_parser(argv[0])
    args, extras = parser.parse_known_args(normalise_flags(argv, parser.subcommands[argv[0]]))
    assert extras == []
    return args


# --- command lines ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["chat", "serve", "webui", "infer"])
def test_key_value_arguments_override_the_yaml_file(command, tmp_path):
    path = tmp_path / "llama3.yaml"
    path.write_text("model_name_or_path: some/model\ntemplate: llama3\ninfer_backend: huggingface\n")
    args = parse(command, str(path), "infer_backend=vllm", "vllm_config={\"max_num_seqs\": 4}", "top_p=0.5",
                 "--default_system", "a=b", "lora_rank=8")
    settings = model_args(args)
    assert (settings["infer_backend"], settings["top_p"], settings["default_system"]) == ("vllm", "0.5", "a=b")
    assert settings["vllm_config"] == {"max_num_seqs": 4} and settings["lora_rank"] == 8
    assert settings["template"] == "llama3"  # from the file


@pytest.mark.parametrize(
    ("command", "spellings", "dest", "value"),
    [
        ("serve", ["--api-key", "--api_key"], "api_key", ["k"]),
        ("serve", ["--served-model-name", "--served_model_name"], "served_model_name", ["m"]),
        ("serve", ["--max-body-bytes", "--max_body_bytes"], "max_body_bytes", 7),
        ("infer", ["--dataset-dir", "--dataset_dir"], "dataset_dir", "d"),
        ("infer", ["--save-name", "--save_name"], "output", "o.jsonl"),
        ("infer", ["--retry-failed", "--retry_failed"], "retry_failed", True),
        ("chat", ["--model-name-or-path", "--model_name_or_path"], "model_name_or_path", "m"),
        ("score", ["--infer-backend", "--infer_backend"], "infer_backend", "fake"),
    ],
)
def test_every_flag_takes_both_spellings(command, spellings, dest, value):
    for flag in spellings:
        argv = [command, flag] if value is True else [command, flag, *(value if isinstance(value, list) else
                                                                         [str(value)])]
        assert getattr(parse(*argv), dest) == value


def test_lmchat_api_is_serve_and_webchat_is_webui():
    from lmchat.cli.main import command_of

    assert (command_of(["api", "x.yaml"]), command_of(["--debug", "webchat"]), command_of(["chat"])) == (
        "serve", "webui", "chat")
    assert parse("serve", "--api_key", "k").api_key == ["k"]


def test_help_config_lists_every_setting_and_template(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--help-config"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for name in (*public_fields(), *template_names(), "lora_rank", "export_dir", "API_MODEL_NAME"):
        assert name in text


def test_the_configuration_doc_is_the_generated_reference(monkeypatch):
    """docs/configuration.md is ``lmchat --help-config markdown``: regenerate it when a setting changes."""
    from lmchat.engines import registry

    monkeypatch.setattr(registry, "_registered", {})  # engines other tests registered are not lmchat's
    assert (REPO / "docs" / "configuration.md").read_text(encoding="utf-8") == settings_reference(markdown=True)


def test_cli_demo_script_reads_the_yaml_and_key_value_overrides(tmp_path, fake_script):
    path = tmp_path / "llama3.yaml"
    path.write_text(yaml.safe_dump({"model_name_or_path": "meta-llama/Meta-Llama-3-8B-Instruct", "template": "llama3",
                                    "infer_backend": "huggingface", "trust_remote_code": True}))
    script = fake_script(replies=["Hello! How can I help?", "Still here."])
    result = run(sys.executable, str(SCRIPTS / "cli_demo.py"), str(path), "infer_backend=fake",
                 f"model_name_or_path={script}", stdin="Hi\nclear\nAnd now?\nexit\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "Welcome to the CLI application, use `clear` to remove the history, use `exit` to exit the application.\n"
        "\nUser: Assistant: Hello! How can I help?\n\nUser: History has been removed.\n"
        "\nUser: Assistant: Still here.\n\nUser: "
    )
    [first, second] = [event["prompt"] for event in read_engine_log(script) if event["event"] == "request"]
    assert first.startswith("<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>")  # LLaMA-Factory's llama3
    assert "Hi" not in second  # "clear" emptied the history


def test_chat_e2e_script_on_a_tiny_model(tiny_model_dir):
    result = run(sys.executable, str(SCRIPTS / "chat_e2e.py"), str(tiny_model_dir))
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert lines["engine"] == "huggingface huggingface True"
    text, length, prompt_length, reason = lines["chat"].rsplit(" ", 3)
    assert (length, reason) == ("4", "length") and int(prompt_length) > 5
    assert lines["stream"] == text  # greedy: the streamed answer is the same text
    count, lengths = lines["sampled"].split(" ", 1)
    assert count == "2" and all(0 < n <= 3 for n in json.loads(lengths))


# --- the server: LLaMA-Factory's variables and clients ------------------------------------------------------------
class LmchatServer:
    """``python -m lmchat ARGS`` (no --host/--port: the environment says where), ready once /health answers."""

    def __init__(self, *args: str, env: dict[str, str]) -> None:
        environ = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
        self.port = int(env["API_PORT"])
        self.process = subprocess.Popen([sys.executable, "-m", "lmchat", *args], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, env=environ, cwd=REPO)
        deadline = time.monotonic() + 240
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"the server did not start: {self.output}")
            time.sleep(0.2)

    def _ready(self) -> bool:
        import httpx

        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        self.output = self.process.communicate(timeout=60)[0]

    def __enter__(self) -> LmchatServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _free_port() -> str:
    from test_server_support import free_port

    return str(free_port())


def test_llamafactory_api_variables_key_and_tool_call_client(tmp_path, fake_script):
    pytest.importorskip("uvicorn")
    import httpx
    import openai

    script = fake_script(replies=[GPA_CALL, GPA_TEXT, "ok"], name="my-lora")
    config = tmp_path / "qwen_lora_sft.yaml"
    config.write_text(yaml.safe_dump({"model_name_or_path": "Qwen/Qwen2.5-7B-Instruct", "template": "qwen",
                                      "finetuning_type": "lora", "infer_backend": "huggingface"}))
    env = {"API_PORT": _free_port(), "API_KEY": "sk-lf", "API_MODEL_NAME": "gpt-3.5-turbo"}
    with LmchatServer("api", str(config), "infer_backend=fake", f"model_name_or_path={script}", env=env) as server:
        base = f"http://127.0.0.1:{server.port}"
        assert httpx.get(f"{base}/v1/models").status_code == 401  # API_KEY protects the server
        models = httpx.get(f"{base}/v1/models", headers={"Authorization": "Bearer sk-lf"}).json()
        assert [card["id"] for card in models["data"]] == ["gpt-3.5-turbo"]
        client = run(sys.executable, str(SCRIPTS / "api_toolcall.py"), env={k: env[k] for k in ("API_PORT",
                                                                                                "API_KEY")})
        assert client.returncode == 0, client.stderr
        assert client.stdout == (
            "Function(arguments='{\"grades\": [\"A\", \"A\", \"B\", \"C\"], \"hours\": [3, 4, 3, 2]}', "
            f"name='calculate_gpa')\n{GPA_TEXT}\n"
        )
        wrong = openai.OpenAI(api_key="sk-wrong", base_url=f"{base}/v1", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.chat.completions.create(model="test", messages=[{"role": "user", "content": "Hi"}])
        right = openai.OpenAI(api_key="sk-lf", base_url=f"{base}/v1", max_retries=0)
        greedy = right.chat.completions.create(model="anything-at-all", messages=[{"role": "user", "content": "Hi"}],
                                               extra_body={"do_sample": False})
        assert greedy.choices[0].message.content == "ok"
    requests = [event for event in read_engine_log(script) if event["event"] == "request"]
    assert "<tool_response>\n{\"gpa\": 3.42}\n</tool_response>" in requests[1]["prompt"]
    assert [request["params"]["do_sample"] for request in requests] == [True, True, False]
    assert "Serving my-lora as gpt-3.5-turbo on http://127.0.0.1:" in server.output


def test_api_text_parts_client_on_a_tiny_model(tiny_model_dir):
    pytest.importorskip("uvicorn")
    env = {"API_PORT": _free_port()}
    with LmchatServer("serve", "--model-name-or-path", str(tiny_model_dir), "template=llama3", "max_new_tokens=5",
                      "do_sample=false", env=env) as server:
        client = run(sys.executable, str(SCRIPTS / "api_text_parts.py"), env=env)
    assert client.returncode == 0, client.stderr
    # the start-up log says what was chosen: engine, weights, forward pass, threads, batch
    assert (f"Running {tiny_model_dir.name} on the transformers engine (float32 weights, lean" in server.output
            and " threads, up to 32 streams batched, on cpu)" in server.output), server.output[-2000:]
    round1, round2, usage = client.stdout.splitlines()
    assert round1.startswith("Round 1: ") and round2.startswith("Round 2: ")
    prompt_tokens, completion_tokens = map(int, usage.removeprefix("Usage: ").split())
    assert completion_tokens == 5 and prompt_tokens > 30  # the second round carries the first


def test_flags_win_over_the_variables_and_any_model_follows_them():
    from lmchat.server.cli import add_arguments, settings_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    environ = {"API_HOST": "0.0.0.0", "API_PORT": "9001", "API_KEY": "env-key", "API_MODEL_NAME": "lf-model"}
    from_env = settings_from_args(parser.parse_args([]), environ)
    assert (from_env.host, from_env.port, from_env.api_keys, from_env.served_model_names) == (
        "0.0.0.0", 9001, ("env-key",), ("lf-model",))
    assert from_env.accept_any_model and from_env.exposure_warning() is None
    flags = settings_from_args(parser.parse_args(["--host", "127.0.0.1", "--port", "9002", "--api-key", "flag-key",
                                                  "--served-model-name", "mine", "--no-accept-any-model"]), environ)
    assert (flags.host, flags.port, flags.api_keys, flags.served_model_names, flags.accept_any_model) == (
        "127.0.0.1", 9002, ("flag-key",), ("mine",), False)
    plain = settings_from_args(parser.parse_args([]), {})
    assert (plain.host, plain.port, plain.api_keys, plain.accept_any_model) == ("127.0.0.1", 8000, (), False)
    assert settings_from_args(parser.parse_args([]), {"LMCHAT_API_KEY": "a", "API_KEY": "b"}).api_keys == ("a",)
    from lmchat.errors import ConfigError

    with pytest.raises(ConfigError, match="API_PORT must be a port number, got 'eighty'"):
        settings_from_args(parser.parse_args([]), {"API_PORT": "eighty"})


# --- batch inference: vllm_infer.py's flags ------------------------------------------------------------------------
def test_vllm_infer_flags_and_metric_names(tmp_path, fake_script):
    pytest.importorskip("jieba")
    script = fake_script(replies=["x"])
    out, matrix = tmp_path / "generated_predictions.jsonl", tmp_path / "predict_results.json"
    code = main(["infer", "--model_name_or_path", script, "--infer_backend", "fake", "--dataset", "alpaca_en_demo",
                 "--dataset-dir", str(LF_DIR), "--template", "default", "--cutoff_len", "1024", "--max_samples", "3",
                 "--vllm_config", "{}", "--save_name", str(out), "--matrix_save_name", str(matrix),
                 "--temperature", "0.95", "--top_p", "0.7", "--top_k", "50", "--max_new_tokens", "8",
                 "--repetition_penalty", "1.0", "--skip_special_tokens", "True", "--default_system", "Be brief.",
                 "--enable_thinking", "True", "--seed", "42", "--pipeline_parallel_size", "1",
                 "--image_max_pixels", "589824", "--image_min_pixels", "1024", "--video_fps", "2.0",
                 "--video_maxlen", "128", "--batch_size", "2", "--no_progress"])
    assert code == 0
    assert len(out.read_text().splitlines()) == 3
    scores = json.loads(matrix.read_text())
    assert list(scores) == ["predict_bleu-4", "predict_rouge-1", "predict_rouge-2", "predict_rouge-l",
                            "predict_model_preparation_time", "predict_runtime", "predict_samples_per_second",
                            "predict_steps_per_second"]
    summary = json.loads(out.with_name(out.stem + ".summary.json").read_text())
    assert summary["metrics"]["predict_bleu-4"] == scores["predict_bleu-4"]
    requests = [event for event in read_engine_log(script) if event["event"] == "request"]
    assert requests[0]["prompt"].startswith("System: Be brief.")


def test_pipeline_parallel_needs_vllm(tmp_path, fake_script, capsys):
    code = main(["infer", "--model_name_or_path", fake_script(), "--infer_backend", "fake", "--input",
                 str(LF_DIR / "alpaca_en_demo.json"), "--pipeline-parallel-size", "2", "--no_progress",
                 "--output", str(tmp_path / "o.jsonl")])
    assert code == 2
    assert capsys.readouterr().err == (
        "Error: pipeline_parallel_size 2 needs infer_backend vllm; the fake engine runs on one device.\n"
    )


def test_vllm_infer_settings_reach_the_vllm_engine_config():
    from lmchat.batch.cli import engine_settings
    from lmchat.batch.runner import BatchOptions

    settings = engine_settings(BatchOptions(pipeline_parallel_size=2),
                               {"infer_backend": "vllm", "cutoff_len": 1024, "max_new_tokens": 512,
                                "vllm_config": '{"max_num_seqs": 16}'})
    assert settings["vllm_config"] == {"max_num_seqs": 16, "pipeline_parallel_size": 2}
    assert settings["vllm_maxlen"] == 1536  # vllm_infer.py's max_model_len: cutoff_len + max_new_tokens
