"""Batch inference inputs: LLaMA-Factory datasets through dataset_info.json, OpenAI messages and Batch lines, and
every file kind (JSON, JSONL, Parquet, CSV, folders, datasets saved on disk), all to the same rows."""

import csv
import json
from pathlib import Path

import pytest
from conftest import shared_path

from lmchat.batch import Row, load_rows
from lmchat.batch.sampler import as_rows
from lmchat.errors import ConfigError

DATASETS = shared_path("oracles", "datasets")  # missing: these tests fail, never skip
LF_DIR = shared_path("oracles", "datasets", "llamafactory")


def test_alpaca_dataset_by_name_as_llamafactory_reads_it():
    rows = load_rows(["alpaca_en_demo"], LF_DIR)
    raw = json.loads((LF_DIR / "alpaca_en_demo.json").read_text())
    assert len(rows) == 999
    assert rows[5] == Row(  # instruction and input joined by a newline, as LLaMA-Factory does
        id="alpaca_en_demo-00005",
        messages=[{"role": "user", "content": raw[5]["instruction"] + "\n" + raw[5]["input"]}],
        label=raw[5]["output"], position=5,
    )
    assert rows[1].messages == [{"role": "user", "content": raw[1]["instruction"]}]  # empty input: no newline
    assert [row.position for row in rows[:3]] == [0, 1, 2]


def test_identity_placeholders_are_left_as_in_the_data():
    [row] = load_rows(["identity"], LF_DIR, max_samples=1)
    assert row.messages == [{"role": "user", "content": "hi"}]
    assert "{{name}}" in row.label and "{{author}}" in row.label


def test_max_samples_applies_to_each_dataset_and_positions_run_on():
    rows = load_rows(["identity", "alpaca_en_demo"], LF_DIR, max_samples=2)
    assert [row.id for row in rows] == ["identity-00000", "identity-00001", "alpaca_en_demo-00000",
                                        "alpaca_en_demo-00001"]
    assert [row.position for row in rows] == [0, 1, 2, 3]


def test_sharegpt_tool_dataset_keeps_tools_and_splits_the_last_answer_off():
    [row] = load_rows(["glaive_toolcall_en_demo"], LF_DIR, max_samples=1)
    raw = json.loads((LF_DIR / "glaive_toolcall_en_demo.json").read_text())[0]
    assert row.tools == raw["tools"] and isinstance(row.tools, str)
    assert row.label == raw["conversations"][-1]["value"]
    roles = [message["role"] for message in row.messages]
    assert roles == ["user", "assistant", "user", "function", "observation", "assistant", "user"]
    assert row.messages[3]["content"] == raw["conversations"][3]["value"]


def test_sharegpt_tags_from_dataset_info_and_images_resolved_against_the_dataset_dir():
    rows = load_rows(["mllm_demo"], LF_DIR)
    assert rows[0].images == (str(LF_DIR / "mllm_demo_data/1.jpg"),) * 2
    assert all(Path(image).is_file() for row in rows for image in row.images)
    assert rows[0].messages[0] == {"role": "user", "content": "<image>Who are they?"}
    assert rows[0].label == "They are celebrating on the soccer field."


def test_openai_batch_lines_keep_custom_id_and_options():
    rows = load_rows(inputs=[DATASETS / "vllm" / "openai_example_batch.jsonl"])
    assert [row.id for row in rows] == ["request-1", "request-2"]
    assert rows[0].is_openai_batch and rows[0].generation == {"max_completion_tokens": 1000}
    assert rows[0].messages == [{"role": "system", "content": "You are a helpful assistant."},
                                {"role": "user", "content": "Hello world!"}]
    derived = load_rows(inputs=[DATASETS / "derived" / "alpaca_en_demo.openai_batch_input.jsonl"])
    assert len(derived) == 50 and derived[0].generation == {"max_completion_tokens": 256, "temperature": 0}


def test_openai_messages_with_reference_and_tool_call_history():
    rows = load_rows(inputs=[DATASETS / "derived" / "alpaca_en_demo.openai_chat.jsonl"], max_samples=2)
    lf = load_rows(["alpaca_en_demo"], LF_DIR, max_samples=2)
    assert [row.id for row in rows] == ["alpaca_en_demo-0000", "alpaca_en_demo-0001"]
    assert [(row.messages, row.label) for row in rows] == [(row.messages, row.label) for row in lf]
    [tool_row] = load_rows(inputs=[DATASETS / "derived" / "glaive_toolcall_en_demo.openai_chat.jsonl"], max_samples=1)
    assert tool_row.tools[0]["function"]["name"] == "search_recipes"
    assert tool_row.messages[3]["tool_calls"][0]["id"] == "call00001"
    assert tool_row.messages[-1]["role"] == "user" and tool_row.label


