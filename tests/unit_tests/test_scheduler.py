"""Draft sizing: ``Scheduler.choose_gamma`` against the padded-forward cost model."""

from __future__ import annotations

import pytest

from langchain_seed.engine import EngineConfig
from langchain_seed.engine.scheduler import PROBE_EVERY, CostModel, Scheduler


def scheduler(c0: float, c1: float) -> Scheduler:
    sched = Scheduler(EngineConfig(model="unused"))
    sched.cost.c0, sched.cost.c1, sched.cost.fitted = c0, c1, True
    return sched


def gammas(sched: Scheduler, acceptance: list[float], available: int = 4) -> list[int]:
    b = len(acceptance)
    return sched.choose_gamma([None] * b, [available] * b, acceptance)  # type: ignore[list-item]


def test_memory_bound_forward_drafts_the_most_useful_length():
    # Extra positions nearly free (GPU-like): a = 0.6 drafts are worth all 4 tokens.
    assert gammas(scheduler(c0=1.0, c1=0.001), [0.6] * 8) == [4] * 8


def test_compute_bound_batch_does_not_speculate():
    # Each extra position costs what it may save: 32 rows padded to 2 positions double the
    # forward for 0.6 expected tokens per row, so plain decoding wins.
    assert gammas(scheduler(c0=0.01, c1=0.01), [0.6] * 32) == [0] * 32


def test_useless_drafts_give_autoregressive_steps():
    assert gammas(scheduler(c0=1.0, c1=0.001), [0.0] * 4) == [0] * 4


def test_one_good_drafter_pays_for_the_padding_only_when_positions_are_cheap():
    acceptance = [0.95] + [0.0] * 15
    assert gammas(scheduler(c0=0.01, c1=0.01), acceptance) == [0] * 16
    assert gammas(scheduler(c0=1.0, c1=0.001), acceptance)[0] == 4


def test_gamma_never_exceeds_the_available_draft():
    sched = scheduler(c0=1.0, c1=0.001)
    out = sched.choose_gamma([None] * 3, [0, 2, 5], [0.9, 0.9, 0.9])  # type: ignore[list-item]
    assert out == [0, 2, 5]


def test_draft_model_cost_per_position_limits_the_length():
    sched = scheduler(c0=1.0, c1=0.001)
    b = 4
    cheap = sched.choose_gamma([None] * b, [4] * b, [0.6] * b, extra_cost=0.01)  # type: ignore[list-item]
    dear = sched.choose_gamma([None] * b, [4] * b, [0.6] * b, extra_cost=2.0)  # type: ignore[list-item]
    assert cheap == [4] * b and dear == [0] * b


def test_unfitted_cost_model_probes_one_token_now_and_then():
    sched = Scheduler(EngineConfig(model="unused"))
    sched.cost.c0, sched.cost.c1 = 0.01, 0.01  # prior says: do not speculate
    picks = [gammas(sched, [0.6] * 32)[0] for _ in range(PROBE_EVERY * 2)]
    assert picks.count(1) == 2 and set(picks) == {0, 1}
    sched.cost.fitted = True
    assert all(gammas(sched, [0.6] * 32)[0] == 0 for _ in range(PROBE_EVERY * 2))


def test_cost_model_fits_a_line():
    model = CostModel()
    for tokens in (8, 16, 32, 64, 8, 16, 32, 64):
        model.observe(tokens, 0.5 + 0.01 * tokens)
    assert model.fitted
    assert model.c0 == pytest.approx(0.5) and model.c1 == pytest.approx(0.01)
