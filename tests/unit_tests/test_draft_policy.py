"""Draft policy: measured step-cost table, measured acceptance, and the length decision."""

from __future__ import annotations

import math

import pytest

from langchain_seed.engine.config import SamplingParams
from langchain_seed.engine.sequence import SequenceState
from langchain_seed.engine.speculation.draft_policy import (
    PRIOR_OVERHEAD_TOKENS,
    Acceptance,
    CostModel,
    DraftPolicy,
    Rate,
    StepCost,
    expected_gain,
)
from langchain_seed.engine.speculation.drafters.base import Draft


def seq(greedy: bool = True) -> SequenceState:
    return SequenceState(
        prompt_ids=[1, 2, 3], params=SamplingParams(temperature=0 if greedy else 1)
    )


def policy_with_costs(
    costs: dict[tuple[int, int], float], gamma: int = 4, packed: bool = False
) -> DraftPolicy:
    """A policy whose cost table has measured ``costs`` (seconds by (rows, positions per
    row) when padded, by (rows, token positions in all) when packed)."""
    policy = DraftPolicy(gamma, packed=packed)
    for _ in range(30):
        for (b, p), seconds in costs.items():
            policy.observe_step(b, p if packed else b * p, seconds)
    return policy


def lengths(policy: DraftPolicy, acceptance: list[float], available: int = 4) -> list[int]:
    b = len(acceptance)
    return policy.choose_length([seq()] * b, [available] * b, acceptance)


# ----- StepCost -------------------------------------------------------------------------
def test_nothing_measured_means_no_drafts():
    assert lengths(DraftPolicy(4), [0.9, 0.9]) == [0, 0]


def test_step_cost_learns_a_table_that_is_not_linear():
    # The batch-1 row (ms): 2 positions cost more than 5 (CPU kernel shapes).
    table = {(1, 1): 0.055, (1, 2): 0.092, (1, 3): 0.113, (1, 4): 0.084, (1, 5): 0.080}
    cost = StepCost()
    for _ in range(20):
        for (b, p), seconds in table.items():
            cost.observe(b, p, seconds)
    for (b, p), seconds in table.items():
        assert cost.seconds(b, p) == pytest.approx(seconds, rel=0.05)


def test_unmeasured_shapes_are_priced_from_the_nearest_measured_one():
    cost = StepCost()
    for _ in range(60):
        cost.observe(4, 4, 0.1)  # plain steps of 4 and 16 rows
        cost.observe(16, 16, 0.2)
    k = PRIOR_OVERHEAD_TOKENS
    assert cost.seconds(4, 12) == pytest.approx(0.1 * (k + 12) / (k + 4), rel=0.03)
    # a plain step between two measured batch sizes: interpolated in log space
    assert 0.1 < cost.seconds(8, 8) < 0.2
    # a first timing sets a shape at what it cost (the load unchanged); between two
    # measured entries of a batch size the cost is interpolated; past them it grows from
    # the plain step
    cost.observe(4, 8, 0.3)
    assert cost.seconds(4, 8) == pytest.approx(0.3, rel=0.02)
    assert cost.seconds(4, 4) == pytest.approx(0.1, rel=0.02)
    assert 0.1 < cost.seconds(4, 6) < cost.seconds(4, 8)
    assert cost.seconds(4, 10) == pytest.approx(0.1 * (k + 10) / (k + 4), rel=0.03)


def test_load_moves_every_entry_so_rare_shapes_do_not_look_cheap():
    """A machine that becomes 2x slower: entries measured only while it was quiet are
    predicted 2x slower too, so their relative cost (what decides) stays right."""
    cost = StepCost()
    for _ in range(10):
        cost.observe(8, 8, 0.10)
        cost.observe(8, 40, 0.20)
    for _ in range(30):  # loaded: only plain steps are seen
        cost.observe(8, 8, 0.20)
    assert cost.seconds(8, 8) == pytest.approx(0.20, rel=0.05)
    ratio = cost.seconds(8, 40) / cost.seconds(8, 8)
    assert ratio > 1.5, ratio  # quiet ratio was 2.0; a linear absolute fit would say ~1.0


def test_a_dear_shape_seen_alone_keeps_its_cost_instead_of_raising_the_load():
    """Self-consistency's tail: plain steps of 16 rows, then a long run of drafted steps
    and no plain one. The drafted shape's measured ratio (1.8x) must hold, or the policy
    keeps drafting at a loss (the load would absorb the surprise and the ratio stay near
    its optimistic prior)."""
    cost = StepCost()
    for _ in range(30):
        cost.observe(16, 16, 0.125)
    for _ in range(40):
        cost.observe(16, 32, 0.225)
    ratio = cost.seconds(16, 32) / cost.seconds(16, 16)
    assert ratio == pytest.approx(1.8, rel=0.05), ratio


