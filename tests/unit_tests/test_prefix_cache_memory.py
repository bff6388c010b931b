"""Prefix cache memory: nodes own their KV, eviction frees bytes, the budget bounds bytes.

Measured in bytes of the unique storages the tree holds, not only in token counters.
"""

from __future__ import annotations

import gc
import random
import weakref

import pytest
import torch

from langchain_seed.engine.execution.prefix_cache import KV, PrefixCache

LAYERS, KV_HEADS, HEAD_DIM = 2, 2, 8
# keys + values, every layer, float32: 2 * 2 * 2 * 8 * 4 = 256 B a token
BYTES_PER_TOKEN = 2 * LAYERS * KV_HEADS * HEAD_DIM * 4


def fake_kv(start: int, end: int, kv_heads: int = KV_HEADS) -> dict[str, KV]:
    """Per-layer ``[kv_heads, n, head_dim]`` KV whose values encode position and layer."""
    pos = torch.arange(start, end, dtype=torch.float32)[None, :, None]  # [1, n, 1]
    base = pos.expand(kv_heads, end - start, HEAD_DIM)
    return {"target": [((base + 1000 * i).clone(), -(base + 1000 * i)) for i in range(LAYERS)]}


def held_bytes(cache: PrefixCache) -> int:
    """Bytes of the distinct storages referenced by the tree's tensors (measured here)."""
    storages = {}
    for node in cache._nodes():
        for layers in node.kv.values():
            for k, v in layers:
                for t in (k, v):
                    storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(storages.values())


def release_all(cache: PrefixCache, *handles: object) -> None:
    for handle in handles:
        cache.release(handle)  # type: ignore[arg-type]


@pytest.mark.parametrize("force", ["shrink_budget", "insert_more"])
def test_evicting_the_split_tail_frees_its_bytes(force: str) -> None:
    first = list(range(1000))
    second = first[:10] + list(range(5000, 5020))  # shares 10 tokens: splits 10 | 990
    cache = PrefixCache(1020 if force == "shrink_budget" else 1000)
    cache.release(cache.insert(first, fake_kv))
    assert held_bytes(cache) == 1000 * BYTES_PER_TOKEN
    cache.release(cache.insert(second, lambda s, e: fake_kv(s + 5000 - 10, e + 5000 - 10)))
    if force == "shrink_budget":
        assert cache.tokens_stored == 1020 and cache.evictions == 0
        cache.budget_tokens = 30  # the setter evicts: the 990-token tail is least recent
    assert cache.evicted_tokens == 990 and cache.tokens_stored == 30
    expected = (10 + 20) * BYTES_PER_TOKEN  # 7,680 B; the view-sharing split held 261,120
    assert held_bytes(cache) == expected
    assert cache.stats()["memory_bytes"] == expected
    assert cache.stats()["bytes_per_token"] == BYTES_PER_TOKEN
    length, kv, _ = cache.lookup(second)
    assert length == 30 and kv is not None
    assert kv[1][0][0, :, 0].tolist() == [1000.0 + p for p in range(10)] + [
        1000.0 + p for p in range(5000, 5020)
    ]


def test_split_drops_every_reference_to_the_original_storage() -> None:
    originals: list[weakref.ref[torch.Tensor]] = []

    def read(start: int, end: int) -> dict[str, KV]:
        kv = fake_kv(start, end)
        originals.extend(weakref.ref(t) for layer in kv["target"] for t in layer)
        return kv

    cache = PrefixCache(10_000)
    cache.insert(list(range(100)), read)
    cache.insert(list(range(10)) + [999], fake_kv)  # split at 10
    gc.collect()
    # A slice view keeps its base tensor alive (``view._base``); owned copies do not.
    assert all(ref() is None for ref in originals)


@pytest.mark.parametrize("kv_heads", [1, 2])
def test_split_halves_own_exactly_their_tokens(kv_heads: int) -> None:
    # With one kv head a token slice is already contiguous: .contiguous() would keep the view.
    cache = PrefixCache(10_000)
    cache.insert(list(range(50)), lambda s, e: fake_kv(s, e, kv_heads))
    cache.insert(list(range(20)) + [777], lambda s, e: fake_kv(s, e, kv_heads))
    per_token = BYTES_PER_TOKEN * kv_heads // KV_HEADS
    for node in cache._nodes():
        for k, v in node.kv["target"]:
            for t in (k, v):
                assert t.shape[1] == len(node.tokens)
                assert t.untyped_storage().nbytes() == t.numel() * t.element_size()
    assert held_bytes(cache) == cache.tokens_stored * per_token == 51 * per_token


