"""The llama.cpp engine's continuous batching, with the embedded SmolLM2 GGUF: several sequences in one
``llama_batch``, joining and leaving at any step, each with its own sampler chain and seed; stop strings and
aborts free their KV cells; prompt prefixes reused per sequence. Every KV check asks llama.cpp itself which
positions each sequence id holds (``llama_memory_seq_pos_max``)."""

from __future__ import annotations

import asyncio
import re
import threading
import time

import numpy as np
import pytest

llama_cpp = pytest.importorskip("llama_cpp")

from lmchat import ChatModel  # noqa: E402
from lmchat.engines.events import Finished, TextDelta  # noqa: E402
from lmchat.engines.llamacpp.sequence import Sequence as BatchSequence  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.models]
GREEDY = {"do_sample": False}
SAMPLE = {"do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": 0}
QUESTIONS = ("Name a fruit.", "Count to five.", "Say hello.", "What is the capital of France?")


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def model():
    with ChatModel({"infer_backend": "llamacpp", "max_new_tokens": 16, **GREEDY}) as chat_model:
        yield chat_model


@pytest.fixture(scope="module")
def no_reuse():
    config = {"infer_backend": "llamacpp", "max_new_tokens": 16, "llamacpp_config": {"reuse_prefix": False}}
    with ChatModel({**config, **GREEDY}) as chat_model:
        yield chat_model


def idle(chat_model: ChatModel, timeout: float = 60.0):
    """The engine's worker once it runs and waits for nothing (aborts are taken at its next step)."""
    worker = chat_model.engine.worker
    deadline = time.monotonic() + timeout
    while worker.running or worker.waiting or not worker._inbox.empty():
        assert time.monotonic() < deadline, "the llama.cpp worker did not become idle"
        time.sleep(0.05)
    return worker


def assert_cells_agree_with_llama_cpp(chat_model: ChatModel) -> dict[int, int]:
    """Nothing runs, nothing is reserved, and each sequence id holds in llama.cpp exactly the positions lmchat's
    bookkeeping says (a freed id holds none); returns seq id -> positions held."""
    worker = idle(chat_model)
    cells = worker.cells
    assert not any(entry.running or entry.reserved for entry in cells.entries)
    assert cells.committed_cells() == cells.used_cells() <= cells.num_cells
    live = {entry.seq_id: entry.length for entry in cells.entries}
    memory = chat_model.engine.llm.memory
    held = {seq_id: llama_cpp.llama_memory_seq_pos_max(memory, seq_id) + 1 for seq_id in range(cells.num_seq_ids)}
    assert held == {seq_id: live.get(seq_id, 0) for seq_id in range(cells.num_seq_ids)}
    return {seq_id: count for seq_id, count in held.items() if count}


def run(chat_model: ChatModel, coroutine):
    return chat_model._loop.run(coroutine)


async def gather_chats(chat_model: ChatModel, asks: list[tuple[str, dict]]):
    answers = await asyncio.gather(*(chat_model.achat(ask(text), **options) for text, options in asks))
    return [answer[0] for answer in answers]


def test_concurrent_streams_in_one_batch_answer_as_one_at_a_time(model):
    alone = [model.chat(ask(text))[0] for text in QUESTIONS]
    worker = idle(model)
    worker.largest_batch = 0
    together = run(model, gather_chats(model, [(text, {}) for text in QUESTIONS]))
    # a caller that has its answer sees the engine after it: the sequences have left and are recorded
    assert not worker.running and len(worker.finished) >= len(QUESTIONS)
    assert not any(entry.running or entry.reserved for entry in worker.cells.entries)
    assert [r.response_text for r in together] == [r.response_text for r in alone]
    assert [(r.finish_reason, r.response_length) for r in together] == [(r.finish_reason, r.response_length)
                                                                         for r in alone]
    assert worker.largest_batch == len(QUESTIONS)  # all four were decoded in one llama_decode
    assert all(r.response_text.strip() for r in together)


def test_sequences_join_and_leave_at_any_step(model):
    """A long answer runs while short ones join at its 2nd and 6th token and leave after 3 tokens each."""
    story = "Write a long story about a cat who learns to sail."
    long_alone = model.chat(ask(story), max_new_tokens=40)[0]
    short_alone = [model.chat(ask(text), max_new_tokens=3)[0].response_text for text in QUESTIONS[1:3]]
    assert long_alone.finish_reason == "length"
    worker = idle(model)
    worker.largest_batch = 0

    async def staggered():
        pieces, joined = [], []
        async for piece in model.astream_chat(ask(story), max_new_tokens=40):
            pieces.append(piece)
            if len(pieces) in (2, 6):
                joined.append(asyncio.ensure_future(model.achat(ask(QUESTIONS[1 + len(joined)]), max_new_tokens=3)))
        return "".join(pieces), [answer[0].response_text for answer in await asyncio.gather(*joined)]

    long_together, short_together = run(model, staggered())
    assert long_together == long_alone.response_text and short_together == short_alone
    assert worker.largest_batch >= 2  # the short ones shared the long one's batch ...
    last_three = [generated for _, _, generated in list(worker.finished)[-3:]]
    assert last_three == [3, 3, 40]  # ... and left it while it went on


