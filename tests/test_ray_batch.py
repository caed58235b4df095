"""Batch inference on a real two-node Ray cluster (tests/ray_support.py): the Ray Data pipeline over two ChatModel
replicas gives the local run's lines, resumes, records failures, shows progress, and loses no row when a replica
process is killed mid-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")
pytest.importorskip("ray.data")

from lmchat.batch import BatchOptions, Sampler, load_rows, run_batch  # noqa: E402
from lmchat.batch.cli import main  # noqa: E402
from lmchat.batch.output import read_lines  # noqa: E402
from lmchat.batch.ray_executor import RaySampler  # noqa: E402
from lmchat.errors import ConfigError, ModelNotFoundError  # noqa: E402

LF_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "oracles" / "datasets" / "llamafactory"
REPLICA_TITLE = "MapBatches(ChatModelReplica)"  # how Ray titles the replica actors' processes


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def ray_options(cluster, output, **values):
    return BatchOptions(output=str(output), executor="ray", replicas=2, ray_address=cluster.address,
                        progress=False, **values)


@pytest.fixture(scope="module")
def tiny_rows():
    """Alpaca and ShareGPT-with-tools rows; the tiny model's 512-token context makes some tool rows too long
    (failed rows)."""
    return load_rows(["alpaca_en_demo", "glaive_toolcall_en_demo"], LF_DIR, max_samples=5)


@pytest.fixture(scope="module")
def local_lines(tiny_model_dir, tiny_rows, tmp_path_factory):
    """The same rows answered by the local executor: the reference the Ray run must equal."""
    output = tmp_path_factory.mktemp("local") / "local.jsonl"
    config = {"model_name_or_path": str(tiny_model_dir), "do_sample": False, "max_new_tokens": 8}
    run_batch(tiny_rows, config, BatchOptions(output=str(output), concurrency=4, progress=False))
    return read_jsonl(output)


def tiny_config(tiny_model_dir):
    return {"model_name_or_path": str(tiny_model_dir), "do_sample": False, "max_new_tokens": 8}


def test_two_replicas_give_the_local_lines_and_resume_like_it(ray_cluster, tiny_model_dir, tiny_rows, local_lines,
                                                               tmp_path, capsys):
    output = tmp_path / "ray.jsonl"
    partial = "".join(json.dumps(line) + "\n" for line in local_lines[:3])
    output.write_text(partial + '{"id": "cut off by a ki')  # a run killed while writing its fourth line
    summary = run_batch(tiny_rows, tiny_config(tiny_model_dir), ray_options(ray_cluster, output, concurrency=2))
    lines = read_jsonl(output)
    assert lines == local_lines  # same prompts, answers, finish reasons, token counts, failures, in input order
    assert [line["id"] for line in lines] == [row.id for row in tiny_rows]
    failed = [line for line in lines[3:] if "error" in line]
    assert failed and {line["error"]["type"] for line in failed} == {"ContextLengthError"}
    assert (summary["skipped"], summary["completed"], summary["failed"]) == (3, 7, len(failed))
    assert "Resuming: 3 of 10 rows" in capsys.readouterr().err
    assert summary["ray"]["replicas_seen"] == 2 and len(summary["ray"]["rows_by_node"]) == 2  # both nodes worked
    assert sum(summary["ray"]["rows_by_node"].values()) == 7


def test_sampler_api_on_ray_equals_the_local_sampler(ray_cluster, fake_script):
    script = fake_script()  # echo mode: an answer depends on its row only, not on which replica ran it
    config = {"infer_backend": "fake", "model_name_or_path": script}
    rows = [{"instruction": f"question {i}", "output": "answer"} for i in range(6)] + [{"no_instruction": 1}]
    with Sampler(config, concurrency=3, n=2, seed=5) as local:
        expected = local.batch_infer(rows)
    with RaySampler(config, replicas=2, concurrency=3, address=ray_cluster.address, n=2, seed=5) as sampler:
        samples = sampler.batch_infer(rows)
    assert [s.id for s in samples] == [s.id for s in expected]  # input order
    assert [(s.prompt, s.predict, s.failure) for s in samples] == [(s.prompt, s.predict, s.failure) for s in expected]
    assert samples[-1].failure is not None and "no instruction" in samples[-1].failure.message
    assert sampler.model_name == "fake-echo"


def test_rows_over_the_runs_token_cap_are_counted_on_ray_as_locally(ray_cluster, fake_script):
    script = fake_script()
    config = {"infer_backend": "fake", "model_name_or_path": script, "max_new_tokens": 12}
    rows = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": "m", "messages": [{"role": "user", "content": f"q{i}"}], "max_tokens": budget}}
            for i, budget in enumerate([1000, 2, 50, 12])]
    with Sampler(config) as local:
        local.batch_infer(rows)
    with RaySampler(config, replicas=2, address=ray_cluster.address) as sampler:
        sampler.batch_infer(rows)
    assert local.capped_rows == sampler.capped_rows == 2  # 1000 and 50 cut to 12; 2 and 12 kept


def test_a_killed_replica_loses_no_row_and_writes_none_twice(ray_cluster, fake_script, tmp_path):
    script = fake_script(delay=0.02, replies=["a b c d e f g h i j"])
    rows = load_rows(inputs=[write_jsonl(tmp_path / "in.jsonl",
                                         [{"id": f"r{i}", "instruction": f"q {i}"} for i in range(48)])])
    output = tmp_path / "out.jsonl"
    killed: list[int] = []

    def kill_a_replica_once_rows_arrive() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            if output.exists() and output.read_text().count("\n") >= 6:
                pids = ray_cluster.worker_pids(REPLICA_TITLE)
                if pids:
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])
            time.sleep(0.1)

    killer = threading.Thread(target=kill_a_replica_once_rows_arrive, daemon=True)
    killer.start()
    summary = run_batch(rows, {"infer_backend": "fake", "model_name_or_path": script},
                        ray_options(ray_cluster, output, concurrency=4))
    killer.join(timeout=5)
    assert killed, "no replica was killed: the run ended before six rows were written"
    assert killed[0] not in ray_cluster.node_pids()  # the replica's process is gone
    lines = read_jsonl(output)
    assert [line["id"] for line in lines] == [f"r{i}" for i in range(48)]  # every row, exactly once, in order
    assert not [line for line in lines if "error" in line]
    assert all(line["predict"] == "a b c d e f g h i j" for line in lines)
    assert (summary["completed"], summary["failed"]) == (48, 0)


def test_cli_runs_on_ray_with_a_progress_bar(ray_cluster, fake_script, tmp_path):
    script = fake_script()
    source = write_jsonl(tmp_path / "in.jsonl", [{"messages": [{"role": "user", "content": f"hi {i}"}]}
                                                 for i in range(5)])
    output = tmp_path / "out.jsonl"
    command = [sys.executable, "-m", "lmchat.batch", "--input", source, "--output", str(output), "--executor", "ray",
               "--replicas", "2", "--concurrency", "2", "--ray_address", ray_cluster.address,
               "--infer_backend", "fake", "--model_name_or_path", script]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    result = subprocess.run(command, capture_output=True, text=True, timeout=400, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [line["predict"] for line in read_lines(output)] == [f"You said: hi {i}" for i in range(5)]
    assert "5/5" in result.stderr and "infer" in result.stderr  # the progress bar
    assert "5 rows answered (0 failed, 0 already done)" in result.stderr
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert summary["ray"]["executor"] == "ray" and summary["ray"]["replicas"] == 2


def test_a_model_the_replicas_cannot_load_is_one_clear_error(ray_cluster, tmp_path):
    rows = load_rows(inputs=[write_jsonl(tmp_path / "in.jsonl", [{"instruction": "hi"}])])
    config = {"infer_backend": "fake", "model_name_or_path": str(tmp_path / "missing.json")}
    with pytest.raises(ModelNotFoundError, match="missing.json"):
        run_batch(rows, config, ray_options(ray_cluster, tmp_path / "out.jsonl"))


def test_ray_flags_need_the_ray_executor(tmp_path, capsys):
    with pytest.raises(ConfigError, match="replicas.*only apply with executor ray"):
        BatchOptions.from_dict({"replicas": 2})
    source = write_jsonl(tmp_path / "in.jsonl", [{"instruction": "hi"}])
    assert main(["--input", source, "--gpus_per_replica", "1", "--infer_backend", "fake"]) != 0
    assert "gpus_per_replica only apply with executor ray" in capsys.readouterr().err


def test_bad_options_fail_before_any_replica_starts():
    with pytest.raises(ConfigError, match="model_name_or_pth"):
        RaySampler({"model_name_or_pth": "x"})
    with pytest.raises(ConfigError, match="open ChatModel|config"):
        RaySampler(object())  # type: ignore[arg-type]
    with pytest.raises(Exception, match="replicas must be at least 1"):
        RaySampler({"infer_backend": "fake"}, replicas=0)
