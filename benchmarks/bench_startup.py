"""Cold-process start of the default model: from a new Python process to the first streamed token.

Each run is a fresh process (nothing warm but the OS file cache), after one untimed run that fills the caches
(the converted checkpoint and the native kernels). Side by side, the same model loaded the plain ways:
transformers (``from_pretrained`` + a streamed ``generate``) and llama-cpp-python (the GGUF, a streamed completion); and
``lmchat chat`` with no flags, as ``make chat`` runs it, to the first byte of its answer.

    python benchmarks/bench_startup.py --runs 5

Prints one row per contender: median and max seconds to import, to ready (model loaded) and to the first token.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

QUESTION = "What is the capital of France?"

LMCHAT = """
import time, json, sys
t0 = float(sys.argv[1])
from lmchat import ChatModel
t_import = time.time()
model = ChatModel(%r)
t_ready = time.time()
for piece in model.stream_chat([{"role": "user", "content": %r}]):
    if piece:
        break
t_first = time.time()
runner = getattr(getattr(model.engine, "worker", None), "runner", None)
print(json.dumps({"import": t_import - t0, "ready": t_ready - t0, "first": t_first - t0,
                  "runner": getattr(runner, "name", "")}))
model.close()
"""

TRANSFORMERS = """
import time, json, sys, threading
t0 = float(sys.argv[1])
from lmchat.models.default import default_model_dir
path = str(default_model_dir())
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TextIteratorStreamer
t_import = time.time()
tokenizer = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
t_ready = time.time()
ids = tokenizer.apply_chat_template([{"role": "user", "content": %r}], add_generation_prompt=True,
                                    return_tensors="pt", return_dict=True)
streamer = TextIteratorStreamer(tokenizer, skip_prompt=True)
threading.Thread(target=model.generate, kwargs=dict(**ids, max_new_tokens=8, do_sample=False,
                                                    streamer=streamer)).start()
for piece in streamer:
    if piece:
        break
t_first = time.time()
print(json.dumps({"import": t_import - t0, "ready": t_ready - t0, "first": t_first - t0, "runner": "generate"}))
for _ in streamer:
    pass
""" % QUESTION

LLAMA_CPP = """
import time, json, sys
t0 = float(sys.argv[1])
from lmchat.models.default import default_gguf_path
from lmchat.engines.llamacpp.cpu_backend import load_cpu_backend
import llama_cpp
variant = load_cpu_backend()
t_import = time.time()
llm = llama_cpp.Llama(model_path=str(default_gguf_path()), n_ctx=0, verbose=False)
t_ready = time.time()
for chunk in llm.create_chat_completion([{"role": "user", "content": %r}], max_tokens=8, temperature=0,
                                        stream=True):
    if chunk["choices"][0]["delta"].get("content"):
        break
t_first = time.time()
print(json.dumps({"import": t_import - t0, "ready": t_ready - t0, "first": t_first - t0, "runner": variant}))
""" % QUESTION

# `make chat`'s own command, no engine named (lmchat.engines.choice picks it): to the answer's first byte on stdout.
TERMINAL_CHAT = """
import json, subprocess, sys, time
t0 = float(sys.argv[1])
chat = subprocess.Popen([sys.executable, "-m", "lmchat", "chat", "--do_sample", "false", "--max_new_tokens", "8",
                         *%r], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
chat.stdin.write(%r.encode() + b"\\n")
chat.stdin.close()
chat.stdout.read(1)
t_first = time.time()
chat.stdout.read()
notice = chat.stderr.read().decode().splitlines()
chat.wait()
engine = notice[0].split(" (")[0].removeprefix("lmchat: ") if notice else ""
print(json.dumps({"import": None, "ready": None, "first": t_first - t0, "runner": engine}))
"""

GREEDY = {"max_new_tokens": 8, "do_sample": False}
CONTENDERS = {"lmchat (transformers engine)": LMCHAT % ({**GREEDY, "infer_backend": "hf"}, QUESTION),
              "lmchat (transformers engine, float32)": LMCHAT % ({**GREEDY, "infer_backend": "hf",
                                                                  "quantization_bit": None}, QUESTION),
              "lmchat (transformers engine, direct_load off)": LMCHAT % ({**GREEDY, "infer_backend": "hf",
                                                                          "direct_load": "off"}, QUESTION),
              "lmchat (llama.cpp engine)": LMCHAT % ({**GREEDY, "infer_backend": "llamacpp"}, QUESTION),
              "lmchat chat (no engine named, as make chat runs it)": TERMINAL_CHAT % ([], QUESTION),
              "lmchat chat --infer_backend huggingface (make chat before make setup)":
                  TERMINAL_CHAT % (["--infer_backend", "huggingface"], QUESTION),
              "transformers from_pretrained + generate": TRANSFORMERS, "llama-cpp-python (GGUF)": LLAMA_CPP}


def run_once(code: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code, repr(time.time())], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", nargs="*", choices=list(CONTENDERS), help="run these contenders only")
    args = parser.parse_args()
    print("| contender | runner | import s | ready s | first token s (median) | first token s (max) |")
    print("|---|---|---:|---:|---:|---:|")
    for name, code in CONTENDERS.items():
        if args.only and name not in args.only:
            continue
        try:
            run_once(code)  # fills the caches (conversion, native build, page cache); not timed
            runs = [run_once(code) for _ in range(args.runs)]
        except RuntimeError as exc:
            print(f"| {name} | not run: {exc} | | | | |")
            continue
        median = {key: _median(run[key] for run in runs) for key in ("import", "ready", "first")}
        print(f"| {name} | {runs[0]['runner']} | {median['import']} | {median['ready']} | "
              f"{median['first']} | {max(run['first'] for run in runs):.2f} |", flush=True)


def _median(values) -> str:
    values = [value for value in values if value is not None]  # the terminal chat has no import/ready times
    return f"{statistics.median(values):.2f}" if values else ""


if __name__ == "__main__":
    main()
