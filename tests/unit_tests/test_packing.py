"""Packed verification forwards equal padded ones (logits and the KV they leave).

These are the transformers forward's packing (``execution="transformers"``); the own
execution path packs every forward (tests/unit_tests/test_own_execution.py).
"""

from __future__ import annotations

import pytest
import torch

from langchain_seed.engine.execution.packing import Packing, supports_packing
from langchain_seed.engine.execution.runner import ModelRunner
from tests.tiny_models import FAMILIES

VOCAB = 259


def runners(family: str) -> tuple[ModelRunner, ModelRunner]:
    """Two runners over one model: one that packs ragged forwards, one that never does."""
    model = FAMILIES[family](VOCAB, seed=3).float()
    packed = ModelRunner(model, 4, "cpu", 512, execution="transformers")
    padded = ModelRunner(model, 4, "cpu", 512, execution="transformers")
    padded.packs = False
    return packed, padded


def prefill(runner: ModelRunner, prompts: list[list[int]]) -> None:
    runner.cache.layout(64, live_rows=0)
    runner.prefill(0, prompts)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_packed_forward_equals_padded(family: str):
    packed, padded = runners(family)
    assert packed.packs, f"{family} should pack (SDPA through the attention interface)"
    g = torch.Generator().manual_seed(0)
    # Ragged prompts, longer than the sliding families' 8-token window.
    prompts = [torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in (12, 5, 9, 20)]
    steps = [
        [[7, 8, 9, 10, 11], [4], [5, 6], [3, 3, 3]],  # ragged: packed
        [[12], [13, 14, 15, 16], [17], [18, 19]],
        [[20], [21], [22], [23]],  # even: padded in both
    ]
    for runner in (packed, padded):
        prefill(runner, prompts)
    for feed in steps:
        out = [r.forward(0, feed) for r in (packed, padded)]
        assert out[0] is not None and out[1] is not None
        for i, tokens in enumerate(feed):
            n = len(tokens)  # only real positions are compared; padding is never read
            torch.testing.assert_close(out[0][i, :n], out[1][i, :n], rtol=1e-4, atol=1e-4)
        for r in (packed, padded):
            for i, tokens in enumerate(feed):
                r.keep(i, r.lengths[i] + len(tokens) - (i % 2))  # keep some, roll back others
    assert packed.packed_forwards == 2 and padded.packed_forwards == 0
    for row in range(4):  # the KV left behind (what later steps attend to) is the same
        length = packed.lengths[row]
        assert length == padded.lengths[row]
        kv = zip(packed.cache.read(row, 0, length), padded.cache.read(row, 0, length))
        for (k1, v1), (k2, v2) in kv:
            torch.testing.assert_close(k1, k2, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(v1, v2, rtol=1e-4, atol=1e-4)


def test_only_ragged_logit_forwards_pack():
    packed, _ = runners("llama")
    assert packed.packing([1, 3, 2])
    assert not packed.packing([2, 2, 2])  # nothing to save
    assert not packed.packing([0, 3])  # an empty row has no token to stand for it
    assert packed.computed_tokens([1, 3, 2]) == 6
    assert packed.computed_tokens([2, 2, 2]) == 6
    packed.packs = False
    assert packed.computed_tokens([1, 3, 2]) == 9


def test_eager_attention_models_keep_padded_forwards():
    model = FAMILIES["llama"](VOCAB, seed=0)
    model.config._attn_implementation = "eager"
    assert not supports_packing(model)


def test_packing_indices_round_trip():
    packing = Packing.of([3, 1, 2], torch.device("cpu"))
    packed = torch.arange(6.0)[None, :, None]  # [1, T, 1]
    padded = packing.pad(packed, dim=1)  # [b, q, 1]
    assert padded[..., 0].tolist() == [[0, 1, 2], [3, 3, 3], [4, 5, 5]]
    assert torch.equal(packing.unpad(padded), packed)