def test_views_passed_to_insert_are_copied_and_owned_tensors_are_kept() -> None:
    big = torch.zeros(KV_HEADS, 4096, HEAD_DIM)  # [kv_heads, 4096, head_dim]

    def views(start: int, end: int) -> dict[str, KV]:
        return {"target": [(big[:, :10], big[:, 10:20]) for _ in range(LAYERS)]}

    cache = PrefixCache(10_000)
    cache.insert(list(range(10)), views)
    assert cache.stats()["memory_bytes"] == 10 * BYTES_PER_TOKEN  # not 4096 tokens' worth
    owned = fake_kv(0, 5)
    cache.insert([42] * 5, lambda s, e: owned)
    kept = cache.match([42] * 5)[1][0].kv["target"][0][0]
    assert kept.data_ptr() == owned["target"][0][0].data_ptr()  # no needless copy


def test_one_tensor_returned_twice_is_stored_twice() -> None:
    shared = fake_kv(0, 10)["target"][0][0]
    cache = PrefixCache(10_000)
    cache.insert(list(range(10)), lambda s, e: {"target": [(shared, shared)] * LAYERS})
    assert cache.stats()["memory_bytes"] == cache.tokens_stored * BYTES_PER_TOKEN


def test_full_cache_memory_stays_within_budget_bytes() -> None:
    rng = random.Random(0)
    budget = 300
    cache = PrefixCache(budget)
    for _ in range(200):
        # small alphabet and shared heads: many partial matches, splits and evictions
        head = [rng.randrange(3) for _ in range(rng.randrange(0, 30))]
        tokens = head + [rng.randrange(50) for _ in range(rng.randrange(1, 60))]
        length, _, looked = cache.lookup(tokens)
        cache.release(looked)
        cache.release(cache.insert(tokens, fake_kv))
        stats = cache.stats()
        assert stats["tokens_stored"] <= budget
        assert stats["memory_bytes"] == stats["tokens_stored"] * BYTES_PER_TOKEN
        assert stats["memory_bytes"] <= budget * stats["bytes_per_token"]
        assert held_bytes(cache) == stats["memory_bytes"]
    assert cache.evictions > 0 and cache.tokens_stored > budget // 2


def test_referenced_spans_are_never_evicted_and_exceed_the_budget_only_while_held() -> None:
    cache = PrefixCache(50)
    held_a = cache.insert(list(range(40)), fake_kv)
    held_b = cache.insert(list(range(100, 140)), fake_kv)  # both in use: 80 > 50 tokens
    assert cache.tokens_stored == 80 and cache.evictions == 0
    assert cache.stats()["memory_bytes"] == 80 * BYTES_PER_TOKEN
    cache.budget_tokens = 0  # even a zero budget cannot evict spans in use
    assert cache.match(list(range(40)))[0] == 40 and cache.match(list(range(100, 140)))[0] == 40
    cache.budget_tokens = 50
    cache.release(held_b)  # now evictable: the cache falls back within budget
    assert cache.tokens_stored == 40 and cache.match(list(range(100, 140)))[0] == 0
    assert cache.stats()["memory_bytes"] == 40 * BYTES_PER_TOKEN
    length, kv, handle = cache.lookup(list(range(40)))
    assert (
        length == 40
        and kv is not None
        and kv[0][0][0, :, 0].tolist() == [float(p) for p in range(40)]
    )
    release_all(cache, held_a, handle)


def test_a_span_locked_across_a_split_is_kept_whole_until_released() -> None:
    cache = PrefixCache(1000)
    cache.release(cache.insert(list(range(900)), fake_kv))
    _, _, held = cache.lookup(list(range(10)))  # locks the whole 900-token node
    inserted = cache.insert(list(range(10)) + list(range(2000, 2200)), fake_kv)  # split
    # The reference stays on the lower half (890 tokens) after the split: both leaves are in
    # use, so both are kept although 1,100 tokens exceed the budget of 1,000.
    assert cache.tokens_stored == 1100 and cache.match(list(range(900)))[0] == 900
    assert cache.stats()["memory_bytes"] == 1100 * BYTES_PER_TOKEN
    cache.release(held)  # the 890-token tail is now evictable and goes at once
    assert cache.match(list(range(900)))[0] == 10 and cache.tokens_stored == 210
    assert held_bytes(cache) == cache.stats()["memory_bytes"] == 210 * BYTES_PER_TOKEN
    cache.release(inserted)


def test_eviction_is_least_recently_used_first() -> None:
    cache = PrefixCache(100)
    for start in (0, 100, 200):
        cache.release(cache.insert(list(range(start, start + 20)), fake_kv))
    cache.release(cache.lookup(list(range(20)))[2])  # touch the oldest
    cache.budget_tokens = 40
    assert [cache.match(list(range(s, s + 20)))[0] for s in (0, 100, 200)] == [20, 0, 20]


def test_budget_must_be_a_non_negative_integer() -> None:
    with pytest.raises(ValueError, match="budget_tokens"):
        PrefixCache(-1)
    cache = PrefixCache(10)
    with pytest.raises(ValueError, match="budget_tokens"):
        cache.budget_tokens = 1.5  # type: ignore[assignment]