# ----- Acceptance -----------------------------------------------------------------------
def test_acceptance_is_the_truncated_geometric_estimate_of_first_and_next_tokens():
    acc = Acceptance()
    s = seq()
    for _ in range(50):
        acc.observe(s, "ngram", drafted=4, accepted=1)  # first accepted, the next one not
    rate = acc.estimate(s, "ngram")
    assert rate.first > 0.9 and rate.then < 0.1
    for _ in range(50):
        acc.observe(s, "ngram", drafted=4, accepted=0)  # first rejected: nothing about next
    rate = acc.estimate(s, "ngram")
    assert rate.first == pytest.approx(0.5, abs=0.05) and rate.then < 0.1
    other = seq()
    for _ in range(50):
        acc.observe(other, "ngram", drafted=4, accepted=4)  # no failure: both -> 1
    assert acc.estimate(other, "ngram").then > 0.8


def test_a_span_that_runs_on_is_worth_drafting_long():
    """Half the drafts miss at once, the rest copy a whole span: an i.i.d. rate (0.8 per
    token over 3 failures in 5) would value a 4-token draft at 2.0 tokens; the split rates
    value it at what it yields, 2.0 = 0.5 * 4, and its 4th token at 0.5, not 0.41."""
    acc = Acceptance()
    s = seq()
    for _ in range(40):
        acc.observe(s, "ngram/3", drafted=4, accepted=0)
        acc.observe(s, "ngram/3", drafted=4, accepted=4)
    rate = acc.estimate(s, "ngram/3")
    assert rate.value(4) == pytest.approx(0.5, abs=0.05)
    assert rate.gain(4) == pytest.approx(2.0, abs=0.15)


def test_kinds_of_draft_are_measured_apart():
    acc = Acceptance()
    s = seq()
    for _ in range(40):
        acc.observe(s, "ngram/1", drafted=3, accepted=0)
        acc.observe(s, "ngram/3", drafted=3, accepted=3)
    assert acc.estimate(s, "ngram/1").first < 0.2 < 0.8 < acc.estimate(s, "ngram/3").first


def test_a_new_sequence_starts_from_the_engine_wide_measurement_not_a_fixed_prior():
    acc = Acceptance()
    for _ in range(40):
        acc.observe(seq(), "consensus", drafted=3, accepted=0)
    fresh = seq()
    assert acc.estimate(fresh, "consensus").first < 0.1
    sampled = acc.estimate(seq(greedy=False), "consensus")  # sampled: measured apart
    assert sampled.first == pytest.approx(0.5) and sampled.then == pytest.approx(0.5)


def test_best_candidate_is_the_one_with_most_expected_tokens():
    policy = DraftPolicy(4)
    s = seq()
    for _ in range(30):
        policy.observe(s, "good", 4, 4)
        policy.observe(s, "bad", 4, 0)
    drafts = [Draft([1, 2, 3, 4], None, "bad"), Draft([5, 6], None, "good")]
    assert policy.best(s, drafts).drafter == "good"
    assert policy.best(s, []).tokens == []


def test_best_candidate_is_judged_by_its_kind_and_keeps_it():
    policy = DraftPolicy(4)
    s = seq()
    for _ in range(30):
        policy.observe(s, "ngram/1", 4, 0)
        policy.observe(s, "ngram/3", 4, 4)
    drafts = [Draft([1, 2, 3, 4], None, "ngram", kind="ngram/1"), Draft([5, 6], None, "x")]
    assert policy.best(s, drafts).drafter == "x"  # an unmeasured drafter (0.5) beats ngram/1
    good = Draft([7, 8], None, "ngram", kind="ngram/3")
    chosen = policy.best(s, [*drafts, good])
    assert chosen.tokens == [7, 8] and chosen.policy_key == "ngram/3"


def test_expected_gain():
    assert expected_gain(0.5, 3) == pytest.approx(0.5 + 0.25 + 0.125)
    assert expected_gain(Rate(0.5, 1.0), 3) == pytest.approx(1.5)
    assert expected_gain(0.9, 0) == 0.0


# ----- choose_length -----------------------------------------------------------------------
def test_memory_bound_forward_drafts_the_most_useful_length():
    flat = {(8, p): 0.1 * (1 + 0.01 * (p - 1)) for p in range(1, 6)}  # GPU-like: nearly free
    assert lengths(policy_with_costs(flat), [0.6] * 8) == [4] * 8


def test_compute_bound_batch_does_not_speculate():
    # Each extra position doubles the step: 0.6 expected tokens per row cannot pay for it.
    dear = {(32, p): 0.1 * p for p in range(1, 6)}
    assert lengths(policy_with_costs(dear), [0.6] * 32) == [0] * 32


