"""Consensus drafting on the embedded SmolLM2-135M-Instruct: greedy stays lossless."""

from __future__ import annotations

import json
import time

import pytest
import torch

from langchain_seed.engine import Engine, EngineConfig, SamplingParams

MAX_NEW = 32
MEMBERS = 4


class Leader:
    """A group's first request, counting the text pieces it has streamed."""

    def __init__(self) -> None:
        self.pieces = 0
        self.future = None

    def __call__(self, delta: str) -> None:
        self.pieces += 1


def wait_until_ahead(leaders: list[Leader], pieces: int, timeout: float = 60.0) -> None:
    """Block until every leader streamed ``pieces`` pieces or finished (siblings draft from it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(lead.pieces >= pieces or lead.future.done() for lead in leaders):
            return
        time.sleep(0.01)


@pytest.fixture(scope="module")
def prompts(embedded_model, shared_data_dir) -> list[list[int]]:
    path = shared_data_dir / "gsm8k_test_0_999.jsonl"
    rows = [json.loads(line) for line in path.open(encoding="utf-8")][:2]
    out = []
    for row in rows:
        ids = embedded_model.tokenizer.apply_chat_template(
            [{"role": "user", "content": row["question"]}], add_generation_prompt=True
        )
        out.append(list(ids["input_ids"]) if hasattr(ids, "keys") else list(ids))
    return out


@pytest.fixture(scope="module")
def references(embedded_model, prompts) -> list[list[int]]:
    refs = []
    for ids in prompts:
        with torch.no_grad():
            gen = embedded_model.model.generate(
                torch.tensor([ids]), max_new_tokens=MAX_NEW, do_sample=False
            )
        refs.append(gen[0, len(ids) :].tolist())
    return refs


def test_embedded_grouped_greedy_with_consensus_equals_generate(prompts, references):
    config = EngineConfig(
        drafters=("consensus", "ngram"), max_batch_size=8, adaptive_gamma=False, dtype="float32"
    )
    params = SamplingParams(max_tokens=MAX_NEW)
    with Engine(config) as engine:
        leaders = [Leader() for _ in prompts]
        groups = []
        for i, ids in enumerate(prompts):
            leaders[i].future = engine.submit(ids, params, group=f"q{i}", on_delta=leaders[i])
            groups.append([leaders[i].future])
        wait_until_ahead(leaders, pieces=8)
        for i, ids in enumerate(prompts):
            groups[i] += engine.submit_many([ids] * (MEMBERS - 1), params, group=f"q{i}")
        results = [[f.result(timeout=600) for f in group] for group in groups]
        stats = engine.stats()
    for group, ref in zip(results, references, strict=True):
        assert [r.token_ids for r in group] == [ref] * MEMBERS
    assert stats.spec.accepted_by_drafter.get("consensus", 0) > 0, stats.spec.to_dict()
