"""Prefix cache: reuse across requests, partial matches, eviction, exactness."""

from __future__ import annotations

import time

import torch

from langchain_seed.engine import Engine, EngineConfig, SamplingParams
from langchain_seed.engine.execution.prefix_cache import PrefixCache


def fake_kv(start: int, end: int) -> dict:
    """Per-layer KV whose values encode the token position (to check what is gathered)."""
    span = torch.arange(start, end, dtype=torch.float32)[None, :, None]  # [1, n, 1]
    return {"target": [(span.clone(), -span.clone()) for _ in range(2)]}


def test_longest_prefix_match_and_partial_edge():
    cache = PrefixCache(1000)
    cache.insert([1, 2, 3, 4, 5], fake_kv)
    length, kv, handle = cache.lookup([1, 2, 3, 9])
    assert length == 3
    assert kv[0][0].flatten().tolist() == [0.0, 1.0, 2.0]
    cache.release(handle)
    assert cache.lookup([7, 7])[0] == 0


def test_prompt_that_is_a_prefix_of_a_cached_one_is_served_whole():
    cache = PrefixCache(1000)
    cache.insert(list(range(10)), fake_kv)
    length, kv, _ = cache.lookup(list(range(6)))
    assert length == 6 and kv[1][1].flatten().tolist() == [-float(i) for i in range(6)]


def test_split_keeps_both_branches():
    cache = PrefixCache(1000)
    cache.insert([1, 2, 3, 4], fake_kv)
    cache.insert([1, 2, 8, 9], fake_kv)
    assert cache.lookup([1, 2, 3, 4])[0] == 4
    assert cache.lookup([1, 2, 8, 9])[0] == 4
    assert cache.tokens_stored == 6  # [1, 2] shared, [3, 4] and [8, 9] below


def test_eviction_under_budget_spares_referenced_spans():
    cache = PrefixCache(8)
    held = cache.insert([1, 2, 3, 4, 5], fake_kv)  # a running request holds this
    released = cache.insert([9, 9, 9], fake_kv)
    cache.release(released)
    cache.insert([7, 7, 7, 7], fake_kv)  # over budget: the unreferenced [9, 9, 9] goes
    assert cache.match([1, 2, 3, 4, 5])[0] == 5
    assert cache.match([9, 9, 9])[0] == 0
    assert cache.evictions >= 1
    cache.release(held)
    cache.insert([6, 6, 6, 6, 6, 6], fake_kv)
    assert cache.tokens_stored <= 8 or cache.match([1, 2, 3, 4, 5])[0] == 0


HEADER = "You are a careful assistant. Answer with one word. " * 3


def test_shared_header_is_reused_across_requests_at_different_times(tiny_pair):
    prompts = [HEADER + f"Question {i}: what is {i}?" for i in range(6)]
    base = EngineConfig(model=str(tiny_pair.target_path), max_batch_size=8)
    params = SamplingParams(max_tokens=12)
    with Engine(EngineConfig(**{**_fields(base), "prefix_cache_tokens": 0})) as off:
        expected = [r.token_ids for r in off.generate(prompts, params)]
    with Engine(base) as on:
        first = on.generate(prompts[:2], params)
        time.sleep(0.05)
        later = on.generate(prompts[2:], params)
        stats = on.stats().prefix_cache
        cached = [r.stats.cached_prompt_tokens for r in first + later]
    assert [r.token_ids for r in first + later] == expected
    header_tokens = len(tiny_pair.tokenizer(HEADER).input_ids)
    assert all(c >= header_tokens - 1 for c in cached[2:])
    assert stats["hit_tokens"] > 0 and stats["hit_rate"] > 0.5


def test_group_siblings_share_one_prefill(tiny_pair):
    config = EngineConfig(model=str(tiny_pair.target_path), prefix_cache_tokens=0)
    prompt = "the same prompt for every sample"
    # Distinct max_tokens: identical greedy samples of a group would decode once (coalescing).
    params = [SamplingParams(max_tokens=6 + i) for i in range(5)]
    with Engine(config) as engine:
        results = engine.generate([prompt] * 5, params, group="g")
        processed = engine.runner.tokens_processed
    prompt_len = len(tiny_pair.tokenizer(prompt).input_ids)
    assert processed == (prompt_len - 1) + sum(
        r.stats.verifications + r.stats.drafted for r in results
    )
    assert sorted(r.stats.cached_prompt_tokens for r in results) == [0] + [prompt_len - 1] * 4
    longest = max((r.token_ids for r in results), key=len)
    assert all(r.token_ids == longest[: len(r.token_ids)] for r in results)


def test_small_budget_evicts_but_outputs_stay_exact(tiny_pair):
    prompts = [f"{i} " * 20 + "tail" for i in range(8)]
    params = SamplingParams(max_tokens=8)
    with Engine(EngineConfig(model=str(tiny_pair.target_path), prefix_cache_tokens=0)) as off:
        expected = [r.token_ids for r in off.generate(prompts, params)]
    config = EngineConfig(
        model=str(tiny_pair.target_path), prefix_cache_tokens=64, max_batch_size=2
    )
    with Engine(config) as small:
        got = [r.token_ids for r in small.generate(prompts, params)]
        stats = small.stats().prefix_cache
    assert got == expected
    assert stats["evictions"] > 0 and stats["tokens_stored"] <= 64


def _fields(config: EngineConfig) -> dict:
    return {name: getattr(config, name) for name in config.__slots__}