def test_short_drafts_lose_and_long_ones_win_when_the_table_says_so():
    # batch 1 of the table: q=1..2 cost 1.7-2x a plain step, q=3..4 about 1.5x.
    table = {(1, 1): 0.055, (1, 2): 0.092, (1, 3): 0.113, (1, 4): 0.084, (1, 5): 0.080}
    policy = policy_with_costs(table)
    assert lengths(policy, [0.6]) == [4]
    assert lengths(policy, [0.6], available=2) == [0]  # only 1-2 token drafts: not worth it
    assert lengths(policy, [0.2]) == [0]


def test_useless_drafts_give_autoregressive_steps():
    flat = {(4, p): 0.1 for p in range(1, 6)}
    assert lengths(policy_with_costs(flat), [0.0] * 4) == [0] * 4


def test_gamma_never_exceeds_the_available_draft_or_the_cap():
    flat = {(3, p): 0.1 for p in range(1, 10)}
    policy = policy_with_costs(flat, gamma=4)
    out = policy.choose_length([seq()] * 3, [0, 2, 8], [0.9, 0.9, 0.9])
    assert out == [0, 2, 4]


def test_draft_model_cost_per_position_limits_the_length():
    flat = {(4, p): 1.0 * (1 + 0.001 * (p - 1)) for p in range(1, 6)}
    policy = policy_with_costs(flat)
    cheap = policy.choose_length([seq()] * 4, [4] * 4, [0.6] * 4, extra_seconds=0.01)
    dear = policy.choose_length([seq()] * 4, [4] * 4, [0.6] * 4, extra_seconds=2.0)
    assert cheap == [4] * 4 and dear == [0] * 4


def test_cost_model_fits_a_line():
    model = CostModel()
    for tokens in (8, 16, 32, 64, 8, 16, 32, 64):
        model.observe(tokens, 0.5 + 0.01 * tokens)
    assert model.fitted
    assert model.c0 == pytest.approx(0.5) and model.c1 == pytest.approx(0.01)
    assert math.isfinite(model.step_time(10))


# ----- packed verification ----------------------------------------------------------------
def per_token(b: int, slope: float, most: int = 40) -> dict[tuple[int, int], float]:
    """Measured packed costs of ``b`` rows: each draft token adds ``slope`` of a plain step."""
    return {(b, t): 0.1 * (1 + slope * (t - b)) for t in range(b, b + most + 1)}


def test_packed_drafts_go_to_the_rows_that_accept_them():
    """One row with a good draft drafts long; rows whose drafts fail draft nothing (padded,
    the good row would have made every row pay for its length)."""
    acceptance = [0.9] + [0.1] * 7
    packed = policy_with_costs(per_token(8, 0.04), packed=True)
    assert lengths(packed, acceptance) == [4, 0, 0, 0, 0, 0, 0, 0]
    padded = policy_with_costs({(8, p): 0.1 * (1 + 0.04 * 8 * (p - 1)) for p in range(1, 6)})
    assert lengths(padded, acceptance) == [0] * 8


def test_packed_lengths_follow_each_rows_acceptance():
    policy = policy_with_costs(per_token(4, 0.08), packed=True)
    out = lengths(policy, [0.95, 0.7, 0.4, 0.0])
    assert out[0] >= out[1] >= out[2] and out[0] == 4 and out[3] == 0
    assert sum(out) < 4 * 3  # not every row padded to the longest


def test_packed_lengths_follow_the_continuation_rate_not_only_the_first_token():
    """Same first-token rate, different runs: the row whose drafts run on drafts longer."""
    policy = policy_with_costs(per_token(2, 0.1), packed=True)
    runs_on, stops = Rate(0.6, 0.95), Rate(0.6, 0.2)
    out = policy.choose_length([seq()] * 2, [4, 4], [runs_on, stops])
    assert out[0] == 4 and out[1] <= 1


def test_packed_drafting_stops_where_tokens_cost_more_than_they_buy():
    dear = policy_with_costs(per_token(4, 0.5), packed=True)  # a token costs half a step
    assert lengths(dear, [0.6] * 4) == [0] * 4
    cheap = policy_with_costs(per_token(4, 0.01), packed=True)
    assert lengths(cheap, [0.6] * 4) == [4] * 4
    assert lengths(cheap, [0.6] * 4, available=2) == [2] * 4  # never past what is there


def test_ngram_drafts_are_labelled_with_the_length_of_their_match():
    from langchain_seed.engine.speculation.drafters.ngram import NgramDrafter

    def draft(ids: list[int]) -> Draft:
        s = SequenceState(prompt_ids=ids, params=SamplingParams())
        return NgramDrafter().propose([s], [4])[0]

    three = draft([1, 2, 3, 4, 5, 1, 2, 3])
    assert three.tokens == [4, 5, 1, 2] and three.policy_key == "ngram/3"
    one = draft([5, 6, 7, 5])
    assert one.tokens == [6, 7, 5] and one.policy_key == "ngram/1"
    none = draft([1, 2, 3])
    assert none.tokens == [] and none.kind == ""
