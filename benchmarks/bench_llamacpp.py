"""Tokens/s through ``ChatModel`` (llamacpp engine) vs calling ``llama_cpp.Llama`` directly.

Same GGUF, same prompt tokens, greedy, same budget; the two are run alternately, several times, and the median
of each is compared. Both load the model with the same settings (n_ctx from the GGUF, the engine's KV cache:
flash attention, q8_0 keys and values, the engine's thread count). The direct calls reuse llama-cpp-python's
prompt cache (only the last prompt token is re-evaluated); lmchat reuses the cells of the longest prefix a cached
sequence holds (see docs/engines.md); "direct, full prefill" (``llm.reset()`` first) is shown too.

``--streams N`` (N > 1) also times N concurrent greedy answers through ``ChatModel.achat`` (one continuous batch)
against the same N answers one after another through ``Llama`` (one sequence per context).

    python benchmarks/bench_llamacpp.py                  # the default SmolLM2-135M-Instruct GGUF
    python benchmarks/bench_llamacpp.py --model x.gguf --repeats 7 --max-new-tokens 128 --streams 16
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import time

import llama_cpp
from llama_cpp import Llama

from lmchat import ChatModel
from lmchat.engines.llamacpp.engine import resolve_gguf_path

MESSAGES = [{"role": "user", "content": "Write a long story about a cat who learns to sail."}]


def direct(llm: Llama, prompt_ids: list[int], max_new_tokens: int, full_prefill: bool = False) -> tuple[int, float]:
    start = time.perf_counter()
    if full_prefill:  # drop llama-cpp-python's prompt cache: the whole prompt is evaluated
        llm.reset()
    result = llm.create_completion(prompt_ids, max_tokens=max_new_tokens, temperature=0.0)
    return result["usage"]["completion_tokens"], time.perf_counter() - start


def through_chat_model(model: ChatModel, max_new_tokens: int) -> tuple[int, float]:
    start = time.perf_counter()
    [response] = model.chat(MESSAGES, max_new_tokens=max_new_tokens, do_sample=False)
    return response.response_length, time.perf_counter() - start


def through_stream(model: ChatModel, max_new_tokens: int) -> tuple[int, float]:
    start = time.perf_counter()
    prepared = model.prepare(MESSAGES, max_new_tokens=max_new_tokens, do_sample=False)
    tokens = 0
    for chunk in model.stream_chunks(prepared):
        tokens = chunk.completion_tokens or tokens
    return tokens, time.perf_counter() - start


def concurrent(model: ChatModel, streams: int, max_new_tokens: int) -> tuple[int, float]:
    async def together():
        return await asyncio.gather(*(model.achat(MESSAGES, max_new_tokens=max_new_tokens, do_sample=False)
                                      for _ in range(streams)))

    start = time.perf_counter()
    answers = model._loop.run(together())
    return sum(answer[0].response_length for answer in answers), time.perf_counter() - start


def serial_direct(llm: Llama, prompt_ids: list[int], streams: int, max_new_tokens: int) -> tuple[int, float]:
    start = time.perf_counter()
    tokens = sum(direct(llm, prompt_ids, max_new_tokens)[0] for _ in range(streams))
    return tokens, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help=".gguf file (default: the embedded SmolLM2 GGUF)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--streams", type=int, default=1, help="also time this many concurrent answers")
    args = parser.parse_args()

    path = resolve_gguf_path(args.model)
    model = ChatModel({"infer_backend": "llamacpp", "model_name_or_path": str(path)})
    threads = model.engine.llm.threads[0]
    llm = Llama(model_path=str(path), n_ctx=0, flash_attn=True, type_k=8, type_v=8, n_threads=threads,
                n_threads_batch=threads, verbose=False)
    prompt_ids = list(model.prepare(MESSAGES).prompt_token_ids)
    paths = {
        "direct create_completion": lambda: direct(llm, prompt_ids, args.max_new_tokens),
        "direct, full prefill": lambda: direct(llm, prompt_ids, args.max_new_tokens, full_prefill=True),
        "ChatModel.chat": lambda: through_chat_model(model, args.max_new_tokens),
        "ChatModel.stream_chunks": lambda: through_stream(model, args.max_new_tokens),
    }
    if args.streams > 1:
        paths[f"direct, {args.streams} one by one"] = lambda: serial_direct(llm, prompt_ids, args.streams,
                                                                          args.max_new_tokens)
        paths[f"ChatModel, {args.streams} at once"] = lambda: concurrent(model, args.streams, args.max_new_tokens)
    for run in paths.values():
        run()  # warm-up (fills each model's prompt cache), not timed
    rates: dict[str, list[float]] = {name: [] for name in paths}
    counts: dict[str, int] = {}
    for _ in range(args.repeats):
        for name, run in paths.items():  # alternate, so drifts in machine load hit every path alike
            tokens, seconds = run()
            counts[name] = tokens
            rates[name].append(tokens / seconds)
    model.close()
    llm.close()

    baseline = statistics.median(rates["direct create_completion"])
    print(f"llama-cpp-python {llama_cpp.__version__}, {path.name}, {platform.processor() or platform.machine()}, "
          f"prompt {len(prompt_ids)} tokens, greedy, {threads} threads, {args.repeats} alternating repeats (median)")
    print(f"{'path':<28} {'tokens':>6} {'tok/s':>8} {'min':>7} {'max':>7} {'vs direct':>9}")
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"{name:<28} {counts[name]:>6} {median:>8.1f} {min(values):>7.1f} {max(values):>7.1f} "
              f"{median / baseline:>8.1%}")


if __name__ == "__main__":
    main()