def test_each_sequence_samples_with_its_own_seed(model):
    alone = model.chat(ask(QUESTIONS[0]), seed=7, **SAMPLE)[0].response_text
    assert model.chat(ask(QUESTIONS[0]), seed=7, **SAMPLE)[0].response_text == alone
    together = run(model, gather_chats(model, [(QUESTIONS[1], {"seed": 8, **SAMPLE}),
                                               (QUESTIONS[0], {"seed": 7, **SAMPLE}),
                                               (QUESTIONS[0], {"seed": 9, **SAMPLE}),
                                               (QUESTIONS[2], {})]))
    assert together[1].response_text == alone  # its own chain and seed, whatever shares the batch
    assert together[2].response_text != alone  # another seed, another draw
    assert together[3].response_text == model.chat(ask(QUESTIONS[2]))[0].response_text  # greedy beside samples


def test_a_stop_string_ends_the_sequence_and_frees_its_cells(model, no_reuse):
    for chat_model in (model, no_reuse):
        [whole] = chat_model.chat(ask(QUESTIONS[1]), max_new_tokens=24)
        stop = whole.response_text.split()[2]
        [stopped] = chat_model.chat(ask(QUESTIONS[1]), max_new_tokens=24, stop=[stop])
        assert stopped.finish_reason == "stop"
        assert stopped.response_text == whole.response_text[: whole.response_text.index(stop)]
        worker = idle(chat_model)
        _, reason, generated = worker.finished[-1]
        assert reason == "abort" and generated < whole.response_length  # the facade ended it early
        held = assert_cells_agree_with_llama_cpp(chat_model)
        if chat_model is no_reuse:
            assert held == {}  # nothing kept: every cell is free again


def test_closing_a_stream_aborts_it_and_frees_its_cells(no_reuse):
    async def read_two():
        pieces = []
        stream = no_reuse.astream_chat(ask("Write a long story about a cat who learns to sail."), max_new_tokens=200)
        async for piece in stream:
            pieces.append(piece)
            if len(pieces) == 2:
                break
        await stream.aclose()
        return pieces

    assert len(run(no_reuse, read_two())) == 2
    worker = idle(no_reuse)
    _, reason, generated = worker.finished[-1]
    assert reason == "abort" and generated < 200
    assert assert_cells_agree_with_llama_cpp(no_reuse) == {}


def test_a_request_aborted_while_waiting_for_room_leaves_without_cells():
    config = {"infer_backend": "llamacpp", "max_new_tokens": 60, "max_batch_size": 1, **GREEDY,
              "llamacpp_config": {"reuse_prefix": False}}
    with ChatModel(config) as chat_model:
        engine = chat_model.engine
        story = chat_model.prepare(ask("Write a long story about a cat who learns to sail.")).requests("story")[0]
        queued = chat_model.prepare(ask(QUESTIONS[1])).requests("queued")[0]

        async def abort_the_queued_one():
            running = engine.generate(story)
            first = await anext(running)  # the story runs and holds the only place in the batch
            waiting = asyncio.ensure_future(anext(engine.generate(queued)))
            await asyncio.sleep(0.3)
            assert [s.request_id for s in engine.worker.waiting] == ["queued-0"]
            await engine.abort("queued-0")
            aborted = await waiting
            rest = [event async for event in running]
            return first, aborted, rest

        first, aborted, rest = run(chat_model, abort_the_queued_one())
        assert isinstance(first, TextDelta) and isinstance(aborted, Finished)
        assert (aborted.reason, aborted.completion_tokens) == ("abort", 0)
        assert isinstance(rest[-1], Finished) and rest[-1].completion_tokens == 60  # the story went on to the end
        assert assert_cells_agree_with_llama_cpp(chat_model) == {}
        assert [(rid, reason) for rid, reason, _ in engine.worker.finished] == [("queued-0", "abort"),
                                                                               ("story-0", "length")]


def _conversation(chat_model: ChatModel, turns: list[str]) -> tuple[list[str], list[int], list[int]]:
    """Answers of a multi-turn chat, the prompt tokens each turn reused, and each turn's prompt length."""
    answers, reused, lengths, messages = [], [], [], []
    for text in turns:
        messages = [*messages, *ask(text)]
        lengths.append(chat_model.prepare(messages).prompt_tokens)
        [response] = chat_model.chat(messages, max_new_tokens=24)
        reused.append(idle(chat_model).prefix_reuse[-1][1])
        answers.append(response.response_text)
        messages.append({"role": "assistant", "content": response.response_text})
    return answers, reused, lengths


def test_a_conversation_reuses_its_previous_turn_without_changing_any_answer(model, no_reuse):
    turns = ["Write a short story about a cat who learns to sail.", "Now give the cat a friend.",
             "Now give the cat a friend."]
    with_reuse, reused, lengths = _conversation(model, turns)
    without_reuse, nothing, _ = _conversation(no_reuse, turns)
    assert with_reuse == without_reuse  # the same greedy answers, cells reused or not
    assert nothing == [0, 0, 0]
    # each later turn reuses at least the whole previous prompt (and the part of the answer that was evaluated)
    assert all(reused[i] >= lengths[i - 1] for i in (1, 2)), (reused, lengths)
    assert_cells_agree_with_llama_cpp(model)


