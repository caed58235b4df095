"""Batch inference end to end over the scripted fake engine: exact output lines, order, resume after a kill, n > 1,
failures recorded, OpenAI Batch output, tool calls and reasoning, metrics, the sampler API and the flags."""

import argparse
import asyncio
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import read_engine_log, shared_path

from lmchat import ChatModel
from lmchat.batch import BatchOptions, Row, Sampler, load_rows, run_batch
from lmchat.batch.cli import add_arguments, main, run
from lmchat.batch.output import read_lines
from lmchat.errors import ConfigError

LF_DIR = shared_path("oracles", "datasets", "llamafactory")  # missing: these tests fail, never skip
OPENAI_BATCH = shared_path("oracles", "datasets", "vllm", "openai_example_batch.jsonl")
needs_metrics = pytest.mark.skipif(
    not all(importlib.util.find_spec(name) for name in ("jieba", "nltk", "rouge_chinese")),
    reason="the metrics need lmchat[batch] (jieba, nltk, rouge-chinese)",
)


def infer(tmp_path, script, *flags):
    """``python -m lmchat.batch`` in-process with the fake engine: it must succeed; returns the output lines."""
    out = tmp_path / "out.jsonl"
    argv = ["--output", str(out), "--no_progress", *flags, "--infer_backend", "fake", "--model_name_or_path", script]
    assert main(argv) == 0
    return read_jsonl(out)


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()] if Path(path).exists() else []


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def requests(script):
    return [event for event in read_engine_log(script) if event["event"] == "request"]


def test_alpaca_lines_have_llamafactory_fields_and_exact_values(tmp_path, fake_script):
    script = fake_script()
    lines = infer(tmp_path, script, "--dataset", "alpaca_en_demo", "--dataset_dir", str(LF_DIR),
                        "--max_samples", "2")
    raw = json.loads((LF_DIR / "alpaca_en_demo.json").read_text())
    assert lines[0] == {
        "id": "alpaca_en_demo-00000",
        "prompt": "<|user|>\nDescribe a process of making crepes.<|end|>\n<|assistant|>\n",
        "predict": "You said: Describe a process of making crepes.",
        "label": raw[0]["output"],
        "finish_reason": "stop",
        "prompt_tokens": 9,
        "completion_tokens": 9,
    }
    assert [line["id"] for line in lines] == ["alpaca_en_demo-00000", "alpaca_en_demo-00001"]
    # the exact prompts sent (the two rows run concurrently: the engine may see either first)
    assert sorted(r["prompt"] for r in requests(script)) == sorted(line["prompt"] for line in lines)
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert (summary["rows"], summary["completed"], summary["failed"], summary["skipped"]) == (2, 2, 0, 0)
    assert summary["completion_tokens"] == sum(line["completion_tokens"] for line in lines)


def test_lines_are_written_as_they_finish_and_put_in_input_order_at_the_end(tmp_path, fake_script):
    rows = [{"id": "slow", "messages": [{"role": "user", "content": "long"}]}] + [
        {"id": f"fast{i}", "messages": [{"role": "user", "content": f"short {i}"}]} for i in range(3)]
    script = fake_script(replies=[{"match": "long", "text": "w " * 30}, {"text": "ok"}], delay=0.01)
    lines = infer(tmp_path, script, "--input", write_jsonl(tmp_path / "in.jsonl", rows), "--concurrency", "4")
    finishes = [event["request_id"] for event in read_engine_log(script) if event["event"] == "finish"]
    assert finishes[-1].startswith("batch-0-")  # the slow first row finished last...
    assert [line["id"] for line in lines] == ["slow", "fast0", "fast1", "fast2"]  # ...and the file is in order


def test_resume_after_a_real_kill_loses_only_rows_in_flight(tmp_path, fake_script):
    script = fake_script(delay=0.03)
    out = tmp_path / "out.jsonl"
    command = [sys.executable, "-m", "lmchat.batch", "--dataset", "alpaca_en_demo", "--dataset_dir", str(LF_DIR),
               "--max_samples", "16", "--concurrency", "2", "--output", str(out), "--no_progress",
               "--infer_backend", "fake", "--model_name_or_path", script]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while (not out.exists() or out.read_text().count("\n") < 3) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    before = list(read_lines(out))  # complete lines only: the kill may have cut the last one
    assert 3 <= len(before) < 16
    Path(script).write_text(Path(script).read_text().replace('"delay": 0.03', '"delay": 0'))
    requested_before = len(requests(script))
    subprocess.run(command, check=True, capture_output=True)
    after = read_jsonl(out)
    assert [line["id"] for line in after] == [f"alpaca_en_demo-{i:05d}" for i in range(16)]
    assert len(requests(script)) - requested_before == 16 - len(before)  # rows already written are not redone
    assert all(line in after for line in before)


