"""SeedLLM on the embedded SmolLM2-135M-Instruct: lossless greedy batches, one shared batch."""

from __future__ import annotations

import asyncio

import pytest

from langchain_seed import SeedLLM

pytestmark = pytest.mark.integration

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "1, 2, 3, 4, 5,",
    "Once upon a time, a little fox",
]
MAX_TOKENS = 12


def test_greedy_batch_equals_transformers_greedy_generate(embedded_model):
    # The lossless proof is in float32 (the embedded model's default is bfloat16 on a CPU
    # with native bfloat16, where batch composition changes rounding).
    outputs = SeedLLM(temperature=0, max_tokens=MAX_TOKENS, dtype="float32").batch(PROMPTS)
    model, tokenizer = embedded_model.model, embedded_model.tokenizer
    for prompt, output in zip(PROMPTS, outputs, strict=True):
        inputs = tokenizer(prompt, return_tensors="pt")
        generated = model.generate(
            **inputs,
            max_new_tokens=MAX_TOKENS,
            do_sample=False,
            pad_token_id=tokenizer.eos_token_id,
        )
        new_tokens = generated[0, inputs["input_ids"].shape[1] :]
        assert output == tokenizer.decode(new_tokens, skip_special_tokens=True), prompt


async def test_ten_concurrent_ainvoke_calls_are_served_in_one_batch():
    llm = SeedLLM(max_tokens=8)
    prompts = [f"Question {i}: what is {i} + {i}? Answer:" for i in range(10)]
    engine = llm.engine
    engine.reset_stats()
    outputs = await asyncio.gather(*(llm.ainvoke(p) for p in prompts))
    assert engine.stats().peak_batch_size >= 8
    assert outputs == llm.batch(prompts)