def test_identical_prompts_at_once_share_the_first_ones_prefill(model):
    text = "List three colours of the rainbow."
    prompt_tokens = model.prepare(ask(text)).prompt_tokens
    answers = run(model, gather_chats(model, [(text, {})] * 3))
    assert len({r.response_text for r in answers}) == 1 and answers[0].response_text.strip()
    reused = sorted(count for _, count in list(idle(model).prefix_reuse)[-3:])
    # the first evaluates the prompt (beyond any cached system prompt); the two others copy its cells, all but
    # the last token, whose logits start their own answer
    assert reused[1:] == [prompt_tokens - 1, prompt_tokens - 1] and reused[0] < prompt_tokens - 1
    assert_cells_agree_with_llama_cpp(model)


def test_a_small_kv_cache_evicts_cached_prompts_and_answers_alike(model):
    expected = [model.chat(ask(text))[0].response_text for text in QUESTIONS]
    config = {"infer_backend": "llamacpp", "max_new_tokens": 16, "kv_cache_tokens": 96, **GREEDY}
    with ChatModel(config) as small:
        assert small.engine.info.context_length == 96
        assert [small.chat(ask(text))[0].response_text for text in QUESTIONS] == expected
        held = assert_cells_agree_with_llama_cpp(small)
        assert 0 < sum(held.values()) and small.engine.worker.cells.used_cells() <= 96
        assert len(held) < len(QUESTIONS)  # older cached prompts were evicted to make room


class BanAndCount:
    """A logits hook: forbids one token and ends the answer after ``limit`` accepted tokens."""

    def __init__(self, banned: int, limit: int) -> None:
        self.banned, self.limit, self.accepted = banned, limit, []

    def apply(self, logits: np.ndarray) -> None:
        logits[self.banned] = -np.inf

    def accept(self, token: int) -> bool:
        self.accepted.append(token)
        return len(self.accepted) == self.limit


def _submit(chat_model: ChatModel, text: str, hook=None) -> tuple[list, threading.Event]:
    events, done = [], threading.Event()

    def emit(event):
        events.append(event)
        if isinstance(event, (Finished, BaseException)):
            done.set()

    request = chat_model.prepare(ask(text)).requests()[0]
    chat_model.engine.worker.submit(BatchSequence(request, emit, lambda: False, logits_hook=hook))
    return events, done


def test_a_logits_hook_changes_only_its_own_row(model):
    [plain] = model.chat(ask(QUESTIONS[3]), logprobs=True)
    first_token = plain.logprobs[0].token_id
    hook = BanAndCount(first_token, limit=5)
    hooked, hooked_done = _submit(model, QUESTIONS[3], hook)
    neighbour, neighbour_done = _submit(model, QUESTIONS[3])
    assert hooked_done.wait(120) and neighbour_done.wait(120)
    hooked_tokens = [token for event in hooked if isinstance(event, TextDelta) for token in event.token_ids]
    assert hooked_tokens == hook.accepted and len(hooked_tokens) == 5 and hooked_tokens[0] != first_token
    assert hooked[-1].reason == "stop" and hooked[-1].completion_tokens == 5  # the hook ended it
    neighbour_text = "".join(event.text for event in neighbour if isinstance(event, TextDelta))
    assert neighbour_text == plain.response_text  # the other row of the same batch is untouched
    assert_cells_agree_with_llama_cpp(model)


def test_a_constrained_answer_beside_plain_ones_in_one_batch(model):
    """Structured output's grammar mask is a logits hook: the constrained row follows its regex (and its
    log-probabilities stay the model's own, before the mask), the plain rows of the same batch are unchanged."""
    pytest.importorskip("llguidance")
    alone = [model.chat(ask(text))[0] for text in QUESTIONS[:2]]
    worker = idle(model)
    worker.largest_batch = 0
    constrained = {"structured_outputs": {"regex": "[A-Z][a-z]{2,8}"}, "logprobs": True, "top_logprobs": 5}
    answers = run(model, gather_chats(model, [(QUESTIONS[0], {}), (QUESTIONS[3], constrained),
                                              (QUESTIONS[1], {})]))
    assert worker.largest_batch >= 2
    plain = [answers[0], answers[2]]
    assert [a.response_text for a in plain] == [a.response_text for a in alone]
    city = answers[1]
    assert re.fullmatch("[A-Z][a-z]{2,8}", city.response_text) and city.finish_reason == "stop", city
    # the model's own log-probabilities (from before the mask): those of the same tokens unconstrained
    forced = [entry.token_id for entry in city.logprobs]
    [free] = model.chat(ask(QUESTIONS[3]), logprobs=True, top_logprobs=20, max_new_tokens=1)
    top = {token_id: logprob for _, token_id, logprob in free.logprobs[0].top}
    assert city.logprobs[0].logprob == pytest.approx(top[forced[0]], abs=1e-2)
    assert_cells_agree_with_llama_cpp(model)