def test_openai_image_parts_become_the_rows_images(tmp_path):
    line = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "pics/a.jpg"}},
                                                      {"type": "text", "text": "What is it?"}]}]}
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(line) + "\n")
    [row] = load_rows(inputs=[path])
    assert row.images == (str(tmp_path / "pics/a.jpg"),) and row.label is None


ALPACA = [
    {"instruction": "Say hi", "input": "", "output": "hi", "system": None, "history": []},
    {"instruction": "Add", "input": "1 and 2", "output": "3", "system": "Be brief.",
     "history": [["q", "a"]]},
]


def _expected():
    return [
        Row(id="rows-00000", messages=[{"role": "user", "content": "Say hi"}], label="hi", position=0),
        Row(id="rows-00001", messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
                                       {"role": "user", "content": "Add\n1 and 2"}],
            system="Be brief.", label="3", position=1),
    ]


def test_json_jsonl_parquet_and_datasets_on_disk_give_the_same_rows(tmp_path):
    pytest.importorskip("pyarrow")
    (tmp_path / "json").mkdir()
    (tmp_path / "json" / "rows.json").write_text(json.dumps(ALPACA))
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ALPACA))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(ALPACA), tmp_path / "rows.parquet")
    for path in (tmp_path / "json" / "rows.json", tmp_path / "rows.jsonl", tmp_path / "rows.parquet",
                 tmp_path / "json"):
        rows = load_rows(inputs=[path])
        expected = _expected() if path.name != "json" else [
            Row(**{**row.__dict__, "id": row.id.replace("rows-", "json-")}) for row in _expected()]
        assert rows == expected, path
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(ALPACA).save_to_disk(str(tmp_path / "rows"))
    assert load_rows(inputs=[tmp_path / "rows"]) == _expected()
    datasets.DatasetDict({"test": datasets.Dataset.from_list(ALPACA)}).save_to_disk(str(tmp_path / "dd"))
    assert load_rows(inputs=[tmp_path / "dd"], split="test")[1].label == "3"
    with pytest.raises(ConfigError, match="no split 'train'"):
        load_rows(inputs=[tmp_path / "dd"])


def test_csv_rows(tmp_path):
    path = tmp_path / "rows.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["instruction", "input", "output"])
        writer.writeheader()
        writer.writerows({k: r[k] for k in ("instruction", "input", "output")} for r in ALPACA)
    rows = load_rows(inputs=[path], format="alpaca")
    assert [row.messages[-1]["content"] for row in rows] == ["Say hi", "Add\n1 and 2"]
    assert [row.label for row in rows] == ["hi", "3"]


def test_rows_from_dicts_for_the_sampler_api():
    rows = as_rows([{"messages": [{"role": "user", "content": "x"}]}, {"messages": [{"role": "user", "content": "y"}]}])
    assert [(row.id, row.position) for row in rows] == [("row-00000", 0), ("row-00001", 1)]


def test_a_broken_row_is_kept_with_its_error(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([{"conversations": [{"from": "human", "value": "hi"}]},
                                {"conversations": [{"from": "robot", "value": "?"}]}]))
    rows = load_rows(inputs=[path])
    assert rows[0].error is None
    assert "unknown role tag 'robot'" in rows[1].error


def test_dataset_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'alpaca_en_demo'"):
        load_rows(["alpaca_en_dem"], LF_DIR)
    info = tmp_path / "dataset_info.json"
    info.write_text(json.dumps({"remote": {"hf_hub_url": "someone/data"}}))
    with pytest.raises(ConfigError, match="on a hub"):
        load_rows(["remote"], tmp_path)
    with pytest.raises(ConfigError, match="Cannot find"):
        load_rows(["x"], tmp_path / "missing")
    with pytest.raises(ConfigError, match="Nothing to run"):
        load_rows()
    (tmp_path / "dup.jsonl").write_text('{"id": 1, "messages": [{"role": "user", "content": "a"}]}\n' * 2)
    with pytest.raises(ConfigError, match="Two rows have the id '1'"):
        load_rows(inputs=[tmp_path / "dup.jsonl"])
    (tmp_path / "odd.json").write_text(json.dumps([{"question": "?"}]))
    with pytest.raises(ConfigError, match="Cannot tell the format"):
        load_rows(inputs=[tmp_path / "odd.json"])
