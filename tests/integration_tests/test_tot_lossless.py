"""Tree-of-Thoughts on the embedded SmolLM2-135M: the tree is the same under every policy.

Small on purpose (Game of 24, b = 2, 2 levels, one value sample, 40 new tokens a call): the
embedded model decodes ~15 tokens/s on the 2-core CPU.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models.llms import LLM

from langchain_seed.tree_of_thoughts import TreeOfThoughts

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MAX_TOKENS = 40
PUZZLE = "4 5 6 10"


class SequentialHF(LLM):
    """Plain transformers greedy ``generate``, one call at a time (the reference)."""

    model: Any
    tokenizer: Any

    @property
    def _llm_type(self) -> str:
        return "sequential-hf"

    def _call(self, prompt: str, stop: Any = None, run_manager: Any = None, **kw: Any) -> str:
        import torch

        ids = self.tokenizer(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            out = self.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=MAX_TOKENS,
                do_sample=False,
                pad_token_id=self.tokenizer.eos_token_id,
            )
        text = self.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        for s in stop or ():  # the engine ends before a stop string; cut the same way
            text = text.split(s)[0]
        return text


def _tree(llm: Any) -> dict:
    tot = TreeOfThoughts.from_task(
        "game24",
        llm=llm,
        breadth=2,
        steps=2,
        n_evaluate_sample=1,
        max_tokens=MAX_TOKENS,
        temperature=0.0,
    )
    return tot.invoke({"input": PUZZLE})


@pytest.fixture(scope="module")
def batched_result() -> dict:
    from langchain_seed import SeedLLM

    return _tree(SeedLLM(policy="batched", drafters=("consensus", "ngram"), dtype="float32"))


def test_batched_tree_equals_autoregressive_tree(batched_result) -> None:  # type: ignore[no-untyped-def]
    from langchain_seed import SeedLLM

    reference = _tree(SeedLLM(policy="autoregressive", drafters=(), dtype="float32"))
    assert len(batched_result["tree"]) >= 3  # the model proposed well-formed steps at 2 levels
    assert batched_result["tree"] == reference["tree"]
    assert batched_result["answer"] == reference["answer"]
    stats = batched_result["stats"]
    assert stats["model_submissions"] == len(stats["phases"]) <= 4  # one engine call per phase


def test_batched_tree_equals_a_sequential_transformers_loop(batched_result, embedded_model) -> None:  # type: ignore[no-untyped-def]
    reference = _tree(SequentialHF(model=embedded_model.model, tokenizer=embedded_model.tokenizer))
    assert batched_result["tree"] == reference["tree"]
