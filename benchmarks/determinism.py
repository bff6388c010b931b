"""Does temperature 0 give one answer whatever runs beside it? Per operation and end to end.

1. Per operation, on this CPU: is a row's result bit-identical computed alone and among
   31 other rows (other lengths)? For the operations the transformers forward runs (oneDNN
   / MKL linear layers, SDPA attention with a mask, RMSNorm in torch ops, the LM head) and
   for the own path's kernels (``seed::linear``, ``seed::attention``, ``seed::add_rms_norm``).
2. End to end: 16 held-out GSM8K questions (the data's last 16 rows, chat-rendered), greedy,
   48 tokens, default drafters: each alone, all 16 in one batch, and the 16 beside 8
   sampled requests; how many outputs equal the alone run, per execution path and dtype.

    python benchmarks/determinism.py
    python benchmarks/determinism.py --skip-ops --dtypes bfloat16
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def op_invariance(dtype_name: str) -> list[dict[str, Any]]:
    """Row 0 alone vs among 32 rows, for each operation; max |difference| and identical?"""
    import torch
    import torch.nn.functional as F

    from langchain_seed.engine.execution import kernels
    from langchain_seed.engine.execution.llama import Batch

    dtype = getattr(torch, dtype_name)
    g = torch.Generator().manual_seed(0)
    rows: list[dict[str, Any]] = []

    def record(
        name: str, alone: torch.Tensor, batch_row: torch.Tensor | list[torch.Tensor]
    ) -> None:
        others = batch_row if isinstance(batch_row, list) else [batch_row]
        diff = max((alone.float() - o.float()).abs().max().item() for o in others)
        rows.append({"op": name, "dtype": dtype_name, "identical": diff == 0.0, "max_diff": diff})

    x = torch.randn(300, 576, generator=g).to(dtype)
    sizes = (7, 32, 300)  # row 0 among this many rows (decode, verification, prefill shapes)
    for n in (576, 1536, 49152):
        w = (torch.randn(n, 576, generator=g) * 0.05).to(dtype)

        def among(fn: Any) -> list[torch.Tensor]:
            return [fn(x[:m].contiguous())[0] for m in sizes]

        record(f"F.linear 576->{n}", F.linear(x[:1], w)[0], among(lambda t, w=w: F.linear(t, w)))
        if dtype == torch.bfloat16:
            packed = torch.ops.mkldnn._reorder_linear_weight(w, None)

            def mkl(t: torch.Tensor, p: torch.Tensor = packed) -> torch.Tensor:
                return torch.ops.mkldnn._linear_pointwise(t, p, None, "none", [], "")

            record(f"oneDNN packed linear 576->{n}", mkl(x[:1])[0], among(mkl))
        if kernels.load() is not None:
            ours = kernels.pack_weight(w)

            def seed(t: torch.Tensor, p: torch.Tensor = ours, n: int = n) -> torch.Tensor:
                return torch.ops.seed.linear(t, p, n, None, False)

            record(f"seed::linear 576->{n}", seed(x[:1].contiguous())[0], among(seed))
    weight = torch.randn(576, generator=g).to(dtype)

    def rms(t: torch.Tensor) -> torch.Tensor:
        f = t.float()
        return weight * (f * torch.rsqrt(f.pow(2).mean(-1, keepdim=True) + 1e-5)).to(dtype)

    record("RMSNorm (torch ops)", rms(x[:1])[0], rms(x)[0])
    if kernels.load() is not None:
        record(
            "seed::add_rms_norm",
            torch.ops.seed.add_rms_norm(x[:1].clone(), None, weight, 1e-5)[0],
            torch.ops.seed.add_rms_norm(x.clone(), None, weight, 1e-5)[0],
        )
    # attention: row 0 (300 keys) alone, and beside 15 rows of other lengths (padded + mask)
    lengths = [300] + [50 + 37 * i for i in range(15)]
    kv_len = max(lengths)
    keys = torch.randn(16, 3, kv_len, 64, generator=g).to(dtype)
    values = torch.randn(16, 3, kv_len, 64, generator=g).to(dtype)
    q = torch.randn(16, 9, 1, 64, generator=g).to(dtype)
    mask = torch.zeros(16, 1, 1, kv_len, dtype=dtype)
    for i, n in enumerate(lengths):
        mask[i, :, :, n:] = torch.finfo(dtype).min

    def sdpa(b: int) -> torch.Tensor:
        k = keys[:b, :, : max(lengths[:b])].repeat_interleave(3, 1)
        v = values[:b, :, : max(lengths[:b])].repeat_interleave(3, 1)
        return F.scaled_dot_product_attention(q[:b], k, v, attn_mask=mask[:b, ..., : k.shape[2]])

    record("SDPA with a mask", sdpa(1)[0], sdpa(16)[0])
    if kernels.load() is not None:
        flat = q[:, :, 0].contiguous()  # [16, 9, 64]

        def ours(b: int) -> torch.Tensor:
            batch = Batch.of(0, [[0]] * b, [n - 1 for n in lengths[:b]])
            return torch.ops.seed.attention(
                flat[:b].contiguous(), keys, values, batch.rows, batch.qstart, batch.qlen,
                batch.ctx, 0, 0.125,
            )  # fmt: skip

        record("seed::attention", ours(1)[0], ours(16)[0])
    return rows


def end_to_end(dtype: str, execution: str, n: int = 16, max_tokens: int = 48) -> dict[str, Any]:
    """Identical outputs (of ``n``) alone vs in one batch vs beside 8 sampled requests."""
    from langchain_seed.datasets import gsm8k_rows
    from langchain_seed.engine import Engine, EngineConfig, SamplingParams

    questions = [row["question"] for row in gsm8k_rows()][-n:]
    config = EngineConfig(dtype=dtype, execution=execution, max_batch_size=32)
    greedy = SamplingParams(max_tokens=max_tokens)
    sampled = SamplingParams(max_tokens=max_tokens, temperature=0.8)
    with Engine(config) as engine:
        prompts = [engine.render_chat([{"role": "user", "content": q}]) for q in questions]
        alone = [engine.generate([p], greedy)[0].token_ids for p in prompts]
        batch = [r.token_ids for r in engine.generate(prompts, greedy)]
        noise = engine.submit_many(prompts[:8], sampled)
        beside = [r.token_ids for r in engine.generate(prompts, greedy)]
        for f in noise:
            f.result()
        path = engine.runner.execution
    return {
        "dtype": dtype,
        "execution": execution,
        "path": path,
        "batch_identical": sum(a == b for a, b in zip(alone, batch)),
        "beside_sampled_identical": sum(a == b for a, b in zip(alone, beside)),
        "n": n,
    }


def main() -> None:
    """Print both tables (and JSON lines)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtypes", default="bfloat16,float32")
    parser.add_argument("--executions", default="auto,transformers")
    parser.add_argument("--skip-ops", action="store_true")
    parser.add_argument("--skip-end-to-end", action="store_true")
    args = parser.parse_args()

    from step_time import cpu_summary

    from langchain_seed.engine.serving import compute

    print(f"CPU: {cpu_summary()}")
    dtypes = args.dtypes.split(",")
    if not args.skip_ops:
        print(
            "\n| operation | dtype | row alone == row among 7, 32, 300 (attention: 16) | max diff |"
        )
        print("|---|---|---|---|")
        for dtype in dtypes:
            for row in compute.run(lambda dtype=dtype: op_invariance(dtype)):
                print(f"| {row['op']} | {dtype} | {'yes' if row['identical'] else 'no'} | "
                      f"{row['max_diff']:.3g} |")  # fmt: skip
    if not args.skip_end_to_end:
        print("\n| execution | dtype | batch = alone | beside sampled = alone |\n|---|---|---|---|")
        for execution in args.executions.split(","):
            for dtype in dtypes:
                row = end_to_end(dtype, execution)
                print(json.dumps(row))
                print(f"| {row['path'] if execution == 'auto' else execution} | {dtype} | "
                      f"{row['batch_identical']}/{row['n']} | "
                      f"{row['beside_sampled_identical']}/{row['n']} |")  # fmt: skip


if __name__ == "__main__":
    main()
