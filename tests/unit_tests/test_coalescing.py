"""Request coalescing: identical deterministic samples of a group decode once."""

from __future__ import annotations

import time
from concurrent.futures import CancelledError

import pytest
from test_review_defects import greedy_ref  # transformers' greedy generate, EOS ignored

from langchain_seed import SeedLLM
from langchain_seed.engine import Engine, EngineConfig, SamplingParams
from langchain_seed.engine.results import EngineClosedError

PROMPT = "the same prompt for every sample"
LONG_PROMPT = "stream forever"  # the tiny target's greedy continuation has no EOS for long


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def engine(tiny_pair):
    with Engine(EngineConfig(model=str(tiny_pair.target_path), max_batch_size=8)) as eng:
        yield eng


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.005)


def test_greedy_duplicates_decode_once_and_each_gets_its_own_result(engine, tiny_pair):
    params = SamplingParams(max_tokens=10, ignore_eos=True)
    results = engine.generate([PROMPT, PROMPT, "other", PROMPT], params, group="g")
    expected = greedy_ref(tiny_pair, PROMPT, 10)
    other = greedy_ref(tiny_pair, "other", 10)
    assert [r.token_ids for r in results] == [expected, expected, other, expected]
    assert len({r.request_id for r in results}) == 4
    assert all(r.group == "g" for r in results)
    results[0].token_ids.append(-1)  # results are independent objects
    assert results[1].token_ids == expected
    stats = engine.stats()
    assert stats.requests_coalesced == 2
    assert stats.requests_finished == 2  # two sequences ran
    assert stats.spec.generated_tokens == 20


def test_a_coalesced_batch_costs_what_its_distinct_requests_cost(tiny_pair):
    config = EngineConfig(model=str(tiny_pair.target_path), prefix_cache_tokens=0)
    params = SamplingParams(max_tokens=8, ignore_eos=True)
    with Engine(config) as engine:
        engine.generate([PROMPT, "other"], params, group="g")
        alone = engine.runner.tokens_processed
    with Engine(config) as engine:
        engine.generate([PROMPT] * 3 + ["other"] * 2, params, group="g")
        coalesced = engine.runner.tokens_processed
    assert coalesced == alone


def test_same_seed_coalesces_other_seeds_and_unseeded_samples_do_not(engine):
    seeded = [SamplingParams(max_tokens=6, temperature=1.0, seed=s) for s in (7, 7, 8)]
    results = engine.generate([PROMPT] * 3, seeded, group="g")
    assert results[0].token_ids == results[1].token_ids
    assert engine.stats().requests_coalesced == 1
    engine.reset_stats()
    engine.generate([PROMPT] * 3, SamplingParams(max_tokens=6, temperature=1.0), group="g")
    assert engine.stats().requests_coalesced == 0


def test_different_parameters_are_not_coalesced(engine):
    engine.generate(
        [PROMPT, PROMPT, PROMPT],
        [
            SamplingParams(max_tokens=4),
            SamplingParams(max_tokens=5),
            SamplingParams(max_tokens=4, stop=("x",)),
        ],
        group="g",
    )
    assert engine.stats().requests_coalesced == 0


def test_duplicates_outside_a_group_or_across_groups_are_not_coalesced(engine):
    params = SamplingParams(max_tokens=4)
    engine.generate([PROMPT] * 3, params)
    engine.generate([PROMPT] * 2, params, group=["a", "b"])
    assert engine.stats().requests_coalesced == 0


def test_streaming_submissions_are_not_coalesced(engine):
    pieces: list[str] = []
    futures = engine.submit_many(
        [PROMPT] * 2, SamplingParams(max_tokens=6), group="g", on_delta=pieces.append
    )
    results = [f.result(timeout=30) for f in futures]
    assert engine.stats().requests_coalesced == 0
    assert sorted("".join(pieces)) == sorted(results[0].text + results[1].text)  # interleaved


def test_cancelling_one_view_keeps_the_others_and_all_views_free_the_sequence(engine, tiny_pair):
    params = SamplingParams(max_tokens=40, ignore_eos=True)
    a, b, c = engine.submit_many([PROMPT] * 3, params, group="g")
    assert a.cancel()
    with pytest.raises(CancelledError):
        a.result(timeout=0)
    assert b.result(timeout=30).token_ids == greedy_ref(tiny_pair, PROMPT, 40)
    assert c.result(timeout=30).token_ids == b.result().token_ids
    assert engine.stats().requests_cancelled == 0

    long = SamplingParams(max_tokens=600, ignore_eos=True)
    views = engine.submit_many([LONG_PROMPT] * 2, long, group="h")
    wait_until(lambda: len(engine.scheduler.running) == 1)
    assert all(v.cancel() for v in views)
    wait_until(lambda: not engine.scheduler.running and not engine.scheduler.waiting)
    stats = engine.stats()
    assert stats.requests_cancelled == 1
    assert stats.spec.generated_tokens < 40 + 600


def test_a_failed_leader_fails_every_view_with_its_error(engine):
    params = SamplingParams(max_tokens=600, ignore_eos=True, request_timeout=0.2)
    views = engine.submit_many([LONG_PROMPT] * 3, params, group="g")
    for view in views:
        with pytest.raises(TimeoutError, match="request_timeout"):
            view.result(timeout=30)


def test_views_fail_when_the_engine_closes_under_them(tiny_pair):
    engine = Engine(EngineConfig(model=str(tiny_pair.target_path)))
    views = engine.submit_many(
        [LONG_PROMPT] * 2, SamplingParams(max_tokens=600, ignore_eos=True), group="g"
    )
    wait_until(lambda: len(engine.scheduler.running) == 1)
    engine.close()
    for view in views:
        with pytest.raises(EngineClosedError):
            view.result(timeout=30)


def test_seedllm_greedy_samples_are_one_decode(engine, tiny_pair):
    llm = SeedLLM(engine=engine, max_tokens=8, temperature=0)
    result = llm.generate(["a prompt"], n=3)
    texts = [g.text for g in result.generations[0]]
    assert len(texts) == 3 and len(set(texts)) == 1
    assert engine.stats().requests_coalesced == 2