def test_resume_cuts_a_partial_last_line(tmp_path, fake_script, capsys):
    script = fake_script()
    flags = ("--dataset", "identity", "--dataset_dir", str(LF_DIR), "--max_samples", "4")
    infer(tmp_path, script, *flags)
    out = tmp_path / "out.jsonl"
    full = out.read_text().splitlines(keepends=True)
    out.write_text("".join(full[:2]) + full[2][:25])  # a write cut off by a kill
    infer(tmp_path, script, *flags)
    assert out.read_text() == "".join(full)
    assert len(requests(script)) == 4 + 2
    assert "partial last line" in capsys.readouterr().err
    infer(tmp_path, script, *flags)  # complete: nothing to do
    assert len(requests(script)) == 6
    infer(tmp_path, script, *flags, "--overwrite")
    assert len(requests(script)) == 10


def test_n_answers_per_row_with_seeds(tmp_path, fake_script):
    script = fake_script(replies=["one", "two", "three"])
    [line] = infer(tmp_path, script, "--dataset", "identity", "--dataset_dir", str(LF_DIR),
                         "--max_samples", "1", "--n", "3", "--seed", "7")
    assert sorted(line["predict"]) == ["one", "three", "two"]
    assert line["finish_reason"] == ["stop"] * 3 and line["completion_tokens"] == 6
    assert sorted(r["params"]["seed"] for r in requests(script)) == [7, 8, 9]


def test_failed_rows_are_recorded_and_the_run_goes_on(tmp_path, fake_script, capsys):
    rows = [
        {"id": "ok", "messages": [{"role": "user", "content": "fine"}]},
        {"id": "too-long", "messages": [{"role": "user", "content": "word " * 50}]},
        {"id": "bad-image", "messages": [{"role": "user", "content": "look"}], "images": ["missing.png"]},
        {"id": "crash", "messages": [{"role": "user", "content": "explode"}]},
        {"id": "broken", "messages": "not a list"},
    ]
    script = fake_script(context_length=30, replies=[{"match": "explode", "text": "a b c", "error_after": 1},
                                                     {"text": "fine answer"}])
    lines = infer(tmp_path, script, "--input", write_jsonl(tmp_path / "in.jsonl", rows))
    by_id = {line["id"]: line for line in lines}
    assert by_id["ok"]["predict"] == "fine answer" and "error" not in by_id["ok"]
    assert by_id["too-long"]["error"]["type"] == "ContextLengthError"
    assert by_id["bad-image"]["error"] == {"type": "InvalidRequestError", "param": "images",
                                           "message": f"The image file {tmp_path / 'missing.png'} does not exist."}
    assert by_id["crash"]["error"]["type"] == "EngineError" and by_id["crash"]["prompt"].endswith("<|assistant|>\n")
    assert by_id["broken"]["error"]["message"] == "Row broken: no messages"
    assert all(by_id[i]["predict"] is None for i in ("too-long", "bad-image", "crash", "broken"))
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert (summary["completed"], summary["failed"], summary["failed_in_file"]) == (5, 4, 4)
    assert "5 rows answered (4 failed" in capsys.readouterr().err
    Path(script).write_text(Path(script).read_text().replace('"context_length": 30', '"context_length": 4096'))
    lines = infer(tmp_path, script, "--input", str(tmp_path / "in.jsonl"), "--retry_failed")
    assert [line["id"] for line in lines] == ["ok", "too-long", "bad-image", "crash", "broken"]
    assert "error" not in lines[1] and lines[1]["predict"] == "fine answer"
    assert len(requests(script)) == 2 + 2  # ok and crash the first time; too-long and crash again


def test_openai_batch_input_gives_openai_batch_output(tmp_path, fake_script):
    bad = {"custom_id": "request-3", "method": "POST", "url": "/v1/chat/completions",
           "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temprature": 0.5}}
    path = tmp_path / "batch.jsonl"
    path.write_text(OPENAI_BATCH.read_text() + json.dumps(bad) + "\n")
    script = fake_script(name="tiny-fake")
    lines = infer(tmp_path, script, "--input", str(path))
    assert [line["custom_id"] for line in lines] == ["request-1", "request-2", "request-3"]
    first = lines[0]
    assert set(first) == {"id", "custom_id", "response", "error"} and first["error"] is None
    assert first["id"].startswith("batch_req_") and first["response"]["status_code"] == 200
    body = first["response"]["body"]
    assert body["object"] == "chat.completion" and body["model"] == "tiny-fake"
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "You said: Hello world!"},
                                "logprobs": None, "finish_reason": "stop"}]
    assert body["usage"]["completion_tokens"] == 5
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 5
    assert requests(script)[0]["params"]["max_new_tokens"] == 1000  # max_completion_tokens honoured
    assert requests(script)[0]["prompt"].startswith("<|system|>\nYou are a helpful assistant.<|end|>")
    assert lines[2]["response"]["status_code"] == 400 and lines[2]["response"]["body"] is None
    assert lines[2]["error"]["code"] == "InvalidRequestError" and "temperature" in lines[2]["error"]["message"]


