"""Defects a review of the engine-core rebuild found, each with the test that guards it."""

from __future__ import annotations

import pytest
import torch

from langchain_seed.engine import Engine, EngineConfig, SamplingParams
from langchain_seed.engine.speculation.drafters.base import Draft
from langchain_seed.engine.speculation.sampling import position_noise, sample_inverse_cdf


def greedy(pair, prompt: str, n: int) -> list[int]:
    ids = pair.tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = pair.target.generate(
            ids, max_new_tokens=n, do_sample=False, attention_mask=torch.ones_like(ids)
        )
    return out[0, ids.shape[1] :].tolist()


class LongDrafter:
    """Returns far more draft tokens than it is asked for."""

    name = "long"

    def propose(self, sequences, max_lens):
        return [Draft([7] * 40, None, self.name) for _ in sequences]

    def release(self, sequence) -> None:
        pass


def test_drafts_longer_than_asked_are_cut_to_the_cap(model_path, tiny_pair):
    """40 draft tokens at gamma 4 would write past the row's reservation; they are cut."""
    for adaptive in (False, True):
        config = EngineConfig(model=model_path, gamma=4, adaptive_gamma=adaptive, drafters=())
        with Engine(config, extra_drafters=[LongDrafter()]) as engine:
            [result] = engine.generate(["the cat sat"], SamplingParams(max_tokens=12))
            assert engine.stats().requests_failed == 0
        assert result.token_ids == greedy(tiny_pair, "the cat sat", 12)


def test_drafter_names_must_be_unique(model_path):
    class Named(LongDrafter):
        name = "ngram"

    with pytest.raises(ValueError, match="drafter names must be unique"):
        Engine(EngineConfig(model=model_path, drafters=("ngram",)), extra_drafters=[Named()])


@pytest.mark.parametrize("policy", ["fcfs_rounds", "batched"])
def test_request_failed_at_admission_is_never_decoded(model_path, monkeypatch, policy):
    """A failed admission resolves the request with the cause; no token reaches on_delta."""
    config = EngineConfig(model=model_path, policy=policy, drafters=("ngram",))
    with Engine(config) as engine:
        admit = engine.admitter.admit
        calls = {"n": 0}

        def failing_once(seqs):
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("admission broke")
            return admit(seqs)

        monkeypatch.setattr(engine.admitter, "admit", failing_once)
        pieces: list[str] = []
        future = engine.submit("the cat", SamplingParams(max_tokens=8), on_delta=pieces.append)
        with pytest.raises(RuntimeError, match="admission broke"):
            future.result(timeout=30)
        assert pieces == []
        [after] = engine.generate(["the dog"], SamplingParams(max_tokens=4))  # engine goes on
        assert len(after.token_ids) == 4


def test_inverse_cdf_never_draws_a_zero_weight_token():
    weights = torch.tensor([[0.0, 0.5, 0.0, 0.5, 0.0]] * 5)
    uniforms = torch.tensor([0.0, 0.25, 0.5, 0.999999, 1.0 - 2**-24])
    drawn = sample_inverse_cdf(weights, uniforms).tolist()
    assert drawn == [1, 1, 3, 3, 3]


def test_coupled_noise_is_float32_and_strictly_positive():
    noise = position_noise(5, range(4), 50_000)
    assert noise.dtype == torch.float32
    assert bool((noise > 1e-12).all())
