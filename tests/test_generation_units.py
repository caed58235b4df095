"""Engine-independent generation pieces: option validation, stop strings, incremental detokenization."""

import pytest

from lmchat.errors import InvalidRequestError
from lmchat.generation import StopMatcher, resolve_sampling
from lmchat.generation.detokenize import IncrementalDetokenizer


def test_options_merge_over_defaults_with_aliases():
    params = resolve_sampling({"temperature": 0.9, "max_new_tokens": 100}, {"num_return_sequences": 3, "stop": "x"})
    assert (params.n, params.temperature, params.max_new_tokens, params.stop) == (3, 0.9, 100, ("x",))
    assert resolve_sampling({}, {"max_tokens": 5}).max_new_tokens == 5


def test_max_new_tokens_per_call_overrides_a_configured_max_length():
    params = resolve_sampling({"max_length": 50, "max_new_tokens": 10}, {"max_new_tokens": 20})
    assert (params.max_new_tokens, params.max_length) == (20, None)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tempreature": 1}, "Unknown generation option 'tempreature'; did you mean 'temperature'"),
        ({"top_p": 0}, "Invalid value for 'top_p'"),
        ({"stop": [""]}, "stop strings must not be empty"),
        ({"top_logprobs": 3}, "top_logprobs needs logprobs=true"),
        ({"logit_bias": {5: 200}}, "between -100 and 100"),
    ],
)
def test_bad_options_are_rejected(options, message):
    with pytest.raises(InvalidRequestError, match=message):
        resolve_sampling({}, options)


def feed_all(matcher, pieces):
    return "".join(matcher.feed(piece) for piece in pieces)


def test_stop_string_split_across_deltas_is_cut():
    matcher = StopMatcher(("STOP",))
    assert feed_all(matcher, ["Hello S", "TO", "P and more"]) == "Hello "
    assert matcher.stopped


def test_partial_stop_prefix_is_released_when_it_does_not_match():
    matcher = StopMatcher(("</end>",))
    out = feed_all(matcher, ["a </e", "x", " b"])
    assert out + matcher.flush() == "a </ex b"
    assert not matcher.stopped


def test_earliest_of_several_stops_wins():
    matcher = StopMatcher(("world", "lo"))
    assert feed_all(matcher, ["hello world"]) == "hel"


def test_detokenizer_never_splits_a_multibyte_character(tiny_tokenizer_dir):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tiny_tokenizer_dir / "tokenizer.json"))  # SmolLM2's byte-level BPE
    text = "Héllo wörld 你好 🎉 ok"
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    detok = IncrementalDetokenizer(lambda i: tokenizer.decode(i, skip_special_tokens=False), [1, 2, 3])
    pieces = [detok.add(token) for token in ids] + [detok.flush()]
    assert not any("\ufffd" in piece for piece in pieces)
    assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=False) == text
    assert "" in pieces  # some token ended mid-character and was held back


def test_events_emitted_together_reach_each_loop_in_one_wake_up_in_order():
    """threaded.delivered_together: a model thread's step emits to many channels; each consumer loop gets them in one
    callback, each channel's in the order emitted, nothing before the block ends; a gone loop abandons its requests."""
    import asyncio
    import threading

    from lmchat.engines.events import Finished, TextDelta
    from lmchat.engines.threaded import EventChannel, delivered_together

    abandoned = []

    async def main():
        loop = asyncio.get_running_loop()
        wakeups = []
        original = loop.call_soon_threadsafe
        def counting(callback, *args):  # the channels' hand-overs (asyncio.to_thread's own are not counted)
            if getattr(callback, "__name__", "") in ("_put_all", "put_nowait"):
                wakeups.append(callback)
            return original(callback, *args)

        loop.call_soon_threadsafe = counting
        first, second = EventChannel(lambda: abandoned.append(1)), EventChannel(lambda: abandoned.append(2))
        held, release = threading.Event(), threading.Event()

        def model_thread():
            with delivered_together():
                first.emit(TextDelta("a", 1))
                second.emit(TextDelta("b", 1))
                first.emit(Finished("stop", 1, 1))
                held.set()
                release.wait(5)

        thread = threading.Thread(target=model_thread)
        thread.start()
        await asyncio.to_thread(held.wait, 5)
        await asyncio.sleep(0.05)
        assert not first._pending and not second._pending and not wakeups  # held until the block ends
        release.set()
        await asyncio.to_thread(thread.join, 5)
        got_first = [event async for event in first.events()]
        assert [type(e).__name__ for e in got_first] == ["TextDelta", "Finished"] and got_first[0].text == "a"
        assert second._pending.popleft().text == "b"
        assert len(wakeups) == 1
        return second

    loop = asyncio.new_event_loop()
    second = loop.run_until_complete(main())
    loop.close()

    def emit_to_a_closed_loop():
        with delivered_together():
            second.emit(TextDelta("c", 1))

    thread = threading.Thread(target=emit_to_a_closed_loop)
    thread.start()
    thread.join(5)
    assert abandoned == [2]