def test_tool_calls_are_parsed_when_the_row_has_tools(tmp_path, fake_script):
    call = '<tool_call>\n{"name": "search_recipes", "arguments": {"ingredients": ["egg"]}}\n</tool_call>'
    template = ("{% if tools %}<|tools|>{{ tools | tojson }}<|end|>\n{% endif %}"  # a template that renders tools
                "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}<|assistant|>\n")
    script = fake_script(replies=[call], chat_template=template)
    [line] = infer(tmp_path, script, "--dataset", "glaive_toolcall_en_demo", "--dataset_dir", str(LF_DIR),
                         "--max_samples", "1", "--tool_parser", "hermes")
    assert line["predict"] == call
    [parsed] = line["tool_calls"]
    assert parsed["name"] == "search_recipes" and json.loads(parsed["arguments"]) == {"ingredients": ["egg"]}


def test_reasoning_is_split_out_for_thinking_templates(tmp_path, fake_script):
    script = fake_script(replies=["<think>\nponder\n</think>\n\nDone."])
    [line] = infer(tmp_path, script, "--dataset", "identity", "--dataset_dir", str(LF_DIR), "--max_samples",
                         "1", "--template", "qwen3")
    assert line["prompt"].startswith("<|im_start|>user\nhi<|im_end|>")
    assert line["predict"] == "<think>\nponder\n</think>\n\nDone." and line["reasoning"].strip() == "ponder"


@needs_metrics
def test_metrics_against_labels(tmp_path, fake_script):
    rows = [{"id": "a", "messages": [{"role": "user", "content": "the cat sat"}], "reference": "You said: the cat sat"},
            {"id": "b", "messages": [{"role": "user", "content": "x"}]}]
    infer(tmp_path, fake_script(), "--input", write_jsonl(tmp_path / "in.jsonl", rows), "--metrics")
    metrics = json.loads((tmp_path / "out.summary.json").read_text())["metrics"]
    assert metrics == {"predict_bleu-4": 100.0, "predict_rouge-1": 100.0, "predict_rouge-2": 100.0,
                       "predict_rouge-l": 100.0, "rows": 1}


@needs_metrics
def test_similarity_scores_on_known_strings():
    from lmchat.batch.metrics import similarity_scores

    assert similarity_scores([("same text here", "same text here")])["predict_rouge-l"] == 100.0
    assert similarity_scores([("", "anything")]) == {"predict_bleu-4": 0.0, "predict_rouge-1": 0.0,
                                                     "predict_rouge-2": 0.0, "predict_rouge-l": 0.0, "rows": 1}
    scores = similarity_scores([("the cat sat on the mat", "the cat lay on the mat"), ("a b", "a b")])
    # pinned from LLaMA-Factory's formula (jieba words, rouge-chinese F, NLTK char BLEU-4, method 3)
    # rouge-1 of the first pair: unigram sets {the cat sat on mat} / {the cat lay on mat} share 4 of 5: F = 80
    assert scores == {"predict_bleu-4": 81.2408, "predict_rouge-1": 90.0, "predict_rouge-2": 80.0,
                      "predict_rouge-l": 91.6667, "rows": 2}


# --- the sampler API -------------------------------------------------------------------------------------
@pytest.fixture
def fake_model(fake_script):
    def make(**script):
        return ChatModel({"infer_backend": "fake", "model_name_or_path": fake_script(**script)})

    return make


def test_batch_infer_returns_one_sample_per_row_in_order_sync_and_async(fake_model):
    rows = [{"messages": [{"role": "user", "content": f"question {i}"}]} for i in range(5)]
    with fake_model(delay=0.001) as model:
        sampler = Sampler(model, concurrency=3)
        samples = sampler.batch_infer(rows)
        async_samples = asyncio.run(sampler.abatch_infer(rows))
    assert [s.predict for s in samples] == [[f"You said: question {i}"] for i in range(5)]
    assert [s.predict for s in async_samples] == [s.predict for s in samples]
    assert [s.id for s in samples] == [f"row-{i:05d}" for i in range(5)]
    assert samples[0].prompt == "<|user|>\nquestion 0<|end|>\n<|assistant|>\n" and samples[0].failure is None


