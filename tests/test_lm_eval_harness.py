"""EleutherAI's lm-evaluation-harness against lmchat's server, as evaluation users run it: the ``local-completions``
model (token-id prompts, batches, echo with logprobs for loglikelihood; stop strings for generation) on a
loglikelihood (multiple-choice) task and a generation task over a small local dataset. The harness's
log-likelihoods must be the tiny model's own, computed here with transformers."""

from __future__ import annotations

import json

import pytest
from test_server_support import ThreadServer

pytest.importorskip("torch")
pytest.importorskip("transformers")
lm_eval = pytest.importorskip("lm_eval")

DOCS = [
    {"question": "The sky is", "choices": [" blue", " green"], "answer": 0, "target": "blue"},
    {"question": "Two plus two is", "choices": [" four", " five"], "answer": 0, "target": "four"},
    {"question": "Fire is", "choices": [" hot", " cold"], "answer": 0, "target": "hot"},
]


def write_tasks(directory, data_file) -> None:
    dataset = f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data_file}\ntest_split: test\n"
    (directory / "lmchat_mc.yaml").write_text(
        "task: lmchat_mc\n" + dataset + "output_type: multiple_choice\ntarget_delimiter: ''\n"
        "doc_to_text: '{{question}}'\ndoc_to_choice: '{{choices}}'\ndoc_to_target: '{{answer}}'\n"
        "metric_list:\n  - metric: acc\n")
    (directory / "lmchat_gen.yaml").write_text(
        "task: lmchat_gen\n" + dataset + "output_type: generate_until\ndoc_to_text: '{{question}}'\n"
        "doc_to_target: '{{target}}'\ngeneration_kwargs:\n  until: ['\\n']\n  max_gen_toks: 4\n"
        "  do_sample: false\n  temperature: 0\nmetric_list:\n  - metric: exact_match\n")


def test_local_completions_loglikelihood_and_generation(tiny_model_dir, tmp_path):
    import torch
    from lm_eval.tasks import TaskManager
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data_file = tmp_path / "docs.jsonl"
    data_file.write_text("".join(json.dumps(doc) + "\n" for doc in DOCS))
    write_tasks(tmp_path, data_file)
    config = {"model_name_or_path": str(tiny_model_dir), "do_sample": False}
    with ThreadServer(config, served_model_names=("tiny",)) as live:
        results = lm_eval.simple_evaluate(
            model="local-completions",
            model_args=(f"model=tiny,base_url={live.base_url}/v1/completions,tokenizer={tiny_model_dir},"
                        "tokenizer_backend=huggingface,num_concurrent=1,max_retries=1,batch_size=2"),
            tasks=["lmchat_mc", "lmchat_gen"],  # the harness's own ~thousands of tasks are not indexed (~12 s)
            task_manager=TaskManager(include_path=str(tmp_path), include_defaults=False),
            log_samples=True, apply_chat_template=False,
        )
    assert 0.0 <= results["results"]["lmchat_mc"]["acc,none"] <= 1.0
    assert 0.0 <= results["results"]["lmchat_gen"]["exact_match,none"] <= 1.0
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    samples = results["samples"]["lmchat_mc"]
    assert len(samples) == len(DOCS)
    for sample in samples:
        doc = sample["doc"]
        for choice, response in zip(doc["choices"], sample["resps"]):
            context = tokenizer(doc["question"], add_special_tokens=False)["input_ids"]
            whole = tokenizer(doc["question"] + choice, add_special_tokens=False)["input_ids"]
            with torch.inference_mode():
                logprobs = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), dim=-1)
            expected = sum(float(logprobs[i - 1, whole[i]]) for i in range(len(context), len(whole)))
            assert response[0][0] == pytest.approx(expected, abs=1e-3)
    generated = results["samples"]["lmchat_gen"]
    assert len(generated) == len(DOCS) and all(isinstance(sample["resps"][0][0], str) for sample in generated)