def test_a_waiting_consumer_wakes_for_each_event_and_leaving_early_abandons_the_request():
    """The consumer waits before the model thread emits (its waiter is woken per hand-over, events in order, an
    exception raised where it was emitted); a consumer cancelled while waiting abandons its request once."""
    import asyncio
    import threading

    from lmchat.engines.events import Finished, TextDelta
    from lmchat.engines.threaded import EventChannel

    async def main():
        abandoned = []
        channel = EventChannel(lambda: abandoned.append("first"))
        got = []

        async def consume():
            async for event in channel.events():
                got.append(event)

        task = asyncio.ensure_future(consume())
        await asyncio.sleep(0.01)  # waiting on an empty channel

        def model_thread():
            for i in range(3):
                channel.emit(TextDelta(str(i), 1))
            channel.emit(Finished("stop", 3, 1))

        thread = threading.Thread(target=model_thread)
        thread.start()
        await asyncio.wait_for(task, 5)
        thread.join(5)
        assert [e.text for e in got[:3]] == ["0", "1", "2"] and isinstance(got[3], Finished) and not abandoned

        failing = EventChannel(lambda: abandoned.append("failing"))
        failing.emit(TextDelta("x", 1))
        failing.emit(RuntimeError("the model failed"))
        seen = []
        with pytest.raises(RuntimeError, match="the model failed"):
            async for event in failing.events():
                seen.append(event.text)
        assert seen == ["x"] and abandoned == ["failing"]  # an error before Finished: the request is abandoned

        waiting = EventChannel(lambda: abandoned.append("cancelled"))

        async def wait_forever():
            async for _ in waiting.events():
                pass

        task = asyncio.ensure_future(wait_forever())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        waiting.emit(TextDelta("late", 1))  # after the consumer left: dropped with the channel, no error
        await asyncio.sleep(0.01)
        assert abandoned == ["failing", "cancelled"]

    asyncio.run(main())


def test_a_settled_hand_over_waits_for_the_consumers_but_never_long():
    """delivered_together(settle=True): the model thread goes on once each consumer loop has run its woken
    consumers with the step's events; a loop that does not run them costs it SETTLE_TIMEOUT_S at most."""
    import asyncio
    import threading
    import time

    from lmchat.engines import threaded
    from lmchat.engines.events import Finished, TextDelta
    from lmchat.engines.threaded import EventChannel, delivered_together

    seen_by_consumer, seen_after_block = [], []

    async def main():
        channel = EventChannel(lambda: None)

        async def consume():
            async for event in channel.events():
                seen_by_consumer.append(type(event).__name__)

        task = asyncio.ensure_future(consume())
        await asyncio.sleep(0.01)

        def model_thread():
            with delivered_together(settle=True):
                channel.emit(TextDelta("a", 1))
            seen_after_block.append(list(seen_by_consumer))  # the consumer already ran with the step's event
            with delivered_together(settle=True):
                channel.emit(Finished("stop", 1, 1))

        thread = threading.Thread(target=model_thread)
        thread.start()
        await asyncio.wait_for(task, 5)
        await asyncio.to_thread(thread.join, 5)
        return channel

    loop = asyncio.new_event_loop()
    loop.run_until_complete(main())
    assert seen_after_block == [["TextDelta"]] and seen_by_consumer == ["TextDelta", "Finished"]

    # a loop that is not running (busy elsewhere): the hand-over waits SETTLE_TIMEOUT_S, then the model goes on
    async def make_channel():
        return EventChannel(lambda: None)

    idle = loop.run_until_complete(make_channel())
    began = time.monotonic()
    with delivered_together(settle=True):
        idle.emit(TextDelta("b", 1))
    waited = time.monotonic() - began
    assert threaded.SETTLE_TIMEOUT_S * 0.9 <= waited < threaded.SETTLE_TIMEOUT_S + 1.0
    loop.run_until_complete(asyncio.sleep(0))  # the hand-over still arrives once the loop runs
    assert idle._pending.popleft().text == "b"
    loop.close()