def test_generate_streams_what_chat_answers(fake_model):
    messages = [{"role": "user", "content": "stream me"}]
    with fake_model() as model:
        sampler = Sampler(model)
        pieces = list(sampler.generate(messages))

        async def collect():
            return [piece async for piece in sampler.agenerate(messages)]

        assert pieces == asyncio.run(collect()) == ["You", " said:", " stream", " me"]
        assert "".join(pieces) == model.chat(messages)[0].response_text


def test_rows_are_submitted_concurrently_up_to_the_limit(fake_model):
    rows = [Row(id=str(i), messages=[{"role": "user", "content": "a b c d e"}]) for i in range(12)]
    with fake_model(delay=0.005) as model:
        Sampler(model, concurrency=4).batch_infer(rows)
    log = read_engine_log(model.config.model_name_or_path)
    in_flight = peak = 0
    for event in log:
        in_flight += 1 if event["event"] == "request" else -1
        peak = max(peak, in_flight)
    assert peak == 4  # batching engines get full batches, and no more than the limit


def test_leaving_a_sample_stream_early_aborts_rows_in_flight(fake_model):
    # the first row's answer is short, so the next two are still generating when the stream is left
    rows = [Row(id=str(i), messages=[{"role": "user", "content": "x " * (1 if i == 0 else 40)}]) for i in range(12)]
    with fake_model(delay=0.01) as model:
        stream = Sampler(model, concurrency=3).stream_samples(rows)
        next(stream)
        stream.close()
        log = read_engine_log(model.config.model_name_or_path)
    assert len([e for e in log if e["event"] == "request"]) <= 6
    assert len([e for e in log if e["event"] == "abort"]) >= 2


def test_sampler_owns_a_model_built_from_a_config(fake_script):
    with Sampler({"infer_backend": "fake", "model_name_or_path": fake_script()}, n=2) as sampler:
        [sample] = sampler.batch_infer([{"instruction": "hi", "output": "hello"}])
    assert sample.row.label == "hello" and len(sample.answers) == 2
    assert sampler.model._loop.loop.is_closed()


# --- flags and options -----------------------------------------------------------------------------------
def test_run_takes_batch_keys_from_the_config_file_and_flags_override_them(tmp_path, fake_script):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--n", "2"])
    out = tmp_path / "preds.jsonl"
    config = {"infer_backend": "fake", "model_name_or_path": fake_script(), "dataset": "identity,alpaca_en_demo",
              "dataset_dir": str(LF_DIR), "max_samples": 1, "save_name": str(out), "n": 5, "progress": False}
    assert run(args, config) == 0
    lines = read_jsonl(out)
    assert [line["id"] for line in lines] == ["identity-00000", "alpaca_en_demo-00000"]
    assert all(len(line["predict"]) == 2 for line in lines)


