"""The llama.cpp engine's KV-cell bookkeeping (pure Python, no llama.cpp): admission by exact room, prefix reuse,
shared cells counted once, least-recently-used eviction. The engine's agreement with llama.cpp itself is checked
in tests/test_llamacpp_batching.py."""

from __future__ import annotations

from lmchat.engines.llamacpp.kv_cells import KvCells


def run(cells: KvCells, prompt: list[int], budget: int, answer: list[int]):
    """Admit, copy the prefix, evaluate the rest of the prompt and the answer, release: what the worker does."""
    admission = cells.admit(prompt, budget)
    assert admission is not None
    entry = admission.entry
    if admission.source is not None:
        assert cells.copy_prefix(entry, admission.source, admission.reuse) == admission.reuse
    cells.wrote(entry, prompt[entry.length:])
    cells.wrote(entry, answer)
    return admission, cells.release(entry)


def test_a_request_reserves_its_prompt_and_budget_and_gives_back_what_it_did_not_use():
    cells = KvCells(num_seq_ids=4, num_cells=100)
    admission = cells.admit(list(range(30)), budget=20)
    assert (admission.source, admission.reuse, admission.evicted) == (None, 0, ())
    assert cells.committed_cells() == 50 and cells.used_cells() == 0
    cells.wrote(admission.entry, list(range(30)))
    assert (cells.used_cells(), cells.committed_cells()) == (30, 50)
    assert cells.admit(list(range(100, 160)), budget=1) is None  # 61 more do not fit beside 50
    cells.wrote(admission.entry, [7, 8])  # the answer stopped after two tokens
    assert cells.release(admission.entry) is True  # kept as a cached prompt
    assert (cells.used_cells(), cells.committed_cells()) == (32, 32)


def test_a_shared_prefix_is_reused_and_its_cells_are_counted_once():
    cells = KvCells(num_seq_ids=4, num_cells=100)
    system = list(range(20))
    run(cells, system + [50, 51], budget=5, answer=[60, 61])
    admission, _ = run(cells, system + [70, 71, 72], budget=5, answer=[80])
    assert admission.reuse == 20 and admission.source is not None
    # 24 cells of the first entry, then only what the second wrote itself: 3 prompt tokens and 1 answer token
    assert cells.used_cells() == 24 + 4


def test_the_last_prompt_token_is_always_evaluated():
    cells = KvCells(num_seq_ids=4, num_cells=100)
    prompt = list(range(10))
    run(cells, prompt, budget=3, answer=[99])
    again = cells.admit(prompt, budget=3)
    assert again.reuse == len(prompt) - 1  # its logits start the answer


def test_a_running_prompt_is_a_source_before_it_is_evaluated():
    cells = KvCells(num_seq_ids=4, num_cells=100)
    prompt = list(range(12))
    first = cells.admit(prompt, budget=4)
    second = cells.admit(prompt, budget=4)
    assert second.source is first.entry and second.reuse == 11
    assert cells.copy_prefix(second.entry, first.entry, second.reuse) == 0  # nothing evaluated yet: wait
    cells.wrote(first.entry, prompt[:5])
    third = cells.admit(prompt, budget=4)
    assert cells.copy_prefix(third.entry, first.entry, 11) == 5  # a source that stopped early: what it holds
    assert third.entry.reserved == len(prompt) - 11 + 4 + (11 - 5)  # the rest is evaluated, and reserved, itself


def test_cached_prompts_are_evicted_least_recently_used_first_only_when_needed():
    cells = KvCells(num_seq_ids=3, num_cells=60)
    run(cells, [1] * 20, budget=1, answer=[])
    run(cells, [2] * 20, budget=1, answer=[])
    oldest, newer = cells.cached
    assert cells.admit([3] * 10, budget=5).evicted == ()  # the last free id, and 40 + 15 cells fit in 60
    fourth = cells.admit([4] * 10, budget=5)  # no free id left: one cached prompt must go
    assert fourth.evicted == (oldest,) and newer in cells.entries and oldest not in cells.entries
    assert cells.committed_cells() == 20 + 15 + 15
    assert cells.admit([5] * 30, budget=1) is None  # 31 more cells would need the running ones' room


def test_reusing_a_cached_prompt_makes_it_the_last_to_be_evicted():
    cells = KvCells(num_seq_ids=2, num_cells=100)
    run(cells, [1] * 20, budget=1, answer=[])
    run(cells, [2] * 20, budget=1, answer=[])
    run(cells, [1] * 20 + [9], budget=1, answer=[])  # reuses (and touches) the first; takes the second's id
    assert [entry.tokens[0] for entry in cells.cached] == [1, 1]  # the untouched [2] prompt was evicted


def test_reuse_off_keeps_nothing():
    cells = KvCells(num_seq_ids=2, num_cells=50, reuse_prefix=False)
    _, kept = run(cells, list(range(10)), budget=2, answer=[5])
    assert kept is False and cells.entries == [] and cells.used_cells() == 0
    assert cells.admit(list(range(10)), budget=2).reuse == 0
