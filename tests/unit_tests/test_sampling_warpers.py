"""``process_logits`` equals transformers' own sampling warpers on the same logits.

The reference is what ``generate(do_sample=True)`` builds (``generation/utils.py``,
``_get_logits_processor``): ``TemperatureLogitsWarper`` unless ``temperature == 1``,
``TopKLogitsWarper`` unless ``top_k == 0``, ``TopPLogitsWarper`` unless ``top_p == 1``, in
that order, ``min_tokens_to_keep=1`` (no beams), on float32 scores; the sampling
distribution is the softmax of the warped scores. Both must agree to float32 rounding and
remove exactly the same tokens.
"""

from __future__ import annotations

import pytest
import torch
from transformers import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from langchain_seed.engine.config import SamplingParams
from langchain_seed.engine.speculation.sampling import process_logits

VOCAB = 1000
ROWS = 8

# (temperature, top_k, top_p): each filter alone, combined, off, and at its edges.
COMBOS = [
    (1.0, 0, 1.0),  # everything off: plain softmax
    (0.7, 0, 1.0),  # temperature alone
    (1.6, 0, 1.0),
    (1.0, 50, 1.0),  # top-k alone
    (1.0, 1, 1.0),  # top-k = 1: a point mass on the argmax (ties kept)
    (1.0, VOCAB - 1, 1.0),  # top-k = vocab - 1: only the least likely token removed
    (1.0, VOCAB, 1.0),  # top-k = vocab: nothing removed
    (1.0, 5 * VOCAB, 1.0),  # top-k larger than the vocabulary: nothing removed
    (1.0, 0, 0.9),  # top-p alone
    (1.0, 0, 0.3),
    (1.0, 0, 1e-6),  # top-p so small only the most likely token survives
    (0.5, 20, 0.8),  # all three
    (1.3, 5, 0.5),
    (2.0, 200, 0.95),
    (0.2, 3, 0.99),
    (0.9, 5 * VOCAB, 0.7),  # top-k off by size, top-p on
]


def ids(combo: tuple[float, int, float]) -> str:
    t, k, p = combo
    return f"t{t}-k{k}-p{p}"


def reference(logits: torch.Tensor, temperature: float, top_k: int, top_p: float):
    """``[n, vocab]`` warped scores and probabilities, as transformers' generate samples."""
    warpers = LogitsProcessorList()
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(float(temperature)))
    if top_k != 0:
        warpers.append(TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=1))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))
    scores = logits.float().clone()  # generate casts the last-position logits to float32
    input_ids = torch.zeros((scores.shape[0], 1), dtype=torch.long)  # unused by warpers
    warped = warpers(input_ids, scores)  # [n, vocab]
    return warped, warped.softmax(dim=-1)


def distribution_mismatch(
    logits: torch.Tensor, temperature: float, top_k: int, top_p: float
) -> str | None:
    """How ``process_logits`` differs from transformers' warpers here, or ``None``."""
    params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p)
    got = process_logits(logits, params)  # [n, vocab]
    warped, want = reference(logits, temperature, top_k, top_p)
    if got.shape != want.shape or got.dtype != torch.float32:
        return f"shape/dtype {tuple(got.shape)} {got.dtype}, want {tuple(want.shape)} float32"
    # Zero pattern: a token removed by a filter (warped to -inf) has probability exactly 0,
    # and so has one whose probability underflows float32; both sides must agree on each.
    if not bool((got[~torch.isfinite(warped)] == 0).all()):
        return "a filtered token kept mass"
    kept_got, kept_want = got > 0, want > 0
    for row in range(logits.shape[0]):  # name the first row and tokens that differ
        diff = (kept_got[row] != kept_want[row]).nonzero().flatten().tolist()
        if diff:
            return (
                f"row {row}: tokens kept differently (first {diff[:10]}; "
                f"process_logits keeps {int(kept_got[row].sum())}, "
                f"transformers keeps {int(kept_want[row].sum())})"
            )
    if not torch.allclose(got, want, rtol=1e-5, atol=1e-7):
        return f"probabilities differ by up to {float((got - want).abs().max()):.3g}"
    if not torch.allclose(got.sum(-1), torch.ones(logits.shape[0]), rtol=0, atol=1e-5):
        return "a row does not sum to 1"
    return None


def random_logits(seed: int, *, scale: float = 3.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(ROWS, VOCAB, generator=gen) * scale  # [ROWS, VOCAB]


def tied_logits(seed: int) -> torch.Tensor:
    """``[ROWS, VOCAB]`` logits on a coarse grid: many exact ties, also at the top."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.round(torch.randn(ROWS, VOCAB, generator=gen) * 2)  # ~15 distinct values
    logits[0] = 0.0  # a uniform row: every token tied
    logits[1, :] = -5.0
    logits[1, :10] = 4.0  # ten tokens tied for the maximum
    return logits


@pytest.mark.parametrize("combo", COMBOS, ids=ids)
def test_process_logits_equals_transformers_warpers_on_random_logits(combo):
    assert distribution_mismatch(random_logits(0), *combo) is None


@pytest.mark.parametrize("combo", COMBOS, ids=ids)
def test_process_logits_equals_transformers_warpers_on_peaked_logits(combo):
    # Large logits: a few tokens carry almost all the mass, top-p keeps very few.
    assert distribution_mismatch(random_logits(1, scale=12.0), *combo) is None


@pytest.mark.parametrize("combo", COMBOS, ids=ids)
def test_process_logits_equals_transformers_warpers_on_tied_logits(combo):
    assert distribution_mismatch(tied_logits(2), *combo) is None


@pytest.mark.parametrize("combo", COMBOS, ids=ids)
def test_process_logits_equals_transformers_warpers_on_bfloat16_logits(combo):
    # A bfloat16 model's logits: both sides compute in float32 from the same values.
    assert distribution_mismatch(random_logits(3).to(torch.bfloat16), *combo) is None


def test_process_logits_equals_transformers_warpers_with_masked_tokens():
    # Logits already at -inf (a token banned upstream) stay removed and take no mass.
    logits = random_logits(4)
    logits[:, :100] = float("-inf")
    for combo in [(1.0, 0, 1.0), (0.8, 30, 0.9), (1.0, 950, 1.0), (1.2, 0, 0.5)]:
        assert distribution_mismatch(logits, *combo) is None


def test_top_k_keeps_every_token_tied_with_the_kth_like_transformers():
    # Tokens 0-2 tie for the top score: top-k = 2 keeps all three (scores < kth are removed).
    logits = torch.tensor([[3.0, 3.0, 3.0, 1.0, 1.0, 0.0]])
    probs = process_logits(logits, SamplingParams(temperature=1.0, top_k=2))
    assert (probs[0] > 0).tolist() == [True, True, True, False, False, False]
    torch.testing.assert_close(probs[0, :3], torch.full((3,), 1 / 3))
    assert distribution_mismatch(logits, 1.0, 2, 1.0) is None


def test_top_p_keeps_the_smallest_set_whose_mass_reaches_top_p_like_transformers():
    # Masses 0.5, 0.3, 0.15, 0.05: top-p = 0.75 needs the first two (0.8 >= 0.75).
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    probs = process_logits(logits, SamplingParams(temperature=1.0, top_p=0.75))
    assert (probs[0] > 0).tolist() == [True, True, False, False]
    torch.testing.assert_close(probs[0], torch.tensor([0.625, 0.375, 0.0, 0.0]))
    assert distribution_mismatch(logits, 1.0, 0, 0.75) is None