def test_help_and_option_errors(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    help_text = capsys.readouterr().out
    assert exit_info.value.code == 0 and "--dataset_dir" in help_text and "(default: 64)" in help_text
    with pytest.raises(ConfigError, match="did you mean 'concurrency'"):
        BatchOptions.from_dict({"concurency": 3})
    assert main(["--dataset", "nope", "--dataset_dir", str(LF_DIR), "--infer_backend", "fake"]) == 2
    assert "Error: Unknown dataset 'nope'" in capsys.readouterr().err
    assert main(["--input", str(tmp_path / "none.jsonl"), "--infer_backend", "fake"]) == 2
    rows = write_jsonl(tmp_path / "in.jsonl", [{"messages": [{"role": "user", "content": "x"}]}])
    assert main(["--input", rows, "--stop", "", "--infer_backend", "fake", "--no_progress"]) == 1  # once, not per row
    assert "stop strings must not be empty" in capsys.readouterr().err


def test_run_batch_as_a_library(tmp_path, fake_model):
    rows = load_rows(["identity"], LF_DIR, max_samples=3)
    with fake_model() as model:
        summary = run_batch(rows, model, BatchOptions(output=str(tmp_path / "r.jsonl"), progress=False))
        assert not model._loop.loop.is_closed()  # a model passed in stays open
    assert summary["completed"] == 3 and len(read_jsonl(tmp_path / "r.jsonl")) == 3


def test_lmchat_infer_runs_batch_inference(tmp_path, fake_script):
    cli = pytest.importorskip("lmchat.cli.main")
    out = tmp_path / "preds.jsonl"
    code = cli.main(["infer", "--dataset", "identity", "--dataset_dir", str(LF_DIR), "--max_samples", "2",
                     "--output", str(out), "--no_progress", "--infer_backend", "fake",
                     "--model_name_or_path", fake_script()])
    assert code == 0 and [line["predict"] for line in read_jsonl(out)] == ["You said: hi", "You said: hello"]


# --- one run per results file, de-duplicated resume, run-level caps ----------------------------------------------
def test_a_second_run_on_the_same_output_fails_at_once_while_the_first_goes_on(tmp_path, fake_script, capsys):
    script = fake_script(delay=0.05)
    out = tmp_path / "out.jsonl"
    flags = ["--dataset", "alpaca_en_demo", "--dataset_dir", str(LF_DIR), "--max_samples", "12", "--concurrency",
             "2", "--output", str(out), "--no_progress", "--infer_backend", "fake", "--model_name_or_path", script]
    first = subprocess.Popen([sys.executable, "-m", "lmchat.batch", *flags], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while (not out.exists() or out.read_text().count("\n") < 1) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert main(flags) != 0  # the second run, in this process, while the first is writing
    assert first.poll() is None, "the first run had finished before the second started: no overlap was tested"
    error = capsys.readouterr().err
    assert "Another run is writing" in error and "--output" in error and "Traceback" not in error
    assert first.wait(timeout=120) == 0, first.stderr.read()
    lines = read_jsonl(out)
    assert [line["id"] for line in lines] == [f"alpaca_en_demo-{i:05d}" for i in range(12)]  # 12 rows, 12 lines
    assert not (tmp_path / "out.jsonl.lock").exists()  # the lock file goes with the run
    assert main(flags) == 0  # once the first is done, the file is free again


def test_resume_keeps_one_line_per_row(tmp_path, fake_script, capsys):
    script = fake_script()
    out = tmp_path / "out.jsonl"
    rows = [{"instruction": f"q{i}", "output": ""} for i in range(4)]
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    infer(tmp_path, script, "--input", data)
    lines = read_jsonl(out)
    failed = {**lines[1], "predict": "", "error": {"type": "EngineError", "message": "x"}}
    write_jsonl(out, [lines[0], lines[0], failed, lines[1], lines[2], lines[2]])  # as two unlocked runs left it
    before = len(requests(script))
    again = infer(tmp_path, script, "--input", data)
    assert [line["id"] for line in again] == [line["id"] for line in lines]  # 4 rows, 4 lines
    assert again[1] == lines[1]  # the answered line wins over the failed one
    assert len(requests(script)) - before == 1  # only the missing row was answered
    assert "Removed 3 repeated lines" in capsys.readouterr().err


def test_a_rows_own_n_cannot_exceed_the_runs(tmp_path, fake_script, capsys):
    rows = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}}
            for i, extra in enumerate([{"n": 50}, {"n": 2}, {}])]
    path = write_jsonl(tmp_path / "batch.jsonl", rows)
    script = fake_script()
    lines = infer(tmp_path, script, "--input", path, "--n", "2")
    assert [len(line["response"]["body"]["choices"]) for line in lines] == [2, 2, 2]  # 50 capped to the run's 2
    assert len(requests(script)) == 6  # one engine request per answer
    assert "1 rows asked for more than this run's n (2) and were capped to it." in capsys.readouterr().err
    before = len(requests(script))
    (tmp_path / "b").mkdir()
    again = infer(tmp_path / "b", script, "--input", path)  # no --n: a row's own n holds
    assert [len(line["response"]["body"]["choices"]) for line in again] == [50, 2, 1]
    assert len(requests(script)) - before == 53


def test_a_rows_own_token_budget_cannot_exceed_the_runs(tmp_path, fake_script, capsys):
    rows = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}], key: value}}
            for i, (key, value) in enumerate([("max_completion_tokens", 1000), ("max_tokens", 2), ("n", 1)])]
    path = write_jsonl(tmp_path / "batch.jsonl", rows)
    script = fake_script()
    infer(tmp_path, script, "--input", path, "--max_new_tokens", "12")
    budgets = sorted(event["params"]["max_new_tokens"] for event in requests(script))
    assert budgets == [2, 12, 12]  # 1000 capped to the run's 12; a smaller one kept
    assert "1 rows asked for more than this run's max_new_tokens (12)" in capsys.readouterr().err
    before = len(requests(script))
    (tmp_path / "b").mkdir()
    infer(tmp_path / "b", script, "--input", path)  # no --max_new_tokens: the row's own budget holds
    assert sorted(event["params"]["max_new_tokens"] for event in requests(script)[before:]) == [2, 1000, 1024]
