"""Engine behaviour: validation, streaming, async, cancellation, timeouts, budget, stats."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import CancelledError

import pytest
import torch

from langchain_seed.engine import (
    Engine,
    EngineClosedError,
    EngineConfig,
    QueueFullError,
    SamplingParams,
)
from langchain_seed.engine.speculation.drafters.base import Draft


@pytest.fixture(scope="module")
def engine(tiny_pair):
    with Engine(EngineConfig(model=str(tiny_pair.target_path), max_batch_size=8)) as eng:
        yield eng


def greedy_ref(pair, prompt: str, max_new: int) -> list[int]:
    ids = pair.tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = pair.target.generate(ids, max_new_tokens=max_new, do_sample=False, pad_token_id=2)
    return out[0, ids.shape[1] :].tolist()


# ----- validation (raised at the call, naming the field) ---------------------------
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": ("",)}, "stop"),
        ({"request_timeout": 0}, "request_timeout"),
    ],
)
def test_invalid_sampling_params_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"policy": "magic"}, "policy"),
        ({"drafters": ("oracle",)}, "drafters"),
        ({"drafters": ("model",)}, "draft_model"),
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"gamma": -1}, "gamma"),
        ({"dtype": "int8"}, "dtype"),
        ({"prefix_cache_tokens": -5}, "prefix_cache_tokens"),
    ],
)
def test_invalid_engine_config_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        EngineConfig(**kwargs)


def test_empty_prompt_is_rejected_at_submit(engine):
    with pytest.raises(ValueError, match="empty"):
        engine.submit("")
    with pytest.raises(ValueError, match="empty"):
        engine.submit([])


def test_overlong_prompt_is_rejected_with_the_limit(engine):
    with pytest.raises(ValueError, match="context"):
        engine.submit([5] * 1020, SamplingParams(max_tokens=16))


def test_draft_with_other_vocabulary_is_a_clear_error(tiny_pair, tiny_small_vocab_pair):
    with pytest.raises(ValueError, match="vocabulary"):
        Engine(
            EngineConfig(
                model=str(tiny_pair.target_path),
                draft_model=str(tiny_small_vocab_pair.draft_path),
                drafters=("model",),
            )
        )


# ----- results, stop, streaming -----------------------------------------------------
def test_generate_returns_text_tokens_and_reason(engine, tiny_pair):
    [result] = engine.generate(["hello there"], SamplingParams(max_tokens=10))
    assert result.token_ids == greedy_ref(tiny_pair, "hello there", 10)
    assert result.finish_reason == "length"
    assert result.prompt_tokens == len(tiny_pair.tokenizer("hello there").input_ids)
    assert result.text == tiny_pair.tokenizer.decode(result.token_ids, skip_special_tokens=True)
    assert result.stats.generated_tokens == 10


def test_stop_string_ends_request_and_is_not_in_text(engine, tiny_pair):
    full = engine.generate(["stop test"], SamplingParams(max_tokens=16))[0].text
    stop = full[5:7]
    assert stop and stop not in full[:5]
    [result] = engine.generate(["stop test"], SamplingParams(max_tokens=16, stop=(stop,)))
    assert result.finish_reason == "stop"
    assert result.text == full[: full.index(stop)]


def test_stream_yields_deltas_that_join_to_the_text(engine):
    params = SamplingParams(max_tokens=12)
    pieces = list(engine.stream("stream me", params))
    assert len(pieces) > 1
    assert "".join(pieces) == engine.generate(["stream me"], params)[0].text


async def test_astream_and_agenerate(engine):
    params = SamplingParams(max_tokens=8)
    pieces = [p async for p in engine.astream("async one", params)]
    results = await engine.agenerate(["async one", "async two"], params)
    assert "".join(pieces) == results[0].text
    assert len(results) == 2


# ----- scheduling -------------------------------------------------------------------
def test_hundred_requests_complete_with_at_most_eight_running(tiny_pair):
    config = EngineConfig(model=str(tiny_pair.target_path), max_batch_size=8)
    with Engine(config) as engine:
        prompts = [f"request {i} " * (1 + i % 3) for i in range(100)]
        results = engine.generate(prompts, SamplingParams(max_tokens=6))
        stats = engine.stats()
    assert len(results) == 100 and all(r.token_ids for r in results)
    assert stats.requests_finished == 100
    assert stats.peak_batch_size <= 8


def test_cache_budget_makes_requests_wait_not_fail(tiny_pair):
    config = EngineConfig(model=str(tiny_pair.target_path), max_cache_tokens=120)
    with Engine(config) as engine:
        results = engine.generate(["a" * 20] * 6, SamplingParams(max_tokens=30))
        stats = engine.stats()
    assert len(results) == 6
    assert stats.peak_batch_size <= 2  # each reserves 20 + 30 + slack tokens


class OracleDrafter:
    """Drafts the reference continuation for one prompt and garbage for the others."""

    name = "oracle"

    def __init__(self, prompt_ids: list[int], continuation: list[int]) -> None:
        self.prompt_ids, self.continuation = prompt_ids, continuation

    def propose(self, sequences, max_lens):
        drafts = []
        for seq, n in zip(sequences, max_lens):
            if seq.prompt_ids == self.prompt_ids:
                done = len(seq.output_ids)
                drafts.append(Draft(self.continuation[done : done + n], None, self.name))
            else:
                drafts.append(Draft([3] * n, None, self.name))
        return drafts

    def release(self, sequence):
        pass


def test_sequences_of_one_batch_advance_by_different_amounts(tiny_pair):
    good, bad = "good prompt here", "bad prompt here"
    ref_good = greedy_ref(tiny_pair, good, 20)
    ids_good = tiny_pair.tokenizer(good).input_ids
    config = EngineConfig(
        model=str(tiny_pair.target_path), drafters=(), gamma=4, adaptive_gamma=False
    )
    # drafters=(): no built-in drafter, the oracle is the only one.
    with Engine(config, extra_drafters=[OracleDrafter(ids_good, ref_good)]) as engine:
        results = engine.generate([good, bad], SamplingParams(max_tokens=20))
        stats = engine.stats()
    good_res, bad_res = results
    assert good_res.token_ids == ref_good
    assert bad_res.token_ids == greedy_ref(tiny_pair, bad, 20)
    # In the same batched steps the good sequence gained 5 tokens per verification, the bad 1.
    assert good_res.stats.mean_accepted_length == pytest.approx(5.0)
    assert bad_res.stats.mean_accepted_length == pytest.approx(1.0)
    assert stats.peak_batch_size == 2
    assert good_res.stats.verifications == 4 and bad_res.stats.verifications == 20


def test_stop_string_inside_an_accepted_draft_ends_the_token_ids_there(tiny_pair):
    prompt = "good prompt here"
    ref = greedy_ref(tiny_pair, prompt, 20)
    decode = tiny_pair.tokenizer.decode
    # A stop string completed by the 7th token: a 5-token step accepts it mid-draft.
    stop = decode(ref[:7], skip_special_tokens=True)[-2:]
    end = next(k for k in range(1, 21) if stop in decode(ref[:k], skip_special_tokens=True))
    assert end % 5 != 0  # not at a step boundary, or the test proves nothing
    config = EngineConfig(
        model=str(tiny_pair.target_path), drafters=(), gamma=4, adaptive_gamma=False
    )
    oracle = OracleDrafter(tiny_pair.tokenizer(prompt).input_ids, ref)
    with Engine(config, extra_drafters=[oracle]) as engine:
        [result] = engine.generate([prompt], SamplingParams(max_tokens=20, stop=(stop,)))
    assert result.finish_reason == "stop"
    assert result.token_ids == ref[:end]  # what token-by-token decoding returns
    assert result.stats.generated_tokens == end
    full = decode(ref, skip_special_tokens=True)
    assert result.text == full[: full.index(stop)]


def test_target_tokens_are_prompt_plus_verified_positions(tiny_pair):
    config = EngineConfig(
        model=str(tiny_pair.target_path),
        draft_model=str(tiny_pair.draft_path),
        drafters=("model", "ngram"),
        prefix_cache_tokens=0,
        adaptive_gamma=False,
    )
    with Engine(config) as engine:
        results = engine.generate(
            [f"count {i} " * 3 for i in range(6)], SamplingParams(max_tokens=15)
        )
        processed = engine.runner.tokens_processed
        stats = engine.stats()
    prompt_part = sum(r.prompt_tokens - 1 for r in results)  # the last prompt token is verified
    verified = sum(r.stats.verifications + r.stats.drafted for r in results)
    assert processed == prompt_part + verified == stats.spec.target_tokens


# ----- cancellation, timeouts, close ------------------------------------------------
def test_cancelled_future_frees_its_slot_and_others_finish(tiny_pair):
    config = EngineConfig(model=str(tiny_pair.target_path), max_batch_size=2)
    with Engine(config) as engine:
        long = engine.submit("long one", SamplingParams(max_tokens=400, ignore_eos=True))
        time.sleep(0.05)
        assert long.cancel() or long.done()
        others = engine.generate(["short a", "short b"], SamplingParams(max_tokens=5))
        deadline = time.time() + 10
        while engine.scheduler.running and time.time() < deadline:
            time.sleep(0.01)
        assert not engine.scheduler.running
        assert engine.stats().requests_cancelled == 1
    assert all(len(r.token_ids) == 5 for r in others)
    with pytest.raises(CancelledError):
        long.result()


async def test_cancelled_asyncio_task_cancels_the_request(tiny_pair):
    config = EngineConfig(model=str(tiny_pair.target_path))
    with Engine(config) as engine:
        task = asyncio.ensure_future(
            engine.agenerate(["cancel me"], SamplingParams(max_tokens=500, ignore_eos=True))
        )
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(200):
            if not engine.scheduler.running:
                break
            await asyncio.sleep(0.01)
        assert not engine.scheduler.running


def test_request_timeout_fails_only_that_request(tiny_pair):
    with Engine(EngineConfig(model=str(tiny_pair.target_path))) as engine:
        slow = engine.submit(
            "slow", SamplingParams(max_tokens=600, ignore_eos=True, request_timeout=0.05)
        )
        fast = engine.submit("fast", SamplingParams(max_tokens=4))
        with pytest.raises(TimeoutError, match="request_timeout"):
            slow.result(timeout=30)
        assert len(fast.result(timeout=30).token_ids) == 4


def test_close_fails_pending_requests_and_rejects_new_ones(tiny_pair):
    engine = Engine(EngineConfig(model=str(tiny_pair.target_path), max_batch_size=1))
    futures = engine.submit_many(["x"] * 4, SamplingParams(max_tokens=300, ignore_eos=True))
    engine.close()
    for future in futures:
        with pytest.raises(EngineClosedError):
            future.result(timeout=10)
    with pytest.raises(EngineClosedError):
        engine.submit("after close")


def test_bounded_queue_raises_when_full(tiny_pair):
    config = EngineConfig(model=str(tiny_pair.target_path), max_batch_size=1, max_queue=2)
    with Engine(config) as engine:
        with pytest.raises(QueueFullError, match="max_queue"):
            for _ in range(10):
                engine.submit("q", SamplingParams(max_tokens=200, ignore_eos=True))


def test_submissions_from_many_threads(engine, tiny_pair):
    results: dict[int, list[int]] = {}

    def worker(i: int) -> None:
        results[i] = engine.generate([f"thread {i}"], SamplingParams(max_tokens=6))[0].token_ids

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(8):
        assert results[i] == greedy_ref(tiny_pair, f"thread {i}", 6)


def test_nan_in_one_request_fails_only_that_request(tiny_pair, monkeypatch):
    with Engine(EngineConfig(model=str(tiny_pair.target_path))) as engine:
        original = engine.runner.forward

        def poisoned(start, tokens, *, logits="all", skip=None):
            out = original(start, tokens, logits=logits, skip=skip)
            bang = tiny_pair.tokenizer("!")["input_ids"][0]
            if out is not None:
                for i, row in enumerate(tokens):
                    pending = skip[i] if skip else 0  # prompt tokens fed ahead (unified step)
                    if len(row) > pending and row[pending] == bang:
                        out[i] = float("nan")
            return out

        monkeypatch.setattr(engine.runner, "forward", poisoned)
        bad = engine.submit("boom!", SamplingParams(max_tokens=4))
        good = engine.submit("fine", SamplingParams(max_tokens=4))
        with pytest.raises(FloatingPointError, match="non-finite"):
            bad.result(timeout=30)
        assert len(good.result(timeout=30).token_ids) == 4


def test_step_crash_fails_running_requests_and_engine_recovers(tiny_pair, monkeypatch):
    with Engine(EngineConfig(model=str(tiny_pair.target_path))) as engine:
        calls = {"n": 0}
        original = engine.runner.forward

        def flaky(start, tokens, **kwargs):
            calls["n"] += 1
            if calls["n"] == 2:
                raise RuntimeError("injected device failure")
            return original(start, tokens, **kwargs)

        monkeypatch.setattr(engine.runner, "forward", flaky)
        doomed = engine.submit("first", SamplingParams(max_tokens=5))
        with pytest.raises(RuntimeError, match="injected"):
            doomed.result(timeout=30)
        after = engine.generate(["second"], SamplingParams(max_tokens=5))[0]
        assert after.token_ids == greedy_ref(tiny_pair, "second", 5)
