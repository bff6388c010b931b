"""Engine overhead: a warm decode step of the engine against one raw model forward.

At each batch size ``b`` both sides decode one token per row over a ``--context``-token KV
cache, on the same model, dtype and compute thread:

- ``raw``: ``model(input_ids [b, 1], past_key_values=DynamicCache)`` and an argmax copied
  to the host (the least any decoder does per token); the cache is cropped back after
  every forward, so every forward sees the same context;
- ``engine``: :meth:`Engine.step` with ``policy="autoregressive"`` and no drafters, timed
  around the whole step (admission check, mask, forward, acceptance, bookkeeping,
  detokenization), steps that admitted requests (prefill) left out.

The goal is an engine step within 10% of the raw forward at every batch size.

    python benchmarks/engine_overhead.py --batches 1,4,16 --context 600 --steps 24
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any


def raw_forward_ms(model: Any, b: int, context: int, steps: int) -> float:
    """Median milliseconds of one 1-token forward of ``b`` rows over ``context`` cached tokens."""
    import torch
    from transformers import DynamicCache

    gen = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    prompt = torch.randint(3, vocab, (b, context), generator=gen)
    times = []
    with torch.inference_mode():
        cache = DynamicCache()
        model(input_ids=prompt, past_key_values=cache, use_cache=True, logits_to_keep=1)
        token = torch.randint(3, vocab, (b, 1), generator=gen)
        for _ in range(steps + 2):
            t0 = time.perf_counter()
            out = model(input_ids=token, past_key_values=cache, use_cache=True)
            out.logits[:, -1].argmax(dim=-1).tolist()
            times.append(time.perf_counter() - t0)
            cache.crop(-1)  # drop the token just added: every forward sees `context`
    return 1000 * statistics.median(times[2:])


def engine_step_ms(engine: Any, b: int, context: int, steps: int) -> float:
    """Median milliseconds of one decode step of ``b`` running requests."""
    import torch

    from langchain_seed.engine import SamplingParams

    gen = torch.Generator().manual_seed(1)
    vocab = engine.vocab_size
    prompts = [torch.randint(3, vocab, (context + 1,), generator=gen).tolist() for _ in range(b)]
    times: list[float] = []
    step = engine.step

    def timed() -> None:
        admitting = bool(engine.scheduler.waiting)
        t0 = time.perf_counter()
        step()
        if not admitting and len(engine.scheduler.running) == b:
            times.append(time.perf_counter() - t0)

    engine.step = timed
    try:
        params = SamplingParams(max_tokens=steps + 4, ignore_eos=True)
        engine.generate(prompts, params)
    finally:
        engine.step = step
    return 1000 * statistics.median(times[2:])


def main() -> None:
    """Measure both sides at every batch size and print one JSON line per batch size."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="target model (default: embedded)")
    parser.add_argument("--batches", default="1,4,16")
    parser.add_argument("--context", type=int, default=600)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from langchain_seed.engine import Engine, EngineConfig
    from langchain_seed.engine.serving import compute

    batches = [int(b) for b in args.batches.split(",")]
    config = EngineConfig(
        model=args.model,
        policy="autoregressive",
        drafters=(),
        dtype=args.dtype,
        device=args.device,
        max_batch_size=max(batches),
        max_cache_tokens=max(batches) * (args.context + args.steps + 48),
        prefix_cache_tokens=0,
    )
    with Engine(config) as engine:
        model = engine.target.model
        for b in batches:
            raw = compute.run(lambda b=b: raw_forward_ms(model, b, args.context, args.steps))
            ours = engine_step_ms(engine, b, args.context, args.steps)
            row = {
                "batch": b,
                "context": args.context,
                "raw_forward_ms": round(raw, 1),
                "engine_step_ms": round(ours, 1),
                "overhead": round(ours / raw - 1, 3),
            }
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
